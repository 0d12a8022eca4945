/* PostgreSQL from an event loop, never blocking it: each loop owns a small pool of libpq
 * connections in non-blocking pipeline mode, driven by libevent. Statements are prepared once
 * per connection; a query is one prepared statement plus a Sync, so an error in one never
 * touches another. Many queries may be in flight on one connection at once.
 *
 * While PostgreSQL cannot be reached, queries fail at once (the callback gets NULL and the
 * caller answers UNAVAILABLE) and the connections retry in the background with backoff, so
 * service resumes by itself when the database is back. Multi-host connection strings
 * ("host=a,b target_session_attrs=read-write") are libpq's: a reconnect follows a failover. */
#ifndef SG_DB_POOL_H
#define SG_DB_POOL_H

#include <stddef.h>

#include <libpq-fe.h>

struct event_base;

typedef struct sg_db sg_db;

/* A statement every connection prepares. Parameters are text unless a query says otherwise. */
typedef struct {
  const char *name;
  const char *sql;
  int n_params;
} sg_db_stmt;

/* Delivered once per query on the loop's thread. |res| is NULL when the database could not be
 * reached (connection down, lost mid-query, pool shutting down): answer UNAVAILABLE. Otherwise
 * it is the statement's result, successful or an SQL error (PQresultStatus,
 * PG_DIAG_SQLSTATE); it is freed when the callback returns. */
typedef void (*sg_db_cb)(void *arg, PGresult *res);

typedef struct {
  const char *conninfo;
  int connections;         /* per pool (per loop) */
  const sg_db_stmt *stmts; /* prepared on every connection; must outlive the pool */
  size_t n_stmts;
  int max_queued; /* queries waiting for a connection before new ones are refused */
} sg_db_options;

/* Creates a pool on |base| and starts connecting. |opts| must outlive the pool. */
sg_db *sg_db_new(struct event_base *base, const sg_db_options *opts);

/* Fails every query still waiting or in flight (callbacks get NULL) and closes the
 * connections. */
void sg_db_free(sg_db *db);

/* Runs statement |stmt| (an index into opts->stmts) with |values| (text, NUL-terminated; NULL
 * for SQL NULL; binary where |formats| says 1, with |lengths|). The values must stay valid
 * until |cb| has run. |cb| always runs exactly once, never before sg_db_exec returns. */
void sg_db_exec(sg_db *db, int stmt, const char *const *values, const int *lengths,
                const int *formats, sg_db_cb cb, void *arg);

/* Nonzero if at least one connection is up. */
int sg_db_available(const sg_db *db);

/* The calling loop thread's pool (set by the server when the loop starts), or NULL. */
sg_db *sg_db_local(void);
void sg_db_set_local(sg_db *db);

/* The SQLSTATE of an error result ("23505"), or "" for none. */
const char *sg_db_sqlstate(const PGresult *res);

#endif
