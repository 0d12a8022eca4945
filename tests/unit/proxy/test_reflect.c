/* The streaming replacer of echoed values: identity without values, values split at every feed
 * boundary, the longest value at a position and the leftmost of overlapping ones, adjacent
 * hits, the tail emitted at finish, NUL bytes, the length and count limits, errors from the
 * sink, the hit callback, one-shot header values, reuse after a reset, and a randomized
 * comparison with a naive reference. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/reflect.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* A value to look for and the token that takes its place; |len| 0 means strlen(value). */
typedef struct {
  const char *value, *token;
  size_t len;
} needle;

static size_t needle_len(const needle *n) {
  return n->len != 0 ? n->len : strlen(n->value);
}

/* The sink: collects the output and counts the calls. */
struct sink {
  char buf[1 << 16];
  size_t len;
  int calls;
  int fail_at; /* the call that fails with -7, or 0 */
};

static int sink_emit(void *arg, const char *data, size_t len) {
  struct sink *k = arg;
  cr_assert_gt(len, 0, "emit called with no bytes");
  k->calls++;
  if (k->fail_at != 0 && k->calls >= k->fail_at)
    return -7;
  cr_assert_leq(k->len + len, sizeof(k->buf));
  memcpy(k->buf + k->len, data, len);
  k->len += len;
  return 0;
}

/* The hit callback: records the tags in order. */
struct hits {
  void *tags[1024];
  size_t n;
};

static void record_hit(void *arg, void *tag) {
  struct hits *h = arg;
  cr_assert_lt(h->n, ARRAY_LEN(h->tags));
  h->tags[h->n++] = tag;
}

/* Sets up |r| over |k| and |h| (may be NULL) looking for |n| needles, tagged by their address. */
static void arm(sg_reflector *r, struct sink *k, struct hits *h, const needle *v, size_t n) {
  sg_reflect_init(r, sink_emit, k, h != NULL ? record_hit : NULL, h);
  for (size_t i = 0; i < n; i++)
    cr_assert_eq(sg_reflect_add(r, v[i].value, needle_len(&v[i]), v[i].token, strlen(v[i].token),
                                (void *)&v[i]),
                 0, "value %zu", i);
}

/* Feeds |in| in the pieces |cuts| (offsets, increasing, |ncuts| of them) and finishes. */
static void reflect_cut(const needle *v, size_t nv, struct sink *k, struct hits *h, const char *in,
                        size_t len, const size_t *cuts, size_t ncuts) {
  sg_reflector r;
  arm(&r, k, h, v, nv);
  size_t at = 0;
  for (size_t i = 0; i <= ncuts; i++) {
    size_t end = i < ncuts ? cuts[i] : len;
    cr_assert_eq(sg_reflect_feed(&r, in + at, end - at), 0);
    cr_assert(r.n == 0 || r.len < r.longest, "at most the longest value less one byte is held");
    at = end;
  }
  cr_assert_eq(sg_reflect_finish(&r), 0);
  sg_reflect_reset(&r);
}

static void assert_output(const struct sink *k, const char *want, size_t wlen, const char *how,
                          size_t at) {
  cr_assert_eq(k->len, wlen, "%s %zu: length %zu, want %zu", how, at, k->len, wlen);
  cr_assert(memcmp(k->buf, want, wlen) == 0, "%s %zu: %.*s", how, at, (int)k->len, k->buf);
}

/* |in| fed whole, in pieces of every size from 1 to its length, and split in two at every
 * point (the second piece empty at the end): always |want|, with the same hits. */
