#include "service/auth.h"

#include <stdio.h>
#include <string.h>

#include "core/clock.h"
#include "core/stats.h"
#include "crypto/apikey.h"
#include "db/notify.h"
#include "db/pool.h"
#include "service/common.h"
#include "service/queries.h"

#define CACHE_SLOTS 1024 /* direct-mapped, per thread */
#define ORG_ID_MAX  64

typedef struct {
  uint8_t digest[SG_API_DIGEST_LEN];
  char org_id[ORG_ID_MAX + 1]; /* "" for a key known to be bad */
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
static void remember(const uint8_t digest[SG_API_DIGEST_LEN], const char *org_id, int ttl_ms,
                     uint64_t gen) {
  cache_entry *e = slot(digest);
  memcpy(e->digest, digest, sizeof(e->digest));
  snprintf(e->org_id, sizeof(e->org_id), "%s", org_id);
  e->gen = gen;
  e->expires_ns = sg_now_ns() + (int64_t)(gen != 0 ? SG_AUTH_NOTIFIED_TTL_MS : ttl_ms) * 1000000;
}

static int fresh(const cache_entry *e) {
  return e->expires_ns > sg_now_ns() && (e->gen == 0 || e->gen == sg_gen(SG_GEN_API_KEYS));
}

static void proceed(sg_call *call, sg_auth_next next, void *arg, const char *org_id) {
  char *org = sg_arena_strndup(sg_call_arena(call), org_id, strlen(org_id));
  sg_call_set_org(call, org);
  next(call, arg, org);
}

static void looked_up(void *arg, PGresult *res) {
  lookup *l = arg;
  if (!sg_db_check(l->call, res, NULL, NULL))
    return;
  if (PQntuples(res) != 1) {
    remember(l->digest, "", SG_AUTH_NEG_TTL_MS, 0); /* a key made now must work at once */
    sg_call_finish(l->call, SG_STATUS_UNAUTHENTICATED, "unknown or revoked API key");
    return;
  }
  const char *org = PQgetvalue(res, 0, 0);
  remember(l->digest, org, SG_AUTH_TTL_MS, l->gen);
  proceed(l->call, l->next, l->arg, org);
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
      proceed(call, next, arg, e->org_id);
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
