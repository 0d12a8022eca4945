/* sealgate.v1.SandboxService (SPEC §2, §5).
 *
 * A sandbox's env is made once, at creation: a fresh sealed token for every secret its layers
 * hold (the top layer winning a name), then the plain entries of the request. That env and the
 * proxy credential are packed as a Sandbox message, sealed under the organization's data key
 * (AAD: organization, sandbox id, empty name, version 0 — no secret has an empty name) and
 * stored, so GetSandbox returns exactly what CreateSandbox did. The proxy variables are added
 * when a sandbox is read, from this node's configuration. */
#include "service/sandbox.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <openssl/crypto.h>

#include "core/log.h"
#include "core/mem.h"
#include "crypto/seal.h"
#include "crypto/token.h"
#include "db/notify.h"
#include "db/pgtext.h"
#include "db/pool.h"
#include "google/protobuf/empty.pb-c.h"
#include "net/loop.h"
#include "policy/host.h"
#include "sealgate/v1/sandbox.pb-c.h"
#include "service/auth.h"
#include "service/change.h"
#include "service/common.h"
#include "service/keyring.h"
#include "service/local_runtime.h"
#include "service/queries.h"
#include "service/validate.h"

#define MAX_ENV             256
#define MAX_ENV_BYTES       (512 * 1024)
#define MAX_COMMAND         (64 * 1024)
#define DEFAULT_RUN_TIMEOUT 60
#define MAX_RUN_TIMEOUT     3600
#define MAX_IMAGE_ITEMS     256
#define MAX_IMAGE_ITEM      1024
#define TOP_LAYER           "2147483647"
#define N_PARAMS            14

typedef Sealgate__V1__Sandbox sandbox_msg;
typedef Sealgate__V1__Sandbox__EnvEntry env_entry;

static sg_sandbox_config config = {"127.0.0.1:3128", "", "/etc/sealgate/proxy-ca.pem"};

void sg_sandbox_configure(const sg_sandbox_config *c) {
  config = *c;
}

/* Variables sealgate sets in every sandbox: plain env may not override them. */
static const char *const proxy_url_vars[] = {"HTTPS_PROXY", "HTTP_PROXY", "https_proxy",
                                             "http_proxy"};
static const char *const ca_file_vars[] = {"SSL_CERT_FILE", "REQUESTS_CA_BUNDLE",
                                           "NODE_EXTRA_CA_CERTS", "CURL_CA_BUNDLE",
                                           "GIT_SSL_CAINFO"};
#define NO_PROXY_VALUE "localhost,127.0.0.1,::1"
#define N_PROXY_VARS   (SG_ARRAY_LEN(proxy_url_vars) + SG_ARRAY_LEN(ca_file_vars) + 2)

static int reserved_name(const char *name) {
  for (size_t i = 0; i < SG_ARRAY_LEN(proxy_url_vars); i++)
    if (strcmp(name, proxy_url_vars[i]) == 0)
      return 1;
  for (size_t i = 0; i < SG_ARRAY_LEN(ca_file_vars); i++)
    if (strcmp(name, ca_file_vars[i]) == 0)
      return 1;
  return strcmp(name, "NO_PROXY") == 0 || strcmp(name, "no_proxy") == 0;
}

/* Records a change in the audit trail: of sandbox |id| (NULL for none) and of the resource
 * named |fmt|. */