static void expect_every_chunking(const needle *v, size_t nv, const char *in, size_t len,
                                  const char *want, size_t wlen) {
  struct sink *k = calloc(1, sizeof(*k));
  struct hits *h = calloc(1, sizeof(*h)), *first = calloc(1, sizeof(*first));
  size_t *cuts = malloc((len + 1) * sizeof(*cuts));
  reflect_cut(v, nv, k, first, in, len, NULL, 0);
  assert_output(k, want, wlen, "whole", 0);
  for (size_t size = 1; size <= len; size++) {
    size_t ncuts = 0;
    for (size_t at = size; at < len; at += size)
      cuts[ncuts++] = at;
    k->len = 0;
    h->n = 0;
    reflect_cut(v, nv, k, h, in, len, cuts, ncuts);
    assert_output(k, want, wlen, "pieces of", size);
    cr_assert_eq(h->n, first->n, "pieces of %zu", size);
    cr_assert(memcmp(h->tags, first->tags, h->n * sizeof(void *)) == 0, "pieces of %zu", size);
  }
  /* From 1: an empty first feed has a test of its own (empty_feed_before_any_byte_...). */
  for (size_t cut = 1; cut <= len; cut++) {
    k->len = 0;
    reflect_cut(v, nv, k, NULL, in, len, &cut, 1);
    assert_output(k, want, wlen, "split at", cut);
  }
  free(cuts);
  free(first);
  free(h);
  free(k);
}

static void expect_str(const needle *v, size_t nv, const char *in, const char *want) {
  expect_every_chunking(v, nv, in, strlen(in), want, strlen(want));
}

/* ---- Values and matching --------------------------------------------------------------- */

static const needle key = {"sk-live-123456", "<tok-key>", 0};
static const needle pass = {"hunter2-hunter2", "<p>", 0};

Test(reflect, without_values_the_output_is_the_input_as_fed) {
  struct sink k = {0};
  sg_reflector r;
  sg_reflect_init(&r, sink_emit, &k, NULL, NULL);
  cr_assert_not(sg_reflect_active(&r));
  cr_assert_eq(sg_reflect_feed(&r, "sk-live-", 8), 0);
  cr_assert_eq(k.len, 8, "nothing is held back");
  cr_assert_eq(sg_reflect_feed(&r, "123456 and more", 15), 0);
  cr_assert_eq(sg_reflect_finish(&r), 0);
  assert_output(&k, "sk-live-123456 and more", 23, "identity", 0);
  cr_assert_eq(k.calls, 2);
  sg_reflect_reset(&r);
  expect_str(NULL, 0, "{\"key\": \"sk-live-123456\"}", "{\"key\": \"sk-live-123456\"}");
}

Test(reflect, value_in_one_feed_is_replaced_by_its_token) {
  struct sink k = {0};
  const char *in = "{\"echo\": \"sk-live-123456\"}";
  reflect_cut(&key, 1, &k, NULL, in, strlen(in), NULL, 0);
  assert_output(&k, "{\"echo\": \"<tok-key>\"}", 21, "one feed", 0);
  struct sink alone = {0};
  reflect_cut(&key, 1, &alone, NULL, "sk-live-123456", 14, NULL, 0);
  assert_output(&alone, "<tok-key>", 9, "the value alone", 0);
}

Test(reflect, value_split_at_every_feed_boundary_is_replaced) {
  expect_str(&key, 1, "x sk-live-123456 y", "x <tok-key> y");
  expect_str(&key, 1, "sk-live-123456", "<tok-key>");
  /* Near misses around it: a cut-off start, the value less its last byte. */
  expect_str(&key, 1, "sk-livesk-live-12345sk-live-123456sk-", "sk-livesk-live-12345<tok-key>sk-");
}

Test(reflect, text_that_only_starts_like_a_value_is_emitted_unchanged) {
  expect_str(&key, 1, "sk-live-12345", "sk-live-12345");
  expect_str(&key, 1, "sssssk-live-12345X", "sssssk-live-12345X");
}

