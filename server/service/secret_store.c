/* sealgate.v1.SecretStoreService (SPEC §2). */
#include "service/secret_store.h"

#include <stdio.h>
#include <string.h>

#include "core/mem.h"
#include "db/pgtext.h"
#include "db/pool.h"
#include "sealgate/v1/secret_store.pb-c.h"
#include "service/auth.h"
#include "service/change.h"
#include "service/common.h"
#include "service/queries.h"
#include "service/rowcache.h"
#include "service/validate.h"

typedef sg_op op;

static char *not_found(op *o, const char *id) {
  return sg_arena_printf(sg_call_arena(o->call), "secret store %.64s not found", id);
}

static char *name_taken(op *o, const char *name) {
  return sg_arena_printf(sg_call_arena(o->call),
                         "a secret store named \"%.128s\" already exists in this organization",
                         name);
}

/* Fills |s| from row |row| of a result with STORE_* columns. Returns 0, or -1 (call finished). */
static int store_from_row(op *o, const PGresult *res, int row, Sealgate__V1__SecretStore *s) {
  sealgate__v1__secret_store__init(s);
  s->id = sg_col(o->call, res, row, STORE_ID);
  s->org_id = sg_col(o->call, res, row, STORE_ORG);
  s->name = sg_col(o->call, res, row, STORE_NAME);
  s->created_at = sg_col(o->call, res, row, STORE_CREATED);
  s->updated_at = sg_col(o->call, res, row, STORE_UPDATED);
  return sg_col_array(o->call, res, row, STORE_ALLOWLIST, &s->egress_allowlist,
                      &s->n_egress_allowlist);
}

/* Records the change of store |id| in the audit trail. */
static void store_changed(op *o, sg_audit_decision what, const char *id) {
  sg_change c = {.store_id = id};
  sg_change_record(o->call, o->org, what, &c);
}

/* Replies with the single store a statement returned, or NOT_FOUND; a store it |changed|
 * (created or updated) is recorded in the audit trail. */
static void reply_store(op *o, PGresult *res, const char *id, const char *taken,
                        sg_audit_decision changed) {
  if (!sg_db_check(o->call, res, not_found(o, id), taken))
    return;
  if (PQntuples(res) == 0) {
    sg_call_finish(o->call, SG_STATUS_NOT_FOUND, "%s", not_found(o, id));
    return;
  }
  Sealgate__V1__SecretStore s;
  if (store_from_row(o, res, 0, &s) != 0)
    return;
  store_changed(o, changed, s.id);
  sg_call_reply(o->call, &s.base);
}

/* --- CreateSecretStore --------------------------------------------------------------------- */

static void created(void *arg, PGresult *res) {
  op *o = arg;
  const Sealgate__V1__CreateSecretStoreRequest *req = (const void *)o->req;
  reply_store(o, res, "", name_taken(o, req->name), SG_AUDIT_CREATED);
}

static void create_authed(sg_call *call, void *arg, const char *org) {
  op *o = arg;
  o->org = org;
  const Sealgate__V1__CreateSecretStoreRequest *req = (const void *)o->req;
  char **hosts;
  size_t n;
  if (sg_validate_store_name("name", req->name, o->err, sizeof(o->err)) != 0 ||
      sg_validate_hosts("egress_allowlist", req->egress_allowlist, req->n_egress_allowlist,
                        sg_call_arena(call), &hosts, &n, o->err, sizeof(o->err)) != 0) {
    sg_op_invalid(o);
    return;
  }
  o->values[0] = org;
  o->values[1] = req->name;
  o->values[2] = sg_pg_array(sg_call_arena(call), hosts, n);
  sg_db_exec(sg_db_local(), Q_STORE_CREATE, o->values, NULL, NULL, created, o);
}

static void create_store(sg_call *call, const ProtobufCMessage *req) {
  sg_auth(call, create_authed, sg_op_new(call, req, sizeof(op)));
}

/* --- GetSecretStore ------------------------------------------------------------------------ */

/* Stores as this thread last read them, packed; exact across nodes (service/rowcache.h). */
#define STORE_CACHE_SLOTS  4096
#define STORE_CACHE_TTL_MS 30000

static _Thread_local sg_rowcache *store_cache;

void sg_secret_store_cache_drop(void) {
  sg_rowcache_free(store_cache);
  store_cache = NULL;
}