static void changed(sg_op *o, sg_audit_decision what, const char *id, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void changed(sg_op *o, sg_audit_decision what, const char *id, const char *fmt, ...) {
  char resource[SG_AUDIT_RESOURCE_MAX];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(resource, sizeof(resource), fmt, ap);
  va_end(ap);
  sg_change c = {.sandbox_id = id, .resource = resource};
  sg_change_record(o->call, o->org, what, &c);
}

/* Records a change of sandbox |id| itself. */
static void sandbox_changed(sg_op *o, sg_audit_decision what, const char *id) {
  sg_change c = {.sandbox_id = id};
  sg_change_record(o->call, o->org, what, &c);
}

static char *sandbox_not_found(sg_op *o, const char *id) {
  return sg_arena_printf(sg_call_arena(o->call), "sandbox %.64s not found", id);
}

/* --- Validation ----------------------------------------------------------------------------- */

static int validate_timeout(sg_op *o, int32_t in, int32_t *out) {
  if (in < 0 || in > SG_SANDBOX_MAX_TIMEOUT) {
    snprintf(o->err, sizeof(o->err), "timeout_seconds: must be 1-%d (0: %d)",
             SG_SANDBOX_MAX_TIMEOUT, SG_SANDBOX_DEFAULT_TIMEOUT);
    return -1;
  }
  *out = in == 0 ? SG_SANDBOX_DEFAULT_TIMEOUT : in;
  return 0;
}

static int validate_optional_name(sg_op *o, const char *field, const char *s) {
  return s[0] == '\0' ? 0 : sg_validate_store_name(field, s, o->err, sizeof(o->err));
}

static int validate_env(sg_op *o, Sealgate__V1__CreateSandboxRequest__EnvEntry **env, size_t n) {
  size_t total = 0;
  if (n > MAX_ENV) {
    snprintf(o->err, sizeof(o->err), "env: at most %d entries", MAX_ENV);
    return -1;
  }
  for (size_t i = 0; i < n; i++) {
    char field[160];
    snprintf(field, sizeof(field), "env[\"%.128s\"]", env[i]->key);
    if (sg_validate_secret_name("env", env[i]->key, o->err, sizeof(o->err)) != 0)
      return -1;
    for (size_t k = 0; k < i; k++)
      if (strcmp(env[k]->key, env[i]->key) == 0) {
        snprintf(o->err, sizeof(o->err), "%s: given twice", field);
        return -1;
      }
    if (reserved_name(env[i]->key)) {
      snprintf(o->err, sizeof(o->err), "%s: set by sealgate (the proxy configuration)", field);
      return -1;
    }
    size_t len = strlen(env[i]->value);
    if (len > SG_VALUE_MAX) {
      snprintf(o->err, sizeof(o->err), "%s: at most %d bytes", field, SG_VALUE_MAX);
      return -1;
    }
    total += strlen(env[i]->key) + len + 2;
  }
  /* What a process can be started with (Linux: 2 MiB of argv and env together). */
  if (total > MAX_ENV_BYTES) {
    snprintf(o->err, sizeof(o->err), "env: at most %d KiB in all", MAX_ENV_BYTES / 1024);
    return -1;
  }
  return 0;
}

/* Checks |id| as sandbox_id and makes it $1, the caller's organization $2. Returns 0, or -1
 * after finishing the call with INVALID_ARGUMENT. */
static int sandbox_params(sg_op *o, const char *id, const char *org) {
  o->org = org;
  if (sg_validate_id("sandbox_id", id, o->err, sizeof(o->err)) != 0) {
    sg_op_invalid(o);
    return -1;
  }
  o->values[0] = id;
  o->values[1] = org;
  return 0;
}

/* --- Reading a sandbox ---------------------------------------------------------------------- */

static void add_env(sg_arena *a, sandbox_msg *s, const char *key, const char *value) {
  env_entry *e = sg_arena_alloc(a, sizeof(*e));
  sealgate__v1__sandbox__env_entry__init(e);
  e->key = (char *)key;
  e->value = (char *)value;
  s->env[s->n_env++] = e;
}

/* Opens a sandbox's sealed part (env and proxy credential) from row |row|. Returns it in the
 * call's arena, or NULL after finishing the call with INTERNAL. */
static sandbox_msg *unseal_row(sg_op *o, const PGresult *res, int row,
                               const uint8_t dek[SG_KEY_LEN]) {
  sg_arena *a = sg_call_arena(o->call);
  uint8_t *nonce, *sealed;
  size_t nonce_len, sealed_len;
  const char *id = PQgetvalue(res, row, SANDBOX_ID);
  if (sg_pg_bytea_parse(a, PQgetvalue(res, row, SANDBOX_NONCE), &nonce, &nonce_len) != 0 ||
      sg_pg_bytea_parse(a, PQgetvalue(res, row, SANDBOX_SEALED), &sealed, &sealed_len) != 0 ||
      nonce_len != SG_SEAL_NONCE_LEN || sealed_len < SG_SEAL_TAG_LEN) {
    sg_call_finish(o->call, SG_STATUS_INTERNAL, "database error");
    return NULL;
  }
  size_t plain_len = sealed_len - SG_SEAL_TAG_LEN;
  uint8_t *plain = sg_arena_alloc(a, plain_len + 1);
  sg_seal_context ctx = {o->org, id, "", 0};
  sandbox_msg *inner = NULL;
  if (sg_unseal(dek, &ctx, nonce, sealed, sealed_len, plain) == 0)
    inner = sealgate__v1__sandbox__unpack(sg_arena_allocator(a), plain_len, plain);
  OPENSSL_cleanse(plain, plain_len);
  if (inner == NULL || inner->proxy == NULL) {
    sg_logf(SG_LOG_ERROR, "sandbox_unseal", "sandbox %s: its sealed env does not open", id);
    sg_call_finish(o->call, SG_STATUS_INTERNAL, "the sandbox's sealed env does not open");
    return NULL;
  }
  return inner;
}

static const char *ca_file_for(sg_arena *a, const char *id) {
  return sg_local_runtime_on() ? sg_local_runtime_ca_file(a, id) : config.ca_file;
}

/* Fills |s| from row |row| and the sandbox's opened sealed part |inner|: the env it was made
 * with plus the proxy variables. Returns 0, or -1 (call finished). */
static int sandbox_from_row(sg_op *o, const PGresult *res, int row, const sandbox_msg *inner,
                            sandbox_msg *s) {
  sg_arena *a = sg_call_arena(o->call);
  sealgate__v1__sandbox__init(s);
  s->id = sg_col(o->call, res, row, SANDBOX_ID);
  s->org_id = sg_col(o->call, res, row, SANDBOX_ORG);
  s->status = sg_col(o->call, res, row, SANDBOX_STATUS);
  s->snapshot = sg_col(o->call, res, row, SANDBOX_SNAPSHOT);
  s->checkpoint_id = sg_col(o->call, res, row, SANDBOX_CHECKPOINT);
  s->created_at = sg_col(o->call, res, row, SANDBOX_CREATED);
  s->expires_at = sg_col(o->call, res, row, SANDBOX_EXPIRES);
  if (sg_col_array(o->call, res, row, SANDBOX_STORES, &s->secret_stores, &s->n_secret_stores) != 0)
    return -1;
  Sealgate__V1__ProxyConfig *p = sg_arena_alloc(a, sizeof(*p));
  sealgate__v1__proxy_config__init(p);
  p->url = sg_arena_printf(a, "http://%s:%s@%s", s->id, inner->proxy->url, config.proxy_address);
  p->ca_cert_pem = (char *)config.ca_cert_pem;
  s->proxy = p;
  s->env = sg_arena_alloc(a, (inner->n_env + N_PROXY_VARS) * sizeof(*s->env));
  for (size_t i = 0; i < inner->n_env; i++)
    add_env(a, s, inner->env[i]->key, inner->env[i]->value);
  for (size_t i = 0; i < SG_ARRAY_LEN(proxy_url_vars); i++)
    add_env(a, s, proxy_url_vars[i], p->url);
  add_env(a, s, "NO_PROXY", NO_PROXY_VALUE);
  add_env(a, s, "no_proxy", NO_PROXY_VALUE);
  const char *ca = ca_file_for(a, s->id);
  for (size_t i = 0; i < SG_ARRAY_LEN(ca_file_vars); i++)
    add_env(a, s, ca_file_vars[i], ca);
  return 0;
}

/* --- CreateSandbox and CreateSandboxFromCheckpoint ------------------------------------------ */

typedef struct {
  char *name;
  const char *store_id;
} token_slot;

typedef struct {
  sg_op op;
  const char *top_store;      /* "" for none */
  const char *snapshot;       /* name to resolve, "" for none */
  const char *snapshot_shown; /* the name the sandbox shows (forks: the checkpoint's) */
  const char *checkpoint;     /* id, "" unless forking */
  const char *base_ids;       /* text of a uuid[]: the checkpoint's layers */
  int32_t timeout;
  Sealgate__V1__CreateSandboxRequest__EnvEntry **plain;
  size_t n_plain;
  uint8_t dek[SG_KEY_LEN];
  char id[SG_UUID_LEN + 1];
  char *snapshot_id;
  sandbox_msg *inner;
  const char *values[N_PARAMS];
  int lengths[N_PARAMS], formats[N_PARAMS];
  uint8_t nonce[SG_SEAL_NONCE_LEN];
  uint8_t *sealed;
  size_t sealed_len;
  int dir_made;
} create_state;

static void created(void *arg, PGresult *res) {
  create_state *st = arg;
  sg_op *o = &st->op;
  int dir_made = st->dir_made;
  char id[SG_UUID_LEN + 1];
  memcpy(id, st->id, sizeof(id));
  int ok = sg_db_check(o->call, res, NULL, NULL);
  if (ok && PQntuples(res) != 1) {
    sg_call_finish(o->call, SG_STATUS_INTERNAL, "database error");
    ok = 0;
  }
  if (!ok) {
    /* (|st| is gone with the finished call: only locals from here.) */
    if (dir_made)
      sg_local_runtime_remove("sandboxes", id);
    return;
  }
  sandbox_msg s;
  if (sandbox_from_row(o, res, 0, st->inner, &s) != 0)
    return;
  sandbox_changed(o, SG_AUDIT_CREATED, s.id);
  sg_call_reply(o->call, &s.base);
}

static void insert(create_state *st) {
  sg_db_exec(sg_db_local(), Q_SANDBOX_CREATE, st->values, st->lengths, st->formats, created, st);
}

static void dir_prepared(void *arg, const char *err) {
  create_state *st = arg;
  if (err != NULL) {
    sg_logf(SG_LOG_ERROR, "local_runtime", "sandbox %s: %s", st->id, err);
    sg_local_runtime_remove("sandboxes", st->id);
    sg_call_finish(st->op.call, SG_STATUS_INTERNAL, "cannot prepare the sandbox's directory");
    return;
  }
  st->dir_made = 1;
  insert(st);
}

static int has(char *const *list, size_t n, const char *s) {
  for (size_t i = 0; i < n; i++)
    if (strcmp(list[i], s) == 0)
      return 1;
  return 0;
}

static int find_slot(token_slot *slots, size_t n, const char *name) {
  for (size_t i = 0; i < n; i++)
    if (strcmp(slots[i].name, name) == 0)
      return (int)i;
  return -1;
}

static int plain_has(const create_state *st, const char *name) {
  for (size_t i = 0; i < st->n_plain; i++)
    if (strcmp(st->plain[i]->key, name) == 0)
      return 1;
  return 0;
}

/* Makes the tokens and the sealed part; fills the insert's parameters. Returns 0, or -1
 * (call finished). */
static int make_sandbox(create_state *st, const PGresult *res) {
  sg_op *o = &st->op;
  sg_arena *a = sg_call_arena(o->call);
  int rows = PQntuples(res);
  char **layer_ids = sg_arena_alloc(a, (size_t)rows * sizeof(char *));
  char **layer_names = sg_arena_alloc(a, (size_t)rows * sizeof(char *));
  token_slot *slots = sg_arena_alloc(a, (size_t)rows * sizeof(*slots));
  size_t n_layers = 0, n_slots = 0;
  for (int r = 0; r < rows; r++) {
    if (PQgetisnull(res, r, 1))
      continue; /* no layer at all */
    /* A store already below (a fork with the checkpoint's own store on top) is listed
     * once: its secrets are the same either way. */
    const char *store = PQgetvalue(res, r, 1);
    if (!has(layer_ids, n_layers, store)) {
      layer_ids[n_layers] = sg_col(o->call, res, r, 1);
      layer_names[n_layers++] = sg_col(o->call, res, r, 2);
    }
    if (PQgetisnull(res, r, 3))
      continue; /* a layer without secrets */
    const char *name = PQgetvalue(res, r, 3);
    if (plain_has(st, name) || reserved_name(name))
      continue; /* plain env wins; the proxy variables are sealgate's */
    int i = find_slot(slots, n_slots, name);
    if (i < 0) {
      i = (int)n_slots++;
      slots[i].name = sg_col(o->call, res, r, 3);
    }
    slots[i].store_id = sg_col(o->call, res, r, 1); /* a higher layer wins */
  }

  /* The sealed part: tokens, plain entries, proxy credential. */
  sandbox_msg *inner = sg_arena_alloc(a, sizeof(*inner));
  sealgate__v1__sandbox__init(inner);
  inner->env = sg_arena_alloc(a, (n_slots + st->n_plain + 1) * sizeof(*inner->env));
  Sealgate__V1__ProxyConfig *proxy = sg_arena_alloc(a, sizeof(*proxy));
  sealgate__v1__proxy_config__init(proxy);
  proxy->url = sg_arena_alloc(a, SG_PROXY_SECRET_LEN + 1);
  inner->proxy = proxy;
  char **digests = sg_arena_alloc(a, (n_slots + 1) * sizeof(char *));
  char **stores = sg_arena_alloc(a, (n_slots + 1) * sizeof(char *));
  char **names = sg_arena_alloc(a, (n_slots + 1) * sizeof(char *));
  if (sg_uuid_generate(st->id) != 0 || sg_proxy_secret_generate(proxy->url) != 0)
    goto no_random;
  for (size_t i = 0; i < n_slots; i++) {
    char *token = sg_arena_alloc(a, SG_TOKEN_LEN + 1);
    if (sg_token_generate(token) != 0)
      goto no_random;
    digests[i] = sg_arena_alloc(a, 2 * SG_TOKEN_DIGEST_LEN + 1);
    sg_token_digest_hex(token, SG_TOKEN_LEN, digests[i]);
    stores[i] = (char *)slots[i].store_id;
    names[i] = slots[i].name;
    add_env(a, inner, slots[i].name, token);
  }
  for (size_t i = 0; i < st->n_plain; i++)
    add_env(a, inner, st->plain[i]->key, st->plain[i]->value);
  char *proxy_digest = sg_arena_alloc(a, 2 * SG_TOKEN_DIGEST_LEN + 1);
  sg_token_digest_hex(proxy->url, SG_PROXY_SECRET_LEN, proxy_digest);

  size_t plain_len = sealgate__v1__sandbox__get_packed_size(inner);
  uint8_t *plain = sg_arena_alloc(a, plain_len + 1);
  sealgate__v1__sandbox__pack(inner, plain);
  st->sealed_len = plain_len + SG_SEAL_TAG_LEN;
  st->sealed = sg_arena_alloc(a, st->sealed_len);
  sg_seal_context ctx = {o->org, st->id, "", 0};
  int sealed = sg_seal(st->dek, &ctx, plain, plain_len, st->nonce, st->sealed);
  OPENSSL_cleanse(plain, plain_len);
  OPENSSL_cleanse(st->dek, sizeof(st->dek));
  if (sealed != 0) {
    sg_call_finish(o->call, SG_STATUS_INTERNAL, "encryption failed");
    return -1;
  }
  st->inner = inner;

  const char **v = st->values;
  v[0] = st->id;
  v[1] = o->org;
  v[2] = sg_pg_array(a, layer_ids, n_layers);
  v[3] = sg_pg_array(a, layer_names, n_layers);
  v[4] = st->snapshot_shown ? st->snapshot_shown : st->snapshot;
  v[5] = st->snapshot_id ? st->snapshot_id : "";
  v[6] = st->checkpoint;
  v[7] = proxy_digest;
  v[8] = (const char *)st->nonce;
  st->lengths[8] = SG_SEAL_NONCE_LEN;
  st->formats[8] = 1;
  v[9] = (const char *)st->sealed;
  st->lengths[9] = (int)st->sealed_len;
  st->formats[9] = 1;
  v[10] = sg_arena_printf(a, "%d", st->timeout);
  v[11] = sg_pg_array(a, digests, n_slots);
  v[12] = sg_pg_array(a, stores, n_slots);
  v[13] = sg_pg_array(a, names, n_slots);
  return 0;

no_random:
  OPENSSL_cleanse(st->dek, sizeof(st->dek));
  sg_call_finish(o->call, SG_STATUS_INTERNAL, "no randomness available");
  return -1;
}

static void resolved(void *arg, PGresult *res) {
  create_state *st = arg;
  sg_op *o = &st->op;
  if (res == NULL || PQresultStatus(res) != PGRES_TUPLES_OK) {
    OPENSSL_cleanse(st->dek, sizeof(st->dek)); /* before the call (and |st|) is gone */
    sg_db_check(o->call, res, NULL, NULL);
    return;
  }
  int rows = PQntuples(res), top_found = 0;
  for (int r = 0; r < rows; r++)
    if (!PQgetisnull(res, r, 0) && strcmp(PQgetvalue(res, r, 0), TOP_LAYER) == 0)
      top_found = 1;
  const char *missing = NULL;
  if (st->top_store[0] != '\0' && !top_found)
    missing =
        sg_arena_printf(sg_call_arena(o->call), "secret store \"%.128s\" not found", st->top_store);
  else if (st->snapshot[0] != '\0' && (rows == 0 || PQgetisnull(res, 0, 4)))
    missing =
        sg_arena_printf(sg_call_arena(o->call), "snapshot \"%.128s\" not found", st->snapshot);
  if (missing != NULL) {
    OPENSSL_cleanse(st->dek, sizeof(st->dek));
    sg_call_finish(o->call, SG_STATUS_NOT_FOUND, "%s", missing);
    return;
  }
  if (st->snapshot[0] != '\0')
    st->snapshot_id = sg_col(o->call, res, 0, 4);
  if (make_sandbox(st, res) != 0)
    return;
  if (!sg_local_runtime_on()) {
    insert(st);
    return;
  }
  if (st->checkpoint[0] != '\0')
    sg_local_runtime_prepare(st->id, "checkpoints", st->checkpoint, dir_prepared, st);
  else
    sg_local_runtime_prepare(st->id, "snapshots", st->snapshot_id, dir_prepared, st);
}

static void create_got_key(sg_call *call, void *arg, const uint8_t dek[SG_KEY_LEN]) {
  (void)call;
  create_state *st = arg;
  memcpy(st->dek, dek, SG_KEY_LEN);
  sg_op *o = &st->op;
  o->values[0] = o->org;
  o->values[1] = st->base_ids;
  o->values[2] = st->top_store;
  o->values[3] = st->snapshot;
  sg_db_exec(sg_db_local(), Q_SANDBOX_RESOLVE, o->values, NULL, NULL, resolved, st);
}

static void create_authed(sg_call *call, void *arg, const char *org) {
  create_state *st = arg;
  sg_op *o = &st->op;
  const Sealgate__V1__CreateSandboxRequest *req = (const void *)o->req;
  o->org = org;
  if (validate_optional_name(o, "secret_store", req->secret_store) != 0 ||
      validate_optional_name(o, "snapshot", req->snapshot) != 0 ||
      validate_timeout(o, req->timeout_seconds, &st->timeout) != 0 ||
      validate_env(o, req->env, req->n_env) != 0) {
    sg_op_invalid(o);
    return;
  }
  st->top_store = req->secret_store;
  st->snapshot = req->snapshot;
  st->checkpoint = "";
  st->base_ids = "{}";
  st->plain = req->env;
  st->n_plain = req->n_env;
  sg_keyring_get(call, org, create_got_key, st);
}

static void create_sandbox(sg_call *call, const ProtobufCMessage *req) {
  sg_auth(call, create_authed, sg_op_new(call, req, sizeof(create_state)));
}

static void fork_got_checkpoint(void *arg, PGresult *res) {
  create_state *st = arg;
  sg_op *o = &st->op;
  const Sealgate__V1__CreateSandboxFromCheckpointRequest *req = (const void *)o->req;
  char *missing =
      sg_arena_printf(sg_call_arena(o->call), "checkpoint %.64s not found", req->checkpoint_id);
  if (!sg_db_check(o->call, res, missing, NULL))
    return;
  if (PQntuples(res) == 0) {
    sg_call_finish(o->call, SG_STATUS_NOT_FOUND, "%s", missing);
    return;
  }
  st->checkpoint = sg_col(o->call, res, 0, CHECKPOINT_ID);
  st->base_ids = sg_col(o->call, res, 0, CHECKPOINT_STORE_IDS);
  /* The fork starts from the checkpoint's copy, not from the snapshot (which may be gone
   * since): its name is carried over as it was, not resolved again. */
  st->snapshot = "";
  st->snapshot_shown = sg_col(o->call, res, 0, CHECKPOINT_SNAPSHOT);
  sg_keyring_get(o->call, o->org, create_got_key, st);
}

static void fork_authed(sg_call *call, void *arg, const char *org) {
  (void)call;
  create_state *st = arg;
  sg_op *o = &st->op;
  const Sealgate__V1__CreateSandboxFromCheckpointRequest *req = (const void *)o->req;
  o->org = org;
  if (sg_validate_id("checkpoint_id", req->checkpoint_id, o->err, sizeof(o->err)) != 0 ||
      validate_optional_name(o, "secret_store", req->secret_store) != 0 ||
      validate_timeout(o, req->timeout_seconds, &st->timeout) != 0) {
    sg_op_invalid(o);
    return;
  }
  st->top_store = req->secret_store;
  o->values[0] = req->checkpoint_id;
  o->values[1] = org;
  sg_db_exec(sg_db_local(), Q_CHECKPOINT_GET, o->values, NULL, NULL, fork_got_checkpoint, st);
}

static void fork_sandbox(sg_call *call, const ProtobufCMessage *req) {
  sg_auth(call, fork_authed, sg_op_new(call, req, sizeof(create_state)));
}

/* --- GetSandbox and ListSandboxes ----------------------------------------------------------- */

/* Reads whose rows must be opened with the data key: the key first (copied here), then the
 * query; the key is zeroed as soon as the rows are read (keyed_result). */
typedef struct read_state read_state;
typedef void (*read_fn)(read_state *st, PGresult *res, const uint8_t dek[SG_KEY_LEN]);
struct read_state {
  sg_op op;
  uint8_t dek[SG_KEY_LEN];
  int stmt;
  read_fn next;
};

/* The state lives in the call's arena, gone once |next| has finished the call: the key is
 * zeroed there first, and |next| reads it from this stack copy. */
static void keyed_result(void *arg, PGresult *res) {
  read_state *st = arg;
  uint8_t dek[SG_KEY_LEN];
  memcpy(dek, st->dek, SG_KEY_LEN);
  OPENSSL_cleanse(st->dek, sizeof(st->dek));
  st->next(st, res, dek);
  OPENSSL_cleanse(dek, sizeof(dek));
}

static void read_got_key(sg_call *call, void *arg, const uint8_t dek[SG_KEY_LEN]) {
  (void)call;
  read_state *st = arg;
  memcpy(st->dek, dek, SG_KEY_LEN);
  sg_db_exec(sg_db_local(), st->stmt, st->op.values, NULL, NULL, keyed_result, st);
}

/* Runs |stmt| with o->values once the organization's data key is at hand; |next| gets the
 * result with st->dek set. */
static void read_with_key(read_state *st, int stmt, read_fn next) {
  st->stmt = stmt;
  st->next = next;
  sg_keyring_get(st->op.call, st->op.org, read_got_key, st);
}

/* The one sandbox a Q_SANDBOX_GET found, or NOT_FOUND (returns 0, call finished). */
static int found_sandbox(sg_op *o, PGresult *res, const char *id) {
  if (!sg_db_check(o->call, res, sandbox_not_found(o, id), NULL))
    return 0;
  if (PQntuples(res) == 0) {
    sg_call_finish(o->call, SG_STATUS_NOT_FOUND, "%s", sandbox_not_found(o, id));
    return 0;
  }
  return 1;
}

static void got_sandbox(read_state *st, PGresult *res, const uint8_t dek[SG_KEY_LEN]) {
  sg_op *o = &st->op;
  const char *id = ((const Sealgate__V1__GetSandboxRequest *)o->req)->sandbox_id;
  if (!found_sandbox(o, res, id))
    return;
  sandbox_msg *inner = unseal_row(o, res, 0, dek);
  sandbox_msg s;
  if (inner != NULL && sandbox_from_row(o, res, 0, inner, &s) == 0)
    sg_call_reply(o->call, &s.base);
}

static void get_authed(sg_call *call, void *arg, const char *org) {
  (void)call;
  sg_op *o = arg;
  const char *id = ((const Sealgate__V1__GetSandboxRequest *)o->req)->sandbox_id;
  if (sandbox_params(o, id, org) == 0)
    read_with_key(arg, Q_SANDBOX_GET, got_sandbox);
}

static void get_sandbox(sg_call *call, const ProtobufCMessage *req) {
  sg_auth(call, get_authed, sg_op_new(call, req, sizeof(read_state)));
}

static void listed(read_state *st, PGresult *res, const uint8_t dek[SG_KEY_LEN]) {
  sg_op *o = &st->op;
  if (!sg_page_check(o, res))
    return;
  const Sealgate__V1__ListSandboxesRequest *req = (const void *)o->req;
  int32_t page_size;
  sg_validate_page_size("page_size", req->page_size, &page_size, o->err, sizeof(o->err));
  int rows = PQntuples(res), shown = rows > page_size ? page_size : rows;
  Sealgate__V1__ListSandboxesResponse out = SEALGATE__V1__LIST_SANDBOXES_RESPONSE__INIT;
  sg_arena *a = sg_call_arena(o->call);
  out.sandboxes = sg_arena_alloc(a, (size_t)shown * sizeof(*out.sandboxes) + 1);
  for (int i = 0; i < shown; i++) {
    sandbox_msg *inner = unseal_row(o, res, i, dek), *s = sg_arena_alloc(a, sizeof(*s));
    if (inner == NULL || sandbox_from_row(o, res, i, inner, s) != 0)
      return;
    out.sandboxes[out.n_sandboxes++] = s;
  }
  if (rows > shown)
    out.next_page_token = sg_page_token_make(o, PQgetvalue(res, shown - 1, SANDBOX_PAGE_KEY),
                                             PQgetvalue(res, shown - 1, SANDBOX_ID));
  sg_call_reply(o->call, &out.base);
}

static void list_authed(sg_call *call, void *arg, const char *org) {
  (void)call;
  sg_op *o = arg;
  const Sealgate__V1__ListSandboxesRequest *req = (const void *)o->req;
  o->org = org;
  if (sg_page_params(o, req->page_size, req->page_token) == 0)
    read_with_key(arg, Q_SANDBOX_LIST, listed);
}

static void list_sandboxes(sg_call *call, const ProtobufCMessage *req) {
  sg_auth(call, list_authed, sg_op_new(call, req, sizeof(read_state)));
}

/* --- DeleteSandbox -------------------------------------------------------------------------- */

static void stopped(void *arg, PGresult *res) {
  sg_op *o = arg;
  const char *id = ((const Sealgate__V1__DeleteSandboxRequest *)o->req)->sandbox_id;
  if (sg_db_changed(res)) {
    if (PQgetvalue(res, 0, 1)[0] == 't') /* this call stopped it, not an earlier one */
      sandbox_changed(o, SG_AUDIT_DELETED, PQgetvalue(res, 0, 0));
    sg_gen_bump(SG_GEN_SANDBOXES); /* this node's proxy views at once; others on the notification */
    if (sg_local_runtime_on())
      sg_local_runtime_remove("sandboxes", PQgetvalue(res, 0, 0));
  }
  sg_op_reply_empty(o, res, sandbox_not_found(o, id));
}

static void delete_authed(sg_call *call, void *arg, const char *org) {
  (void)call;
  sg_op *o = arg;
  const char *id = ((const Sealgate__V1__DeleteSandboxRequest *)o->req)->sandbox_id;
  if (sandbox_params(o, id, org) == 0)
    sg_db_exec(sg_db_local(), Q_SANDBOX_STOP, o->values, NULL, NULL, stopped, o);
}

static void delete_sandbox(sg_call *call, const ProtobufCMessage *req) {
  sg_auth(call, delete_authed, sg_op_new(call, req, sizeof(sg_op)));
}

/* --- CreateCheckpoint ----------------------------------------------------------------------- */

/* Checkpoints and snapshots: the id is drawn first, since the local runtime's directory is
 * named after it and made before the row. Without the runtime |insert_row|(|st|) runs at once;
 * with it, |stmt| ($1 |key|, $2 the caller's organization) checks first and |cb| goes on. */
static void make_then_insert(sg_op *o, char id[SG_UUID_LEN + 1], void (*insert_row)(void *st),
                             void *st, const char *key, int stmt, sg_db_cb cb) {
  if (sg_uuid_generate(id) != 0) {
    sg_call_finish(o->call, SG_STATUS_INTERNAL, "no randomness available");
    return;
  }
  if (!sg_local_runtime_on()) {
    insert_row(st);
    return;
  }
  o->values[0] = key;
  o->values[1] = o->org;
  sg_db_exec(sg_db_local(), stmt, o->values, NULL, NULL, cb, st);
}

typedef struct {
  sg_op op;
  char id[SG_UUID_LEN + 1];
  int dir_made;
} checkpoint_state;

/* Only a running sandbox is checkpointed: FAILED_PRECONDITION names what it is instead. */
static int require_running(sg_op *o, const char *id, const char *status, const char *what) {
  if (strcmp(status, "running") == 0)
    return 1;
  sg_call_finish(o->call, SG_STATUS_FAILED_PRECONDITION, "sandbox %.64s is %s: %s", id, status,
                 what);
  return 0;
}

static void checkpoint_made(void *arg, PGresult *res) {
  checkpoint_state *st = arg;
  sg_op *o = &st->op;
  const Sealgate__V1__CreateCheckpointRequest *req = (const void *)o->req;
  /* Taken now: a finished call takes |st| with it. */
  int dir_made = st->dir_made;
  char id[SG_UUID_LEN + 1];
  memcpy(id, st->id, sizeof(id));
  if (dir_made && (res == NULL || PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) == 0 ||
                   strcmp(PQgetvalue(res, 0, 0), "running") != 0))
    sg_local_runtime_remove("checkpoints", id);
  int ok = sg_db_check(o->call, res, sandbox_not_found(o, req->sandbox_id), NULL);
  if (ok && PQntuples(res) == 0) {
    sg_call_finish(o->call, SG_STATUS_NOT_FOUND, "%s", sandbox_not_found(o, req->sandbox_id));
    ok = 0;
  }
  if (ok && !require_running(o, req->sandbox_id, PQgetvalue(res, 0, 0),
                             "only a running sandbox can be checkpointed"))
    ok = 0;
  if (!ok)
    return;
  /* Columns after the status are the checkpoint's. */
  Sealgate__V1__Checkpoint c = SEALGATE__V1__CHECKPOINT__INIT;
  c.id = sg_col(o->call, res, 0, 1 + CHECKPOINT_ID);
  c.sandbox_id = sg_col(o->call, res, 0, 1 + CHECKPOINT_SANDBOX);
  c.name = sg_col(o->call, res, 0, 1 + CHECKPOINT_NAME);
  c.created_at = sg_col(o->call, res, 0, 1 + CHECKPOINT_CREATED);
  if (sg_col_array(o->call, res, 0, 1 + CHECKPOINT_STORES, &c.secret_stores, &c.n_secret_stores) !=
      0)
    return;
  changed(o, SG_AUDIT_CREATED, c.sandbox_id, "sandboxes/%s/checkpoints/%s", c.sandbox_id, c.id);
  sg_call_reply(o->call, &c.base);
}