Test(reflect, longest_value_starting_at_a_position_wins) {
  const needle v[] = {{"secret-value", "<short>", 0}, {"secret-value-long", "<long>", 0}};
  const needle w[] = {v[1], v[0]};
  const char *in = "a secret-value-long b secret-value-lon c";
  const char *want = "a <long> b <short>-lon c";
  expect_str(v, 2, in, want);
  expect_str(w, 2, in, want); /* whatever the order they were added in */
}

Test(reflect, leftmost_of_overlapping_values_wins_and_the_scan_goes_on_after_it) {
  const needle v[] = {{"abcdefgh12", "<A>", 0}, {"gh12345678", "<B>", 0}};
  /* B starts inside A: A is replaced, B's rest is plain text. */
  expect_str(v, 2, "abcdefgh12345678", "<A>345678");
  /* After A, B is found again where it no longer overlaps. */
  expect_str(v, 2, "abcdefgh12gh12345678", "<A><B>");
  /* B, then A right after it. */
  expect_str(v, 2, "gh12345678abcdefgh12", "<B><A>");
  const needle w[] = {v[1], v[0]};
  expect_str(w, 2, "abcdefgh12345678", "<A>345678");
}

Test(reflect, adjacent_values_are_each_replaced) {
  const needle v[] = {key, pass};
  expect_str(v, 2, "sk-live-123456sk-live-123456", "<tok-key><tok-key>");
  expect_str(v, 2, "sk-live-123456hunter2-hunter2sk-live-123456", "<tok-key><p><tok-key>");
  const needle repeat[] = {{"aaaaaaaa", "<8a>", 0}};
  expect_str(repeat, 1, "aaaaaaaaaaaaaaaaaaa", "<8a><8a>aaa");
}

Test(reflect, value_at_the_very_end_is_emitted_by_finish) {
  const needle v[] = {{"12345678", "<8>", 0}, {"1234567890abcdef", "<16>", 0}};
  struct sink k = {0};
  sg_reflector r;
  arm(&r, &k, NULL, v, 2);
  cr_assert_eq(sg_reflect_feed(&r, "xx12345678", 10), 0);
  cr_assert_eq(k.len, 0, "a longer value could still start in what was fed");
  cr_assert_eq(sg_reflect_finish(&r), 0);
  assert_output(&k, "xx<8>", 5, "finish", 0);
  sg_reflect_reset(&r);
  expect_str(v, 2, "xx12345678", "xx<8>");
  expect_str(v, 2, "xx1234567890abcde", "xx<8>90abcde");
}

Test(reflect, nul_bytes_inside_values_are_matched) {
  static const char value[] = "ab\0cd\0ef\0";
  const needle v[] = {{value, "<nul>", sizeof(value) - 1}};
  static const char in[] = "\0ab\0cd\0ef\0\0ab\0cd\0eX\0";
  static const char want[] = "\0<nul>\0ab\0cd\0eX\0";
  expect_every_chunking(v, 1, in, sizeof(in) - 1, want, sizeof(want) - 1);
}

Test(reflect, value_of_any_byte_is_matched) {
  static const char value[] = "\xff\x80\x01\x7f\xfe\xc3\xa9\x00";
  const needle v[] = {{value, "<bin>", 8}};
  static const char in[] = "\xff\xff\x80\x01\x7f\xfe\xc3\xa9\x00\xff";
  expect_every_chunking(v, 1, in, sizeof(in) - 1, "\xff<bin>\xff", 7);
}

/* Empty feeds are no-ops wherever they come, also before the first byte, when the reflector
 * has no buffer yet. Under UBSan with halt_on_error (tests/run.sh) this fails while
 * sg_reflect_feed copies 0 bytes to r->buf + r->len with r->buf still NULL. */
