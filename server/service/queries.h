/* Every SQL statement the services run, prepared on each database connection at connect time.
 * Organization scoping is in the SQL itself: every statement that touches an organization's
 * rows has "org_id = $n" in its WHERE clause, so another organization's id finds nothing. */
#ifndef SG_SERVICE_QUERIES_H
#define SG_SERVICE_QUERIES_H

#include <stddef.h>

#include "db/pool.h"

enum {
  Q_AUTH_KEY,          /* $1 digest (bytea, binary) -> org_id, key id, key prefix */
  Q_ORG_KEY_GET,       /* $1 org, $2 root key id -> dek_id, wrapped, any_key_exists */
  Q_ORG_KEY_CREATE,    /* $1 org, $2 root key id, $3 dek_id, $4 wrapped (binary) -> dek_id */
  Q_STORE_CREATE,      /* $1 org, $2 name, $3 allowlist -> store */
  Q_STORE_GET,         /* $1 id, $2 org -> store */
  Q_STORE_LIST,        /* $1 org, $2 after created_at, $3 after id, $4 limit -> stores + key */
  Q_STORE_UPDATE,      /* $1 id, $2 org, $3 set name?, $4 name, $5 set list?, $6 list -> store */
  Q_STORE_DELETE,      /* $1 id, $2 org -> id */
  Q_SECRET_RESERVE,    /* $1 store, $2 org, $3 name -> store id, the next version */
  Q_SECRET_WRITE,      /* $1 org, $2 store, $3 name, $4 hosts, $5 version, $6 nonce, $7 ct
                        * -> secret + created (bool, at SECRET_N_COLS) */
  Q_SECRET_GET,        /* $1 store, $2 org, $3 name -> secret */
  Q_SECRET_LIST,       /* $1 store, $2 org -> store id + secrets (NULL name: none) */
  Q_SECRET_DELETE,     /* $1 store, $2 org, $3 name -> id, version, store id */
  Q_SANDBOX_RESOLVE,   /* $1 org, $2 base store ids, $3 top store, $4 snapshot -> layer rows */
  Q_SANDBOX_CREATE,    /* see queries.c -> sandbox */
  Q_SANDBOX_GET,       /* $1 id, $2 org -> sandbox */
  Q_SANDBOX_LIST,      /* $1 org, $2 after created_at, $3 after id, $4 limit -> sandboxes */
  Q_SANDBOX_STOP,      /* $1 id, $2 org -> id */
  Q_SANDBOX_HOSTS,     /* $1 id, $2 org -> kind, name, hosts, store's hosts */
  Q_SANDBOX_ENDED,     /* $1 ids -> those stopped or expired */
  Q_PROXY_VIEW,        /* $1 sandbox id -> what the egress proxy needs (proxy/view.c) */
  Q_CHECKPOINT_CREATE, /* $1 id, $2 sandbox, $3 org, $4 name -> status + checkpoint */
  Q_CHECKPOINT_GET,    /* $1 id, $2 org -> checkpoint + snapshot, store ids */
  Q_SNAPSHOT_CREATE,   /* $1 id, $2 org, $3 name, $4 base, $5 apt, $6 pip, $7 run -> snapshot */
  Q_SNAPSHOT_GET,      /* $1 name, $2 org -> snapshot */
  Q_SNAPSHOT_LIST,     /* $1 org -> snapshots */
  Q_SNAPSHOT_DELETE,   /* $1 name, $2 org -> id */
  /* $1 org, $2 after time, $3 after id, $4 limit, $5 sandbox, $6 store, $7 secret name, $8
   * since -> events. One statement per kind and combination of filters,
   * Q_AUDIT_LIST + AUDIT_<kind> * AUDIT_KIND_STRIDE + AUDIT_BY_* bits (a filter left out is
   * passed as "" and not looked at), so each has a plan on its index. */
  Q_AUDIT_LIST,
  Q_AUDIT_LIST_LAST = Q_AUDIT_LIST + 23,
  Q_COUNT
};
enum { AUDIT_BY_SANDBOX = 1, AUDIT_BY_STORE = 2, AUDIT_BY_SECRET = 4, AUDIT_KIND_STRIDE = 8 };
/* ListAuditEvents' kind: the proxy's decisions (the default), management calls, or both. */
enum { AUDIT_proxy = 0, AUDIT_mgmt = 1, AUDIT_all = 2 };

extern const sg_db_stmt sg_queries[Q_COUNT];

/* Result columns of a store (Q_STORE_*) and of a secret entry (Q_SECRET_WRITE/GET/LIST). */
enum {
  STORE_ID,
  STORE_ORG,
  STORE_NAME,
  STORE_ALLOWLIST,
  STORE_CREATED,
  STORE_UPDATED,
  STORE_PAGE_KEY,
  STORE_N_COLS
};
enum {
  SECRET_ID,
  SECRET_STORE,
  SECRET_NAME,
  SECRET_HOSTS,
  SECRET_CREATED,
  SECRET_UPDATED,
  SECRET_VERSION,
  SECRET_LAST_USED,
  SECRET_USE_COUNT,
  SECRET_N_COLS
};

enum {
  SANDBOX_ID,
  SANDBOX_ORG,
  SANDBOX_STATUS,
  SANDBOX_STORES,
  SANDBOX_SNAPSHOT,
  SANDBOX_CHECKPOINT,
  SANDBOX_NONCE,
  SANDBOX_SEALED,
  SANDBOX_CREATED,
  SANDBOX_EXPIRES,
  SANDBOX_PAGE_KEY,
  SANDBOX_SNAPSHOT_ID,
  SANDBOX_N_COLS
};
enum {
  CHECKPOINT_ID,
  CHECKPOINT_SANDBOX,
  CHECKPOINT_NAME,
  CHECKPOINT_STORES,
  CHECKPOINT_CREATED,
  CHECKPOINT_STORE_IDS,
  CHECKPOINT_SNAPSHOT,
  CHECKPOINT_N_COLS
};
enum {
  SNAPSHOT_ID,
  SNAPSHOT_NAME,
  SNAPSHOT_BASE,
  SNAPSHOT_APT,
  SNAPSHOT_PIP,
  SNAPSHOT_RUN,
  SNAPSHOT_CREATED,
  SNAPSHOT_N_COLS
};
enum {
  AUDIT_ID,
  AUDIT_TIME,
  AUDIT_SANDBOX,
  AUDIT_STORE,
  AUDIT_SECRET_NAME,
  AUDIT_SECRET_VERSION,
  AUDIT_HOST,
  AUDIT_METHOD,
  AUDIT_PATH,
  AUDIT_DECISION,
  AUDIT_REASON,
  AUDIT_PAGE_KEY,
  AUDIT_ACTOR,
  AUDIT_ACTION,
  AUDIT_ACTOR_KEY,
  AUDIT_RESOURCE,
  AUDIT_N_COLS
};

#endif