static sg_rowcache *cache(void) {
  if (store_cache == NULL) {
    store_cache = sg_rowcache_new(STORE_CACHE_SLOTS, SG_GEN_STORES, STORE_CACHE_TTL_MS);
    sg_rowcache_count_as(store_cache, SG_CACHE_STORE);
  }
  return store_cache;
}

typedef struct {
  sg_op op;
  uint64_t gen; /* of the store caches when the query went out */
} get_state;

static void got(void *arg, PGresult *res) {
  get_state *st = arg;
  op *o = &st->op;
  const char *id = ((const Sealgate__V1__GetSecretStoreRequest *)o->req)->store_id;
  if (!sg_db_check(o->call, res, not_found(o, id), NULL))
    return;
  if (PQntuples(res) == 0) {
    sg_call_finish(o->call, SG_STATUS_NOT_FOUND, "%s", not_found(o, id));
    return;
  }
  Sealgate__V1__SecretStore s;
  if (store_from_row(o, res, 0, &s) != 0)
    return;
  if (st->gen != 0) {
    size_t len = sealgate__v1__secret_store__get_packed_size(&s);
    uint8_t *buf = sg_arena_alloc(sg_call_arena(o->call), len + 1);
    sealgate__v1__secret_store__pack(&s, buf);
    sg_rowcache_put(cache(), id, o->org, st->gen, buf, len);
  }
  sg_call_reply(o->call, &s.base);
}

static void get_authed(sg_call *call, void *arg, const char *org) {
  get_state *st = arg;
  op *o = &st->op;
  const char *id = ((const Sealgate__V1__GetSecretStoreRequest *)o->req)->store_id;
  o->org = org;
  size_t len;
  const uint8_t *hit = sg_rowcache_get(cache(), id, org, &len);
  if (hit != NULL) {
    Sealgate__V1__SecretStore *s =
        sealgate__v1__secret_store__unpack(sg_arena_allocator(sg_call_arena(call)), len, hit);
    if (s != NULL) {
      sg_call_reply(call, &s->base);
      return;
    }
  }
  st->gen = sg_gen(SG_GEN_STORES);
  sg_op_exec_on_store(o, id, NULL, Q_STORE_GET, got);
}

static void get_store(sg_call *call, const ProtobufCMessage *req) {
  sg_auth(call, get_authed, sg_op_new(call, req, sizeof(get_state)));
}

/* --- ListSecretStores ---------------------------------------------------------------------- */

static void listed(void *arg, PGresult *res) {
  op *o = arg;
  if (!sg_page_check(o, res))
    return;
  const Sealgate__V1__ListSecretStoresRequest *req = (const void *)o->req;
  int32_t page_size;
  sg_validate_page_size("page_size", req->page_size, &page_size, o->err, sizeof(o->err));
  int rows = PQntuples(res), shown = rows > page_size ? page_size : rows;
  Sealgate__V1__ListSecretStoresResponse out = SEALGATE__V1__LIST_SECRET_STORES_RESPONSE__INIT;
  sg_arena *a = sg_call_arena(o->call);
  out.secret_stores = sg_arena_alloc(a, (size_t)shown * sizeof(*out.secret_stores));
  for (int i = 0; i < shown; i++) {
    Sealgate__V1__SecretStore *s = sg_arena_alloc(a, sizeof(*s));
    if (store_from_row(o, res, i, s) != 0)
      return;
    out.secret_stores[out.n_secret_stores++] = s;
  }
  /* One row more than the page asked for means there is a next page. */
  if (rows > shown)
    out.next_page_token = sg_page_token_make(o, PQgetvalue(res, shown - 1, STORE_PAGE_KEY),
                                             PQgetvalue(res, shown - 1, STORE_ID));
  sg_call_reply(o->call, &out.base);
}

static void list_authed(sg_call *call, void *arg, const char *org) {
  (void)call;
  op *o = arg;
  const Sealgate__V1__ListSecretStoresRequest *req = (const void *)o->req;
  o->org = org;
  if (sg_page_params(o, req->page_size, req->page_token) == 0)
    sg_db_exec(sg_db_local(), Q_STORE_LIST, o->values, NULL, NULL, listed, o);
}

static void list_stores(sg_call *call, const ProtobufCMessage *req) {
  sg_auth(call, list_authed, sg_op_new(call, req, sizeof(op)));
}

/* --- UpdateSecretStore --------------------------------------------------------------------- */