Test(reflect, empty_feed_before_any_byte_is_a_no_op) {
  struct sink k = {0};
  sg_reflector r;
  arm(&r, &k, NULL, &key, 1);
  cr_assert_eq(sg_reflect_feed(&r, "", 0), 0);
  cr_assert_eq(sg_reflect_feed(&r, "sk-live-123456", 14), 0);
  cr_assert_eq(sg_reflect_feed(&r, "", 0), 0);
  cr_assert_eq(sg_reflect_finish(&r), 0);
  assert_output(&k, "<tok-key>", 9, "empty feeds", 0);
  cr_assert_eq(k.calls, 1);
  sg_reflect_reset(&r);
}

/* An empty header value (as "X-Empty:" gives): the same path as an empty first feed. */
Test(reflect, reflect_all_of_an_empty_value_is_an_empty_string) {
  struct hits h = {0};
  struct sink k = {0};
  sg_reflector r;
  arm(&r, &k, &h, &key, 1);
  size_t n = 99;
  char *out = sg_reflect_all(&r, "", 0, &n);
  cr_assert_eq(n, 0);
  cr_assert_str_eq(out, "");
  free(out);
  cr_assert_eq(h.n, 0);
  sg_reflect_reset(&r);
}

/* ---- Limits ------------------------------------------------------------------------------ */

Test(reflect, value_shorter_than_min_len_is_not_added_nor_replaced) {
  struct sink k = {0};
  struct hits h = {0};
  sg_reflector r;
  sg_reflect_init(&r, sink_emit, &k, record_hit, &h);
  cr_assert_eq(SG_REFLECT_MIN_LEN, 8);
  cr_assert_eq(sg_reflect_add(&r, "1234567", 7, "<7>", 3, NULL), 1);
  cr_assert_eq(sg_reflect_add(&r, "x", 1, "<1>", 3, NULL), 1);
  cr_assert_eq(sg_reflect_add(&r, "", 0, "<0>", 3, NULL), 1);
  cr_assert_not(sg_reflect_active(&r));
  cr_assert_eq(sg_reflect_feed(&r, "a 1234567 x b", 13), 0);
  cr_assert_eq(sg_reflect_finish(&r), 0);
  assert_output(&k, "a 1234567 x b", 13, "short values", 0);
  cr_assert_eq(h.n, 0);
  size_t n;
  char *out = sg_reflect_all(&r, "1234567", 7, &n);
  cr_assert_str_eq(out, "1234567");
  free(out);
  sg_reflect_reset(&r);
}

Test(reflect, value_of_min_len_is_added_and_replaced) {
  const needle v[] = {{"12345678", "<8>", 0}};
  expect_str(v, 1, "a 12345678 b 1234567", "a <8> b 1234567");
}

Test(reflect, one_value_more_than_max_values_is_refused) {
  static char values[SG_REFLECT_MAX_VALUES + 1][16], tokens[SG_REFLECT_MAX_VALUES + 1][8];
  struct sink k = {0};
  sg_reflector r;
  sg_reflect_init(&r, sink_emit, &k, NULL, NULL);
  for (int i = 0; i <= SG_REFLECT_MAX_VALUES; i++) {
    snprintf(values[i], sizeof(values[i]), "value-%04d", i);
    snprintf(tokens[i], sizeof(tokens[i]), "<%d>", i);
    int want = i < SG_REFLECT_MAX_VALUES ? 0 : -1;
    cr_assert_eq(sg_reflect_add(&r, values[i], 10, tokens[i], strlen(tokens[i]), NULL), want,
                 "value %d", i);
  }
  cr_assert_eq(sg_reflect_feed(&r, "value-0000 value-0031 value-0032", 32), 0);
  cr_assert_eq(sg_reflect_finish(&r), 0);
  assert_output(&k, "<0> <31> value-0032", 19, "the refused value", 0);
  sg_reflect_reset(&r);
}

/* ---- Errors and callbacks ---------------------------------------------------------------- */

