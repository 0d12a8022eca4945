#include "proxy/view.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "core/arena.h"
#include "core/clock.h"
#include "core/log.h"
#include "core/mem.h"
#include "core/stats.h"
#include "crypto/seal.h"
#include "db/notify.h"
#include "db/pgtext.h"
#include "db/pool.h"
#include "policy/host.h"
#include "service/keyring.h"
#include "service/queries.h"

/* How long a view serves while notifications are heard (a bound should one be lost anyway),
 * and while they are not. */
#define VIEW_TTL_NS      (30LL * 1000000000)
#define VIEW_TTL_DEAF_NS (1LL * 1000000000)
#define VIEW_CACHE_SLOTS 1024

static const sg_gen_kind view_gens[3] = {SG_GEN_SECRETS, SG_GEN_STORES, SG_GEN_SANDBOXES};

/* --- Views ----------------------------------------------------------------------------- */

static void free_strv(char **v, size_t n) {
  for (size_t i = 0; i < n; i++)
    free(v[i]);
  free(v);
}

static void view_free(sg_view *v) {
  for (size_t i = 0; i < v->n_secrets; i++) {
    sg_view_secret *s = &v->secrets[i];
    free(s->name);
    if (s->value != NULL) {
      OPENSSL_cleanse(s->value, s->value_len);
      free(s->value);
    }
    free_strv(s->hosts, s->n_hosts);
  }
  free(v->secrets);
  free(v->slots);
  free_strv(v->hosts, v->n_hosts);
  OPENSSL_cleanse(v->proxy_digest, sizeof(v->proxy_digest));
  free(v);
}

void sg_view_ref(sg_view *view) {
  view->refs++;
}

void sg_view_unref(sg_view *view) {
  if (view != NULL && --view->refs == 0)
    view_free(view);
}

int sg_view_live(const sg_view *view) {
  return view->live && sg_now_ns() < view->expires_ns;
}

int sg_view_fresh(const sg_view *view) {
  if (!sg_view_live(view))
    return 0;
  int deaf = view->deaf;
  for (size_t i = 0; i < 3; i++) {
    if (sg_gen_any(view_gens[i]) != view->gens[i])
      return 0; /* a change made here, or heard of */
    if (sg_gen(view_gens[i]) == 0)
      deaf = 1; /* another node's change could be missed: serve briefly */
  }
  return sg_now_ns() - view->read_ns < (deaf ? VIEW_TTL_DEAF_NS : VIEW_TTL_NS);
}

/* The first 8 bytes of a SHA-256 digest are as good a hash as any. */
static size_t digest_hash(const uint8_t *d) {
  uint64_t h;
  memcpy(&h, d, sizeof(h));
  return (size_t)h;
}

const sg_view_secret *sg_view_find(const sg_view *view, const char *token) {
  if (view->n_secrets == 0)
    return NULL;
  uint8_t d[SG_TOKEN_DIGEST_LEN];
  sg_token_digest(token, SG_TOKEN_LEN, d);
  size_t mask = view->n_slots - 1;
  for (size_t i = digest_hash(d) & mask;; i = (i + 1) & mask) {
    uint32_t at = view->slots[i];
    if (at == 0)
      return NULL;
    const sg_view_secret *s = &view->secrets[at - 1];
    if (memcmp(s->digest, d, sizeof(d)) == 0)
      return s;
  }
}

static int hosts_admit(char *const *hosts, size_t n, const char *host) {
  for (size_t i = 0; i < n; i++)
    if (sg_host_match(hosts[i], host))
      return 1;
  return 0;
}

int sg_view_host_allowed(const sg_view *view, const char *host) {
  return view->any_host || hosts_admit(view->hosts, view->n_hosts, host);
}

int sg_view_secret_allowed(const sg_view_secret *secret, const char *host) {
  return hosts_admit(secret->hosts, secret->n_hosts, host);
}

static void index_secrets(sg_view *v) {
  size_t n = 8;
  while (n < 2 * v->n_secrets)
    n <<= 1;
  v->n_slots = n;
  v->slots = sg_calloc(n, sizeof(*v->slots));
  for (size_t k = 0; k < v->n_secrets; k++) {
    size_t i = digest_hash(v->secrets[k].digest) & (n - 1);
    while (v->slots[i] != 0)
      i = (i + 1) & (n - 1);
    v->slots[i] = (uint32_t)(k + 1);
  }
}

