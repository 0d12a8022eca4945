#include "service/rowcache.h"

#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/mem.h"
#include "core/stats.h"

#define KEY_MAX 64

typedef struct {
  char key[KEY_MAX + 1];
  char org[KEY_MAX + 1];
  uint64_t gen;
  int64_t expires_ns;
  uint8_t *data;
  size_t len;
} slot;

struct sg_rowcache {
  slot *slots;
  size_t n;
  sg_gen_kind kind;
  int stats_kind; /* an sg_cache_kind, or -1 */
  int64_t ttl_ns;
  uint64_t hits, misses;
};

sg_rowcache *sg_rowcache_new(size_t slots, sg_gen_kind kind, int ttl_ms) {
  sg_rowcache *c = sg_calloc(1, sizeof(*c));
  c->slots = sg_calloc(slots, sizeof(slot));
  c->n = slots;
  c->kind = kind;
  c->stats_kind = -1;
  c->ttl_ns = (int64_t)ttl_ms * 1000000;
  return c;
}

void sg_rowcache_free(sg_rowcache *c) {
  if (c == NULL)
    return;
  for (size_t i = 0; i < c->n; i++)
    free(c->slots[i].data);
  free(c->slots);
  free(c);
}

/* FNV-1a: keys are ids, already random; any spreading hash will do. */
static slot *slot_of(sg_rowcache *c, const char *key) {
  uint32_t h = 2166136261u;
  for (const char *p = key; *p; p++)
    h = (h ^ (uint8_t)*p) * 16777619u;
  return &c->slots[h % c->n];
}

const uint8_t *sg_rowcache_get(sg_rowcache *c, const char *key, const char *org, size_t *len) {
  slot *s = slot_of(c, key);
  uint64_t gen = sg_gen(c->kind);
  if (s->data == NULL || gen == 0 || s->gen != gen || s->expires_ns <= sg_now_ns() ||
      strcmp(s->key, key) != 0 || strcmp(s->org, org) != 0) {
    c->misses++;
    if (c->stats_kind >= 0)
      sg_stats_cache((sg_cache_kind)c->stats_kind, 0);
    return NULL;
  }
  c->hits++;
  if (c->stats_kind >= 0)
    sg_stats_cache((sg_cache_kind)c->stats_kind, 1);
  *len = s->len;
  return s->data;
}

void sg_rowcache_put(sg_rowcache *c, const char *key, const char *org, uint64_t gen,
                     const uint8_t *data, size_t len) {
  if (gen == 0 || strlen(key) > KEY_MAX || strlen(org) > KEY_MAX)
    return;
  slot *s = slot_of(c, key);
  free(s->data);
  s->data = sg_malloc(len ? len : 1);
  memcpy(s->data, data, len);
  s->len = len;
  strcpy(s->key, key);
  strcpy(s->org, org);
  s->gen = gen;
  s->expires_ns = sg_now_ns() + c->ttl_ns;
}

void sg_rowcache_count_as(sg_rowcache *c, sg_cache_kind kind) {
  c->stats_kind = (int)kind;
}

void sg_rowcache_stats(const sg_rowcache *c, uint64_t *hits, uint64_t *misses) {
  *hits = c->hits;
  *misses = c->misses;
}