Test(reflect, emit_error_stops_the_stream_and_every_later_call_returns_it) {
  for (int fail_at = 1; fail_at <= 3; fail_at++) {
    struct sink k = {.fail_at = fail_at};
    struct hits h = {0};
    sg_reflector r;
    arm(&r, &k, &h, &key, 1);
    /* The feed emits "x ", the token and " y z 12345678901", and holds the last 13 bytes. */
    const char *in = "x sk-live-123456 y z 123456789012345sk-l";
    cr_assert_eq(sg_reflect_feed(&r, in, strlen(in)), -7, "fail at %d", fail_at);
    int calls = k.calls;
    size_t hits = h.n;
    cr_assert_eq(sg_reflect_feed(&r, "ive-123456", 10), -7, "the error sticks");
    cr_assert_eq(sg_reflect_finish(&r), -7);
    cr_assert_eq(k.calls, calls, "no emit after the error");
    cr_assert_eq(h.n, hits, "no hit after the error");
    cr_assert_eq(h.n, fail_at >= 3 ? 1 : 0, "a hit only once its token went out");
    sg_reflect_reset(&r);
  }
}

Test(reflect, emit_error_at_finish_is_returned) {
  struct sink k = {.fail_at = 1};
  sg_reflector r;
  arm(&r, &k, NULL, &key, 1);
  cr_assert_eq(sg_reflect_feed(&r, "sk-live", 7), 0);
  cr_assert_eq(k.calls, 0);
  cr_assert_eq(sg_reflect_finish(&r), -7);
  cr_assert_eq(sg_reflect_finish(&r), -7);
  sg_reflect_reset(&r);
}

Test(reflect, emit_error_without_values_sticks_too) {
  struct sink k = {.fail_at = 1};
  sg_reflector r;
  sg_reflect_init(&r, sink_emit, &k, NULL, NULL);
  cr_assert_eq(sg_reflect_feed(&r, "abc", 3), -7);
  cr_assert_eq(sg_reflect_feed(&r, "def", 3), -7);
  cr_assert_eq(sg_reflect_finish(&r), -7);
  cr_assert_eq(k.calls, 1);
}

Test(reflect, hit_is_told_once_per_replacement_with_its_tag) {
  const needle v[] = {key, pass};
  struct sink k = {0};
  struct hits h = {0};
  const char *in = "sk-live-123456 hunter2-hunter2, sk-live-123456sk-live-12345";
  reflect_cut(v, 2, &k, &h, in, strlen(in), NULL, 0);
  cr_assert_eq(h.n, 3);
  cr_assert_eq(h.tags[0], (void *)&v[0]);
  cr_assert_eq(h.tags[1], (void *)&v[1]);
  cr_assert_eq(h.tags[2], (void *)&v[0]);
  struct hits none = {0};
  k.len = 0;
  reflect_cut(v, 2, &k, &none, "nothing echoed", 14, NULL, 0);
  cr_assert_eq(none.n, 0);
}

/* ---- One-shot header values, reset ------------------------------------------------------ */

Test(reflect, reflect_all_replaces_a_header_value_and_tells_the_hit) {
  const needle v[] = {key, pass};
  struct sink k = {0};
  struct hits h = {0};
  sg_reflector r;
  arm(&r, &k, &h, v, 2);
  size_t n;
  char *out = sg_reflect_all(&r, "Bearer sk-live-123456", 21, &n);
  cr_assert_eq(n, strlen("Bearer <tok-key>"));
  cr_assert_str_eq(out, "Bearer <tok-key>", "NUL-terminated");
  free(out);
  cr_assert_eq(h.n, 1);
  cr_assert_eq(h.tags[0], (void *)&v[0]);
  cr_assert_eq(k.calls, 0, "the stream's sink is not used");
  /* A value at the very end of the header, without a finish from the caller. */
  h.n = 0;
  out = sg_reflect_all(&r, "x-hunter2-hunter2", 17, &n);
  cr_assert_str_eq(out, "x-<p>");
  free(out);
  cr_assert_eq(h.n, 1);
  cr_assert_eq(h.tags[0], (void *)&v[1]);
  sg_reflect_reset(&r);
}