static void checkpoint_insert(void *arg) {
  checkpoint_state *st = arg;
  sg_op *o = &st->op;
  const Sealgate__V1__CreateCheckpointRequest *req = (const void *)o->req;
  o->values[0] = st->id;
  o->values[1] = req->sandbox_id;
  o->values[2] = o->org;
  o->values[3] = req->name;
  sg_db_exec(sg_db_local(), Q_CHECKPOINT_CREATE, o->values, NULL, NULL, checkpoint_made, st);
}

static void checkpoint_copied(void *arg, const char *err) {
  checkpoint_state *st = arg;
  if (err != NULL) {
    sg_logf(SG_LOG_ERROR, "local_runtime", "checkpoint %s: %s", st->id, err);
    sg_local_runtime_remove("checkpoints", st->id);
    sg_call_finish(st->op.call, SG_STATUS_INTERNAL, "cannot copy the sandbox's directory");
    return;
  }
  st->dir_made = 1;
  checkpoint_insert(st);
}

static void checkpoint_checked(void *arg, PGresult *res) {
  checkpoint_state *st = arg;
  sg_op *o = &st->op;
  const Sealgate__V1__CreateCheckpointRequest *req = (const void *)o->req;
  if (!found_sandbox(o, res, req->sandbox_id) ||
      !require_running(o, req->sandbox_id, PQgetvalue(res, 0, SANDBOX_STATUS),
                       "only a running sandbox can be checkpointed"))
    return;
  sg_local_runtime_checkpoint(PQgetvalue(res, 0, SANDBOX_ID), st->id, checkpoint_copied, st);
}

