/* sealgate.v1.SecretService (SPEC §2, §4). */
#include "service/secret.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "core/mem.h"
#include "crypto/seal.h"
#include "db/notify.h"
#include "db/pgtext.h"
#include "db/pool.h"
#include "sealgate/v1/secret.pb-c.h"
#include "service/auth.h"
#include "service/change.h"
#include "service/common.h"
#include "service/keyring.h"
#include "service/queries.h"
#include "service/validate.h"

typedef sg_op op;

/* SetSecret's state between its steps. */
typedef struct {
  sg_op op;
  char *store_id; /* canonical, as the database spells it: part of the AAD */
  char *hosts;    /* as a text[] literal */
  char **host_list;
  size_t n_hosts;
  uint8_t dek[SG_KEY_LEN]; /* held from got_key to reserved, zeroed there */
  uint64_t version;
  uint8_t nonce[SG_SEAL_NONCE_LEN];
  uint8_t *sealed;
  size_t sealed_len;
} set_state;

/* Records a change of secret |name| in store |store_id| in the audit trail. */
static void secret_changed(op *o, sg_audit_decision what, const char *store_id, const char *name,
                           uint64_t version) {
  sg_change c = {.store_id = store_id, .secret_name = name, .secret_version = version};
  sg_change_record(o->call, o->org, what, &c);
}

/* SetSecret made |version|, creating the secret (the first of its name, or the first since
 * it was deleted) or updating it. */
static void secret_set(set_state *st, int created) {
  const Sealgate__V1__SetSecretRequest *req = (const void *)st->op.req;
  secret_changed(&st->op, created ? SG_AUDIT_CREATED : SG_AUDIT_UPDATED, st->store_id, req->name,
                 st->version);
}

static char *store_not_found(op *o, const char *id) {
  return sg_arena_printf(sg_call_arena(o->call), "secret store %.64s not found", id);
}

static int entry_from_row(op *o, const PGresult *res, int row, Sealgate__V1__SecretEntry *e) {
  sealgate__v1__secret_entry__init(e);
  e->id = sg_col(o->call, res, row, SECRET_ID);
  e->store_id = sg_col(o->call, res, row, SECRET_STORE);
  e->name = sg_col(o->call, res, row, SECRET_NAME);
  e->created_at = sg_col(o->call, res, row, SECRET_CREATED);
  e->updated_at = sg_col(o->call, res, row, SECRET_UPDATED);
  e->version = strtoull(PQgetvalue(res, row, SECRET_VERSION), NULL, 10);
  e->last_used_at = sg_col(o->call, res, row, SECRET_LAST_USED);
  e->use_count = strtoull(PQgetvalue(res, row, SECRET_USE_COUNT), NULL, 10);
  return sg_col_array(o->call, res, row, SECRET_HOSTS, &e->allowed_hosts, &e->n_allowed_hosts);
}

/* --- SetSecret ----------------------------------------------------------------------------- */

/* The order is: data key, then a version number (the only step that uses one up, so a call
 * that fails on its key leaves no gap), then seal and write. The data key is held in the
 * op only between the first and second step and zeroed at the second. */

/* The write lost to a higher version from a concurrent SetSecret, which stays the current
 * value. This call still made its version: answer with it, over the secret as it stands (or
 * NOT_FOUND if the store went away meanwhile). */
static void reread(void *arg, PGresult *res) {
  set_state *st = arg;
  op *o = &st->op;
  const Sealgate__V1__SetSecretRequest *req = (const void *)o->req;
  if (!sg_db_check(o->call, res, NULL, NULL))
    return;
  if (PQntuples(res) == 0) {
    sg_call_finish(o->call, SG_STATUS_NOT_FOUND, "%s", store_not_found(o, req->store_id));
    return;
  }
  Sealgate__V1__SecretEntry e;
  if (entry_from_row(o, res, 0, &e) != 0)
    return;
  e.version = st->version;
  e.allowed_hosts = st->host_list;
  e.n_allowed_hosts = st->n_hosts;
  /* Overtaken: a later version (a concurrent SetSecret) is what stands, and that call records
   * the creation if there was one; this version existed too, briefly or not at all. */
  secret_set(st, 0);
  sg_call_reply(o->call, &e.base);
}

