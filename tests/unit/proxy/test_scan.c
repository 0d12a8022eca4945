/* The streaming token replacer: what is and is not a token, replacement with values of any
 * length, tokens split at every chunk boundary, the carried tail at end of stream, batching of
 * emits, errors from the sink, and a randomized comparison with a byte-at-a-time reference. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/scan.h"

#define HEX32_A "0123456789abcdef0123456789abcdef"
#define HEX32_B "ffffffffffffffffffffffffffffffff"
#define HEX32_C "a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0"
#define HEX32_U "deadbeefdeadbeefdeadbeefdeadbeef"
#define TOK_A   SG_TOKEN_PREFIX HEX32_A
#define TOK_B   SG_TOKEN_PREFIX HEX32_B
#define TOK_C   SG_TOKEN_PREFIX HEX32_C
#define TOK_U   SG_TOKEN_PREFIX HEX32_U /* well formed, unknown to the lookup */

#define LONG_VALUE                                                                                 \
  "a-value-much-longer-than-a-sealed-token-so-the-output-grows-past-the-input-size-"               \
  "0123456789012345678901234567890123456789"

/* The sandbox's secrets: TOK_A is short, TOK_B long, TOK_C empty. */
static const struct {
  const char *token, *value;
} secrets[] = {{TOK_A, "sk-1"}, {TOK_B, LONG_VALUE}, {TOK_C, ""}};

static int lookups;

