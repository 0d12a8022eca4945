/* Every SQL statement the services run, prepared on each database connection at connect time.
 * Organization scoping is in the SQL itself: every statement that touches an organization's
 * rows has "org_id = $n" in its WHERE clause, so another organization's id finds nothing. */
#ifndef SG_SERVICE_QUERIES_H
#define SG_SERVICE_QUERIES_H

#include <stddef.h>

#include "db/pool.h"

enum {
  Q_AUTH_KEY,       /* $1 digest (bytea, binary) -> org_id */
  Q_ORG_KEY_GET,    /* $1 org, $2 root key id -> dek_id, wrapped, any_key_exists */
  Q_ORG_KEY_CREATE, /* $1 org, $2 root key id, $3 dek_id, $4 wrapped (binary) -> dek_id */
  Q_STORE_CREATE,   /* $1 org, $2 name, $3 allowlist -> store */
  Q_STORE_GET,      /* $1 id, $2 org -> store */
  Q_STORE_LIST,     /* $1 org, $2 after created_at, $3 after id, $4 limit -> stores + key */
  Q_STORE_UPDATE,   /* $1 id, $2 org, $3 set name?, $4 name, $5 set list?, $6 list -> store */
  Q_STORE_DELETE,   /* $1 id, $2 org -> id */
  Q_SECRET_RESERVE, /* $1 store, $2 org, $3 name -> store id, the next version */
  Q_SECRET_WRITE,   /* $1 org, $2 store, $3 name, $4 hosts, $5 version, $6 nonce, $7 ct */
  Q_SECRET_GET,     /* $1 store, $2 org, $3 name -> secret */
  Q_SECRET_LIST,    /* $1 store, $2 org -> store id + secrets (NULL name: none) */
  Q_SECRET_DELETE,  /* $1 store, $2 org, $3 name -> id */
  Q_COUNT
};

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

#endif