static void written(void *arg, PGresult *res) {
  set_state *st = arg;
  op *o = &st->op;
  if (!sg_db_check(o->call, res, NULL, NULL))
    return;
  /* This node's caches (the egress proxy's sandbox views) at once; others on the
   * notification. */
  sg_gen_bump(SG_GEN_SECRETS);
  if (PQntuples(res) == 0) {
    const Sealgate__V1__SetSecretRequest *req = (const void *)o->req;
    memset(o->formats, 0, sizeof(o->formats));
    o->values[0] = st->store_id;
    o->values[1] = o->org;
    o->values[2] = req->name;
    sg_db_exec(sg_db_local(), Q_SECRET_GET, o->values, NULL, NULL, reread, st);
    return;
  }
  Sealgate__V1__SecretEntry e;
  if (entry_from_row(o, res, 0, &e) != 0)
    return;
  /* Q_SECRET_WRITE gives a secret it creates (new, or back from deletion) one timestamp for
   * both, and says so in the column after the entry's; an update keeps the creation time. */
  secret_set(st, PQgetvalue(res, 0, SECRET_N_COLS)[0] == 't');
  sg_call_reply(o->call, &e.base);
}

/* Seals the value for the version taken, with the data key held since got_key. */
static int seal_value(set_state *st) {
  const Sealgate__V1__SetSecretRequest *req = (const void *)st->op.req;
  size_t len = strlen(req->value);
  sg_seal_context ctx = {st->op.org, st->store_id, req->name, st->version};
  st->sealed_len = len + SG_SEAL_TAG_LEN;
  st->sealed = sg_arena_alloc(sg_call_arena(st->op.call), st->sealed_len);
  return sg_seal(st->dek, &ctx, (const uint8_t *)req->value, len, st->nonce, st->sealed);
}

static void reserved(void *arg, PGresult *res) {
  set_state *st = arg;
  op *o = &st->op;
  const Sealgate__V1__SetSecretRequest *req = (const void *)o->req;
  int ok = sg_db_check(o->call, res, store_not_found(o, req->store_id), NULL);
  if (ok && PQntuples(res) == 0) {
    sg_call_finish(o->call, SG_STATUS_NOT_FOUND, "%s", store_not_found(o, req->store_id));
    ok = 0;
  }
  if (ok) {
    st->store_id = sg_col(o->call, res, 0, 0);
    st->version = strtoull(PQgetvalue(res, 0, 1), NULL, 10);
    if (seal_value(st) != 0) {
      sg_call_finish(o->call, SG_STATUS_INTERNAL, "encryption failed");
      ok = 0;
    }
  }
  OPENSSL_cleanse(st->dek, sizeof(st->dek));
  if (!ok)
    return;
  o->values[0] = o->org;
  o->values[1] = st->store_id;
  o->values[2] = req->name;
  o->values[3] = st->hosts;
  o->values[4] = sg_arena_printf(sg_call_arena(o->call), "%llu", (unsigned long long)st->version);
  o->values[5] = (const char *)st->nonce;
  o->lengths[5] = SG_SEAL_NONCE_LEN;
  o->formats[5] = 1;
  o->values[6] = (const char *)st->sealed;
  o->lengths[6] = (int)st->sealed_len;
  o->formats[6] = 1;
  sg_db_exec(sg_db_local(), Q_SECRET_WRITE, o->values, o->lengths, o->formats, written, st);
}

static void got_key(sg_call *call, void *arg, const uint8_t dek[SG_KEY_LEN]) {
  (void)call;
  set_state *st = arg;
  const Sealgate__V1__SetSecretRequest *req = (const void *)st->op.req;
  memcpy(st->dek, dek, SG_KEY_LEN);
  sg_op_exec_on_store(&st->op, req->store_id, req->name, Q_SECRET_RESERVE, reserved);
}