Test(reflect, reflect_all_without_a_value_returns_a_copy_and_tells_nothing) {
  struct hits h = {0};
  struct sink k = {0};
  sg_reflector r;
  arm(&r, &k, &h, &key, 1);
  size_t n;
  char *out = sg_reflect_all(&r, "text/plain; sk-live", 19, &n);
  cr_assert_eq(n, 19);
  cr_assert_str_eq(out, "text/plain; sk-live");
  free(out);
  cr_assert_eq(h.n, 0);
  sg_reflect_reset(&r);
}

Test(reflect, reflect_all_leaves_the_stream_where_it_was) {
  struct sink k = {0};
  sg_reflector r;
  arm(&r, &k, NULL, &key, 1);
  cr_assert_eq(sg_reflect_feed(&r, "a sk-live-", 10), 0);
  size_t n;
  char *out = sg_reflect_all(&r, "sk-live-123456", 14, &n);
  cr_assert_str_eq(out, "<tok-key>");
  free(out);
  cr_assert_eq(sg_reflect_feed(&r, "123456", 6), 0);
  cr_assert_eq(sg_reflect_finish(&r), 0);
  assert_output(&k, "a <tok-key>", 11, "stream around reflect_all", 0);
  sg_reflect_reset(&r);
}

Test(reflect, reset_forgets_values_and_held_bytes_and_the_reflector_can_be_reused) {
  struct sink k = {0};
  struct hits h = {0};
  sg_reflector r;
  arm(&r, &k, &h, &key, 1);
  cr_assert_eq(sg_reflect_feed(&r, "held sk-live-12", 15), 0);
  cr_assert(sg_reflect_active(&r));
  sg_reflect_reset(&r);
  cr_assert_not(sg_reflect_active(&r));
  cr_assert_null(r.buf);
  cr_assert_eq(r.len, 0);
  /* The held bytes are gone: the next stream starts clean. */
  size_t before = k.len;
  cr_assert_eq(sg_reflect_feed(&r, "3456", 4), 0);
  cr_assert_eq(sg_reflect_finish(&r), 0);
  cr_assert_eq(k.len - before, 4);
  cr_assert(memcmp(k.buf + before, "3456", 4) == 0);
  /* Set up again with another value. */
  sg_reflect_init(&r, sink_emit, &k, record_hit, &h);
  cr_assert_eq(sg_reflect_add(&r, pass.value, strlen(pass.value), pass.token, 3, (void *)&pass), 0);
  k.len = 0;
  cr_assert_eq(sg_reflect_feed(&r, "sk-live-123456 hunter2-", 23), 0);
  cr_assert_eq(sg_reflect_feed(&r, "hunter2", 7), 0);
  cr_assert_eq(sg_reflect_finish(&r), 0);
  assert_output(&k, "sk-live-123456 <p>", 18, "reused", 0);
  cr_assert_eq(h.n, 1);
  cr_assert_eq(h.tags[0], (void *)&pass);
  sg_reflect_reset(&r);
  sg_reflect_reset(&r); /* twice is harmless */
}

/* ---- Randomized comparison --------------------------------------------------------------- */

#define ALPHABET "abc"

/* The reference: at every position in turn, the longest value that fits there, else the byte. */
static size_t reference(const needle *v, size_t nv, const char *in, size_t len, char *out,
                        void **tags, size_t *ntags) {
  size_t o = 0;
  *ntags = 0;
  for (size_t i = 0; i < len;) {
    const needle *best = NULL;
    for (size_t k = 0; k < nv; k++) {
      size_t l = needle_len(&v[k]);
      if (l <= len - i && memcmp(in + i, v[k].value, l) == 0 &&
          (best == NULL || l > needle_len(best)))
        best = &v[k];
    }
    if (best == NULL) {
      out[o++] = in[i++];
      continue;
    }
    memcpy(out + o, best->token, strlen(best->token));
    o += strlen(best->token);
    tags[(*ntags)++] = (void *)best;
    i += needle_len(best);
  }
  return o;
}

