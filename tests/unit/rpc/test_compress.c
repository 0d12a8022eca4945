/* Message compression (grpc-encoding): gzip and deflate round trips, and bounded decompression so
 * that a small message cannot expand past the size limit. */
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "rpc/compress.h"

#define MiB (1024 * 1024)

static const char text[] = "The quick brown fox jumps over the lazy dog. "
                           "The quick brown fox jumps over the lazy dog. "
                           "Pack my box with five dozen liquor jugs.";

/* Compresses |len| bytes of |in|; the caller frees *out. */
static size_t compress_bytes(sg_encoding enc, const void *in, size_t len, uint8_t **out) {
  size_t n = 0;
  cr_assert_eq(sg_compress(enc, in, len, out, &n), 0);
  cr_assert_not_null(*out);
  return n;
}

static void assert_round_trip(sg_encoding enc, const void *in, size_t len) {
  uint8_t *z, *back = NULL;
  size_t zlen = compress_bytes(enc, in, len, &z);
  size_t back_len = 0;

  cr_assert_eq(sg_decompress(enc, z, zlen, len + 100, &back, &back_len), 0, "%s, %zu bytes",
               sg_encoding_name(enc), len);

  cr_assert_eq(back_len, len);
  cr_assert_arr_eq(back, in, len);
  free(z);
  free(back);
}

Test(compress, gzip_round_trips) {
  assert_round_trip(SG_ENCODING_GZIP, text, sizeof(text));
}

Test(compress, deflate_round_trips) {
  assert_round_trip(SG_ENCODING_DEFLATE, text, sizeof(text));
}

Test(compress, an_empty_message_round_trips) {
  assert_round_trip(SG_ENCODING_GZIP, "", 0);
  assert_round_trip(SG_ENCODING_DEFLATE, "", 0);
}

Test(compress, incompressible_data_round_trips) {
  enum { LEN = 300000 };
  uint8_t *noise = malloc(LEN);
  uint32_t x = 2463534242u;
  for (size_t i = 0; i < LEN; i++) {
    x ^= x << 13, x ^= x >> 17, x ^= x << 5; /* xorshift32 */
    noise[i] = (uint8_t)x;
  }

  assert_round_trip(SG_ENCODING_GZIP, noise, LEN);
  assert_round_trip(SG_ENCODING_DEFLATE, noise, LEN);
  free(noise);
}

Test(compress, gzip_output_is_an_rfc1952_member) {
  uint8_t *z;
  size_t n = compress_bytes(SG_ENCODING_GZIP, text, sizeof(text), &z);

  cr_assert_geq(n, 18);
  cr_assert_eq(z[0], 0x1f);
  cr_assert_eq(z[1], 0x8b);
  cr_assert_eq(z[2], 8, "compression method deflate");
  free(z);
}

Test(compress, deflate_output_is_an_rfc1950_zlib_stream) {
  uint8_t *z;
  size_t n = compress_bytes(SG_ENCODING_DEFLATE, text, sizeof(text), &z);

  cr_assert_geq(n, 6);
  cr_assert_eq(z[0] & 0x0f, 8, "CM = deflate");
  cr_assert_eq((z[0] << 8 | z[1]) % 31, 0, "FCHECK");
  free(z);
}

Test(compress, a_zip_bomb_is_too_large) {
  size_t big = 10 * MiB;
  uint8_t *zeros = calloc(big, 1);
  uint8_t *z, *out = NULL;
  size_t zlen = compress_bytes(SG_ENCODING_GZIP, zeros, big, &z);
  free(zeros);
  cr_assert_lt(zlen, 64 * 1024, "10 MiB of zeros should compress to a few KiB");
  size_t out_len = 12345;

  int rc = sg_decompress(SG_ENCODING_GZIP, z, zlen, 1 * MiB, &out, &out_len);

  cr_assert_eq(rc, SG_COMPRESS_ERR_TOO_LARGE);
  cr_assert_null(out, "no buffer is handed out on error");
  cr_assert_eq(out_len, 12345);
  free(z);
}

Test(compress, a_deflate_zip_bomb_is_too_large) {
  size_t big = 10 * MiB;
  uint8_t *zeros = calloc(big, 1);
  uint8_t *z, *out = NULL;
  size_t zlen = compress_bytes(SG_ENCODING_DEFLATE, zeros, big, &z);
  free(zeros);
  size_t out_len;

  cr_assert_eq(sg_decompress(SG_ENCODING_DEFLATE, z, zlen, 1 * MiB, &out, &out_len),
               SG_COMPRESS_ERR_TOO_LARGE);
  free(z);
}