static void checkpoint_authed(sg_call *call, void *arg, const char *org) {
  (void)call;
  checkpoint_state *st = arg;
  sg_op *o = &st->op;
  const Sealgate__V1__CreateCheckpointRequest *req = (const void *)o->req;
  o->org = org;
  if (sg_validate_id("sandbox_id", req->sandbox_id, o->err, sizeof(o->err)) != 0 ||
      sg_validate_store_name("name", req->name, o->err, sizeof(o->err)) != 0) {
    sg_op_invalid(o);
    return;
  }
  /* The copy is made before the row, so a checkpoint never exists without its directory. */
  make_then_insert(o, st->id, checkpoint_insert, st, req->sandbox_id, Q_SANDBOX_GET,
                   checkpoint_checked);
}

static void create_checkpoint(sg_call *call, const ProtobufCMessage *req) {
  sg_auth(call, checkpoint_authed, sg_op_new(call, req, sizeof(checkpoint_state)));
}

/* --- GetAllowedHosts ------------------------------------------------------------------------ */

static void hosts_listed(void *arg, PGresult *res) {
  sg_op *o = arg;
  const char *id = ((const Sealgate__V1__GetAllowedHostsRequest *)o->req)->sandbox_id;
  if (!sg_db_check(o->call, res, sandbox_not_found(o, id), NULL))
    return;
  int rows = PQntuples(res);
  if (rows == 0 || strcmp(PQgetvalue(res, 0, 0), "0") != 0) {
    sg_call_finish(o->call, SG_STATUS_NOT_FOUND, "%s", sandbox_not_found(o, id));
    return;
  }
  sg_arena *a = sg_call_arena(o->call);
  static char *every[] = {"*"};
  /* The union of the layers' allowlists; no layer, or a layer allowing every public host,
   * makes it "*". */
  char **allow = NULL;
  size_t n_allow = 0, cap = 0;
  int layers = 0, all = 0;
  for (int r = 1; r < rows; r++) {
    if (strcmp(PQgetvalue(res, r, 0), "1") != 0)
      continue;
    layers++;
    char **items;
    size_t n;
    if (sg_col_array(o->call, res, r, 2, &items, &n) != 0)
      return;
    if (n == 0 || has(items, n, "*"))
      all = 1;
    if (n_allow + n > cap) {
      cap = 2 * (n_allow + n);
      char **grown = sg_arena_alloc(a, cap * sizeof(char *));
      if (n_allow > 0)
        memcpy(grown, allow, n_allow * sizeof(char *));
      allow = grown;
    }
    for (size_t i = 0; i < n; i++)
      if (!has(allow, n_allow, items[i]))
        allow[n_allow++] = items[i];
  }
  if (layers == 0 || all) {
    allow = every;
    n_allow = 1;
  }
  Sealgate__V1__GetAllowedHostsResponse out = SEALGATE__V1__GET_ALLOWED_HOSTS_RESPONSE__INIT;
  out.egress_allowlist = allow;
  out.n_egress_allowlist = n_allow;
  out.secret_allowed_hosts = sg_arena_alloc(a, (size_t)rows * sizeof(*out.secret_allowed_hosts));
  for (int r = 1; r < rows; r++) {
    if (strcmp(PQgetvalue(res, r, 0), "2") != 0)
      continue;
    char **items;
    size_t n;
    if (sg_col_array(o->call, res, r, 2, &items, &n) != 0)
      return;
    /* An empty allowed_hosts means what the secret's own store allows (SPEC §2): a layer
     * with a wider allowlist on top does not widen where an older layer's value may go. */
    if (n == 0 && sg_col_array(o->call, res, r, 3, &items, &n) != 0)
      return;
    if (n == 0 || has(items, n, "*")) {
      items = every;
      n = 1;
    }
    Sealgate__V1__HostList *hl = sg_arena_alloc(a, sizeof(*hl));
    sealgate__v1__host_list__init(hl);
    /* The secret's hosts as far as the sandbox's allowlist lets it reach them. */
    hl->hosts = sg_arena_alloc(a, n * n_allow * sizeof(char *) + 1);
    for (size_t i = 0; i < n; i++)
      for (size_t j = 0; j < n_allow; j++) {
        const char *both = sg_host_pattern_intersect(items[i], allow[j]);
        if (both != NULL && !has(hl->hosts, hl->n_hosts, both))
          hl->hosts[hl->n_hosts++] = (char *)both;
      }
    Sealgate__V1__GetAllowedHostsResponse__SecretAllowedHostsEntry *e =
        sg_arena_alloc(a, sizeof(*e));
    sealgate__v1__get_allowed_hosts_response__secret_allowed_hosts_entry__init(e);
    e->key = sg_col(o->call, res, r, 1);
    e->value = hl;
    out.secret_allowed_hosts[out.n_secret_allowed_hosts++] = e;
  }
  sg_call_reply(o->call, &out.base);
}

