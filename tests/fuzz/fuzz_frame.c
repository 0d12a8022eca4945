/* gRPC message reassembly (rpc/frame.h). The input is a byte stream of length-prefixed
 * messages; it is decoded three ways and the results must agree:
 *   - by a reference decoder written here from PROTOCOL-HTTP2.md,
 *   - fed to sg_frame_decoder in one piece,
 *   - fed in pieces split at points derived from the input (empty pieces included).
 * Each must yield the same messages (flag and bytes), the same error, and the same verdict from
 * sg_frame_decoder_finish. A callback that stops at the k-th message must stop the decoder
 * for good. The first input bytes choose max_len and k. */
#include "fuzz.h"
#include "rpc/frame.h"

typedef struct {
  fuzz_buf bytes; /* each message as flag, 4-byte length, body: re-framed */
  size_t count;
  size_t stop_at; /* stop at this message (1-based), 0: never */
} collected;

static int collect(void *ud, int compressed, const uint8_t *msg, size_t len) {
  collected *c = ud;
  uint8_t hdr[SG_FRAME_HEADER_LEN];
  FUZZ_CHECK(compressed == 0 || compressed == 1);
  FUZZ_CHECK(len <= UINT32_MAX);
  sg_frame_header_write(hdr, compressed, (uint32_t)len);
  fuzz_buf_add(&c->bytes, hdr, sizeof(hdr));
  fuzz_buf_add(&c->bytes, msg, len);
  c->count++;
  return c->count == c->stop_at ? SG_FRAME_ERR_STOPPED : 0;
}

typedef struct {
  int rc;     /* the first error, or 0 */
  int finish; /* sg_frame_decoder_finish after the last feed, when no error */
} outcome;

/* The reference: walks the stream message by message. */
static outcome reference(const uint8_t *p, size_t len, size_t max_len, collected *c) {
  outcome o = {0, 0};
  size_t i = 0;
  while (i < len) {
    if (len - i < SG_FRAME_HEADER_LEN) {
      /* The flag is judged with the whole header: a cut header is truncation. */
      o.finish = SG_FRAME_ERR_TRUNCATED;
      return o;
    }
    if (p[i] > 1) {
      o.rc = SG_FRAME_ERR_BAD_FLAG;
      return o;
    }
    uint32_t n =
        (uint32_t)p[i + 1] << 24 | (uint32_t)p[i + 2] << 16 | (uint32_t)p[i + 3] << 8 | p[i + 4];
    if (n > max_len) {
      o.rc = SG_FRAME_ERR_TOO_LARGE;
      return o;
    }
    if (len - i - SG_FRAME_HEADER_LEN < n) {
      o.finish = SG_FRAME_ERR_TRUNCATED;
      return o;
    }
    if (collect(c, p[i], p + i + SG_FRAME_HEADER_LEN, n) != 0) {
      o.rc = SG_FRAME_ERR_STOPPED;
      return o;
    }
    i += SG_FRAME_HEADER_LEN + n;
  }
  return o;
}

static outcome decode(const uint8_t *p, size_t len, size_t max_len, fuzz_rng *split, collected *c) {
  sg_frame_decoder d;
  sg_frame_decoder_init(&d, max_len);
  outcome o = {0, 0};
  size_t off = 0;
  do {
    size_t n = split ? fuzz_piece(split, len - off) : len - off;
    /* A copy of exactly the piece, so ASan catches a read past it. */
    uint8_t *piece = fuzz_copy(p + off, n);
    int rc = sg_frame_decoder_feed(&d, piece, n, collect, c);
    free(piece);
    off += n;
    if (rc != 0) {
      o.rc = rc;
      /* A failed decoder accepts nothing more. */
      FUZZ_CHECK(sg_frame_decoder_feed(&d, (const uint8_t *)"\0\0\0\0\0", 5, collect, c) ==
                 SG_FRAME_ERR_BAD_FLAG);
      break;
    }
    /* The buffer never holds more than one message, whatever the peer declares. */
    FUZZ_CHECK(d.buf_cap <= max_len);
    FUZZ_CHECK(d.buf_len <= d.declared_len);
  } while (off < len);
  if (o.rc == 0)
    o.finish = sg_frame_decoder_finish(&d);
  sg_frame_decoder_free(&d);
  return o;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fuzz_in in = {data, size};
  /* max_len from a small range so declared lengths are both under and over it. */
  size_t max_len = fuzz_u16(&in);
  size_t stop_at = fuzz_u8(&in) % 8;
  const uint8_t *stream = in.p;
  size_t len = in.len;

  collected ref = {.stop_at = stop_at}, whole = {.stop_at = stop_at}, split = {.stop_at = stop_at};
  outcome r = reference(stream, len, max_len, &ref);
  outcome w = decode(stream, len, max_len, NULL, &whole);
  fuzz_rng rng;
  fuzz_rng_seed(&rng, data, size);
  outcome s = decode(stream, len, max_len, &rng, &split);

  FUZZ_CHECK(w.rc == r.rc && w.finish == r.finish);
  FUZZ_CHECK(s.rc == r.rc && s.finish == r.finish);
  FUZZ_CHECK(whole.count == ref.count && fuzz_buf_eq(&whole.bytes, &ref.bytes));
  FUZZ_CHECK(split.count == ref.count && fuzz_buf_eq(&split.bytes, &ref.bytes));
  /* Without errors, re-framing what was decoded gives back the stream. */
  if (r.rc == 0 && r.finish == 0)
    FUZZ_CHECK(ref.bytes.len == len && (len == 0 || memcmp(ref.bytes.data, stream, len) == 0));

  fuzz_buf_free(&ref.bytes);
  fuzz_buf_free(&whole.bytes);
  fuzz_buf_free(&split.bytes);
  return 0;
}
