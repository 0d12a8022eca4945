/* core/ratelimit: token buckets per key, driven by an injected clock. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <string.h>

#include "core/ratelimit.h"

#define MS   1000000LL
#define SEC  1000000000LL
#define T0   (1000 * SEC) /* any monotonic instant */
#define SETS 1            /* capacity SHARDS * WAYS: one set per shard */

/* A key in shard |shard|, set |set|, told apart from others there by |id|. */
static const uint8_t *key(uint8_t out[SG_RATELIMIT_KEY_LEN], uint32_t shard, uint32_t set,
                          uint32_t id) {
  memset(out, 0, SG_RATELIMIT_KEY_LEN);
  memcpy(out, &shard, 4);
  memcpy(out + 4, &set, 4);
  memcpy(out + 8, &id, 4);
  return out;
}

/* How many calls in a row |k| gets admitted at |now|. */
static int admitted(sg_ratelimit *rl, const uint8_t *k, int64_t now) {
  int n = 0;
  while (sg_ratelimit_take(rl, k, now) == 0 && n < 1000000)
    n++;
  return n;
}

Test(ratelimit, a_new_key_gets_its_whole_burst_at_once_and_no_more) {
  sg_ratelimit *rl = sg_ratelimit_new(10, 25, 1000);
  uint8_t k[SG_RATELIMIT_KEY_LEN];
  cr_assert_eq(admitted(rl, key(k, 0, 0, 1), T0), 25);
  sg_ratelimit_free(rl);
}

Test(ratelimit, the_bucket_refills_at_the_rate) {
  sg_ratelimit *rl = sg_ratelimit_new(10, 5, 1000); /* one call per 100 ms */
  uint8_t k[SG_RATELIMIT_KEY_LEN];
  key(k, 0, 0, 1);
  cr_assert_eq(admitted(rl, k, T0), 5);
  cr_assert_eq(admitted(rl, k, T0 + 99 * MS), 0);
  cr_assert_eq(admitted(rl, k, T0 + 100 * MS), 1);
  cr_assert_eq(admitted(rl, k, T0 + 350 * MS), 2); /* 300 ms of refill, 50 ms carried */
  cr_assert_eq(admitted(rl, k, T0 + 400 * MS), 1); /* the carried 50 ms counted */
  cr_assert_eq(admitted(rl, k, T0 + 10 * SEC), 5); /* never more than the burst */
  sg_ratelimit_free(rl);
}

Test(ratelimit, a_sustained_caller_gets_the_rate) {
  sg_ratelimit *rl = sg_ratelimit_new(1000, 100, 1000);
  uint8_t k[SG_RATELIMIT_KEY_LEN];
  key(k, 3, 0, 1);
  int total = 0;
  for (int64_t t = 0; t <= 10 * SEC; t += 8 * MS) /* ten seconds, asking every 8 ms */
    total += admitted(rl, k, T0 + t);
  cr_assert_eq(total, 100 + 10000, "admitted %d", total); /* the burst, then 1 a ms */
  sg_ratelimit_free(rl);
}

Test(ratelimit, a_refused_call_says_when_the_next_one_is_admitted_and_costs_nothing) {
  sg_ratelimit *rl = sg_ratelimit_new(4, 2, 1000); /* one call per 250 ms */
  uint8_t k[SG_RATELIMIT_KEY_LEN];
  key(k, 0, 0, 1);
  cr_assert_eq(admitted(rl, k, T0), 2);
  cr_assert_eq(sg_ratelimit_take(rl, k, T0), 250 * MS);
  cr_assert_eq(sg_ratelimit_take(rl, k, T0 + 100 * MS), 150 * MS);
  cr_assert_eq(sg_ratelimit_take(rl, k, T0 + 100 * MS), 150 * MS); /* refusals are free */
  cr_assert_eq(sg_ratelimit_take(rl, k, T0 + 250 * MS), 0);
  cr_assert_eq(sg_ratelimit_take(rl, k, T0 + 250 * MS), 250 * MS);
  sg_ratelimit_free(rl);
}