/* --- The per-thread cache and the loads in flight ---------------------------------------- */

typedef struct waiter {
  sg_view_cb cb;
  void *arg;
  struct waiter *next;
} waiter;

typedef struct load {
  char sandbox_id[SG_UUID_LEN + 1];
  sg_view *view; /* being built */
  waiter *waiters;
  struct load *next;
} load;

static __thread sg_view **cache;
static __thread load *loads;

static size_t id_slot(const char *id) {
  size_t h = 1469598103934665603ULL;
  for (; *id; id++)
    h = (h ^ (unsigned char)*id) * 1099511628211ULL;
  return h % VIEW_CACHE_SLOTS;
}

void sg_view_cache_drop(void) {
  if (cache == NULL)
    return;
  for (size_t i = 0; i < VIEW_CACHE_SLOTS; i++)
    sg_view_unref(cache[i]);
  free(cache);
  cache = NULL;
}

static void finish_load(load *l, sg_view_status status) {
  for (load **p = &loads; *p; p = &(*p)->next)
    if (*p == l) {
      *p = l->next;
      break;
    }
  sg_view *v = status == SG_VIEW_OK ? l->view : NULL;
  if (v != NULL) {
    if (cache == NULL)
      cache = sg_calloc(VIEW_CACHE_SLOTS, sizeof(*cache));
    size_t slot = id_slot(v->sandbox_id);
    sg_view_unref(cache[slot]);
    cache[slot] = v; /* the load's reference passes to the cache */
  } else if (l->view != NULL) {
    sg_view_unref(l->view);
  }
  waiter *w = l->waiters;
  free(l);
  while (w != NULL) {
    waiter *next = w->next;
    if (v != NULL)
      sg_view_ref(v);
    w->cb(w->arg, status, v);
    free(w);
    w = next;
  }
}

/* Row parsing. Columns: kind, a, b, c, d (bigint), e, f, g (text[]), h (text[]). */
static char **parse_hosts(const PGresult *res, int row, int col, size_t *n) {
  *n = 0;
  if (PQgetisnull(res, row, col))
    return NULL;
  sg_arena *a = sg_arena_new();
  char **items = NULL;
  size_t count = 0;
  char **out = NULL;
  if (sg_pg_array_parse(a, PQgetvalue(res, row, col), &items, &count) == 0 && count > 0) {
    out = sg_calloc(count, sizeof(*out));
    for (size_t i = 0; i < count; i++)
      out[i] = sg_strdup(items[i]);
    *n = count;
  }
  sg_arena_free(a);
  return out;
}

static int hex_decode(const char *hex, uint8_t *out, size_t cap, size_t *len) {
  size_t n = strlen(hex);
  if (n % 2 != 0 || n / 2 > cap)
    return -1;
  for (size_t i = 0; i < n / 2; i++) {
    unsigned v = 0;
    for (int k = 0; k < 2; k++) {
      char c = hex[2 * i + (size_t)k];
      v <<= 4;
      if (c >= '0' && c <= '9')
        v |= (unsigned)(c - '0');
      else if (c >= 'a' && c <= 'f')
        v |= (unsigned)(c - 'a' + 10);
      else
        return -1;
    }
    out[i] = (uint8_t)v;
  }
  *len = n / 2;
  return 0;
}

/* Ciphertexts wait here between the query and the data key: secret i's nonce and sealed bytes. */
typedef struct {
  load *l;
  uint8_t (*nonces)[SG_SEAL_NONCE_LEN];
  uint8_t **sealed;
  size_t *sealed_len;
  size_t n;
} opening;

static void opening_free(opening *o) {
  for (size_t i = 0; i < o->n; i++)
    free(o->sealed[i]);
  free(o->sealed);
  free(o->sealed_len);
  free(o->nonces);
  free(o);
}