Test(compress, output_of_exactly_max_out_bytes_is_accepted) {
  size_t len = 1 * MiB;
  uint8_t *data = malloc(len);
  for (size_t i = 0; i < len; i++)
    data[i] = (uint8_t)(i % 251);
  uint8_t *z, *out = NULL;
  size_t zlen = compress_bytes(SG_ENCODING_GZIP, data, len, &z);
  size_t out_len = 0;

  cr_assert_eq(sg_decompress(SG_ENCODING_GZIP, z, zlen, len, &out, &out_len), 0);

  cr_assert_eq(out_len, len);
  cr_assert_arr_eq(out, data, len);
  free(data);
  free(z);
  free(out);
}

Test(compress, output_one_byte_over_max_out_is_too_large) {
  uint8_t *z, *out = NULL;
  size_t zlen = compress_bytes(SG_ENCODING_GZIP, text, sizeof(text), &z);
  size_t out_len;

  cr_assert_eq(sg_decompress(SG_ENCODING_GZIP, z, zlen, sizeof(text) - 1, &out, &out_len),
               SG_COMPRESS_ERR_TOO_LARGE);
  free(z);
}

Test(compress, corrupt_input_is_corrupt) {
  uint8_t *z, *out = NULL;
  size_t zlen = compress_bytes(SG_ENCODING_GZIP, text, sizeof(text), &z);
  z[zlen / 2] ^= 0xff; /* inside the deflate data, or the CRC catches it */
  size_t out_len;

  cr_assert_eq(sg_decompress(SG_ENCODING_GZIP, z, zlen, MiB, &out, &out_len),
               SG_COMPRESS_ERR_CORRUPT);
  free(z);
}

Test(compress, a_bad_crc_is_corrupt) {
  uint8_t *z, *out = NULL;
  size_t zlen = compress_bytes(SG_ENCODING_GZIP, text, sizeof(text), &z);
  z[zlen - 8] ^= 0x01; /* the trailer: CRC32, then ISIZE */
  size_t out_len;

  cr_assert_eq(sg_decompress(SG_ENCODING_GZIP, z, zlen, MiB, &out, &out_len),
               SG_COMPRESS_ERR_CORRUPT);
  free(z);
}

Test(compress, bytes_that_are_not_compressed_at_all_are_corrupt) {
  uint8_t *out = NULL;
  size_t out_len;

  cr_assert_eq(
      sg_decompress(SG_ENCODING_GZIP, (const uint8_t *)text, sizeof(text), MiB, &out, &out_len),
      SG_COMPRESS_ERR_CORRUPT);
  cr_assert_eq(
      sg_decompress(SG_ENCODING_DEFLATE, (const uint8_t *)text, sizeof(text), MiB, &out, &out_len),
      SG_COMPRESS_ERR_CORRUPT);
}

Test(compress, gzip_data_is_not_deflate) {
  uint8_t *z, *out = NULL;
  size_t zlen = compress_bytes(SG_ENCODING_GZIP, text, sizeof(text), &z);
  size_t out_len;

  cr_assert_eq(sg_decompress(SG_ENCODING_DEFLATE, z, zlen, MiB, &out, &out_len),
               SG_COMPRESS_ERR_CORRUPT);
  free(z);
}

Test(compress, truncated_input_is_corrupt_at_every_length) {
  uint8_t *z;
  size_t zlen = compress_bytes(SG_ENCODING_GZIP, text, sizeof(text), &z);

  for (size_t cut = 0; cut < zlen; cut++) {
    uint8_t *out = NULL;
    size_t out_len;
    cr_assert_eq(sg_decompress(SG_ENCODING_GZIP, z, cut, MiB, &out, &out_len),
                 SG_COMPRESS_ERR_CORRUPT, "cut to %zu of %zu bytes", cut, zlen);
  }
  free(z);
}

Test(compress, truncated_deflate_input_is_corrupt) {
  uint8_t *z, *out = NULL;
  size_t zlen = compress_bytes(SG_ENCODING_DEFLATE, text, sizeof(text), &z);
  size_t out_len;

  cr_assert_eq(sg_decompress(SG_ENCODING_DEFLATE, z, zlen - 1, MiB, &out, &out_len),
               SG_COMPRESS_ERR_CORRUPT);
  free(z);
}

Test(compress, trailing_garbage_after_the_stream_is_corrupt) {
  uint8_t *z, *out = NULL;
  size_t zlen = compress_bytes(SG_ENCODING_GZIP, text, sizeof(text), &z);
  z = realloc(z, zlen + 3);
  memcpy(z + zlen, "xyz", 3);
  size_t out_len;

  cr_assert_eq(sg_decompress(SG_ENCODING_GZIP, z, zlen + 3, MiB, &out, &out_len),
               SG_COMPRESS_ERR_CORRUPT);
  free(z);
}