static void hosts_authed(sg_call *call, void *arg, const char *org) {
  (void)call;
  sg_op *o = arg;
  const char *id = ((const Sealgate__V1__GetAllowedHostsRequest *)o->req)->sandbox_id;
  if (sandbox_params(o, id, org) == 0)
    sg_db_exec(sg_db_local(), Q_SANDBOX_HOSTS, o->values, NULL, NULL, hosts_listed, o);
}

static void get_allowed_hosts(sg_call *call, const ProtobufCMessage *req) {
  sg_auth(call, hosts_authed, sg_op_new(call, req, sizeof(sg_op)));
}

/* --- Snapshots ------------------------------------------------------------------------------ */

typedef struct {
  sg_op op;
  char id[SG_UUID_LEN + 1];
  int dir_made;
} snapshot_state;

static char *snapshot_not_found(sg_op *o, const char *name) {
  return sg_arena_printf(sg_call_arena(o->call), "snapshot \"%.128s\" not found", name);
}

static char *snapshot_taken(sg_op *o, const char *name) {
  return sg_arena_printf(sg_call_arena(o->call),
                         "a snapshot named \"%.128s\" already exists in this organization", name);
}

static int snapshot_from_row(sg_op *o, const PGresult *res, int row, Sealgate__V1__Snapshot *s) {
  sg_arena *a = sg_call_arena(o->call);
  sealgate__v1__snapshot__init(s);
  Sealgate__V1__Image *img = sg_arena_alloc(a, sizeof(*img));
  sealgate__v1__image__init(img);
  s->id = sg_col(o->call, res, row, SNAPSHOT_ID);
  s->name = sg_col(o->call, res, row, SNAPSHOT_NAME);
  s->created_at = sg_col(o->call, res, row, SNAPSHOT_CREATED);
  img->base_ = sg_col(o->call, res, row, SNAPSHOT_BASE);
  s->image = img;
  return sg_col_array(o->call, res, row, SNAPSHOT_APT, &img->apt_packages, &img->n_apt_packages) !=
                     0 ||
                 sg_col_array(o->call, res, row, SNAPSHOT_PIP, &img->pip_packages,
                              &img->n_pip_packages) != 0 ||
                 sg_col_array(o->call, res, row, SNAPSHOT_RUN, &img->run_commands,
                              &img->n_run_commands) != 0
             ? -1
             : 0;
}

