/* What the harnesses share: the libFuzzer entry point's prototype (the replay driver and
 * libFuzzer both call it), an assertion that holds in every build type, and a reader that
 * carves the fuzzer's input into parameters and split points. */
#ifndef SG_FUZZ_H
#define SG_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* An invariant: abort() (which libFuzzer records as a crash, with the input) when it fails.
 * Not assert(): a release build would drop it. */
#define FUZZ_CHECK(cond)                                                                           \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond);                 \
      abort();                                                                                     \
    }                                                                                              \
  } while (0)

/* The input read front to back; past its end every read gives 0. */
typedef struct {
  const uint8_t *p;
  size_t len;
} fuzz_in;

static inline uint8_t fuzz_u8(fuzz_in *in) {
  if (in->len == 0)
    return 0;
  in->len--;
  return *in->p++;
}

static inline uint16_t fuzz_u16(fuzz_in *in) {
  uint16_t hi = fuzz_u8(in);
  return (uint16_t)(hi << 8 | fuzz_u8(in));
}

/* The next |n| bytes (fewer at the end of the input) as a slice of the input. */
static inline const uint8_t *fuzz_bytes(fuzz_in *in, size_t n, size_t *got) {
  const uint8_t *p = in->p;
  if (n > in->len)
    n = in->len;
  in->p += n;
  in->len -= n;
  *got = n;
  return p;
}

/* A field prefixed by its one-byte length. */
static inline const uint8_t *fuzz_field(fuzz_in *in, size_t *got) {
  return fuzz_bytes(in, fuzz_u8(in), got);
}

/* A deterministic generator of split points (xorshift64), seeded from the input, so a
 * reproduced crash splits the input the same way. */
typedef struct {
  uint64_t s;
} fuzz_rng;

static inline void fuzz_rng_seed(fuzz_rng *r, const uint8_t *data, size_t len) {
  uint64_t h = 1469598103934665603ULL; /* FNV-1a */
  for (size_t i = 0; i < len; i++)
    h = (h ^ data[i]) * 1099511628211ULL;
  r->s = h | 1;
}

static inline uint64_t fuzz_rng_next(fuzz_rng *r) {
  r->s ^= r->s << 13;
  r->s ^= r->s >> 7;
  r->s ^= r->s << 17;
  return r->s;
}

/* The length of the next piece when |left| bytes remain: 0..|left|, mostly small so that
 * boundaries fall everywhere, sometimes all of it; 0-length pieces are fed too. */
static inline size_t fuzz_piece(fuzz_rng *r, size_t left) {
  uint64_t x = fuzz_rng_next(r);
  size_t n;
  switch (x & 3) {
  case 0:
    n = (size_t)(x >> 8) % 4;
    break;
  case 1:
    n = (size_t)(x >> 8) % 64;
    break;
  case 2:
    n = left;
    break;
  default:
    n = (size_t)(x >> 8) % (left + 1);
  }
  return n < left ? n : left;
}

/* A heap copy of exactly |len| bytes (one zero byte when |len| is 0), so that ASan reports a
 * read past the end of what the code under test was given. */
static inline void *fuzz_copy(const void *p, size_t len) {
  uint8_t *c = malloc(len ? len : 1);
  if (c == NULL)
    abort();
  c[0] = 0;
  if (len > 0)
    memcpy(c, p, len);
  return c;
}

/* A NUL-terminated heap copy of |len| bytes, for functions that take C strings. */
static inline char *fuzz_strndup(const uint8_t *p, size_t len) {
  char *s = malloc(len + 1);
  if (s == NULL)
    abort();
  memcpy(s, p, len);
  s[len] = '\0';
  return s;
}

/* A growing byte buffer for collected output. */
typedef struct {
  uint8_t *data;
  size_t len, cap;
} fuzz_buf;

static inline void fuzz_buf_add(fuzz_buf *b, const void *p, size_t n) {
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->len + n)
      cap *= 2;
    b->data = realloc(b->data, cap);
    if (b->data == NULL)
      abort();
    b->cap = cap;
  }
  if (n > 0)
    memcpy(b->data + b->len, p, n);
  b->len += n;
}

static inline int fuzz_buf_eq(const fuzz_buf *a, const fuzz_buf *b) {
  return a->len == b->len && (a->len == 0 || memcmp(a->data, b->data, a->len) == 0);
}

static inline void fuzz_buf_free(fuzz_buf *b) {
  free(b->data);
  b->data = NULL;
  b->len = b->cap = 0;
}

/* An output callback's sink: collects what a codec emits and, to check that a failing sink
 * stops it for good, fails with FUZZ_SINK_FAILED once |fail_after| bytes have come (0: never).
 * Codecs must not emit empty pieces. */
#define FUZZ_SINK_FAILED (-77)

typedef struct {
  fuzz_buf out;
  size_t fail_after;
} fuzz_sink;

static inline int fuzz_sink_emit(void *arg, const char *data, size_t len) {
  fuzz_sink *s = arg;
  FUZZ_CHECK(len > 0);
  fuzz_buf_add(&s->out, data, len);
  return s->fail_after && s->out.len >= s->fail_after ? FUZZ_SINK_FAILED : 0;
}

#endif
