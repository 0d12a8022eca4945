#include "core/ratelimit.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/mem.h"

#define NS_PER_S 1000000000LL

typedef struct {
  uint8_t key[SG_RATELIMIT_KEY_LEN];
  int64_t tat; /* when the bucket is full again; at or before now: full (idle) */
  int used;
} place;

/* Aligned so that two shards' locks never share a cache line. */
typedef struct {
  _Alignas(64) pthread_mutex_t lock;
  place *places; /* n_sets * SG_RATELIMIT_WAYS */
  int64_t overflow_tat;
} shard;

struct sg_ratelimit {
  int64_t interval; /* ns per call at the sustained rate */
  int64_t window;   /* burst * interval: how far ahead of now a bucket may be charged */
  size_t n_sets;    /* per shard */
  shard shards[SG_RATELIMIT_SHARDS];
};

static uint32_t read_u32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

sg_ratelimit *sg_ratelimit_new(uint32_t rate, uint32_t burst, size_t capacity) {
  sg_ratelimit *rl = aligned_alloc(64, sizeof(*rl));
  if (rl == NULL)
    sg_fatal("out of memory");
  memset(rl, 0, sizeof(*rl));
  rate = rate > 0 ? rate : 1;
  burst = burst > 0 ? burst : 1;
  /* Rounded up: never more than |rate| a second. */
  rl->interval = (NS_PER_S + rate - 1) / rate;
  rl->window = (int64_t)burst * rl->interval;
  size_t per_set = (size_t)SG_RATELIMIT_SHARDS * SG_RATELIMIT_WAYS;
  rl->n_sets = capacity > per_set ? (capacity + per_set - 1) / per_set : 1;
  for (int i = 0; i < SG_RATELIMIT_SHARDS; i++) {
    pthread_mutex_init(&rl->shards[i].lock, NULL);
    rl->shards[i].places = sg_calloc(rl->n_sets * SG_RATELIMIT_WAYS, sizeof(place));
    rl->shards[i].overflow_tat = INT64_MIN;
  }
  return rl;
}

void sg_ratelimit_free(sg_ratelimit *rl) {
  if (rl == NULL)
    return;
  for (int i = 0; i < SG_RATELIMIT_SHARDS; i++) {
    pthread_mutex_destroy(&rl->shards[i].lock);
    free(rl->shards[i].places);
  }
  free(rl);
}

/* The bucket of |key| in |s|, with |s| locked: its place, a place taken over for it (empty,
 * or idle at |now|), or else the shard's overflow bucket. */
static int64_t *bucket(const sg_ratelimit *rl, shard *s, const uint8_t *key, int64_t now) {
  place *set = s->places + (read_u32(key + 4) % rl->n_sets) * SG_RATELIMIT_WAYS;
  place *free_place = NULL;
  for (int i = 0; i < SG_RATELIMIT_WAYS; i++) {
    place *p = &set[i];
    if (p->used && memcmp(p->key, key, SG_RATELIMIT_KEY_LEN) == 0)
      return &p->tat;
    if (free_place == NULL && (!p->used || p->tat <= now))
      free_place = p;
  }
  if (free_place == NULL)
    return &s->overflow_tat;
  memcpy(free_place->key, key, SG_RATELIMIT_KEY_LEN);
  free_place->used = 1;
  /* A new place starts full, as for any new key. Not with the overflow bucket's debt: that
   * debt may be other keys', of other organizations, and a key must never be refused for what
   * another did. (A key moving out of the overflow bucket gains at most one burst, and only
   * when another key's place has gone idle.) */
  free_place->tat = now;
  return &free_place->tat;
}

int64_t sg_ratelimit_take(sg_ratelimit *rl, const uint8_t key[SG_RATELIMIT_KEY_LEN],
                          int64_t now_ns) {
  shard *s = &rl->shards[read_u32(key) % SG_RATELIMIT_SHARDS];
  pthread_mutex_lock(&s->lock);
  int64_t *tat = bucket(rl, s, key, now_ns);
  int64_t from = *tat > now_ns ? *tat : now_ns;
  int64_t next = from + rl->interval, wait = 0;
  if (next - now_ns > rl->window)
    wait = next - rl->window - now_ns;
  else
    *tat = next;
  pthread_mutex_unlock(&s->lock);
  return wait;
}

size_t sg_ratelimit_keys(sg_ratelimit *rl) {
  size_t n = 0;
  for (int i = 0; i < SG_RATELIMIT_SHARDS; i++) {
    shard *s = &rl->shards[i];
    pthread_mutex_lock(&s->lock);
    for (size_t k = 0; k < rl->n_sets * SG_RATELIMIT_WAYS; k++)
      n += s->places[k].used != 0;
    pthread_mutex_unlock(&s->lock);
  }
  return n;
}

size_t sg_ratelimit_capacity(const sg_ratelimit *rl) {
  return rl->n_sets * SG_RATELIMIT_WAYS * SG_RATELIMIT_SHARDS;
}