static int table_lookup(void *arg, const char *token, const char **value, size_t *len) {
  (void)arg;
  lookups++;
  for (size_t i = 0; i < sizeof(secrets) / sizeof(secrets[0]); i++)
    if (memcmp(token, secrets[i].token, SG_TOKEN_LEN) == 0) {
      *value = secrets[i].value;
      *len = strlen(secrets[i].value);
      return 1;
    }
  return 0;
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

/* Feeds |in| in the pieces |cuts| (offsets, increasing, |ncuts| of them) into |k|. */
static void scan_cut(struct sink *k, const char *in, size_t len, const size_t *cuts, size_t ncuts,
                     size_t *replaced) {
  sg_scanner s;
  sg_scan_init(&s, table_lookup, NULL, sink_emit, k);
  size_t at = 0;
  for (size_t i = 0; i < ncuts; i++) {
    cr_assert_eq(sg_scan_feed(&s, in + at, cuts[i] - at), 0);
    cr_assert_leq(s.carry_len, SG_TOKEN_LEN - 1);
    at = cuts[i];
  }
  cr_assert_eq(sg_scan_feed(&s, in + at, len - at), 0);
  cr_assert_eq(sg_scan_finish(&s), 0);
  if (replaced != NULL)
    *replaced = sg_scan_replaced(&s);
}

/* The one-shot result, checked against |want|, and its count. */
static size_t expect_all(const char *in, const char *want) {
  size_t out_len, count;
  char *out = sg_scan_replace_all(in, strlen(in), table_lookup, NULL, &out_len, &count);
  cr_assert_eq(out_len, strlen(want), "length %zu, want %zu: %s", out_len, strlen(want), out);
  cr_assert_str_eq(out, want);
  free(out);
  return count;
}

/* The input fed whole, split in two at every point, split in three around every pair of points
 * near the middle, and byte by byte: always |want|. */
static void expect_every_split(const char *in, const char *want) {
  size_t len = strlen(in), wlen = strlen(want);
  struct sink *k = calloc(1, sizeof(*k));
  for (size_t cut = 0; cut <= len; cut++) {
    k->len = 0;
    scan_cut(k, in, len, &cut, 1, NULL);
    cr_assert_eq(k->len, wlen, "split at %zu", cut);
    cr_assert(memcmp(k->buf, want, wlen) == 0, "split at %zu", cut);
  }
  for (size_t a = 0; a <= len; a++)
    for (size_t b = a; b <= len && b < a + SG_TOKEN_LEN + 2; b++) {
      size_t cuts[2] = {a, b};
      k->len = 0;
      scan_cut(k, in, len, cuts, 2, NULL);
      cr_assert_eq(k->len, wlen, "split at %zu, %zu", a, b);
      cr_assert(memcmp(k->buf, want, wlen) == 0, "split at %zu, %zu", a, b);
    }
  size_t *cuts = malloc((len + 1) * sizeof(*cuts));
  for (size_t i = 0; i < len; i++)
    cuts[i] = i + 1;
  k->len = 0;
  scan_cut(k, in, len, cuts, len, NULL);
  cr_assert_eq(k->len, wlen, "byte by byte");
  cr_assert(memcmp(k->buf, want, wlen) == 0, "byte by byte");
  free(cuts);
  free(k);
  cr_assert_eq(expect_all(in, want), expect_all(in, want));
}

Test(scan, text_without_tokens_is_emitted_unchanged_in_one_call) {
  const char *in = "{\"model\": \"gpt\", \"osb\": \"o\", \"oso\": \"osb_\", \"more\": \"text\"}";
  struct sink k = {0};
  scan_cut(&k, in, strlen(in), NULL, 0, NULL);
  cr_assert_eq(k.len, strlen(in));
  cr_assert(memcmp(k.buf, in, k.len) == 0);
  cr_assert_eq(k.calls, 1);
  cr_assert_eq(expect_all(in, in), 0);
}

Test(scan, empty_stream_emits_nothing) {
  struct sink k = {0};
  scan_cut(&k, "", 0, NULL, 0, NULL);
  cr_assert_eq(k.calls, 0);
  cr_assert_eq(expect_all("", ""), 0);
}

Test(scan, one_token_is_replaced) {
  cr_assert_eq(expect_all("Authorization: Bearer " TOK_A, "Authorization: Bearer sk-1"), 1);
  cr_assert_eq(expect_all(TOK_A, "sk-1"), 1);
  expect_every_split("key=" TOK_A "&x=1", "key=sk-1&x=1");
}

Test(scan, several_tokens_are_replaced) {
  const char *in = TOK_A "," TOK_B TOK_A "--" TOK_C "!" TOK_A;
  const char *want = "sk-1," LONG_VALUE "sk-1--!sk-1";
  cr_assert_eq(expect_all(in, want), 5);
  expect_every_split(in, want);
}

Test(scan, emits_one_run_per_gap_between_replaced_tokens) {
  const char *in = "head " TOK_A " middle " TOK_A " tail";
  struct sink k = {0};
  size_t replaced;
  scan_cut(&k, in, strlen(in), NULL, 0, &replaced);
  cr_assert_eq(replaced, 2);
  cr_assert_eq(k.calls, 5); /* head, value, middle, value, tail */
}

Test(scan, unknown_token_is_left_as_is_and_not_counted) {
  const char *in = "a " TOK_U " b " TOK_A;
  cr_assert_eq(expect_all(in, "a " TOK_U " b sk-1"), 1);
  expect_every_split(in, "a " TOK_U " b sk-1");
  struct sink k = {0};
  lookups = 0;
  scan_cut(&k, TOK_U TOK_U, 2 * SG_TOKEN_LEN, NULL, 0, NULL);
  cr_assert_eq(lookups, 2);
  cr_assert_eq(k.calls, 1, "an unknown token stays in the run");
}

Test(scan, values_shorter_longer_and_empty) {
  cr_assert_eq(expect_all("[" TOK_C "]", "[]"), 1);
  cr_assert_eq(expect_all(TOK_B TOK_B, LONG_VALUE LONG_VALUE), 2);
  expect_every_split("x" TOK_C TOK_B "y", "x" LONG_VALUE "y");
}

Test(scan, token_is_exactly_43_bytes_whatever_follows_or_precedes) {
  /* A 33rd hex digit, a word character or another token right after: still a token. */
  cr_assert_eq(expect_all(TOK_A "0", "sk-10"), 1);
  cr_assert_eq(expect_all(TOK_A "z_", "sk-1z_"), 1);
  cr_assert_eq(expect_all("xyz" TOK_A, "xyzsk-1"), 1);
  expect_every_split("_" TOK_A "f" TOK_A, "_sk-1fsk-1");
}

Test(scan, near_misses_are_not_tokens) {
  const char *misses[] = {
      SG_TOKEN_PREFIX "0123456789abcdef0123456789abcde"
                      "g",
      SG_TOKEN_PREFIX "0123456789ABCDEF0123456789abcdef",
      SG_TOKEN_PREFIX "0123456789abcdef0123456789abcdeF",
      "osb_sealed"
      "-0123456789abcdef0123456789abcdef",
      "Osb_sealed_0123456789abcdef0123456789abcdef",
      "osb_seale",
      "osb_sealed_",
      SG_TOKEN_PREFIX "0123456789abcdef0123456789abcde",
      "o",
      "oo",
      "osb_sosb_seale",
  };
  for (size_t i = 0; i < sizeof(misses) / sizeof(misses[0]); i++) {
    cr_assert_eq(expect_all(misses[i], misses[i]), 0, "%s", misses[i]);
    expect_every_split(misses[i], misses[i]);
  }
}

Test(scan, prefix_at_end_of_stream_is_emitted_unchanged_at_finish) {
  const char *in = "body ends with osb_sealed_0123";
  struct sink k = {0};
  sg_scanner s;
  sg_scan_init(&s, table_lookup, NULL, sink_emit, &k);
  cr_assert_eq(sg_scan_feed(&s, in, strlen(in)), 0);
  cr_assert_eq(k.len, strlen("body ends with "), "the possible token is held back");
  cr_assert_eq(sg_scan_finish(&s), 0);
  cr_assert_eq(k.len, strlen(in));
  cr_assert(memcmp(k.buf, in, k.len) == 0);
}

Test(scan, carry_is_emitted_as_soon_as_it_cannot_be_a_token) {
  struct sink k = {0};
  sg_scanner s;
  sg_scan_init(&s, table_lookup, NULL, sink_emit, &k);
  cr_assert_eq(sg_scan_feed(&s, "a osb_sea", 9), 0);
  cr_assert_eq(k.len, 2);
  cr_assert_eq(sg_scan_feed(&s, "X", 1), 0);
  cr_assert_eq(k.len, 10, "no feed needed beyond the byte that broke the match");
  cr_assert_eq(sg_scan_finish(&s), 0);
  cr_assert(memcmp(k.buf, "a osb_seaX", 10) == 0);
}

Test(scan, inner_token_of_overlapping_prefixes_is_found) {
  cr_assert_eq(expect_all("osb_sealed_" TOK_A, "osb_sealed_sk-1"), 1);
  cr_assert_eq(expect_all("osb_sealed_osb_se" TOK_A "osb_seal", "osb_sealed_osb_sesk-1osb_seal"),
               1);
  cr_assert_eq(expect_all("oosb_sealed_0" TOK_A, "oosb_sealed_0sk-1"), 1);
  expect_every_split("osb_sealed_" TOK_A, "osb_sealed_sk-1");
  expect_every_split("osb_sealed_0123osb_" TOK_B "o", "osb_sealed_0123osb_" LONG_VALUE "o");
}

Test(scan, emit_error_stops_the_scan_and_is_returned) {
  for (int fail_at = 1; fail_at <= 3; fail_at++) {
    struct sink k = {.fail_at = fail_at};
    sg_scanner s;
    sg_scan_init(&s, table_lookup, NULL, sink_emit, &k);
    /* The feed emits "x", "sk-1" and "y ", and carries "osb". */
    int rc = sg_scan_feed(&s, "x" TOK_A "y osb", strlen("x" TOK_A "y osb"));
    cr_assert_eq(rc, -7, "fail at %d", fail_at);
    int calls = k.calls;
    cr_assert_eq(sg_scan_feed(&s, "more", 4), -7, "the error sticks");
    cr_assert_eq(sg_scan_finish(&s), -7);
    cr_assert_eq(k.calls, calls, "no emit after the error");
  }
  struct sink k = {.fail_at = 1};
  sg_scanner s;
  sg_scan_init(&s, table_lookup, NULL, sink_emit, &k);
  cr_assert_eq(sg_scan_feed(&s, "osb_sea", 7), 0);
  cr_assert_eq(sg_scan_finish(&s), -7, "an error emitting the tail at finish");
}

/* The reference: looks at every byte in turn, tries a token there, knows nothing of chunks. */
static size_t reference(const char *in, size_t len, char *out, size_t *count) {
  size_t o = 0;
  *count = 0;
  for (size_t i = 0; i < len;) {
    const char *value;
    size_t vlen;
    if (len - i >= SG_TOKEN_LEN && sg_token_is_sealed(in + i, SG_TOKEN_LEN) &&
        table_lookup(NULL, in + i, &value, &vlen)) {
      memcpy(out + o, value, vlen);
      o += vlen;
      i += SG_TOKEN_LEN;
      (*count)++;
    } else {
      out[o++] = in[i++];
    }
  }
  return o;
}

/* Appends a random fragment: tokens known and unknown, cut token starts, hex, noise. */
static size_t add_fragment(char *buf, size_t at) {
  static const char noise[] = "osb_ealdOSB0123456789abcdefABCDEFgxyz \n\"=&";
  const char *tok = secrets[rand() % 3].token;
  size_t n;
  switch (rand() % 7) {
  case 0:
  case 1:
    memcpy(buf + at, rand() % 4 == 0 ? TOK_U : tok, SG_TOKEN_LEN);
    return SG_TOKEN_LEN;
  case 2: /* a token start, cut anywhere */
    n = 1 + (size_t)rand() % (SG_TOKEN_LEN - 1);
    memcpy(buf + at, tok, n);
    return n;
  case 3: /* a token's tail */
    n = 1 + (size_t)rand() % (SG_TOKEN_LEN - 1);
    memcpy(buf + at, tok + SG_TOKEN_LEN - n, n);
    return n;
  case 4:
    n = (size_t)rand() % 40;
    for (size_t i = 0; i < n; i++)
      buf[at + i] = "0123456789abcdef"[rand() % 16];
    return n;
  case 5: /* a token with one byte changed */
    memcpy(buf + at, tok, SG_TOKEN_LEN);
    buf[at + (size_t)rand() % SG_TOKEN_LEN] = noise[rand() % (sizeof(noise) - 1)];
    return SG_TOKEN_LEN;
  default:
    n = (size_t)rand() % 20;
    for (size_t i = 0; i < n; i++)
      buf[at + i] = noise[rand() % (sizeof(noise) - 1)];
    return n;
  }
}

Test(scan, random_streams_match_the_reference_whatever_the_chunking) {
  static char in[4096], want[1 << 15];
  static size_t cuts[4096];
  struct sink *k = calloc(1, sizeof(*k));
  srand(20240611);
  for (int iter = 0; iter < 2000; iter++) {
    size_t len = 0, nfrag = (size_t)rand() % 40;
    for (size_t f = 0; f < nfrag; f++)
      len += add_fragment(in, len);
    size_t count, wlen = reference(in, len, want, &count);
    /* Random chunk sizes, empty feeds included; small ones most of the time. */
    size_t ncuts = 0, at = 0;
    for (;;) {
      size_t step = rand() % 4 == 0 ? (size_t)rand() % 100 : (size_t)rand() % 8;
      if (at + step >= len)
        break;
      at += step;
      cuts[ncuts++] = at;
    }
    size_t replaced;
    k->len = 0;
    k->calls = 0;
    scan_cut(k, in, len, cuts, ncuts, &replaced);
    cr_assert_eq(k->len, wlen, "iteration %d", iter);
    cr_assert(memcmp(k->buf, want, wlen) == 0, "iteration %d", iter);
    cr_assert_eq(replaced, count, "iteration %d", iter);
    /* Per feed, at most the carry and one run; per replaced token, the run before it and its
     * value; and the tail at finish. */
    cr_assert_leq(k->calls, (int)(2 * (ncuts + 1) + 2 * count + 1), "emits are batched");
    size_t out_len, all_count;
    char *out = sg_scan_replace_all(in, len, table_lookup, NULL, &out_len, &all_count);
    cr_assert_eq(out_len, wlen);
    cr_assert(memcmp(out, want, wlen) == 0);
    cr_assert_eq(all_count, count);
    free(out);
  }
  free(k);
}
