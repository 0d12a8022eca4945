/* Request metadata codecs (rpc/timeout.h, rpc/b64.h, rpc/pct.h): grpc-timeout, "-bin" values
 * and grpc-message. The first input byte picks the codec; the rest is a header value.
 *
 * grpc-timeout: what parses is 2 to 9 bytes of digits and a unit; the value never goes
 * negative; formatting a parsed deadline gives a valid timeout that is never shorter, and
 * within one unit of it; formatting any duration gives at most 8 digits and a unit.
 * base64: a value that decodes re-encodes (unpadded) to text that decodes to the same bytes,
 * and the decoder writes no more than its contract's room; the input's bytes encode to
 * unpadded text of the promised length that decodes back to them. A "-bin" header value is
 * split at commas as rpc/h2.c does, each part decoded on its own.
 * percent-encoding: decode(encode(x)) == x, the encoding has the promised length and only
 * bytes 0x20-0x7e, decoding never grows the text, and decoding in place (as the client does)
 * gives what decoding into another buffer gives. */
#include "fuzz.h"
#include "rpc/b64.h"
#include "rpc/pct.h"
#include "rpc/timeout.h"

static void fuzz_timeout(const char *s, size_t len, const uint8_t *raw, size_t raw_len) {
  int64_t ns = -1;
  if (sg_timeout_parse(s, len, &ns) == 0) {
    FUZZ_CHECK(len >= 2 && len <= SG_TIMEOUT_MAX_LEN);
    FUZZ_CHECK(ns >= 0);
    char out[SG_TIMEOUT_MAX_LEN + 1];
    size_t n = sg_timeout_format(ns, out);
    int64_t back;
    FUZZ_CHECK(n == strlen(out) && n <= SG_TIMEOUT_MAX_LEN);
    FUZZ_CHECK(sg_timeout_parse(out, n, &back) == 0);
    /* Rounded up, never down (a zero timeout is formatted as 1n); one unit at most above. */
    FUZZ_CHECK(back >= ns || ns == INT64_MAX);
    if (ns < INT64_MAX / 2)
      FUZZ_CHECK(back - ns <= 3600LL * 1000000000LL);
  }
  /* Any duration formats to a valid timeout. */
  int64_t d = 0;
  for (size_t i = 0; i < raw_len && i < 8; i++)
    d = (int64_t)((uint64_t)d << 8 | raw[i]);
  char out[SG_TIMEOUT_MAX_LEN + 1];
  size_t n = sg_timeout_format(d, out);
  int64_t back;
  FUZZ_CHECK(n >= 2 && n <= SG_TIMEOUT_MAX_LEN && out[n] == '\0');
  FUZZ_CHECK(sg_timeout_parse(out, n, &back) == 0);
  FUZZ_CHECK(back >= (d < 1 ? 1 : d) || back == INT64_MAX || d > INT64_MAX / 2);
}

/* Decodes |len| bytes of |s| into a buffer of exactly the room the contract asks for. */
static int b64_decode_exact(const char *s, size_t len, fuzz_buf *out) {
  size_t room = len / 4 * 3 + 2;
  uint8_t *buf = malloc(room);
  size_t n = 0;
  int rc = sg_b64_decode(s, len, buf, &n);
  if (rc == 0) {
    FUZZ_CHECK(n <= room);
    fuzz_buf_add(out, buf, n);
  }
  free(buf);
  return rc;
}

static void fuzz_b64(const char *s, size_t len) {
  fuzz_buf bytes = {0};
  if (b64_decode_exact(s, len, &bytes) == 0) {
    /* Padding and unpadded length rules: a valid text is never 1 mod 4 long once unpadded. */
    size_t unpadded = len;
    while (unpadded > 0 && s[unpadded - 1] == '=')
      unpadded--;
    FUZZ_CHECK(unpadded % 4 != 1);
    FUZZ_CHECK(bytes.len == unpadded / 4 * 3 + (unpadded % 4 ? unpadded % 4 - 1 : 0));
    char *enc = malloc(SG_B64_ENCODED_CAP(bytes.len));
    size_t elen = sg_b64_encode(bytes.data, bytes.len, enc);
    FUZZ_CHECK(elen == unpadded && enc[elen] == '\0');
    fuzz_buf again = {0};
    FUZZ_CHECK(b64_decode_exact(enc, elen, &again) == 0 && fuzz_buf_eq(&again, &bytes));
    free(enc);
    fuzz_buf_free(&again);
  }
  fuzz_buf_free(&bytes);

  /* The input's bytes as data. */
  char *enc = malloc(SG_B64_ENCODED_CAP(len));
  size_t elen = sg_b64_encode((const uint8_t *)s, len, enc);
  FUZZ_CHECK(elen == len / 3 * 4 + (len % 3 ? len % 3 + 1 : 0) && enc[elen] == '\0');
  FUZZ_CHECK(memchr(enc, '=', elen) == NULL);
  fuzz_buf back = {0};
  FUZZ_CHECK(b64_decode_exact(enc, elen, &back) == 0);
  FUZZ_CHECK(back.len == len && (len == 0 || memcmp(back.data, s, len) == 0));
  fuzz_buf_free(&back);
  free(enc);

  /* As a "-bin" header value: comma-separated parts (rpc/h2.c add_bin_metadata). */
  size_t start = 0;
  for (size_t i = 0; i <= len; i++) {
    if (i < len && s[i] != ',')
      continue;
    fuzz_buf part = {0};
    (void)b64_decode_exact(s + start, i - start, &part);
    fuzz_buf_free(&part);
    start = i + 1;
  }
}

static void fuzz_pct(const char *s, size_t len) {
  size_t elen = sg_pct_encoded_len(s, len);
  FUZZ_CHECK(elen >= len && elen <= 3 * len);
  char *enc = malloc(elen ? elen : 1);
  FUZZ_CHECK(sg_pct_encode(s, len, enc) == elen);
  for (size_t i = 0; i < elen; i++)
    FUZZ_CHECK(enc[i] >= 0x20 && enc[i] <= 0x7e);
  char *dec = malloc(elen ? elen : 1);
  size_t dlen = sg_pct_decode(enc, elen, dec);
  FUZZ_CHECK(dlen == len && (len == 0 || memcmp(dec, s, len) == 0));
  /* Any text decodes, never longer, and in place as into another buffer. */
  char *out = malloc(len ? len : 1);
  size_t olen = sg_pct_decode(s, len, out);
  FUZZ_CHECK(olen <= len);
  char *inplace = fuzz_copy(s, len);
  size_t ilen = sg_pct_decode(inplace, len, inplace);
  FUZZ_CHECK(ilen == olen && (olen == 0 || memcmp(inplace, out, olen) == 0));
  /* A text without '%' decodes to itself. */
  if (memchr(s, '%', len) == NULL)
    FUZZ_CHECK(olen == len && (len == 0 || memcmp(out, s, len) == 0));
  free(enc);
  free(dec);
  free(out);
  free(inplace);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fuzz_in in = {data, size};
  uint8_t mode = fuzz_u8(&in);
  /* An exact-size copy of the value, so ASan sees reads past it. */
  char *s = fuzz_copy(in.p, in.len);
  switch (mode % 3) {
  case 0:
    fuzz_timeout(s, in.len, in.p, in.len);
    break;
  case 1:
    fuzz_b64(s, in.len);
    break;
  default:
    fuzz_pct(s, in.len);
  }
  free(s);
  return 0;
}
