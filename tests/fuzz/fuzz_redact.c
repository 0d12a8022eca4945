/* The redactor of echoed values (proxy/redact.h). The input gives up to 8 values (lengths 0
 * to 47, so some are too short to be looked for), then a stream in which the byte 0x01
 * followed by k stands for value k, so values, overlapping values and near-misses are easy to
 * reach. With the mode's low bit set, every value and stream byte is folded to 'a' or 'b':
 * values with long borders, the hard case for the matchers.
 *
 * Checked: the stream fed in one piece, in input-derived pieces, again after sg_redact_reset,
 * and through sg_redact_all gives exactly what a reference written here from the contract gives
 * (left to right, the longest value starting at each position, the first added among equals,
 * values under SG_REDACT_MIN_LEN ignored), with the same count and the same hits per value.
 * A sink that fails stops the stream for good after a prefix of that output. */
#include "fuzz.h"
#include "proxy/redact.h"

#define MAX_VALUES 8

typedef struct {
  uint8_t *bytes[MAX_VALUES];
  size_t len[MAX_VALUES];
  char token[MAX_VALUES][8];
  int active[MAX_VALUES]; /* sg_redact_add took it */
  size_t n;
} values;

static size_t ref_longest_at(const values *v, const uint8_t *p, size_t left, size_t *which) {
  size_t best = 0;
  for (size_t i = 0; i < v->n; i++)
    if (v->active[i] && v->len[i] > best && v->len[i] <= left &&
        memcmp(p, v->bytes[i], v->len[i]) == 0) {
      best = v->len[i];
      *which = i;
    }
  return best;
}

static void reference(const values *v, const uint8_t *in, size_t len, fuzz_buf *out,
                      size_t hits[MAX_VALUES]) {
  for (size_t i = 0; i < len;) {
    size_t which = 0, n = ref_longest_at(v, in + i, len - i, &which);
    if (n > 0) {
      fuzz_buf_add(out, v->token[which], strlen(v->token[which]));
      hits[which]++;
      i += n;
    } else {
      fuzz_buf_add(out, in + i, 1);
      i++;
    }
  }
}

typedef struct {
  fuzz_sink s; /* first: the redactor's emit callback is fuzz_sink_emit on the same pointer */
  size_t hits[MAX_VALUES];
  const values *v;
} sink;

static void on_hit(void *arg, void *tag) {
  sink *k = arg;
  size_t i = (size_t)(uintptr_t)tag;
  FUZZ_CHECK(i < k->v->n && k->v->active[i]);
  k->hits[i]++;
}

/* Streams |in| through |r| in pieces; returns the first error or 0. */
static int stream(sg_redactor *r, const uint8_t *in, size_t len, fuzz_rng *rng) {
  size_t off = 0;
  int rc = 0;
  do {
    size_t n = rng ? fuzz_piece(rng, len - off) : len - off;
    char *piece = fuzz_copy(in + off, n);
    rc = sg_redact_feed(r, piece, n);
    memset(piece, 0, n); /* nothing may point into a fed piece afterwards */
    free(piece);
    off += n;
  } while (off < len && rc == 0);
  if (rc == 0)
    rc = sg_redact_finish(r);
  if (rc != 0)
    FUZZ_CHECK(sg_redact_feed(r, "x", 1) == rc && sg_redact_finish(r) == rc);
  return rc;
}