Test(ratelimit, a_rate_that_does_not_divide_a_second_never_admits_more_than_it) {
  sg_ratelimit *rl = sg_ratelimit_new(3, 1, 1000);
  uint8_t k[SG_RATELIMIT_KEY_LEN];
  key(k, 0, 0, 1);
  int total = 0;
  for (int64_t t = 0; t < 10 * SEC; t += MS)
    total += admitted(rl, k, T0 + t);
  cr_assert_leq(total, 30);
  cr_assert_geq(total, 29);
  sg_ratelimit_free(rl);
}

Test(ratelimit, keys_have_buckets_of_their_own) {
  sg_ratelimit *rl = sg_ratelimit_new(1, 3, 1000);
  uint8_t a[SG_RATELIMIT_KEY_LEN], b[SG_RATELIMIT_KEY_LEN], c[SG_RATELIMIT_KEY_LEN];
  key(a, 5, 0, 1);
  key(b, 5, 0, 2); /* same shard and set */
  key(c, 6, 0, 1); /* another shard */
  cr_assert_eq(admitted(rl, a, T0), 3);
  cr_assert_eq(admitted(rl, b, T0), 3);
  cr_assert_eq(admitted(rl, c, T0), 3);
  cr_assert_eq(sg_ratelimit_keys(rl), 3);
  sg_ratelimit_free(rl);
}

Test(ratelimit, capacity_is_rounded_up_to_whole_sets) {
  sg_ratelimit *rl = sg_ratelimit_new(1, 1, 1);
  cr_assert_eq(sg_ratelimit_capacity(rl), SG_RATELIMIT_SHARDS * SG_RATELIMIT_WAYS);
  sg_ratelimit_free(rl);
  rl = sg_ratelimit_new(1, 1, SG_RATELIMIT_SHARDS * SG_RATELIMIT_WAYS * 3 + 1);
  cr_assert_eq(sg_ratelimit_capacity(rl), SG_RATELIMIT_SHARDS * SG_RATELIMIT_WAYS * 4);
  sg_ratelimit_free(rl);
}

/* A table with one set per shard: the WAYS+1st key of a set finds no place. */
static sg_ratelimit *small(uint32_t rate, uint32_t burst) {
  return sg_ratelimit_new(rate, burst, SG_RATELIMIT_SHARDS * SG_RATELIMIT_WAYS * SETS);
}

static void fill_set(sg_ratelimit *rl, uint32_t shard, int64_t now) {
  uint8_t k[SG_RATELIMIT_KEY_LEN];
  for (uint32_t i = 0; i < SG_RATELIMIT_WAYS; i++)
    cr_assert_eq(sg_ratelimit_take(rl, key(k, shard, 0, 100 + i), now), 0);
}

Test(ratelimit, an_idle_bucket_gives_its_place_to_a_new_key) {
  sg_ratelimit *rl = small(10, 2); /* full again 200 ms after a call */
  uint8_t k[SG_RATELIMIT_KEY_LEN];
  fill_set(rl, 7, T0);
  cr_assert_eq(sg_ratelimit_keys(rl), SG_RATELIMIT_WAYS);
  /* Once they are idle, new keys take their places: memory stays what it was. */
  for (uint32_t i = 0; i < SG_RATELIMIT_WAYS; i++)
    cr_assert_eq(admitted(rl, key(k, 7, 0, 200 + i), T0 + 200 * MS), 2);
  cr_assert_eq(sg_ratelimit_keys(rl), SG_RATELIMIT_WAYS);
  /* An evicted key comes back with a full bucket, as it would have had anyway. */
  cr_assert_eq(admitted(rl, key(k, 7, 0, 100), T0 + 400 * MS), 2);
  sg_ratelimit_free(rl);
}

Test(ratelimit, a_key_that_finds_no_place_shares_the_overflow_bucket_and_bypasses_nothing) {
  sg_ratelimit *rl = small(10, 3);
  uint8_t x[SG_RATELIMIT_KEY_LEN], y[SG_RATELIMIT_KEY_LEN];
  fill_set(rl, 9, T0); /* eight busy keys: none idle for 300 ms */
  key(x, 9, 0, 1);
  key(y, 9, 0, 2);
  cr_assert_eq(admitted(rl, x, T0), 3);
  cr_assert_eq(admitted(rl, y, T0), 0); /* the same overflow bucket, spent */
  cr_assert_eq(sg_ratelimit_keys(rl), SG_RATELIMIT_WAYS);
  cr_assert_gt(sg_ratelimit_take(rl, x, T0 + 50 * MS), 0);
  /* Places free up once the eight are idle: x gets one of its own, with one burst. */
  cr_assert_eq(admitted(rl, x, T0 + 300 * MS), 3);
  cr_assert_eq(admitted(rl, x, T0 + 300 * MS), 0);
  sg_ratelimit_free(rl);
}