static void reply_snapshot(sg_op *o, PGresult *res, const char *name, const char *taken) {
  if (!sg_db_check(o->call, res, NULL, taken))
    return;
  if (PQntuples(res) == 0) {
    sg_call_finish(o->call, SG_STATUS_NOT_FOUND, "%s", snapshot_not_found(o, name));
    return;
  }
  Sealgate__V1__Snapshot s;
  if (snapshot_from_row(o, res, 0, &s) == 0)
    sg_call_reply(o->call, &s.base);
}

/* Image lists: at most MAX_IMAGE_ITEMS entries, each 1..MAX_IMAGE_ITEM bytes (run_commands up
 * to MAX_COMMAND) without control characters (tabs allowed; newlines too in commands). */
static int validate_list(sg_op *o, const char *field, char *const *items, size_t n, size_t max_len,
                         int newlines) {
  if (n > MAX_IMAGE_ITEMS) {
    snprintf(o->err, sizeof(o->err), "%s: at most %d entries", field, MAX_IMAGE_ITEMS);
    return -1;
  }
  for (size_t i = 0; i < n; i++) {
    size_t len = strlen(items[i]);
    if (len == 0 || len > max_len) {
      snprintf(o->err, sizeof(o->err), "%s[%zu]: must be 1-%zu bytes", field, i, max_len);
      return -1;
    }
    for (size_t k = 0; k < len; k++) {
      unsigned char c = (unsigned char)items[i][k];
      if ((c < 0x20 && c != '\t' && !(newlines && c == '\n')) || c == 0x7f) {
        snprintf(o->err, sizeof(o->err), "%s[%zu]: has a control character", field, i);
        return -1;
      }
    }
  }
  return 0;
}

static void snapshot_made(void *arg, PGresult *res) {
  snapshot_state *st = arg;
  sg_op *o = &st->op;
  const Sealgate__V1__CreateSnapshotRequest *req = (const void *)o->req;
  if (st->dir_made && (res == NULL || PQresultStatus(res) != PGRES_TUPLES_OK))
    sg_local_runtime_remove("snapshots", st->id);
  if (sg_db_changed(res))
    changed(o, SG_AUDIT_CREATED, NULL, "snapshots/%s", req->name);
  reply_snapshot(o, res, req->name, snapshot_taken(o, req->name));
}

