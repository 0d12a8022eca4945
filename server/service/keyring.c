#include "service/keyring.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "core/log.h"
#include "core/mem.h"
#include "db/pgtext.h"
#include "db/pool.h"
#include "service/queries.h"

#define CACHE_SLOTS 4096 /* direct-mapped; a miss costs one indexed read */
#define ORG_ID_MAX  64

/* The key bytes live in OpenSSL's secure heap (core/secure.h: locked, not in core dumps)
 * when the process set one up, else in ordinary memory; either way they are zeroed on
 * cleanup. Slot i's data key is deks[i]. */
static char cache_orgs[CACHE_SLOTS][ORG_ID_MAX + 1];
static uint8_t (*deks)[SG_KEY_LEN];
static sg_root_key *root;
static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;

int sg_keyring_init(const char *path, char *err, size_t errlen) {
  sg_keyring_cleanup();
  root = OPENSSL_secure_zalloc(sizeof(*root));
  deks = OPENSSL_secure_zalloc(CACHE_SLOTS * sizeof(*deks));
  if (root == NULL || deks == NULL) {
    snprintf(err, errlen, "out of memory for keys");
    sg_keyring_cleanup();
    return -1;
  }
  if (sg_root_key_load(path, root, err, errlen) != 0) {
    sg_keyring_cleanup();
    return -1;
  }
  return 0;
}

void sg_keyring_cleanup(void) {
  pthread_mutex_lock(&cache_lock);
  if (deks != NULL)
    OPENSSL_secure_clear_free(deks, CACHE_SLOTS * sizeof(*deks));
  deks = NULL;
  memset(cache_orgs, 0, sizeof(cache_orgs));
  pthread_mutex_unlock(&cache_lock);
  if (root != NULL) {
    sg_root_key_clear(root);
    OPENSSL_secure_clear_free(root, sizeof(*root));
  }
  root = NULL;
}

const sg_root_key *sg_keyring_root(void) {
  return root;
}

static size_t slot(const char *org_id) {
  uint32_t h = 2166136261u;
  for (const char *p = org_id; *p; p++)
    h = (h ^ (uint8_t)*p) * 16777619u;
  return h % CACHE_SLOTS;
}

static int cache_get(const char *org_id, uint8_t dek[SG_KEY_LEN]) {
  size_t i = slot(org_id);
  pthread_mutex_lock(&cache_lock);
  int hit = deks != NULL && strcmp(cache_orgs[i], org_id) == 0;
  if (hit)
    memcpy(dek, deks[i], SG_KEY_LEN);
  pthread_mutex_unlock(&cache_lock);
  return hit;
}

static void cache_put(const char *org_id, const uint8_t dek[SG_KEY_LEN]) {
  size_t i = slot(org_id);
  pthread_mutex_lock(&cache_lock);
  if (deks != NULL) {
    snprintf(cache_orgs[i], sizeof(cache_orgs[i]), "%s", org_id);
    memcpy(deks[i], dek, SG_KEY_LEN);
  }
  pthread_mutex_unlock(&cache_lock);
}

/* One fetch, owned here (malloc'd) until its callback has run: it does not depend on a call,
 * so the egress proxy can use it too. */
typedef struct {
  char org_id[ORG_ID_MAX + 1];
  sg_dek_fetch_cb cb;
  void *arg;
  int created; /* tried to create the key already */
  uint8_t wrapped[SG_WRAPPED_DEK_LEN];
  char dek_id[40];
  const char *values[4];
  int lengths[4], formats[4];
} op;

static void finish(op *o, sg_dek_status status, uint8_t *dek) {
  o->cb(o->arg, status, status == SG_DEK_OK ? dek : NULL);
  if (dek != NULL)
    OPENSSL_cleanse(dek, SG_KEY_LEN);
  free(o);
}

static void fetch(op *o);

static void key_unavailable(op *o, const char *why) {
  sg_log_begin(SG_LOG_ERROR, "data_key_unavailable");
  sg_log_cstr("org", o->org_id);
  sg_log_cstr("root_key_id", root->id);
  sg_log_cstr("detail", why);
  sg_log_end();
  finish(o, SG_DEK_FAILED, NULL);
}

/* Returns 1 for a successful result; otherwise ends the fetch (UNAVAILABLE when the database
 * could not be reached or the connection failed, FAILED and a log line otherwise). */
static int result_ok(op *o, PGresult *res) {
  if (res != NULL &&
      (PQresultStatus(res) == PGRES_TUPLES_OK || PQresultStatus(res) == PGRES_COMMAND_OK))
    return 1;
  const char *state = res != NULL ? sg_db_sqlstate(res) : "";
  if (res == NULL || strncmp(state, "08", 2) == 0 || strncmp(state, "57", 2) == 0 ||
      strcmp(state, "25006") == 0) {
    finish(o, SG_DEK_UNAVAILABLE, NULL);
    return 0;
  }
  const char *primary = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
  key_unavailable(o, primary ? primary : "database error");
  return 0;
}

