#include "service/auth.h"

#include <stdio.h>
#include <string.h>

#include "core/clock.h"
#include "core/ratelimit.h"
#include "core/stats.h"
#include "crypto/apikey.h"
#include "db/notify.h"
#include "db/pool.h"
#include "service/common.h"
#include "service/queries.h"

#define CACHE_SLOTS 1024 /* direct-mapped, per thread */
#define ORG_ID_MAX  64
#define KEY_ID_MAX  64
#define PREFIX_MAX  32

typedef struct {
  uint8_t digest[SG_API_DIGEST_LEN];
  char org_id[ORG_ID_MAX + 1]; /* "" for a key known to be bad */
  char key_id[KEY_ID_MAX + 1];
  char prefix[PREFIX_MAX + 1];
  int64_t expires_ns;
  uint64_t gen; /* of the API-key caches when looked up; 0: not listening then */
} cache_entry;

static _Thread_local cache_entry cache[CACHE_SLOTS];

void sg_auth_cache_clear(void) {
  memset(cache, 0, sizeof(cache));
}

static cache_entry *slot(const uint8_t digest[SG_API_DIGEST_LEN]) {
  /* The digest is already uniformly random: its first bytes are a fine hash. */
  unsigned h = (unsigned)digest[0] | (unsigned)digest[1] << 8;
  return &cache[h % CACHE_SLOTS];
}

typedef struct {
  sg_call *call;
  sg_auth_next next;
  void *arg;
  uint64_t gen;
  uint8_t digest[SG_API_DIGEST_LEN];
  const char *values[1];
  int lengths[1], formats[1];
} lookup;

/* Kept SG_AUTH_TTL_MS, or SG_AUTH_NOTIFIED_TTL_MS when a revocation will reach us as a
 * notification (db/notify.h) and drop the entry at once. */
static cache_entry *remember(const uint8_t digest[SG_API_DIGEST_LEN], const char *org_id,
                             const char *key_id, const char *prefix, int ttl_ms, uint64_t gen) {
  cache_entry *e = slot(digest);
  memcpy(e->digest, digest, sizeof(e->digest));
  snprintf(e->org_id, sizeof(e->org_id), "%s", org_id);
  snprintf(e->key_id, sizeof(e->key_id), "%s", key_id);
  snprintf(e->prefix, sizeof(e->prefix), "%s", prefix);
  e->gen = gen;
  e->expires_ns = sg_now_ns() + (int64_t)(gen != 0 ? SG_AUTH_NOTIFIED_TTL_MS : ttl_ms) * 1000000;
  return e;
}

static int fresh(const cache_entry *e) {
  return e->expires_ns > sg_now_ns() && (e->gen == 0 || e->gen == sg_gen(SG_GEN_API_KEYS));
}

/* --- Rate limits (auth.h) ------------------------------------------------------------------ */

/* Set before the event loops start and cleared after they end: read-only while they run. */
static sg_ratelimit *limiter;
static uint32_t limit_rate, limit_burst;

void sg_auth_rate_limit(uint32_t rate, uint32_t burst) {
  sg_ratelimit_free(limiter);
  limiter = rate > 0 ? sg_ratelimit_new(rate, burst, SG_AUTH_RATE_KEYS) : NULL;
  limit_rate = rate;
  limit_burst = burst > 0 ? burst : 1;
}

/* Charges the call to its key. Returns 0, or -1 after refusing it with RESOURCE_EXHAUSTED and
 * the wait in trailing metadata: retry-after-ms, and grpc-retry-pushback-ms, which grpc
 * clients with a retry policy honour. */
