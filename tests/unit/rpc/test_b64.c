/* Base64 of "-bin" metadata (PROTOCOL-HTTP2.md): "Implementations MUST transmit base64
 * encoded values without padding" and "MUST accept padded and un-padded values". */
#include <criterion/criterion.h>
#include <stdint.h>
#include <string.h>

#include "rpc/b64.h"

/* Room sg_b64_decode asks for, for |len| characters. */
#define DECODED_CAP(len) ((len) / 4 * 3 + 2)

static void assert_encodes_to(const char *in, const char *want) {
  char out[SG_B64_ENCODED_CAP(16)];
  size_t n = sg_b64_encode((const uint8_t *)in, strlen(in), out);
  cr_assert_str_eq(out, want, "\"%s\"", in);
  cr_assert_eq(n, strlen(want));
}

static void assert_decodes_to(const char *in, const void *want, size_t want_len) {
  uint8_t out[DECODED_CAP(64)];
  size_t n = 9999;
  cr_assert_eq(sg_b64_decode(in, strlen(in), out, &n), 0, "\"%s\" was rejected", in);
  cr_assert_eq(n, want_len, "\"%s\" decoded to %zu bytes, want %zu", in, n, want_len);
  cr_assert_arr_eq(out, want, want_len, "\"%s\"", in);
}

static void assert_rejected(const char *in, size_t len) {
  uint8_t out[DECODED_CAP(64)];
  size_t n = 9999;
  cr_assert_eq(sg_b64_decode(in, len, out, &n), -1, "\"%.*s\" was accepted", (int)len, in);
  cr_assert_eq(n, 9999, "a rejected value set the length");
}

Test(b64, encode_follows_rfc4648_without_padding) {
  assert_encodes_to("", "");
  assert_encodes_to("f", "Zg");
  assert_encodes_to("fo", "Zm8");
  assert_encodes_to("foo", "Zm9v");
  assert_encodes_to("foob", "Zm9vYg");
  assert_encodes_to("fooba", "Zm9vYmE");
  assert_encodes_to("foobar", "Zm9vYmFy");
}

Test(b64, encode_uses_the_standard_alphabet) {
  const uint8_t in[] = {0xfb, 0xff, 0xbf};
  char out[SG_B64_ENCODED_CAP(sizeof(in))];

  sg_b64_encode(in, sizeof(in), out);

  cr_assert_str_eq(out, "+/+/");
}

Test(b64, encoded_output_fits_the_announced_capacity) {
  uint8_t in[10];
  memset(in, 0xa5, sizeof(in));
  for (size_t len = 0; len <= sizeof(in); len++) {
    char out[SG_B64_ENCODED_CAP(10) + 8];
    memset(out, '#', sizeof(out));
    size_t n = sg_b64_encode(in, len, out);
    cr_assert_lt(n, SG_B64_ENCODED_CAP(len), "length %zu", len);
    cr_assert_eq(out[n], '\0');
    cr_assert_eq(out[SG_B64_ENCODED_CAP(len)], '#', "length %zu wrote past its capacity", len);
    cr_assert_null(memchr(out, '=', n), "length %zu produced padding", len);
  }
}

Test(b64, decode_accepts_padded_and_unpadded_forms_of_the_same_bytes) {
  const uint8_t bytes[] = {0x00, 0xff, 0x10, 0x80, 0x7f, 0xfe, 0x01, 0x3e, 0x3f, 0xc0};
  for (size_t len = 0; len <= sizeof(bytes); len++) {
    char unpadded[SG_B64_ENCODED_CAP(sizeof(bytes))];
    size_t n = sg_b64_encode(bytes, len, unpadded);
    char padded[sizeof(unpadded) + 2];
    memcpy(padded, unpadded, n);
    size_t p = n;
    while (p % 4 != 0)
      padded[p++] = '=';
    padded[p] = '\0';

    uint8_t out[DECODED_CAP(sizeof(padded))];
    size_t out_len = 9999;
    cr_assert_eq(sg_b64_decode(unpadded, n, out, &out_len), 0, "\"%s\"", unpadded);
    cr_assert_eq(out_len, len, "\"%s\"", unpadded);
    cr_assert_arr_eq(out, bytes, len, "\"%s\"", unpadded);

    out_len = 9999;
    cr_assert_eq(sg_b64_decode(padded, p, out, &out_len), 0, "\"%s\"", padded);
    cr_assert_eq(out_len, len, "\"%s\"", padded);
    cr_assert_arr_eq(out, bytes, len, "\"%s\"", padded);
  }
}