static void snapshot_insert(void *arg) {
  snapshot_state *st = arg;
  sg_op *o = &st->op;
  const Sealgate__V1__CreateSnapshotRequest *req = (const void *)o->req;
  const Sealgate__V1__Image *img = req->image;
  static const Sealgate__V1__Image none = SEALGATE__V1__IMAGE__INIT;
  if (img == NULL)
    img = &none;
  sg_arena *a = sg_call_arena(o->call);
  o->values[0] = st->id;
  o->values[1] = o->org;
  o->values[2] = req->name;
  o->values[3] = img->base_;
  o->values[4] = sg_pg_array(a, img->apt_packages, img->n_apt_packages);
  o->values[5] = sg_pg_array(a, img->pip_packages, img->n_pip_packages);
  o->values[6] = sg_pg_array(a, img->run_commands, img->n_run_commands);
  sg_db_exec(sg_db_local(), Q_SNAPSHOT_CREATE, o->values, NULL, NULL, snapshot_made, st);
}

static void snapshot_built(void *arg, const char *err) {
  snapshot_state *st = arg;
  if (err != NULL) {
    sg_call_finish(st->op.call, SG_STATUS_FAILED_PRECONDITION, "%s", err);
    return;
  }
  st->dir_made = 1;
  snapshot_insert(st);
}

static void snapshot_checked(void *arg, PGresult *res) {
  snapshot_state *st = arg;
  sg_op *o = &st->op;
  const Sealgate__V1__CreateSnapshotRequest *req = (const void *)o->req;
  if (!sg_db_check(o->call, res, NULL, NULL))
    return;
  if (PQntuples(res) > 0) {
    sg_call_finish(o->call, SG_STATUS_ALREADY_EXISTS, "%s", snapshot_taken(o, req->name));
    return;
  }
  const Sealgate__V1__Image *img = req->image;
  if (sg_local_runtime_build_snapshot(st->id, img ? img->run_commands : NULL,
                                      img ? img->n_run_commands : 0, snapshot_built, st) != 0)
    sg_call_finish(o->call, SG_STATUS_RESOURCE_EXHAUSTED,
                   "%d snapshots are being built already; retry later", SG_BUILD_MAX_CONCURRENT);
}

static void snapshot_authed(sg_call *call, void *arg, const char *org) {
  (void)call;
  snapshot_state *st = arg;
  sg_op *o = &st->op;
  const Sealgate__V1__CreateSnapshotRequest *req = (const void *)o->req;
  const Sealgate__V1__Image *img = req->image;
  o->org = org;
  if (sg_validate_store_name("name", req->name, o->err, sizeof(o->err)) != 0 ||
      (img != NULL && (validate_list(o, "image.base", img->base_[0] ? &img->base_ : NULL,
                                     img->base_[0] ? 1 : 0, MAX_IMAGE_ITEM, 0) != 0 ||
                       validate_list(o, "image.apt_packages", img->apt_packages,
                                     img->n_apt_packages, MAX_IMAGE_ITEM, 0) != 0 ||
                       validate_list(o, "image.pip_packages", img->pip_packages,
                                     img->n_pip_packages, MAX_IMAGE_ITEM, 0) != 0 ||
                       validate_list(o, "image.run_commands", img->run_commands,
                                     img->n_run_commands, MAX_COMMAND, 1) != 0))) {
    sg_op_invalid(o);
    return;
  }
  /* The name is checked before the (possibly long) build, and taken by the insert after it. */
  make_then_insert(o, st->id, snapshot_insert, st, req->name, Q_SNAPSHOT_GET, snapshot_checked);
}

static void create_snapshot(sg_call *call, const ProtobufCMessage *req) {
  sg_auth(call, snapshot_authed, sg_op_new(call, req, sizeof(snapshot_state)));
}

static void snapshot_got(void *arg, PGresult *res) {
  sg_op *o = arg;
  reply_snapshot(o, res, ((const Sealgate__V1__GetSnapshotRequest *)o->req)->name, NULL);
}

/* GetSnapshot and DeleteSnapshot: a name, then one statement. */
static void by_name_authed(sg_op *o, const char *name, int stmt, sg_db_cb cb) {
  if (sg_validate_store_name("name", name, o->err, sizeof(o->err)) != 0) {
    sg_op_invalid(o);
    return;
  }
  o->values[0] = name;
  o->values[1] = o->org;
  sg_db_exec(sg_db_local(), stmt, o->values, NULL, NULL, cb, o);
}

static void get_snapshot_authed(sg_call *call, void *arg, const char *org) {
  (void)call;
  sg_op *o = arg;
  o->org = org;
  by_name_authed(o, ((const Sealgate__V1__GetSnapshotRequest *)o->req)->name, Q_SNAPSHOT_GET,
                 snapshot_got);
}

static void get_snapshot(sg_call *call, const ProtobufCMessage *req) {
  sg_auth(call, get_snapshot_authed, sg_op_new(call, req, sizeof(sg_op)));
}

static void snapshot_deleted(void *arg, PGresult *res) {
  sg_op *o = arg;
  const char *name = ((const Sealgate__V1__DeleteSnapshotRequest *)o->req)->name;
  if (sg_db_changed(res)) {
    changed(o, SG_AUDIT_DELETED, NULL, "snapshots/%s", name);
    if (sg_local_runtime_on())
      sg_local_runtime_remove("snapshots", PQgetvalue(res, 0, 0));
  }
  sg_op_reply_empty(o, res, snapshot_not_found(o, name));
}

static void delete_snapshot_authed(sg_call *call, void *arg, const char *org) {
  (void)call;
  sg_op *o = arg;
  o->org = org;
  by_name_authed(o, ((const Sealgate__V1__DeleteSnapshotRequest *)o->req)->name, Q_SNAPSHOT_DELETE,
                 snapshot_deleted);
}

static void delete_snapshot(sg_call *call, const ProtobufCMessage *req) {
  sg_auth(call, delete_snapshot_authed, sg_op_new(call, req, sizeof(sg_op)));
}

static void snapshots_listed(void *arg, PGresult *res) {
  sg_op *o = arg;
  if (!sg_db_check(o->call, res, NULL, NULL))
    return;
  int rows = PQntuples(res);
  Sealgate__V1__ListSnapshotsResponse out = SEALGATE__V1__LIST_SNAPSHOTS_RESPONSE__INIT;
  sg_arena *a = sg_call_arena(o->call);
  out.snapshots = sg_arena_alloc(a, (size_t)rows * sizeof(*out.snapshots) + 1);
  for (int i = 0; i < rows; i++) {
    Sealgate__V1__Snapshot *s = sg_arena_alloc(a, sizeof(*s));
    if (snapshot_from_row(o, res, i, s) != 0)
      return;
    out.snapshots[out.n_snapshots++] = s;
  }
  sg_call_reply(o->call, &out.base);
}

static void list_snapshots_authed(sg_call *call, void *arg, const char *org) {
  (void)call;
  sg_op *o = arg;
  o->org = org;
  o->values[0] = org;
  sg_db_exec(sg_db_local(), Q_SNAPSHOT_LIST, o->values, NULL, NULL, snapshots_listed, o);
}

static void list_snapshots(sg_call *call, const ProtobufCMessage *req) {
  sg_auth(call, list_snapshots_authed, sg_op_new(call, req, sizeof(sg_op)));
}

/* --- RunCommand ----------------------------------------------------------------------------- */

typedef struct {
  read_state read;
  int32_t timeout;
  char tag[SG_RUN_TAG_LEN];
} run_state;

/* The client gave up (cancelled, deadline, connection gone): its command stops too, instead
 * of holding one of the SG_RUN_MAX_CONCURRENT places until its own timeout. */
static void run_cancelled(sg_call *call, void *arg) {
  (void)call;
  sg_local_runtime_cancel(((run_state *)arg)->tag);
}

static void ran(void *arg, const sg_run_output *out, const char *err) {
  run_state *st = arg;
  sg_op *o = &st->read.op;
  if (out == NULL) {
    sg_call_finish(o->call, SG_STATUS_FAILED_PRECONDITION, "%s", err);
    return;
  }
  Sealgate__V1__RunCommandResponse r = SEALGATE__V1__RUN_COMMAND_RESPONSE__INIT;
  r.exit_code = out->exit_code;
  r.stdout = out->out;
  r.stderr = out->err;
  sg_call_reply(o->call, &r.base);
}