static void check_sink(const sink *k, const fuzz_buf *ref, const size_t hits[MAX_VALUES]) {
  FUZZ_CHECK(fuzz_buf_eq(&k->s.out, ref));
  FUZZ_CHECK(memcmp(k->hits, hits, sizeof(k->hits)) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fuzz_in in = {data, size};
  uint8_t mode = fuzz_u8(&in);
  uint8_t fail = fuzz_u8(&in);
  int fold = mode & 1;
  values v;
  memset(&v, 0, sizeof(v));
  v.n = 1 + (mode >> 1) % MAX_VALUES;
  for (size_t i = 0; i < v.n; i++) {
    size_t got;
    const uint8_t *p = fuzz_bytes(&in, fuzz_u8(&in) % 48, &got);
    v.bytes[i] = malloc(got ? got : 1);
    for (size_t j = 0; j < got; j++)
      v.bytes[i][j] = fold ? (uint8_t)("ab"[p[j] & 1]) : p[j];
    v.len[i] = got;
    snprintf(v.token[i], sizeof(v.token[i]), "<T%zu>", i);
  }
  /* The stream, with 0x01 k expanded to value k. */
  fuzz_buf text = {0};
  for (size_t i = 0; i < in.len; i++) {
    if (in.p[i] == 0x01 && i + 1 < in.len) {
      size_t k = in.p[++i] % v.n;
      fuzz_buf_add(&text, v.bytes[k], v.len[k]);
    } else {
      uint8_t c = fold ? (uint8_t)("ab"[in.p[i] & 1]) : in.p[i];
      fuzz_buf_add(&text, &c, 1);
    }
  }

  sink k;
  memset(&k, 0, sizeof(k));
  k.v = &v;
  sg_redactor r;
  sg_redact_init(&r, fuzz_sink_emit, &k);
  sg_redact_set_hit(&r, on_hit, &k);
  for (size_t i = 0; i < v.n; i++) {
    int rc = sg_redact_add(&r, (const char *)v.bytes[i], v.len[i], v.token[i], strlen(v.token[i]),
                           (void *)(uintptr_t)i);
    FUZZ_CHECK(rc == (v.len[i] < SG_REDACT_MIN_LEN ? SG_REDACT_SHORT : 0));
    v.active[i] = rc == 0;
  }
  int any = 0;
  for (size_t i = 0; i < v.n; i++)
    any |= v.active[i];
  FUZZ_CHECK(!!sg_redact_active(&r) == any);

  fuzz_buf ref = {0};
  size_t hits[MAX_VALUES] = {0}, total = 0;
  reference(&v, text.data ? text.data : (const uint8_t *)"", text.len, &ref, hits);
  for (size_t i = 0; i < MAX_VALUES; i++)
    total += hits[i];
  fuzz_rng rng;
  fuzz_rng_seed(&rng, data, size);

  /* One piece. */
  const uint8_t *tp = text.len ? text.data : (const uint8_t *)"";
  FUZZ_CHECK(stream(&r, tp, text.len, NULL) == 0);
  check_sink(&k, &ref, hits);
  FUZZ_CHECK(sg_redact_replaced(&r) == total);
  /* No value may be added once a stream has begun. */
  if (text.len > 0)
    FUZZ_CHECK(sg_redact_add(&r, "abcdefghij", 10, "t", 1, NULL) == SG_REDACT_ERR_STARTED);

  /* Pieces, after a reset. */
  sg_redact_reset(&r);
  fuzz_buf_free(&k.s.out);
  memset(k.hits, 0, sizeof(k.hits));
  FUZZ_CHECK(stream(&r, tp, text.len, &rng) == 0);
  check_sink(&k, &ref, hits);
  FUZZ_CHECK(sg_redact_replaced(&r) == total);

  /* One go. */
  fuzz_buf_free(&k.s.out);
  memset(k.hits, 0, sizeof(k.hits));
  size_t all_len, all_count;
  char *all =
      sg_redact_all(&r, text.len ? (const char *)text.data : "", text.len, &all_len, &all_count);
  FUZZ_CHECK(all[all_len] == '\0' && all_count == total);
  FUZZ_CHECK(all_len == ref.len && (ref.len == 0 || memcmp(all, ref.data, ref.len) == 0));
  FUZZ_CHECK(memcmp(k.hits, hits, sizeof(hits)) == 0);
  free(all);

  /* A failing sink. */
  if (fail != 0 && ref.len > 0) {
    sg_redact_reset(&r);
    memset(k.hits, 0, sizeof(k.hits));
    k.s.fail_after = 1 + fail % ref.len;
    FUZZ_CHECK(stream(&r, tp, text.len, &rng) == FUZZ_SINK_FAILED);
    FUZZ_CHECK(k.s.out.len <= ref.len && memcmp(k.s.out.data, ref.data, k.s.out.len) == 0);
  }

  sg_redact_free(&r);
  fuzz_buf_free(&k.s.out);
  fuzz_buf_free(&ref);
  fuzz_buf_free(&text);
  for (size_t i = 0; i < v.n; i++)
    free(v.bytes[i]);
  return 0;
}