static int charge(sg_call *call, const uint8_t digest[SG_API_DIGEST_LEN]) {
  if (limiter == NULL)
    return 0;
  int64_t wait_ns = sg_ratelimit_take(limiter, digest, sg_now_ns());
  if (wait_ns == 0)
    return 0;
  sg_counter_inc(&sg_stats.rate_limited);
  char ms[24];
  int len = snprintf(ms, sizeof(ms), "%lld", (long long)((wait_ns + 999999) / 1000000));
  sg_call_add_trailing_metadata(call, "retry-after-ms", ms, (size_t)len);
  sg_call_add_trailing_metadata(call, "grpc-retry-pushback-ms", ms, (size_t)len);
  sg_call_finish(call, SG_STATUS_RESOURCE_EXHAUSTED,
                 "rate limit exceeded: this API key may make %u calls a second (bursts of %u) "
                 "on this node; retry in %s ms",
                 limit_rate, limit_burst, ms);
  return -1;
}

static void proceed(sg_call *call, sg_auth_next next, void *arg, const cache_entry *e) {
  char *org = sg_arena_strndup(sg_call_arena(call), e->org_id, strlen(e->org_id));
  sg_call_set_org(call, org);
  sg_call_set_key(call, e->key_id, e->prefix);
  if (charge(call, e->digest) == 0)
    next(call, arg, org);
}

static void looked_up(void *arg, PGresult *res) {
  lookup *l = arg;
  if (!sg_db_check(l->call, res, NULL, NULL))
    return;
  if (PQntuples(res) != 1) {
    remember(l->digest, "", "", "", SG_AUTH_NEG_TTL_MS, 0); /* a key made now must work at once */
    sg_call_finish(l->call, SG_STATUS_UNAUTHENTICATED, "unknown or revoked API key");
    return;
  }
  cache_entry *e = remember(l->digest, PQgetvalue(res, 0, 0), PQgetvalue(res, 0, 1),
                            PQgetvalue(res, 0, 2), SG_AUTH_TTL_MS, l->gen);
  proceed(l->call, l->next, l->arg, e);
}

void sg_auth(sg_call *call, sg_auth_next next, void *arg) {
  static const char bearer[] = "Bearer ";
  size_t len;
  const char *h = sg_call_metadata(call, "authorization", &len);
  if (h == NULL) {
    sg_call_finish(call, SG_STATUS_UNAUTHENTICATED,
                   "missing authorization metadata: send \"authorization: Bearer osk_...\"");
    return;
  }
  if (len <= sizeof(bearer) - 1 || strncasecmp(h, bearer, sizeof(bearer) - 1) != 0 ||
      sg_api_key_check(h + sizeof(bearer) - 1, len - (sizeof(bearer) - 1)) != 0) {
    sg_call_finish(call, SG_STATUS_UNAUTHENTICATED,
                   "malformed API key: expected \"authorization: Bearer osk_...\"");
    return;
  }
  lookup *l = sg_arena_zalloc(sg_call_arena(call), sizeof(*l));
  sg_api_key_digest(h + sizeof(bearer) - 1, len - (sizeof(bearer) - 1), l->digest);
  cache_entry *e = slot(l->digest);
  int hit = fresh(e) && sg_api_digest_equal(e->digest, l->digest);
  sg_stats_cache(SG_CACHE_API_KEY, hit);
  if (hit) {
    if (e->org_id[0] == '\0')
      sg_call_finish(call, SG_STATUS_UNAUTHENTICATED, "unknown or revoked API key");
    else
      proceed(call, next, arg, e);
    return;
  }
  sg_db *db = sg_db_local();
  if (db == NULL) {
    sg_call_finish(call, SG_STATUS_UNAVAILABLE, "database unavailable; retry later");
    return;
  }
  l->call = call;
  l->next = next;
  l->arg = arg;
  l->gen = sg_gen(SG_GEN_API_KEYS);
  l->values[0] = (const char *)l->digest;
  l->lengths[0] = SG_API_DIGEST_LEN;
  l->formats[0] = 1;
  sg_db_exec(db, Q_AUTH_KEY, l->values, l->lengths, l->formats, looked_up, l);
}
