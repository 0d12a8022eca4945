/* sealgate.v1.SecretStoreService (SPEC §2). */
#include "service/secret_store.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/mem.h"
#include "db/pgtext.h"
#include "db/pool.h"
#include "rpc/b64.h"
#include "sealgate/v1/secret_store.pb-c.h"
#include "service/auth.h"
#include "service/common.h"
#include "service/queries.h"
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

/* Replies with the single store a statement returned, or NOT_FOUND. */
static void reply_store(op *o, PGresult *res, const char *id, const char *taken) {
  if (!sg_db_check(o->call, res, not_found(o, id), taken))
    return;
  if (PQntuples(res) == 0) {
    sg_call_finish(o->call, SG_STATUS_NOT_FOUND, "%s", not_found(o, id));
    return;
  }
  Sealgate__V1__SecretStore s;
  if (store_from_row(o, res, 0, &s) == 0)
    sg_call_reply(o->call, &s.base);
}

/* --- CreateSecretStore --------------------------------------------------------------------- */

static void created(void *arg, PGresult *res) {
  op *o = arg;
  const Sealgate__V1__CreateSecretStoreRequest *req = (const void *)o->req;
  reply_store(o, res, "", name_taken(o, req->name));
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

static void got(void *arg, PGresult *res) {
  op *o = arg;
  reply_store(o, res, ((const Sealgate__V1__GetSecretStoreRequest *)o->req)->store_id, NULL);
}

static void get_authed(sg_call *call, void *arg, const char *org) {
  (void)call;
  op *o = arg;
  o->org = org;
  sg_op_exec_on_store(o, ((const Sealgate__V1__GetSecretStoreRequest *)o->req)->store_id, NULL,
                      Q_STORE_GET, got);
}

static void get_store(sg_call *call, const ProtobufCMessage *req) {
  sg_auth(call, get_authed, sg_op_new(call, req, sizeof(op)));
}

/* --- ListSecretStores ---------------------------------------------------------------------- */

/* Page tokens: base64 of "1|<created_at with microseconds>|<id>", the keyset of the last row
 * returned. The next page starts strictly after it, so rows added meanwhile neither repeat
 * nor push others out. */
#define TOKEN_TAG "1|"

static char *make_token(op *o, const char *key, const char *id) {
  char raw[160];
  int n = snprintf(raw, sizeof(raw), TOKEN_TAG "%s|%s", key, id);
  char *out = sg_arena_alloc(sg_call_arena(o->call), SG_B64_ENCODED_CAP((size_t)n));
  sg_b64_encode((const uint8_t *)raw, (size_t)n, out);
  return out;
}

/* Exactly "YYYY-MM-DD HH:MM:SS.ffffff" with every field in its range. */
static int token_time_ok(const char *t) {
  static const char shape[] = "dddd-dd-dd dd:dd:dd.dddddd";
  if (strlen(t) != sizeof(shape) - 1)
    return 0;
  for (size_t i = 0; shape[i]; i++)
    if (shape[i] == 'd' ? (t[i] < '0' || t[i] > '9') : t[i] != shape[i])
      return 0;
  int month = atoi(t + 5), day = atoi(t + 8), hour = atoi(t + 11), minute = atoi(t + 14),
      second = atoi(t + 17);
  return month >= 1 && month <= 12 && day >= 1 && day <= 31 && hour <= 23 && minute <= 59 &&
         second <= 59;
}

/* 8-4-4-4-12 hexadecimal digits, as PostgreSQL prints a uuid. */
static int canonical_uuid(const char *s) {
  if (strlen(s) != 36)
    return 0;
  for (int i = 0; i < 36; i++) {
    int dash = i == 8 || i == 13 || i == 18 || i == 23;
    if (dash ? s[i] != '-' : !isxdigit((unsigned char)s[i]))
      return 0;
  }
  return 1;
}

static int parse_token(op *o, const char *token) {
  size_t len = strlen(token);
  if (len == 0) {
    o->values[1] = "-infinity";
    o->values[2] = "00000000-0000-0000-0000-000000000000";
    return 0;
  }
  uint8_t *raw = sg_arena_alloc(sg_call_arena(o->call), len / 4 * 3 + 3);
  size_t n;
  char *bar;
  if (len > 200 || sg_b64_decode(token, len, raw, &n) != 0)
    goto bad;
  raw[n] = '\0';
  if (strncmp((char *)raw, TOKEN_TAG, 2) != 0 || (bar = strchr((char *)raw + 2, '|')) == NULL)
    goto bad;
  *bar = '\0';
  o->values[1] = (char *)raw + 2;
  o->values[2] = bar + 1;
  if (!token_time_ok(o->values[1]) || !canonical_uuid(o->values[2]))
    goto bad;
  return 0;
bad:
  snprintf(o->err, sizeof(o->err), "page_token: not a token this API returned");
  return -1;
}

static void listed(void *arg, PGresult *res) {
  op *o = arg;
  /* A token that passed the shape checks but names no real instant (February 30th): the
   * database's data-exception class 22. */
  if (res != NULL && strncmp(sg_db_sqlstate(res), "22", 2) == 0) {
    sg_call_finish(o->call, SG_STATUS_INVALID_ARGUMENT,
                   "page_token: not a token this API returned");
    return;
  }
  if (!sg_db_check(o->call, res, NULL, NULL))
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
    out.next_page_token = make_token(o, PQgetvalue(res, shown - 1, STORE_PAGE_KEY),
                                     PQgetvalue(res, shown - 1, STORE_ID));
  sg_call_reply(o->call, &out.base);
}

static void list_authed(sg_call *call, void *arg, const char *org) {
  op *o = arg;
  const Sealgate__V1__ListSecretStoresRequest *req = (const void *)o->req;
  int32_t page_size;
  if (sg_validate_page_size("page_size", req->page_size, &page_size, o->err, sizeof(o->err)) != 0 ||
      parse_token(o, req->page_token) != 0) {
    sg_op_invalid(o);
    return;
  }
  o->values[0] = org;
  o->values[3] = sg_arena_printf(sg_call_arena(call), "%d", page_size + 1);
  sg_db_exec(sg_db_local(), Q_STORE_LIST, o->values, NULL, NULL, listed, o);
}

static void list_stores(sg_call *call, const ProtobufCMessage *req) {
  sg_auth(call, list_authed, sg_op_new(call, req, sizeof(op)));
}

/* --- UpdateSecretStore --------------------------------------------------------------------- */

static void updated(void *arg, PGresult *res) {
  op *o = arg;
  const Sealgate__V1__UpdateSecretStoreRequest *req = (const void *)o->req;
  reply_store(o, res, req->store_id, name_taken(o, req->name));
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
  const char *id = ((const Sealgate__V1__DeleteSecretStoreRequest *)o->req)->store_id;
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