Test(ratelimit, a_new_key_never_inherits_the_overflow_buckets_debt) {
  sg_ratelimit *rl = small(10, 3);
  uint8_t x[SG_RATELIMIT_KEY_LEN], z[SG_RATELIMIT_KEY_LEN];
  fill_set(rl, 9, T0);
  key(x, 9, 0, 1);
  key(z, 9, 0, 3);
  cr_assert_eq(admitted(rl, x, T0), 3);          /* the overflow bucket, spent */
  cr_assert_gt(sg_ratelimit_take(rl, x, T0), 0); /* and refused: still in debt */
  /* At T0 + 200 ms the eight are idle (their buckets are full again) while the overflow
   * bucket is still 100 ms in debt: z, a key never seen, takes a place with a full burst. */
  cr_assert_eq(admitted(rl, z, T0 + 200 * MS), 3);
  sg_ratelimit_free(rl);
}

Test(ratelimit, a_full_table_keeps_limiting_every_key) {
  sg_ratelimit *rl = small(1, 1);
  uint8_t k[SG_RATELIMIT_KEY_LEN];
  /* Ten times as many keys as places, each calling twice: per set, at most one call per
   * place plus one for the overflow bucket gets through. */
  int total = 0;
  for (uint32_t shard = 0; shard < SG_RATELIMIT_SHARDS; shard++)
    for (uint32_t i = 0; i < 10 * SG_RATELIMIT_WAYS; i++)
      for (int call = 0; call < 2; call++)
        total += sg_ratelimit_take(rl, key(k, shard, 0, i), T0) == 0;
  cr_assert_eq(total, SG_RATELIMIT_SHARDS * (SG_RATELIMIT_WAYS + 1));
  cr_assert_eq(sg_ratelimit_keys(rl), sg_ratelimit_capacity(rl));
  sg_ratelimit_free(rl);
}

/* --- Concurrency ---------------------------------------------------------------------------- */

#define THREADS 8
#define TRIES   20000

typedef struct {
  sg_ratelimit *rl;
  int spread; /* 1: each thread its own key; 0: one key for all */
  int index;
  int admitted;
} worker;

static void *hammer(void *arg) {
  worker *w = arg;
  uint8_t k[SG_RATELIMIT_KEY_LEN];
  key(k, 11, 0, w->spread ? (uint32_t)w->index : 0);
  for (int i = 0; i < TRIES; i++)
    w->admitted += sg_ratelimit_take(w->rl, k, T0) == 0;
  return NULL;
}

static int run_threads(sg_ratelimit *rl, int spread, worker *w) {
  pthread_t t[THREADS];
  int total = 0;
  for (int i = 0; i < THREADS; i++) {
    w[i] = (worker){rl, spread, i, 0};
    pthread_create(&t[i], NULL, hammer, &w[i]);
  }
  for (int i = 0; i < THREADS; i++) {
    pthread_join(t[i], NULL);
    total += w[i].admitted;
  }
  return total;
}

Test(ratelimit, threads_charging_one_key_get_exactly_its_burst_between_them) {
  sg_ratelimit *rl = sg_ratelimit_new(100, 5000, 1000);
  worker w[THREADS];
  cr_assert_eq(run_threads(rl, 0, w), 5000);
  sg_ratelimit_free(rl);
}

Test(ratelimit, threads_charging_their_own_keys_get_a_burst_each) {
  sg_ratelimit *rl = sg_ratelimit_new(100, 5000, 1000);
  worker w[THREADS];
  cr_assert_eq(run_threads(rl, 1, w), THREADS * 5000);
  for (int i = 0; i < THREADS; i++)
    cr_assert_eq(w[i].admitted, 5000);
  sg_ratelimit_free(rl);
}
