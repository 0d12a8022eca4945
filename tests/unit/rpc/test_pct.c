/* grpc-message percent-encoding (PROTOCOL-HTTP2.md): "Percent-Encoded → 1*(Percent-Byte-
 * Unencoded / Percent-Byte-Encoded)", unencoded bytes being 0x20-0x7E except '%'; decoders must
 * keep an invalid %-sequence literally rather than fail. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "rpc/pct.h"

/* grpc's interop test "special_status_message". */
static const char special[] = "\t\ntest with whitespace\r\nand Unicode BMP ☺ and non-BMP 😈\t\n";

/* Encodes |in| into a NUL-terminated malloc'd string, checking the announced length. */
static char *encode(const char *in, size_t len) {
  size_t want = sg_pct_encoded_len(in, len);
  char *out = malloc(want + 1);
  size_t n = sg_pct_encode(in, len, out);
  cr_assert_eq(n, want, "sg_pct_encoded_len said %zu, sg_pct_encode wrote %zu", want, n);
  out[n] = '\0';
  return out;
}

static void assert_decodes_to(const char *in, const char *want) {
  char out[256];
  size_t n = sg_pct_decode(in, strlen(in), out);
  cr_assert_eq(n, strlen(want), "\"%s\" decoded to %zu bytes", in, n);
  cr_assert_arr_eq(out, want, n, "\"%s\"", in);
}

Test(pct, the_special_status_message_round_trips) {
  char *enc = encode(special, strlen(special));
  char *dec = malloc(strlen(enc) + 1);

  size_t n = sg_pct_decode(enc, strlen(enc), dec);

  cr_assert_eq(n, strlen(special));
  cr_assert_arr_eq(dec, special, n);
  free(enc);
  free(dec);
}

Test(pct, the_special_status_message_encodes_as_grpc_does) {
  char *enc = encode(special, strlen(special));

  cr_assert_str_eq(enc, "%09%0Atest with whitespace%0D%0Aand Unicode BMP %E2%98%BA and non-BMP "
                        "%F0%9F%98%88%09%0A");
  free(enc);
}

Test(pct, printable_ascii_other_than_percent_stays_as_is) {
  char ascii[0x7f - 0x20];
  size_t len = 0;
  for (int c = 0x20; c <= 0x7e; c++)
    if (c != '%')
      ascii[len++] = (char)c;

  char *enc = encode(ascii, len);

  cr_assert_eq(strlen(enc), len);
  cr_assert_arr_eq(enc, ascii, len);
  free(enc);
}

Test(pct, percent_itself_is_encoded) {
  char *enc = encode("100%", 4);

  cr_assert_str_eq(enc, "100%25");
  free(enc);
}

Test(pct, every_byte_outside_printable_ascii_is_encoded_in_upper_case_hex) {
  static const char hex[] = "0123456789ABCDEF";
  for (int c = 0; c < 256; c++) {
    if (c >= 0x20 && c <= 0x7e && c != '%')
      continue;
    char in = (char)c;
    char *enc = encode(&in, 1);
    char want[4] = {'%', hex[c >> 4], hex[c & 15], '\0'};
    cr_assert_str_eq(enc, want, "byte 0x%02x", c);
    free(enc);
  }
}

Test(pct, a_nul_byte_is_encoded_not_a_terminator) {
  char *enc = encode("a\0b", 3);

  cr_assert_str_eq(enc, "a%00b");
  free(enc);
}

Test(pct, every_byte_value_round_trips) {
  char all[256];
  for (int c = 0; c < 256; c++)
    all[c] = (char)c;
  char *enc = encode(all, sizeof(all));
  char dec[256];

  size_t n = sg_pct_decode(enc, strlen(enc), dec);

  cr_assert_eq(n, sizeof(all));
  cr_assert_arr_eq(dec, all, sizeof(all));
  free(enc);
}

Test(pct, encoding_nothing_writes_nothing) {
  char out[1] = {'x'};

  cr_assert_eq(sg_pct_encoded_len("", 0), 0);
  cr_assert_eq(sg_pct_encode("", 0, out), 0);
  cr_assert_eq(out[0], 'x');
}

Test(pct, lower_case_hex_decodes) {
  assert_decodes_to("%e2%98%ba", "☺");
  assert_decodes_to("a%2fb", "a/b");
}

Test(pct, upper_case_hex_decodes) {
  assert_decodes_to("%E2%98%BA", "☺");
}

Test(pct, a_sequence_with_non_hex_digits_stays_literal) {
  assert_decodes_to("%zz", "%zz");
  assert_decodes_to("a%g1b", "a%g1b");
  assert_decodes_to("%1g", "%1g");
}

Test(pct, a_trailing_percent_stays_literal) {
  assert_decodes_to("%", "%");
  assert_decodes_to("50%", "50%");
}

Test(pct, a_sequence_cut_short_at_the_end_stays_literal) {
  assert_decodes_to("%4", "%4");
  assert_decodes_to("abc%4", "abc%4");
}

Test(pct, decoding_resumes_after_a_bad_sequence) {
  assert_decodes_to("%zz%41", "%zzA");
  assert_decodes_to("%%41", "%A");
}

Test(pct, a_decoded_percent_is_not_decoded_again) {
  assert_decodes_to("%2541", "%41");
}

Test(pct, plain_text_decodes_to_itself) {
  assert_decodes_to("no escapes here", "no escapes here");
}

Test(pct, decoding_in_place_works) {
  char buf[] = "a%20b%E2%98%BAc";

  size_t n = sg_pct_decode(buf, strlen(buf), buf);

  cr_assert_eq(n, strlen("a b☺c"));
  cr_assert_arr_eq(buf, "a b☺c", n);
}