static void created(void *arg, PGresult *res) {
  op *o = arg;
  if (result_ok(o, res))
    fetch(o); /* ours or a concurrent writer's: read whichever won */
}

/* The organization has no data key yet: make one, wrapped for our root key. */
static void create(op *o) {
  uint8_t dek[SG_KEY_LEN], id[16];
  if (sg_dek_generate(dek) != 0 || RAND_bytes(id, sizeof(id)) != 1 ||
      sg_dek_wrap(root, o->org_id, dek, o->wrapped) != 0) {
    OPENSSL_cleanse(dek, sizeof(dek));
    key_unavailable(o, "could not generate a data key");
    return;
  }
  OPENSSL_cleanse(dek, sizeof(dek)); /* read back through fetch(), like any other key */
  id[6] = (id[6] & 0x0f) | 0x40;     /* UUID version 4 */
  id[8] = (id[8] & 0x3f) | 0x80;
  snprintf(o->dek_id, sizeof(o->dek_id),
           "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", id[0], id[1],
           id[2], id[3], id[4], id[5], id[6], id[7], id[8], id[9], id[10], id[11], id[12], id[13],
           id[14], id[15]);
  o->created = 1;
  o->values[0] = o->org_id;
  o->values[1] = root->id;
  o->values[2] = o->dek_id;
  o->values[3] = (const char *)o->wrapped;
  o->lengths[3] = SG_WRAPPED_DEK_LEN;
  o->formats[3] = 1;
  sg_db_exec(sg_db_local(), Q_ORG_KEY_CREATE, o->values, o->lengths, o->formats, created, o);
}

static void fetched(void *arg, PGresult *res) {
  op *o = arg;
  if (!result_ok(o, res))
    return;
  if (PQntuples(res) != 1) {
    key_unavailable(o, "unexpected result reading the data key");
    return;
  }
  if (PQgetisnull(res, 0, 1)) {
    int any = PQgetvalue(res, 0, 2)[0] == 't';
    if (any)
      key_unavailable(o, "the data key is wrapped only for other root keys: finish "
                         "`sealgate rotate-root-key` or start this node with the right key");
    else if (o->created)
      key_unavailable(o, "the data key vanished after it was created");
    else
      create(o);
    return;
  }
  uint8_t *wrapped, dek[SG_KEY_LEN];
  size_t len;
  sg_arena *a = sg_arena_new();
  int bad = sg_pg_bytea_parse(a, PQgetvalue(res, 0, 1), &wrapped, &len) != 0 ||
            sg_dek_unwrap(root, o->org_id, wrapped, len, dek) != 0;
  sg_arena_free(a);
  if (bad) {
    key_unavailable(o, "the wrapped data key failed authentication (tampered or wrong key)");
    return;
  }
  cache_put(o->org_id, dek);
  finish(o, SG_DEK_OK, dek);
}

static void fetch(op *o) {
  o->values[0] = o->org_id;
  o->values[1] = root->id;
  sg_db_exec(sg_db_local(), Q_ORG_KEY_GET, o->values, NULL, NULL, fetched, o);
}

void sg_keyring_fetch(const char *org_id, sg_dek_fetch_cb cb, void *arg) {
  uint8_t dek[SG_KEY_LEN];
  if (root == NULL || strlen(org_id) > ORG_ID_MAX) {
    cb(arg, SG_DEK_FAILED, NULL);
    return;
  }
  if (cache_get(org_id, dek)) {
    cb(arg, SG_DEK_OK, dek);
    OPENSSL_cleanse(dek, sizeof(dek));
    return;
  }
  if (sg_db_local() == NULL) {
    cb(arg, SG_DEK_UNAVAILABLE, NULL);
    return;
  }
  op *o = sg_calloc(1, sizeof(*o));
  snprintf(o->org_id, sizeof(o->org_id), "%s", org_id);
  o->cb = cb;
  o->arg = arg;
  fetch(o);
}

/* sg_keyring_get on sg_keyring_fetch: the call's continuation, in its arena. */
typedef struct {
  sg_call *call;
  sg_dek_cb cb;
  void *arg;
} call_fetch;

static void fetched_for_call(void *arg, sg_dek_status status, const uint8_t *dek) {
  call_fetch *f = arg;
  if (status == SG_DEK_OK)
    f->cb(f->call, f->arg, dek);
  else if (status == SG_DEK_UNAVAILABLE)
    sg_call_finish(f->call, SG_STATUS_UNAVAILABLE, "database unavailable; retry later");
  else
    sg_call_finish(f->call, SG_STATUS_INTERNAL, "encryption key unavailable");
}

void sg_keyring_get(sg_call *call, const char *org_id, sg_dek_cb cb, void *arg) {
  call_fetch *f = sg_arena_alloc(sg_call_arena(call), sizeof(*f));
  *f = (call_fetch){call, cb, arg};
  sg_keyring_fetch(org_id, fetched_for_call, f);
}