static void run_got_sandbox(read_state *rs, PGresult *res, const uint8_t dek[SG_KEY_LEN]) {
  run_state *st = (run_state *)rs;
  sg_op *o = &rs->op;
  const Sealgate__V1__RunCommandRequest *req = (const void *)o->req;
  if (!found_sandbox(o, res, req->sandbox_id) ||
      !require_running(o, req->sandbox_id, PQgetvalue(res, 0, SANDBOX_STATUS),
                       "commands run only in a running sandbox"))
    return;
  sandbox_msg *inner = unseal_row(o, res, 0, dek);
  sandbox_msg s;
  if (inner == NULL || sandbox_from_row(o, res, 0, inner, &s) != 0)
    return;
  sg_arena *a = sg_call_arena(o->call);
  char **env = sg_arena_alloc(a, (s.n_env + 1) * sizeof(char *));
  for (size_t i = 0; i < s.n_env; i++)
    env[i] = sg_arena_printf(a, "%s=%s", s.env[i]->key, s.env[i]->value);
  env[s.n_env] = NULL;
  if (sg_local_runtime_run(s.id, req->cwd, env, req->command, st->timeout, ran, st, st->tag) != 0) {
    sg_call_finish(o->call, SG_STATUS_RESOURCE_EXHAUSTED,
                   "%d commands are running already; retry later", SG_RUN_MAX_CONCURRENT);
    return;
  }
  sg_call_on_cancel(o->call, run_cancelled, st);
  if (sg_call_is_done(o->call)) /* cancelled while the sandbox was read */
    sg_local_runtime_cancel(st->tag);
}

/* A path inside the sandbox's directory: relative, no "..", no empty or control bytes. */
static int validate_cwd(sg_op *o, const char *cwd) {
  size_t len = strlen(cwd);
  const char *why = NULL;
  if (len > 1024)
    why = "at most 1024 bytes";
  else if (cwd[0] == '/')
    why = "must be relative to the sandbox's directory";
  for (size_t i = 0; why == NULL && i < len; i++)
    if ((unsigned char)cwd[i] < 0x20)
      why = "has a control character";
  for (const char *p = cwd; why == NULL && *p;) {
    size_t seg = strcspn(p, "/");
    if (seg == 2 && p[0] == '.' && p[1] == '.')
      why = "may not contain \"..\"";
    p += seg;
    p += *p == '/';
  }
  if (why == NULL)
    return 0;
  snprintf(o->err, sizeof(o->err), "cwd: %s", why);
  return -1;
}

static void run_authed(sg_call *call, void *arg, const char *org) {
  run_state *st = arg;
  sg_op *o = &st->read.op;
  const Sealgate__V1__RunCommandRequest *req = (const void *)o->req;
  o->org = org;
  size_t len = strlen(req->command);
  if (sg_validate_id("sandbox_id", req->sandbox_id, o->err, sizeof(o->err)) != 0 ||
      validate_cwd(o, req->cwd) != 0) {
    sg_op_invalid(o);
    return;
  }
  if (len == 0 || len > MAX_COMMAND) {
    sg_call_finish(call, SG_STATUS_INVALID_ARGUMENT, "command: must be 1-%d bytes", MAX_COMMAND);
    return;
  }
  if (req->timeout_seconds < 0 || req->timeout_seconds > MAX_RUN_TIMEOUT) {
    sg_call_finish(call, SG_STATUS_INVALID_ARGUMENT, "timeout_seconds: must be 1-%d (0: %d)",
                   MAX_RUN_TIMEOUT, DEFAULT_RUN_TIMEOUT);
    return;
  }
  st->timeout = req->timeout_seconds ? req->timeout_seconds : DEFAULT_RUN_TIMEOUT;
  o->values[0] = req->sandbox_id;
  o->values[1] = org;
  read_with_key(&st->read, Q_SANDBOX_GET, run_got_sandbox);
}

static void run_command(sg_call *call, const ProtobufCMessage *req) {
  if (!sg_local_runtime_on()) {
    sg_call_finish(call, SG_STATUS_UNIMPLEMENTED,
                   "RunCommand needs the local process runtime (sealgate serve --local-runtime)");
    return;
  }
  sg_auth(call, run_authed, sg_op_new(call, req, sizeof(run_state)));
}

/* --- The sweep of ended sandboxes ----------------------------------------------------------- */

#define SWEEP_SECONDS 2

static _Thread_local struct event *sweep_timer;
static _Thread_local int sweep_busy;

typedef struct {
  char **ids;
  size_t n;
  const char *values[1];
} sweep_state;

static void sweep_free(sweep_state *s) {
  free((char *)s->values[0]);
  for (size_t i = 0; i < s->n; i++)
    free(s->ids[i]);
  free(s->ids);
  free(s);
}

static void swept(void *arg, PGresult *res) {
  sweep_state *s = arg;
  if (res != NULL && PQresultStatus(res) == PGRES_TUPLES_OK)
    for (int r = 0; r < PQntuples(res); r++)
      sg_local_runtime_remove("sandboxes", PQgetvalue(res, r, 0));
  sweep_free(s);
  sweep_busy = 0;
}

/* Listing a local directory of a few entries is the one file-system call made on the loop:
 * it does not wait for anything but the kernel's dentry cache. */
static void sweep(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  (void)arg;
  sg_db *db = sg_db_local();
  if (sweep_busy || db == NULL || !sg_db_available(db))
    return;
  sweep_state *s = sg_calloc(1, sizeof(*s));
  s->n = sg_local_runtime_list_sandboxes(&s->ids);
  if (s->n == 0) {
    sweep_free(s);
    return;
  }
  sg_arena *a = sg_arena_new();
  char *list = sg_pg_array(a, s->ids, s->n);
  s->values[0] = sg_strdup(list);
  sg_arena_free(a);
  sweep_busy = 1;
  sg_db_exec(db, Q_SANDBOX_ENDED, s->values, NULL, NULL, swept, s);
}

void sg_sandbox_sweep_start(void) {
  if (!sg_local_runtime_on() || sweep_timer != NULL)
    return;
  sweep_timer = event_new(sg_loop_base(sg_loop_current()), -1, EV_PERSIST, sweep, NULL);
  struct timeval every = {SWEEP_SECONDS, 0};
  event_add(sweep_timer, &every);
}

void sg_sandbox_sweep_stop(void) {
  if (sweep_timer != NULL)
    event_free(sweep_timer);
  sweep_timer = NULL;
}

static const sg_method_impl methods[] = {
    {"CreateSandbox", SG_METHOD_UNARY, create_sandbox, NULL},
    {"GetSandbox", SG_METHOD_UNARY, get_sandbox, NULL},
    {"ListSandboxes", SG_METHOD_UNARY, list_sandboxes, NULL},
    {"DeleteSandbox", SG_METHOD_UNARY, delete_sandbox, NULL},
    {"CreateCheckpoint", SG_METHOD_UNARY, create_checkpoint, NULL},
    {"CreateSandboxFromCheckpoint", SG_METHOD_UNARY, fork_sandbox, NULL},
    {"CreateSnapshot", SG_METHOD_UNARY, create_snapshot, NULL},
    {"GetSnapshot", SG_METHOD_UNARY, get_snapshot, NULL},
    {"ListSnapshots", SG_METHOD_UNARY, list_snapshots, NULL},
    {"DeleteSnapshot", SG_METHOD_UNARY, delete_snapshot, NULL},
    {"GetAllowedHosts", SG_METHOD_UNARY, get_allowed_hosts, NULL},
    {"RunCommand", SG_METHOD_UNARY, run_command, NULL},
};

const sg_service sg_sandbox_service = {&sealgate__v1__sandbox_service__descriptor, methods,
                                       SG_ARRAY_LEN(methods), NULL};