static void updated(void *arg, PGresult *res) {
  op *o = arg;
  sg_gen_bump(SG_GEN_STORES); /* this node's caches at once; the others on the notification */
  const Sealgate__V1__UpdateSecretStoreRequest *req = (const void *)o->req;
  reply_store(o, res, req->store_id, name_taken(o, req->name), SG_AUDIT_UPDATED);
}

/* Reads update_mask: each path must be "name" or "egress_allowlist", and at least one given. */
static int read_mask(op *o, int *set_name, int *set_list) {
  const Sealgate__V1__UpdateSecretStoreRequest *req = (const void *)o->req;
  *set_name = *set_list = 0;
  if (req->update_mask == NULL || req->update_mask->n_paths == 0) {
    snprintf(o->err, sizeof(o->err),
             "update_mask: name the fields to change (\"name\", \"egress_allowlist\")");
    return -1;
  }
  for (size_t i = 0; i < req->update_mask->n_paths; i++) {
    const char *p = req->update_mask->paths[i];
    if (strcmp(p, "name") == 0) {
      *set_name = 1;
    } else if (strcmp(p, "egress_allowlist") == 0) {
      *set_list = 1;
    } else {
      snprintf(o->err, sizeof(o->err),
               "update_mask: unknown path \"%.64s\" (known: \"name\", \"egress_allowlist\")", p);
      return -1;
    }
  }
  return 0;
}

static void update_authed(sg_call *call, void *arg, const char *org) {
  op *o = arg;
  o->org = org;
  const Sealgate__V1__UpdateSecretStoreRequest *req = (const void *)o->req;
  int set_name, set_list;
  char **hosts = NULL;
  size_t n = 0;
  if (sg_validate_id("store_id", req->store_id, o->err, sizeof(o->err)) != 0 ||
      read_mask(o, &set_name, &set_list) != 0 ||
      (set_name && sg_validate_store_name("name", req->name, o->err, sizeof(o->err)) != 0) ||
      (set_list &&
       sg_validate_hosts("egress_allowlist", req->egress_allowlist, req->n_egress_allowlist,
                         sg_call_arena(call), &hosts, &n, o->err, sizeof(o->err)) != 0)) {
    sg_op_invalid(o);
    return;
  }
  o->values[0] = req->store_id;
  o->values[1] = org;
  o->values[2] = set_name ? "t" : "f";
  o->values[3] = req->name;
  o->values[4] = set_list ? "t" : "f";
  o->values[5] = sg_pg_array(sg_call_arena(call), hosts, n);
  sg_db_exec(sg_db_local(), Q_STORE_UPDATE, o->values, NULL, NULL, updated, o);
}

static void update_store(sg_call *call, const ProtobufCMessage *req) {
  sg_auth(call, update_authed, sg_op_new(call, req, sizeof(op)));
}

/* --- DeleteSecretStore --------------------------------------------------------------------- */

static void deleted(void *arg, PGresult *res) {
  op *o = arg;
  sg_gen_bump(SG_GEN_STORES);
  const char *id = ((const Sealgate__V1__DeleteSecretStoreRequest *)o->req)->store_id;
  if (sg_db_changed(res))
    store_changed(o, SG_AUDIT_DELETED, PQgetvalue(res, 0, 0));
  sg_op_reply_empty(o, res, not_found(o, id));
}

static void delete_authed(sg_call *call, void *arg, const char *org) {
  (void)call;
  op *o = arg;
  o->org = org;
  sg_op_exec_on_store(o, ((const Sealgate__V1__DeleteSecretStoreRequest *)o->req)->store_id, NULL,
                      Q_STORE_DELETE, deleted);
}

static void delete_store(sg_call *call, const ProtobufCMessage *req) {
  sg_auth(call, delete_authed, sg_op_new(call, req, sizeof(op)));
}

static const sg_method_impl methods[] = {
    {"CreateSecretStore", SG_METHOD_UNARY, create_store, NULL},
    {"ListSecretStores", SG_METHOD_UNARY, list_stores, NULL},
    {"GetSecretStore", SG_METHOD_UNARY, get_store, NULL},
    {"UpdateSecretStore", SG_METHOD_UNARY, update_store, NULL},
    {"DeleteSecretStore", SG_METHOD_UNARY, delete_store, NULL},
};

const sg_service sg_secret_store_service = {&sealgate__v1__secret_store_service__descriptor,
                                            methods, SG_ARRAY_LEN(methods), NULL};