static void set_authed(sg_call *call, void *arg, const char *org) {
  set_state *st = arg;
  op *o = &st->op;
  const Sealgate__V1__SetSecretRequest *req = (const void *)o->req;
  o->org = org;
  if (sg_validate_id("store_id", req->store_id, o->err, sizeof(o->err)) != 0 ||
      sg_validate_secret_name("name", req->name, o->err, sizeof(o->err)) != 0 ||
      sg_validate_value("value", strlen(req->value), o->err, sizeof(o->err)) != 0 ||
      sg_validate_hosts("allowed_hosts", req->allowed_hosts, req->n_allowed_hosts,
                        sg_call_arena(call), &st->host_list, &st->n_hosts, o->err,
                        sizeof(o->err)) != 0) {
    sg_op_invalid(o);
    return;
  }
  st->hosts = sg_pg_array(sg_call_arena(call), st->host_list, st->n_hosts);
  sg_keyring_get(call, org, got_key, st);
}

static void set_secret(sg_call *call, const ProtobufCMessage *req) {
  sg_auth(call, set_authed, sg_op_new(call, req, sizeof(set_state)));
}

/* --- ListSecrets --------------------------------------------------------------------------- */

static void listed(void *arg, PGresult *res) {
  op *o = arg;
  const char *id = ((const Sealgate__V1__ListSecretsRequest *)o->req)->store_id;
  if (!sg_db_check(o->call, res, store_not_found(o, id), NULL))
    return;
  int rows = PQntuples(res);
  if (rows == 0) {
    sg_call_finish(o->call, SG_STATUS_NOT_FOUND, "%s", store_not_found(o, id));
    return;
  }
  Sealgate__V1__ListSecretsResponse out = SEALGATE__V1__LIST_SECRETS_RESPONSE__INIT;
  sg_arena *a = sg_call_arena(o->call);
  out.secrets = sg_arena_alloc(a, (size_t)rows * sizeof(*out.secrets));
  for (int i = 0; i < rows; i++) {
    if (PQgetisnull(res, i, SECRET_ID))
      continue; /* the store exists and has no secrets */
    Sealgate__V1__SecretEntry *e = sg_arena_alloc(a, sizeof(*e));
    if (entry_from_row(o, res, i, e) != 0)
      return;
    out.secrets[out.n_secrets++] = e;
  }
  sg_call_reply(o->call, &out.base);
}

static void list_authed(sg_call *call, void *arg, const char *org) {
  (void)call;
  op *o = arg;
  o->org = org;
  sg_op_exec_on_store(o, ((const Sealgate__V1__ListSecretsRequest *)o->req)->store_id, NULL,
                      Q_SECRET_LIST, listed);
}

static void list_secrets(sg_call *call, const ProtobufCMessage *req) {
  sg_auth(call, list_authed, sg_op_new(call, req, sizeof(op)));
}

/* --- DeleteSecret -------------------------------------------------------------------------- */

static void deleted(void *arg, PGresult *res) {
  op *o = arg;
  const Sealgate__V1__DeleteSecretRequest *req = (const void *)o->req;
  if (sg_db_changed(res)) {
    sg_gen_bump(SG_GEN_SECRETS);
    secret_changed(o, SG_AUDIT_DELETED, PQgetvalue(res, 0, 2), req->name,
                   strtoull(PQgetvalue(res, 0, 1), NULL, 10));
  }
  sg_op_reply_empty(o, res,
                    sg_arena_printf(sg_call_arena(o->call),
                                    "secret %.128s not found in secret store %.64s", req->name,
                                    req->store_id));
}

static void delete_authed(sg_call *call, void *arg, const char *org) {
  (void)call;
  op *o = arg;
  const Sealgate__V1__DeleteSecretRequest *req = (const void *)o->req;
  o->org = org;
  sg_op_exec_on_store(o, req->store_id, req->name, Q_SECRET_DELETE, deleted);
}

static void delete_secret(sg_call *call, const ProtobufCMessage *req) {
  sg_auth(call, delete_authed, sg_op_new(call, req, sizeof(op)));
}

static const sg_method_impl methods[] = {
    {"SetSecret", SG_METHOD_UNARY, set_secret, NULL},
    {"ListSecrets", SG_METHOD_UNARY, list_secrets, NULL},
    {"DeleteSecret", SG_METHOD_UNARY, delete_secret, NULL},
};

const sg_service sg_secret_service = {&sealgate__v1__secret_service__descriptor, methods,
                                      SG_ARRAY_LEN(methods), NULL};