Test(compress, a_second_gzip_member_is_corrupt) {
  uint8_t *z, *out = NULL;
  size_t zlen = compress_bytes(SG_ENCODING_GZIP, text, sizeof(text), &z);
  z = realloc(z, zlen * 2);
  memcpy(z + zlen, z, zlen);
  size_t out_len;

  cr_assert_eq(sg_decompress(SG_ENCODING_GZIP, z, zlen * 2, MiB, &out, &out_len),
               SG_COMPRESS_ERR_CORRUPT);
  free(z);
}

Test(compress, encoding_names_parse) {
  cr_assert_eq(sg_encoding_parse("identity", 8), SG_ENCODING_IDENTITY);
  cr_assert_eq(sg_encoding_parse("gzip", 4), SG_ENCODING_GZIP);
  cr_assert_eq(sg_encoding_parse("deflate", 7), SG_ENCODING_DEFLATE);
}

Test(compress, unknown_encodings_are_unsupported) {
  cr_assert_eq(sg_encoding_parse("snappy", 6), SG_ENCODING_UNSUPPORTED);
  cr_assert_eq(sg_encoding_parse("", 0), SG_ENCODING_UNSUPPORTED);
  cr_assert_eq(sg_encoding_parse("gzipx", 5), SG_ENCODING_UNSUPPORTED);
  cr_assert_eq(sg_encoding_parse("gzi", 3), SG_ENCODING_UNSUPPORTED);
  cr_assert_eq(sg_encoding_parse("GZIP", 4), SG_ENCODING_UNSUPPORTED);
}

Test(compress, encoding_parse_reads_only_len_bytes) {
  cr_assert_eq(sg_encoding_parse("gzip, deflate", 4), SG_ENCODING_GZIP);
}

Test(compress, encoding_names_are_those_of_the_header) {
  cr_assert_str_eq(sg_encoding_name(SG_ENCODING_IDENTITY), "identity");
  cr_assert_str_eq(sg_encoding_name(SG_ENCODING_GZIP), "gzip");
  cr_assert_str_eq(sg_encoding_name(SG_ENCODING_DEFLATE), "deflate");
}

static int accepted(const char *list, sg_encoding enc) {
  return sg_encoding_accepted(list, strlen(list), enc);
}

Test(compress, our_accept_list_names_every_encoding_we_support) {
  cr_assert(accepted(SG_ACCEPT_ENCODINGS, SG_ENCODING_IDENTITY));
  cr_assert(accepted(SG_ACCEPT_ENCODINGS, SG_ENCODING_DEFLATE));
  cr_assert(accepted(SG_ACCEPT_ENCODINGS, SG_ENCODING_GZIP));
}

Test(compress, an_accept_list_with_spaces_is_read) {
  cr_assert(accepted("identity, deflate, gzip", SG_ENCODING_GZIP));
  cr_assert(accepted(" gzip ,deflate", SG_ENCODING_GZIP));
  cr_assert(accepted("identity , deflate", SG_ENCODING_DEFLATE));
}

Test(compress, an_accept_list_without_the_encoding_does_not_accept_it) {
  cr_assert_not(accepted("identity,deflate", SG_ENCODING_GZIP));
  cr_assert_not(accepted("identity", SG_ENCODING_DEFLATE));
  cr_assert_not(accepted("", SG_ENCODING_GZIP));
  cr_assert_not(accepted(",,", SG_ENCODING_GZIP));
}

Test(compress, a_name_that_only_starts_with_the_encoding_does_not_match) {
  cr_assert_not(accepted("gzipx", SG_ENCODING_GZIP));
  cr_assert_not(accepted("identity,gzipx", SG_ENCODING_GZIP));
  cr_assert_not(accepted("xgzip", SG_ENCODING_GZIP));
  cr_assert_not(accepted("gzi", SG_ENCODING_GZIP));
  cr_assert_not(accepted("deflate-raw", SG_ENCODING_DEFLATE));
}

Test(compress, accepted_reads_only_len_bytes) {
  cr_assert_not(sg_encoding_accepted("identity,gzip", 9, SG_ENCODING_GZIP));
  cr_assert_not(sg_encoding_accepted("gzipx", 4 + 1, SG_ENCODING_GZIP));
  cr_assert(sg_encoding_accepted("gzipx", 4, SG_ENCODING_GZIP));
}
