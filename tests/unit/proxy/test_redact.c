/* The redactor of echoed values: replacement of each value by its token, values split at every
 * feed boundary, prefix and overlapping values (leftmost, then longest), adjacent values, the
 * held-back tail at end of stream, NUL bytes, short values, errors from the sink, the report of
 * each replacement, the zeroing of held bytes, bounded work on adversarial input, and a
 * randomized comparison with a position-by-position reference. */
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/mem.h"
#include "proxy/redact.h"
#include "service/validate.h"

/* A value to look for and its token; |len| counts NUL bytes in the value. */
struct val {
  const char *value;
  size_t len;
  const char *token;
};

#define VAL(v, t)                                                                                  \
  { v, sizeof(v) - 1, t }

/* The sink: collects the output, counts the calls and, through the tags, the hits. */
struct sink {
  char buf[1 << 16];
  size_t len;
  int calls;
  int fail_at; /* the call that fails with -7, or 0 */
  int hits[SG_REDACT_MAX_VALUES];
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

/* The tag of each value is its hit counter in the sink. */
static void count_hit(void *arg, void *tag) {
  (void)arg;
  (*(int *)tag)++;
}

static void setup(sg_redactor *r, struct sink *k, const struct val *vals, size_t n) {
  sg_redact_init(r, sink_emit, k);
  sg_redact_set_hit(r, count_hit, NULL);
  for (size_t i = 0; i < n; i++)
    cr_assert_eq(sg_redact_add(r, vals[i].value, vals[i].len, vals[i].token, strlen(vals[i].token),
                               &k->hits[i]),
                 0);
}

static size_t longest(const struct val *vals, size_t n) {
  size_t l = 0;
  for (size_t i = 0; i < n; i++)
    if (vals[i].len > l)
      l = vals[i].len;
  return l;
}

/* Feeds |in| in the pieces |cuts| (offsets, increasing, |ncuts| of them) into a fresh |k|;
 * returns how many values were replaced. */
static size_t redact_cut(struct sink *k, const struct val *vals, size_t n, const char *in,
                         size_t len, const size_t *cuts, size_t ncuts) {
  sg_redactor r;
  memset(k, 0, sizeof(*k));
  setup(&r, k, vals, n);
  size_t at = 0, hold = longest(vals, n);
  for (size_t i = 0; i <= ncuts; i++) {
    size_t end = i < ncuts ? cuts[i] : len;
    cr_assert_eq(sg_redact_feed(&r, in + at, end - at), 0);
    cr_assert_leq(r.carry_len + 1, hold > 0 ? hold : 1, "at most longest - 1 bytes held");
    at = end;
  }
  cr_assert_eq(sg_redact_finish(&r), 0);
  size_t replaced = sg_redact_replaced(&r);
  sg_redact_free(&r);
  return replaced;
}

static void expect_output(const struct sink *k, const char *want, size_t wlen, const char *how,
                          size_t a, size_t b) {
  cr_assert_eq(k->len, wlen, "%s %zu %zu: length %zu, want %zu", how, a, b, k->len, wlen);
  cr_assert(memcmp(k->buf, want, wlen) == 0, "%s %zu %zu: %.*s", how, a, b, (int)k->len, k->buf);
}

/* The one-shot result, checked against |want|; returns its count. */
static size_t expect_all(const struct val *vals, size_t n, const char *in, size_t len,
                         const char *want, size_t wlen) {
  struct sink k = {0};
  sg_redactor r;
  setup(&r, &k, vals, n);
  size_t out_len, count;
  char *out = sg_redact_all(&r, in, len, &out_len, &count);
  cr_assert_eq(out_len, wlen, "one-shot length %zu, want %zu: %s", out_len, wlen, out);
  cr_assert(memcmp(out, want, wlen) == 0, "one-shot: %s", out);
  cr_assert_eq(out[out_len], '\0');
  int hits = 0;
  for (size_t i = 0; i < n; i++)
    hits += k.hits[i];
  cr_assert_eq((size_t)hits, count, "the one-shot reports each replacement");
  cr_assert_eq(k.calls, 0, "the one-shot does not use the stream's sink");
  free(out);
  sg_redact_free(&r);
  return count;
}

/* The input fed whole, in two at every point, in three around every pair of points near each
 * other, in pieces of every size from 1 to its length, and in one go: always |want|, with the
 * same count. Returns the count. */
static size_t expect_every_split(const struct val *vals, size_t n, const char *in, size_t len,
                                 const char *want, size_t wlen) {
  struct sink *k = malloc(sizeof(*k));
  size_t count = redact_cut(k, vals, n, in, len, NULL, 0);
  expect_output(k, want, wlen, "whole", 0, 0);
  for (size_t cut = 0; cut <= len; cut++) {
    cr_assert_eq(redact_cut(k, vals, n, in, len, &cut, 1), count);
    expect_output(k, want, wlen, "split at", cut, 0);
  }
  size_t span = longest(vals, n) + 2;
  for (size_t a = 0; a <= len; a++)
    for (size_t b = a; b <= len && b < a + span; b++) {
      size_t cuts[2] = {a, b};
      cr_assert_eq(redact_cut(k, vals, n, in, len, cuts, 2), count);
      expect_output(k, want, wlen, "split at", a, b);
    }
  size_t *cuts = malloc((len + 1) * sizeof(*cuts));
  for (size_t size = 1; size <= len; size++) {
    size_t ncuts = 0;
    for (size_t at = size; at < len; at += size)
      cuts[ncuts++] = at;
    cr_assert_eq(redact_cut(k, vals, n, in, len, cuts, ncuts), count);
    expect_output(k, want, wlen, "feeds of", size, 0);
  }
  free(cuts);
  free(k);
  cr_assert_eq(expect_all(vals, n, in, len, want, wlen), count);
  return count;
}

#define EXPECT_EVERY_SPLIT(vals, in, want)                                                         \
  expect_every_split(vals, SG_ARRAY_LEN(vals), in, sizeof(in) - 1, want, sizeof(want) - 1)

static const struct val one_key[] = {VAL("sk-live-0123456789", "<KEY>")};

Test(redact, with_no_value_the_stream_is_emitted_unchanged) {
  const char in[] = "any bytes at all, sk-live-0123456789 included";
  struct sink *k = malloc(sizeof(*k));
  cr_assert_eq(redact_cut(k, NULL, 0, in, sizeof(in) - 1, NULL, 0), 0);
  expect_output(k, in, sizeof(in) - 1, "whole", 0, 0);
  cr_assert_eq(k->calls, 1);
  size_t cuts[] = {3, 4, 20};
  cr_assert_eq(redact_cut(k, NULL, 0, in, sizeof(in) - 1, cuts, 3), 0);
  expect_output(k, in, sizeof(in) - 1, "cut", 0, 0);
  cr_assert_eq(expect_all(NULL, 0, in, sizeof(in) - 1, in, sizeof(in) - 1), 0);
  free(k);
}

Test(redact, text_without_a_value_is_emitted_unchanged_in_one_call) {
  const char in[] = "{\"echo\": \"sk-live-012345678\", \"s\": \"sk-\", \"k\": \"s\"}";
  struct sink *k = malloc(sizeof(*k));
  cr_assert_eq(redact_cut(k, one_key, 1, in, sizeof(in) - 1, NULL, 0), 0);
  expect_output(k, in, sizeof(in) - 1, "whole", 0, 0);
  cr_assert_eq(k->calls, 1);
  cr_assert_eq(EXPECT_EVERY_SPLIT(one_key, in, in), 0);
  free(k);
}

Test(redact, empty_stream_emits_nothing) {
  struct sink k;
  cr_assert_eq(redact_cut(&k, one_key, 1, "", 0, NULL, 0), 0);
  cr_assert_eq(k.calls, 0);
}

Test(redact, a_value_in_one_feed_is_replaced_by_its_token) {
  const char in[] = "{\"authorization\": \"Bearer sk-live-0123456789\"}";
  const char want[] = "{\"authorization\": \"Bearer <KEY>\"}";
  struct sink *k = malloc(sizeof(*k));
  cr_assert_eq(redact_cut(k, one_key, 1, in, sizeof(in) - 1, NULL, 0), 1);
  expect_output(k, want, sizeof(want) - 1, "whole", 0, 0);
  cr_assert_eq(k->calls, 3, "the run before, the token, the run after");
  cr_assert_eq(k->hits[0], 1);
  free(k);
}

Test(redact, a_value_split_at_every_feed_boundary_is_replaced) {
  cr_assert_eq(EXPECT_EVERY_SPLIT(one_key, "echo=sk-live-0123456789&x=1", "echo=<KEY>&x=1"), 1);
  cr_assert_eq(EXPECT_EVERY_SPLIT(one_key, "sk-live-0123456789", "<KEY>"), 1);
  cr_assert_eq(EXPECT_EVERY_SPLIT(one_key, "sk-sk-live-sk-live-0123456789sk-live-012345678",
                                  "sk-sk-live-<KEY>sk-live-012345678"),
               1);
}

Test(redact, two_values_are_both_replaced) {
  static const struct val two[] = {VAL("first-secret", "<A>"), VAL("second-secret", "<B>")};
  cr_assert_eq(EXPECT_EVERY_SPLIT(two, "a second-secret, a first-secret, second-secret.",
                                  "a <B>, a <A>, <B>."),
               3);
}

Test(redact, of_a_value_and_its_prefix_the_longer_match_wins) {
  static const struct val prefix[] = {VAL("abcdefgh", "<SHORT>"), VAL("abcdefghij", "<LONG>")};
  static const struct val prefix_last[] = {VAL("abcdefghij", "<LONG>"), VAL("abcdefgh", "<SHORT>")};
  cr_assert_eq(EXPECT_EVERY_SPLIT(prefix, "x abcdefghij y", "x <LONG> y"), 1);
  cr_assert_eq(EXPECT_EVERY_SPLIT(prefix_last, "x abcdefghij y", "x <LONG> y"), 1);
  /* The longer one fails one byte short: the shorter one stands. */
  cr_assert_eq(EXPECT_EVERY_SPLIT(prefix, "x abcdefghiX y", "x <SHORT>iX y"), 1);
  cr_assert_eq(EXPECT_EVERY_SPLIT(prefix, "abcdefghijabcdefgh", "<LONG><SHORT>"), 2);
}

Test(redact, of_overlapping_values_the_leftmost_wins_and_the_scan_goes_on_after_it) {
  static const struct val overlap[] = {VAL("cdefghijkl", "<LATER>"), VAL("abcdefgh", "<LEFT>")};
  cr_assert_eq(EXPECT_EVERY_SPLIT(overlap, "abcdefghijkl", "<LEFT>ijkl"), 1);
  cr_assert_eq(EXPECT_EVERY_SPLIT(overlap, "abcdefgXcdefghijkl", "abcdefgX<LATER>"), 1);
  /* A value overlapping itself: occurrences are not overlapped. */
  static const struct val self[] = {VAL("abababab", "<T>")};
  cr_assert_eq(EXPECT_EVERY_SPLIT(self, "ababababababababab", "<T><T>ab"), 2);
  cr_assert_eq(EXPECT_EVERY_SPLIT(self, "aababababab", "a<T>ab"), 1);
}

Test(redact, equal_values_are_replaced_by_the_first_token_added) {
  static const struct val twice[] = {VAL("same-value", "<FIRST>"), VAL("same-value", "<SECOND>")};
  cr_assert_eq(EXPECT_EVERY_SPLIT(twice, "=same-value=", "=<FIRST>="), 1);
}

Test(redact, adjacent_values_are_all_replaced) {
  static const struct val two[] = {VAL("11111111", "<1>"), VAL("22222222", "<2>")};
  cr_assert_eq(
      EXPECT_EVERY_SPLIT(two, "1111111122222222111111111111111122222222", "<1><2><1><1><2>"), 5);
  struct sink *k = malloc(sizeof(*k));
  const char in[] = "11111111x11111111";
  cr_assert_eq(redact_cut(k, two, 2, in, sizeof(in) - 1, NULL, 0), 2);
  cr_assert_eq(k->calls, 3, "token, run, token");
  cr_assert_eq(k->hits[0], 2);
  free(k);
}

Test(redact, a_value_at_the_very_end_is_replaced) {
  static const struct val prefix[] = {VAL("abcdefgh", "<SHORT>"), VAL("abcdefghij", "<LONG>")};
  struct sink k = {0};
  sg_redactor r;
  setup(&r, &k, prefix, 2);
  cr_assert_eq(sg_redact_feed(&r, "body: abcdefgh", 14), 0);
  cr_assert_eq(k.len, 6, "the value may still grow into the longer one: held back");
  cr_assert_eq(r.carry_len, 8);
  cr_assert_eq(sg_redact_finish(&r), 0);
  expect_output(&k, "body: <SHORT>", 13, "finish", 0, 0);
  cr_assert_eq(k.hits[0], 1);
  sg_redact_free(&r);
  cr_assert_eq(EXPECT_EVERY_SPLIT(prefix, "body: abcdefgh", "body: <SHORT>"), 1);
  cr_assert_eq(EXPECT_EVERY_SPLIT(prefix, "abcdefghi", "<SHORT>i"), 1);
}

Test(redact, a_partial_value_at_the_end_is_emitted_unchanged) {
  struct sink k = {0};
  sg_redactor r;
  setup(&r, &k, one_key, 1);
  cr_assert_eq(sg_redact_feed(&r, "ends with sk-live-01", 20), 0);
  cr_assert_eq(k.len, 10);
  cr_assert_eq(sg_redact_finish(&r), 0);
  expect_output(&k, "ends with sk-live-01", 20, "finish", 0, 0);
  sg_redact_free(&r);
}

Test(redact, held_bytes_are_emitted_as_soon_as_they_cannot_be_a_value) {
  struct sink k = {0};
  sg_redactor r;
  setup(&r, &k, one_key, 1);
  cr_assert_eq(sg_redact_feed(&r, "a sk-live", 9), 0);
  cr_assert_eq(k.len, 2);
  cr_assert_eq(sg_redact_feed(&r, "X", 1), 0);
  cr_assert_eq(k.len, 10, "no feed needed beyond the byte that broke the match");
  cr_assert_eq(r.carry_len, 0);
  cr_assert_eq(sg_redact_finish(&r), 0);
  expect_output(&k, "a sk-liveX", 10, "finish", 0, 0);
  sg_redact_free(&r);
}

Test(redact, a_partial_value_open_across_many_feeds_keeps_the_held_bytes_in_order) {
  /* Periodic input keeps the value's partial match open for hundreds of feeds while the held
   * bytes slide along: they are moved back to the front of the carry now and then. */
  static const struct val periodic[] = {VAL("ababababababababab"
                                            "X",
                                            "<L>")};
  char in[512], want[512];
  size_t len = 0;
  for (int i = 0; i < 150; i++, len += 2)
    memcpy(in + len, "ab", 2);
  memcpy(want, in, len);
  memcpy(in + len, periodic[0].value, periodic[0].len);
  memcpy(want + len, "<L>", 3);
  cr_assert_eq(expect_every_split(periodic, 1, in, len + periodic[0].len, want, len + 3), 1);
  cr_assert_eq(expect_every_split(periodic, 1, in, len, want, len), 0);
}

Test(redact, values_may_hold_nul_bytes) {
  static const struct val nul[] = {VAL("\0\0\0\0\0\0\0\0", "<Z>"), VAL("ab\0cd\0ef\0", "<N>")};
  cr_assert_eq(EXPECT_EVERY_SPLIT(nul, "\0\0\0\0\0\0\0\0\0xab\0cd\0ef\0\0ab\0cd\0ef",
                                  "<Z>\0x<N>\0ab\0cd\0ef"),
               2);
  static const struct val nul2[] = {VAL("ab\0cd\0ef\0", "<N>"), VAL("\0\0\0\0\0\0\0\0", "<Z>")};
  cr_assert_eq(EXPECT_EVERY_SPLIT(nul2, "\0ab\0cd\0ef\0\0\0\0\0\0\0\0\0\0", "\0<N><Z>\0"), 2);
}

Test(redact, values_shorter_than_the_minimum_are_not_added) {
  struct sink k = {0};
  sg_redactor r;
  sg_redact_init(&r, sink_emit, &k);
  cr_assert_eq(sg_redact_add(&r, "x", 1, "<X>", 3, NULL), SG_REDACT_SHORT);
  cr_assert_eq(sg_redact_add(&r, "1234567", 7, "<7>", 3, NULL), SG_REDACT_SHORT);
  cr_assert_eq(sg_redact_add(&r, "", 0, "<E>", 3, NULL), SG_REDACT_SHORT);
  cr_assert_not(sg_redact_active(&r));
  cr_assert_eq(sg_redact_add(&r, "12345678", 8, "<8>", 3, NULL), 0);
  cr_assert(sg_redact_active(&r));
  cr_assert_eq(sg_redact_feed(&r, "x 1234567 12345678", 18), 0);
  cr_assert_eq(sg_redact_finish(&r), 0);
  expect_output(&k, "x 1234567 <8>", 13, "short", 0, 0);
  sg_redact_free(&r);
}

Test(redact, too_many_or_too_long_values_are_refused) {
  static char values[SG_REDACT_MAX_VALUES + 1][16];
  sg_redactor r;
  sg_redact_init(&r, sink_emit, NULL);
  for (int i = 0; i < SG_REDACT_MAX_VALUES; i++) {
    snprintf(values[i], sizeof(values[i]), "value-%08d", i);
    cr_assert_eq(sg_redact_add(&r, values[i], 14, "<T>", 3, NULL), 0);
  }
  snprintf(values[SG_REDACT_MAX_VALUES], 16, "one-too-many");
  cr_assert_eq(sg_redact_add(&r, values[SG_REDACT_MAX_VALUES], 12, "<T>", 3, NULL),
               SG_REDACT_ERR_FULL);
  sg_redact_free(&r);
  sg_redact_init(&r, sink_emit, NULL);
  char *big = calloc(1, SG_REDACT_MAX_LEN + 1);
  cr_assert_eq(sg_redact_add(&r, big, SG_REDACT_MAX_LEN + 1, "<T>", 3, NULL), SG_REDACT_ERR_LONG);
  cr_assert_eq(sg_redact_add(&r, big, SG_REDACT_MAX_LEN, "<T>", 3, NULL), 0);
  sg_redact_free(&r);
  free(big);
  cr_assert_eq(SG_REDACT_MAX_LEN, SG_VALUE_MAX, "every secret value the gateway stores");
}

Test(redact, values_are_added_before_the_stream_begins) {
  struct sink k = {0};
  sg_redactor r;
  setup(&r, &k, one_key, 1);
  cr_assert_eq(sg_redact_feed(&r, "x", 1), 0);
  cr_assert_eq(sg_redact_add(&r, "another-value", 13, "<T>", 3, NULL), SG_REDACT_ERR_STARTED);
  sg_redact_reset(&r);
  cr_assert_eq(sg_redact_add(&r, "another-value", 13, "<T>", 3, NULL), 0);
  sg_redact_free(&r);
}

Test(redact, emit_error_stops_the_stream_and_is_returned) {
  static const char in[] = "x sk-live-0123456789 y sk-live";
  for (int fail_at = 1; fail_at <= 3; fail_at++) {
    struct sink k = {.fail_at = fail_at};
    sg_redactor r;
    setup(&r, &k, one_key, 1);
    /* The feed emits "x ", "<KEY>" and " y ", and holds "sk-live". */
    cr_assert_eq(sg_redact_feed(&r, in, sizeof(in) - 1), -7, "fail at %d", fail_at);
    int calls = k.calls;
    cr_assert_eq(sg_redact_feed(&r, "more", 4), -7, "the error sticks");
    cr_assert_eq(sg_redact_finish(&r), -7);
    cr_assert_eq(k.calls, calls, "no emit after the error");
    cr_assert_eq(k.hits[0], fail_at > 2, "a token that was not emitted is not reported");
    sg_redact_reset(&r);
    k.fail_at = 0;
    cr_assert_eq(sg_redact_feed(&r, "ok", 2), 0, "reset clears the error");
    sg_redact_free(&r);
  }
  struct sink k = {.fail_at = 1};
  sg_redactor r;
  setup(&r, &k, one_key, 1);
  cr_assert_eq(sg_redact_feed(&r, "sk-live", 7), 0);
  cr_assert_eq(sg_redact_finish(&r), -7, "an error emitting the tail at finish");
  sg_redact_free(&r);
}

Test(redact, each_replacement_is_reported_once_with_its_tag) {
  static const struct val three[] = {VAL("first-secret", "<A>"), VAL("second-secret", "<B>"),
                                     VAL("never-echoed", "<C>")};
  const char in[] = "first-secret second-secret first-secret first-secre";
  struct sink *k = malloc(sizeof(*k));
  size_t cuts[] = {5, 6, 20, 30};
  cr_assert_eq(redact_cut(k, three, 3, in, sizeof(in) - 1, cuts, 4), 3);
  cr_assert_eq(k->hits[0], 2);
  cr_assert_eq(k->hits[1], 1);
  cr_assert_eq(k->hits[2], 0);
  free(k);
}

Test(redact, held_bytes_are_zeroed_at_finish_and_reset) {
  struct sink k = {0};
  sg_redactor r;
  setup(&r, &k, one_key, 1);
  cr_assert_eq(sg_redact_feed(&r, "x sk-live-01234", 15), 0);
  cr_assert_eq(r.carry_len, 13);
  cr_assert_eq(sg_redact_finish(&r), 0);
  for (size_t i = 0; i < r.carry_cap; i++)
    cr_assert_eq(r.carry[i], 0, "byte %zu", i);
  sg_redact_reset(&r);
  cr_assert_eq(sg_redact_feed(&r, "sk-live-0123456789 sk-live-0", 28), 0);
  cr_assert_gt(r.carry_len, 0);
  sg_redact_reset(&r);
  cr_assert_eq(r.carry_len, 0);
  for (size_t i = 0; i < r.carry_cap; i++)
    cr_assert_eq(r.carry[i], 0, "byte %zu", i);
  cr_assert_eq(sg_redact_replaced(&r), 0, "reset restarts the count");
  sg_redact_free(&r);
}

Test(redact, reset_keeps_the_values_for_the_next_response) {
  struct sink k = {0};
  sg_redactor r;
  setup(&r, &k, one_key, 1);
  cr_assert_eq(sg_redact_feed(&r, "1: sk-live-0123", 15), 0);
  sg_redact_reset(&r);
  k.len = 0;
  cr_assert_eq(sg_redact_feed(&r, "2: sk-live-", 11), 0);
  cr_assert_eq(sg_redact_feed(&r, "0123456789", 10), 0);
  cr_assert_eq(sg_redact_finish(&r), 0);
  expect_output(&k, "2: <KEY>", 8, "after reset", 0, 0);
  cr_assert_eq(sg_redact_replaced(&r), 1);
  sg_redact_free(&r);
}

Test(redact, the_one_shot_leaves_the_stream_alone) {
  struct sink k = {0};
  sg_redactor r;
  setup(&r, &k, one_key, 1);
  cr_assert_eq(sg_redact_feed(&r, "body sk-live-01", 15), 0);
  size_t out_len, count;
  char *out = sg_redact_all(&r, "hdr sk-live-0123456789 sk-live-01", 33, &out_len, &count);
  cr_assert_str_eq(out, "hdr <KEY> sk-live-01");
  cr_assert_eq(count, 1);
  cr_assert_eq(k.hits[0], 1, "the header's replacement is reported");
  free(out);
  cr_assert_eq(sg_redact_feed(&r, "23456789.", 9), 0);
  cr_assert_eq(sg_redact_finish(&r), 0);
  expect_output(&k, "body <KEY>.", 11, "stream", 0, 0);
  cr_assert_eq(sg_redact_replaced(&r), 1, "the one-shot's replacement is not the stream's");
  cr_assert_eq(k.hits[0], 2);
  sg_redact_free(&r);
}

/* Counts the output without keeping it: the token "<S>" and 'a's. */
struct tally {
  size_t bytes, tokens_bytes, calls;
};

static int tally_emit(void *arg, const char *data, size_t len) {
  struct tally *t = arg;
  t->bytes += len;
  t->calls++;
  for (size_t i = 0; i < len; i++)
    if (data[i] != 'a')
      t->tokens_bytes++;
  return 0;
}

Test(redact, work_stays_linear_on_adversarial_input, .timeout = 60) {
  /* "aaaaaaaa" occurs at every position, while the longest value allowed stays one byte from
   * matching the whole time: a naive scan would compare 64 KiB at every position. */
  char *longv = malloc(SG_REDACT_MAX_LEN);
  memset(longv, 'a', SG_REDACT_MAX_LEN - 1);
  longv[SG_REDACT_MAX_LEN - 1] = 'b';
  size_t len = 2 << 20;
  char *in = malloc(len);
  memset(in, 'a', len);
  size_t sizes[] = {len, 4096, 7, 1};
  for (size_t s = 0; s < SG_ARRAY_LEN(sizes); s++) {
    struct tally t = {0};
    sg_redactor r;
    sg_redact_init(&r, tally_emit, &t);
    cr_assert_eq(sg_redact_add(&r, longv, SG_REDACT_MAX_LEN, "<L>", 3, NULL), 0);
    cr_assert_eq(sg_redact_add(&r, "aaaaaaaa", 8, "<S>", 3, NULL), 0);
    size_t chunk = sizes[s], fed = sizes[s] == 1 ? len / 8 : len;
    for (size_t at = 0; at < fed; at += chunk) {
      cr_assert_eq(sg_redact_feed(&r, in + at, chunk < fed - at ? chunk : fed - at), 0);
      cr_assert_leq(r.carry_len, SG_REDACT_MAX_LEN - 1);
    }
    cr_assert_eq(sg_redact_finish(&r), 0);
    cr_assert_eq(sg_redact_replaced(&r), fed / 8, "feeds of %zu", chunk);
    cr_assert_eq(t.bytes, fed / 8 * 3 + fed % 8);
    cr_assert_eq(t.tokens_bytes, fed / 8 * 3);
    sg_redact_free(&r);
  }
  free(in);
  free(longv);
}

/* The reference: at each position in turn, the longest value there (the first added among
 * equals), knowing nothing of chunks. */
static size_t reference(const struct val *vals, size_t n, const char *in, size_t len, char *out,
                        int *hits) {
  size_t o = 0;
  for (size_t i = 0; i < len;) {
    int best = -1;
    for (size_t v = 0; v < n; v++)
      if (vals[v].len <= len - i && memcmp(in + i, vals[v].value, vals[v].len) == 0 &&
          (best < 0 || vals[v].len > vals[best].len))
        best = (int)v;
    if (best < 0) {
      out[o++] = in[i++];
      continue;
    }
    size_t tl = strlen(vals[best].token);
    memcpy(out + o, vals[best].token, tl);
    o += tl;
    i += vals[best].len;
    hits[best]++;
  }
  return o;
}

Test(redact, random_streams_match_the_reference_whatever_the_chunking) {
  /* Values are pieces of one random string over a small alphabet, so they are prefixes of one
   * another, overlap and repeat themselves; inputs are made of values, their pieces and noise. */
  static const char *tokens[] = {"<0>", "<one>", "", "<three-is-long>"};
  static char in[4096], want[1 << 14], text[24], values[4][16];
  static size_t cuts[4096];
  struct val vals[4];
  struct sink *k = malloc(sizeof(*k));
  srand(20240612);
  for (int iter = 0; iter < 3000; iter++) {
    const char *alphabet = iter % 3 == 0 ? "ab\0" : "aab";
    for (size_t i = 0; i < sizeof(text); i++)
      text[i] = alphabet[rand() % 3];
    size_t n = 1 + (size_t)rand() % 4;
    for (size_t v = 0; v < n; v++) {
      size_t vl = SG_REDACT_MIN_LEN + (size_t)rand() % 7;
      memcpy(values[v], text + (size_t)rand() % (sizeof(text) - vl + 1), vl);
      vals[v] = (struct val){values[v], vl, tokens[v]};
    }
    size_t len = 0, nfrag = (size_t)rand() % 30;
    for (size_t f = 0; f < nfrag; f++) {
      size_t from = (size_t)rand() % sizeof(text), fl;
      switch (rand() % 4) {
      case 0: /* a value */
        fl = (size_t)rand() % n;
        memcpy(in + len, vals[fl].value, vals[fl].len);
        len += vals[fl].len;
        break;
      case 1: /* a piece of the text */
        fl = (size_t)rand() % (sizeof(text) - from + 1);
        memcpy(in + len, text + from, fl);
        len += fl;
        break;
      default: /* noise */
        fl = (size_t)rand() % 6;
        for (size_t i = 0; i < fl; i++)
          in[len++] = "abcx\0"[rand() % 5];
      }
    }
    int hits[4] = {0};
    size_t wlen = reference(vals, n, in, len, want, hits);
    size_t count = 0;
    for (size_t v = 0; v < n; v++)
      count += (size_t)hits[v];
    /* Random feed sizes, empty feeds included; small ones most of the time. */
    size_t ncuts = 0, at = 0;
    for (;;) {
      size_t step = rand() % 4 == 0 ? (size_t)rand() % 50 : (size_t)rand() % 6;
      if (at + step >= len)
        break;
      at += step;
      cuts[ncuts++] = at;
    }
    cr_assert_eq(redact_cut(k, vals, n, in, len, cuts, ncuts), count, "iteration %d", iter);
    expect_output(k, want, wlen, "iteration", (size_t)iter, 0);
    for (size_t v = 0; v < n; v++)
      cr_assert_eq(k->hits[v], hits[v], "iteration %d, value %zu", iter, v);
    /* Per feed, at most the held bytes and one run; per replacement, the run before it and its
     * token; and the tail at finish. */
    cr_assert_leq(k->calls, (int)(2 * (ncuts + 1) + 2 * count + 1), "emits are batched");
    cr_assert_eq(expect_all(vals, n, in, len, want, wlen), count);
  }
  free(k);
}