static void add_layer(sg_view *v, const PGresult *res, int row) {
  size_t n;
  char **hosts = parse_hosts(res, row, 7, &n);
  if (n == 0 || hosts_admit(hosts, n, "*") || (n == 1 && strcmp(hosts[0], "*") == 0))
    v->any_host = 1; /* an empty layer allowlist admits every public host */
  v->hosts = sg_realloc(v->hosts, (v->n_hosts + n) * sizeof(*v->hosts));
  for (size_t i = 0; i < n; i++)
    v->hosts[v->n_hosts++] = hosts[i];
  free(hosts);
}

static int add_secret(sg_view *v, opening *o, const PGresult *res, int row) {
  sg_view_secret *s = &v->secrets[v->n_secrets];
  size_t len;
  memset(s, 0, sizeof(*s));
  if (hex_decode(PQgetvalue(res, row, 1), s->digest, sizeof(s->digest), &len) != 0 ||
      len != sizeof(s->digest))
    return -1;
  snprintf(s->store_id, sizeof(s->store_id), "%s", PQgetvalue(res, row, 2));
  s->name = sg_strdup(PQgetvalue(res, row, 3));
  s->version = strtoull(PQgetvalue(res, row, 4), NULL, 10);
  v->n_secrets++;
  s->hosts = parse_hosts(res, row, 7, &s->n_hosts);
  if (s->n_hosts == 0)
    s->hosts = parse_hosts(res, row, 8, &s->n_hosts);
  if (s->n_hosts == 0) {
    s->hosts = sg_malloc(sizeof(*s->hosts));
    s->hosts[0] = sg_strdup("*");
    s->n_hosts = 1;
  }
  const char *ct = PQgetvalue(res, row, 6);
  size_t i = o->n++;
  size_t cap = strlen(ct) / 2;
  o->sealed[i] = sg_malloc(cap > 0 ? cap : 1);
  if (hex_decode(PQgetvalue(res, row, 5), o->nonces[i], SG_SEAL_NONCE_LEN, &len) != 0 ||
      len != SG_SEAL_NONCE_LEN || hex_decode(ct, o->sealed[i], cap, &o->sealed_len[i]) != 0 ||
      o->sealed_len[i] < SG_SEAL_TAG_LEN)
    return -1;
  return 0;
}

static void on_dek(void *arg, sg_dek_status status, const uint8_t *dek) {
  opening *o = arg;
  load *l = o->l;
  sg_view *v = l->view;
  sg_view_status result = SG_VIEW_OK;
  if (status != SG_DEK_OK) {
    result = status == SG_DEK_UNAVAILABLE ? SG_VIEW_UNAVAILABLE : SG_VIEW_FAILED;
  } else {
    for (size_t i = 0; i < o->n; i++) {
      sg_view_secret *s = &v->secrets[i];
      sg_seal_context ctx = {v->org_id, s->store_id, s->name, s->version};
      s->value_len = o->sealed_len[i] - SG_SEAL_TAG_LEN;
      s->value = sg_malloc(s->value_len > 0 ? s->value_len : 1);
      if (sg_unseal(dek, &ctx, o->nonces[i], o->sealed[i], o->sealed_len[i], s->value) != 0) {
        sg_log_begin(SG_LOG_ERROR, "proxy_unseal_failed");
        sg_log_cstr("sandbox", v->sandbox_id);
        sg_log_cstr("store", s->store_id);
        sg_log_cstr("secret", s->name);
        sg_log_end();
        result = SG_VIEW_FAILED;
        break;
      }
    }
  }
  opening_free(o);
  if (result == SG_VIEW_OK)
    index_secrets(v);
  finish_load(l, result);
}