Test(b64, decode_of_known_values) {
  assert_decodes_to("Zm9vYmFy", "foobar", 6);
  assert_decodes_to("Zm9vYmE", "fooba", 5);
  assert_decodes_to("Zm9vYmE=", "fooba", 5);
  assert_decodes_to("Zm9vYg", "foob", 4);
  assert_decodes_to("Zm9vYg==", "foob", 4);
  assert_decodes_to("+/+/", "\xfb\xff\xbf", 3);
}

Test(b64, decode_writes_no_more_than_the_room_it_asks_for) {
  /* len / 4 * 3 + 2 bytes: "Zm9vYg" (6 characters) may use 6 bytes, and holds 4. */
  uint8_t out[DECODED_CAP(6) + 4];
  memset(out, '#', sizeof(out));
  size_t n;

  cr_assert_eq(sg_b64_decode("Zm9vYg", 6, out, &n), 0);

  for (size_t i = DECODED_CAP(6); i < sizeof(out); i++)
    cr_assert_eq(out[i], '#', "byte %zu was written", i);
}

static int in_alphabet(int c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
         c == '/';
}

Test(b64, decode_rejects_any_character_outside_the_alphabet) {
  /* Every position of an unpadded and of a full group, including the very last. */
  for (int c = 0; c < 256; c++) {
    if (in_alphabet(c) || c == '=')
      continue;
    char text[] = "Zm9vYmFyYg";
    for (size_t pos = 0; pos < sizeof(text) - 1; pos++) {
      char bad[sizeof(text)];
      memcpy(bad, text, sizeof(text));
      bad[pos] = (char)c;
      assert_rejected(bad, sizeof(text) - 1);
      if (pos < 8)
        assert_rejected(bad, 8); /* the full groups alone */
    }
  }
}

/* '-' ends the data for OpenSSL's decoder, which drops it from the end of a block. */
Test(b64, decode_rejects_a_trailing_group_of_dashes) {
  assert_rejected("Zm9v----", 8);
  assert_rejected("Zm9vYmFy----", 12);
}

Test(b64, decode_rejects_a_group_of_dashes_before_the_last_group) {
  assert_rejected("Zm9v----Yg", 10);
}

Test(b64, decode_rejects_url_safe_characters) {
  assert_rejected("-_-_", 4);
}

Test(b64, decode_rejects_whitespace) {
  assert_rejected(" Zm9vYg", 7);
  assert_rejected("Zm9vYg ", 7);
  assert_rejected("Zm9v Yg", 7);
  assert_rejected("Zm9v\nYg", 7);
  assert_rejected("Zm9v\r\nYg", 8);
  assert_rejected("Zm9v\tYg", 7);
  assert_rejected("Zm9vYg==\n", 9);
}

Test(b64, decode_rejects_padding_in_the_middle) {
  assert_rejected("Zg==Zg==", 8);
  assert_rejected("Zm=vYg", 6);
  assert_rejected("=Zm9", 4);
}

Test(b64, decode_rejects_lengths_no_encoding_produces) {
  assert_rejected("Z", 1);
  assert_rejected("Zm9vY", 5);
  assert_rejected("Zm9vYmFyZ", 9);
  assert_rejected("Z==", 3);
  assert_rejected("Zm9vY===", 8);
}

Test(b64, decode_rejects_too_much_padding) {
  assert_rejected("Zg===", 5);
  assert_rejected("Zm8==", 5);
  assert_rejected("Zm9v==", 6);
  assert_rejected("Zm9v=", 5);
  assert_rejected("Zm9v====", 8);
}

Test(b64, decode_rejects_too_little_padding) {
  assert_rejected("Zg=", 3);
}

Test(b64, decode_of_nothing_is_nothing) {
  uint8_t out[2];
  size_t n = 9999;

  cr_assert_eq(sg_b64_decode("", 0, out, &n), 0);

  cr_assert_eq(n, 0);
}

Test(b64, decode_rejects_padding_alone) {
  assert_rejected("==", 2);
  assert_rejected("====", 4);
}