static void random_text(char *p, size_t n) {
  for (size_t i = 0; i < n; i++)
    p[i] = ALPHABET[rand() % (int)(sizeof(ALPHABET) - 1)];
}

/* Appends a random fragment: a whole value, a value's start or end, or noise. */
static size_t add_fragment(const needle *v, size_t nv, char *buf, size_t at) {
  const needle *n = &v[(size_t)rand() % nv];
  size_t l = needle_len(n), k;
  switch (rand() % 5) {
  case 0:
  case 1:
    memcpy(buf + at, n->value, l);
    return l;
  case 2:
    k = 1 + (size_t)rand() % (l - 1);
    memcpy(buf + at, n->value, k);
    return k;
  case 3:
    k = 1 + (size_t)rand() % (l - 1);
    memcpy(buf + at, n->value + l - k, k);
    return k;
  default:
    k = (size_t)rand() % 12;
    random_text(buf + at, k);
    return k;
  }
}

Test(reflect, random_streams_match_the_reference_whatever_the_chunking) {
  static char values[4][21], in[4096], want[1 << 15];
  static const char *const tokens[4] = {"<0>", "<<1>>", "[2]", "{three}"};
  static size_t cuts[4096];
  static void *want_tags[1024];
  struct sink *k = calloc(1, sizeof(*k));
  struct hits *h = calloc(1, sizeof(*h));
  srand(20240612);
  for (int iter = 0; iter < 2000; iter++) {
    needle v[4];
    size_t nv = 2 + (size_t)rand() % 3;
    for (size_t i = 0; i < nv; i++) {
      size_t l = 8 + (size_t)rand() % 13;
      random_text(values[i], l);
      /* Often a value shares a start with another, so that the longest must win. */
      if (i > 0 && rand() % 3 == 0) {
        size_t shared = strlen(values[0]) < l ? strlen(values[0]) : l;
        memcpy(values[i], values[0], (size_t)rand() % (shared + 1));
      }
      values[i][l] = '\0';
      v[i] = (needle){values[i], tokens[i], l};
    }
    size_t len = 0, nfrag = (size_t)rand() % 40;
    for (size_t f = 0; f < nfrag; f++)
      len += add_fragment(v, nv, in, len);
    if (len == 0)
      in[len++] = 'a'; /* an empty stream has a test of its own */
    size_t nwant, wlen = reference(v, nv, in, len, want, want_tags, &nwant);
    /* Random chunk sizes, empty feeds included; small ones most of the time. */
    size_t ncuts = 0, at = 0;
    for (;;) {
      size_t step = rand() % 4 == 0 ? (size_t)rand() % 60 : (size_t)rand() % 6;
      if (ncuts == 0 && step == 0)
        step = 1; /* an empty first feed has a test of its own */
      if (at + step >= len)
        break;
      at += step;
      cuts[ncuts++] = at;
    }
    k->len = 0;
    h->n = 0;
    reflect_cut(v, nv, k, h, in, len, cuts, ncuts);
    assert_output(k, want, wlen, "iteration", (size_t)iter);
    cr_assert_eq(h->n, nwant, "iteration %d", iter);
    cr_assert(memcmp(h->tags, want_tags, nwant * sizeof(void *)) == 0, "iteration %d", iter);
    /* The one-shot form gives the same bytes. */
    sg_reflector r;
    arm(&r, k, NULL, v, nv);
    size_t n;
    char *out = sg_reflect_all(&r, in, len, &n);
    cr_assert_eq(n, wlen, "iteration %d", iter);
    cr_assert(memcmp(out, want, wlen) == 0, "iteration %d", iter);
    free(out);
    sg_reflect_reset(&r);
  }
  free(h);
  free(k);
}