static void on_rows(void *arg, PGresult *res) {
  load *l = arg;
  if (res == NULL) {
    finish_load(l, SG_VIEW_UNAVAILABLE);
    return;
  }
  if (PQresultStatus(res) != PGRES_TUPLES_OK) {
    sg_logf(SG_LOG_ERROR, "proxy_view_query", "%s", PQresultErrorMessage(res));
    finish_load(l, SG_VIEW_UNAVAILABLE);
    return;
  }
  int rows = PQntuples(res);
  if (rows == 0 || strcmp(PQgetvalue(res, 0, 0), "0") != 0) {
    finish_load(l, SG_VIEW_NOT_FOUND);
    return;
  }
  sg_view *v = l->view;
  size_t len;
  snprintf(v->org_id, sizeof(v->org_id), "%s", PQgetvalue(res, 0, 1));
  if (hex_decode(PQgetvalue(res, 0, 2), v->proxy_digest, sizeof(v->proxy_digest), &len) != 0) {
    finish_load(l, SG_VIEW_FAILED);
    return;
  }
  v->live = strcmp(PQgetvalue(res, 0, 3), "1") == 0;
  v->expires_ns = v->read_ns + strtoll(PQgetvalue(res, 0, 4), NULL, 10) * 1000000000LL;
  if (rows == 1)
    v->any_host = 1; /* no layer: a sandbox without a store may reach every public host */
  opening *o = sg_calloc(1, sizeof(*o));
  o->l = l;
  o->nonces = sg_calloc((size_t)rows, sizeof(*o->nonces));
  o->sealed = sg_calloc((size_t)rows, sizeof(*o->sealed));
  o->sealed_len = sg_calloc((size_t)rows, sizeof(*o->sealed_len));
  v->secrets = sg_calloc((size_t)rows, sizeof(*v->secrets));
  for (int r = 1; r < rows; r++) {
    const char *kind = PQgetvalue(res, r, 0);
    if (kind[0] == '1') {
      add_layer(v, res, r);
    } else if (add_secret(v, o, res, r) != 0) {
      opening_free(o);
      finish_load(l, SG_VIEW_FAILED);
      return;
    }
  }
  if (o->n == 0) {
    opening_free(o);
    index_secrets(v);
    finish_load(l, SG_VIEW_OK);
    return;
  }
  sg_keyring_fetch(v->org_id, on_dek, o);
}

sg_view *sg_view_get(const char *sandbox_id, sg_view_cb cb, void *arg) {
  if (cache != NULL) {
    sg_view *v = cache[id_slot(sandbox_id)];
    if (v != NULL && strcmp(v->sandbox_id, sandbox_id) == 0 && sg_view_fresh(v)) {
      sg_stats_cache(SG_CACHE_PROXY_VIEW, 1);
      sg_view_ref(v);
      return v;
    }
  }
  sg_stats_cache(SG_CACHE_PROXY_VIEW, 0);
  waiter *w = sg_malloc(sizeof(*w));
  w->cb = cb;
  w->arg = arg;
  for (load *l = loads; l; l = l->next)
    if (strcmp(l->sandbox_id, sandbox_id) == 0) {
      w->next = l->waiters;
      l->waiters = w;
      return NULL;
    }
  w->next = NULL;
  load *l = sg_calloc(1, sizeof(*l));
  snprintf(l->sandbox_id, sizeof(l->sandbox_id), "%s", sandbox_id);
  l->waiters = w;
  l->next = loads;
  loads = l;
  sg_view *v = l->view = sg_calloc(1, sizeof(*v));
  v->refs = 1;
  snprintf(v->sandbox_id, sizeof(v->sandbox_id), "%s", sandbox_id);
  /* Generations before the query: a change committed while it runs makes the view stale. */
  for (size_t i = 0; i < 3; i++) {
    v->gens[i] = sg_gen_any(view_gens[i]);
    if (sg_gen(view_gens[i]) == 0)
      v->deaf = 1;
  }
  v->read_ns = sg_now_ns();
  const char *params[1] = {l->sandbox_id};
  sg_db *db = sg_db_local();
  if (db == NULL) {
    finish_load(l, SG_VIEW_UNAVAILABLE); /* never on a serving loop; callbacks run later */
    return NULL;
  }
  sg_db_exec(db, Q_PROXY_VIEW, params, NULL, NULL, on_rows, l);
  return NULL;
}

void sg_view_cancel(const char *sandbox_id, void *arg) {
  for (load *l = loads; l; l = l->next) {
    if (strcmp(l->sandbox_id, sandbox_id) != 0)
      continue;
    for (waiter **p = &l->waiters; *p; p = &(*p)->next)
      if ((*p)->arg == arg) {
        waiter *w = *p;
        *p = w->next;
        free(w);
        return;
      }
  }
}
