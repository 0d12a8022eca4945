#include "db/pool.h"

#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "core/list.h"
#include "core/log.h"
#include "core/mem.h"
#include "core/stats.h"

/* Queries one connection carries at once before the pool prefers another or queues. */
#define SG_DB_MAX_INFLIGHT   128
#define SG_DB_BACKOFF_MIN_MS 100
#define SG_DB_BACKOFF_MAX_MS 5000

typedef struct sg_db_req {
  sg_list link; /* in a connection's in-flight FIFO, the waiting queue, or the failed list */
  int stmt;     /* -1: a connection set-up step (see setup_steps) */
  const char *const *values;
  const int *lengths, *formats;
  sg_db_cb cb;
  void *arg;
  PGresult *result;
  int query_done; /* PQgetResult gave the NULL that ends the query's results */
  int counted;    /* sent to a connection: in sealgate_db_queries_in_flight */
} sg_db_req;

typedef enum { CONN_DOWN, CONN_CONNECTING, CONN_PREPARING, CONN_READY } conn_state;

typedef struct {
  sg_db *db;
  PGconn *pg;
  conn_state state;
  int fd;
  struct event *rev, *wev, *retry;
  sg_list inflight;
  size_t n_inflight;
  size_t setup_left; /* set-up steps not yet answered */
  int setup_failed;
  int backoff_ms;
  int ever_up;     /* has been READY at least once since the pool started */
  int down_logged; /* this outage has been logged; retries stay quiet */
} db_conn;

struct sg_db {
  struct event_base *base;
  const sg_db_options *opts;
  db_conn *conns;
  int n;
  sg_list waiting;
  size_t n_waiting;
  sg_list failed; /* to be told NULL from the loop, never from inside sg_db_exec */
  struct event *deliver;
  int closing;
};

static _Thread_local sg_db *local_db;

sg_db *sg_db_local(void) {
  return local_db;
}

void sg_db_set_local(sg_db *db) {
  local_db = db;
}

const char *sg_db_sqlstate(const PGresult *res) {
  const char *s = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
  return s ? s : "";
}

/* --- Delivering failures ------------------------------------------------------------------- */

/* Metrics: a query leaves the in-flight gauge, if it was in it, and counts its outcome. */
static void count_done(sg_db_req *r, sg_db_result result) {
  if (r->counted)
    sg_gauge_add(&sg_stats.db_queries_inflight, -1);
  r->counted = 0;
  sg_counter_inc(&sg_stats.db_queries[result]);
}

static void set_ready(db_conn *c, int ready) {
  if ((c->state == CONN_READY) != ready)
    sg_gauge_add(&sg_stats.db_connections_up, ready ? 1 : -1);
  c->state = ready ? CONN_READY : CONN_DOWN;
}

static void on_deliver(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  sg_db *db = arg;
  while (!sg_list_empty(&db->failed)) {
    sg_db_req *r = SG_CONTAINER_OF(db->failed.next, sg_db_req, link);
    sg_list_remove(&r->link);
    if (r->result != NULL)
      PQclear(r->result);
    if (r->stmt >= 0)
      count_done(r, SG_DB_RESULT_UNAVAILABLE);
    if (r->cb != NULL)
      r->cb(r->arg, NULL);
    free(r);
  }
}

static void fail_later(sg_db *db, sg_db_req *r) {
  sg_list_remove(&r->link);
  sg_list_push(db->failed.prev, &r->link); /* at the tail: keep order */
  event_active(db->deliver, EV_TIMEOUT, 1);
}

static void fail_all(sg_db *db, sg_list *list) {
  while (!sg_list_empty(list))
    fail_later(db, SG_CONTAINER_OF(list->next, sg_db_req, link));
}

/* --- Connection life ----------------------------------------------------------------------- */

static void conn_start(db_conn *c);
static void conn_send(db_conn *c, sg_db_req *r);
static void conn_flush(db_conn *c);

static int any_ready(const sg_db *db) {
  for (int i = 0; i < db->n; i++)
    if (db->conns[i].state == CONN_READY)
      return 1;
  return 0;
}

int sg_db_available(const sg_db *db) {
  return any_ready(db);
}

static void conn_unwatch(db_conn *c) {
  if (c->rev != NULL) {
    event_free(c->rev);
    event_free(c->wev);
    c->rev = c->wev = NULL;
  }
  c->fd = -1;
}

static void conn_down(db_conn *c, const char *why) {
  sg_db *db = c->db;
  if (!c->down_logged) {
    c->down_logged = 1;
    sg_log_begin(SG_LOG_WARN, "db_connection_lost");
    sg_log_cstr("detail", why);
    if (c->pg != NULL && PQerrorMessage(c->pg)[0] != '\0') {
      const char *msg = PQerrorMessage(c->pg);
      size_t len = strcspn(msg, "\n");
      sg_log_str("error", msg, len);
    }
    sg_log_end();
  }
  conn_unwatch(c);
  if (c->pg != NULL)
    PQfinish(c->pg);
  c->pg = NULL;
  set_ready(c, 0);
  fail_all(db, &c->inflight);
  c->n_inflight = 0;
  if (!any_ready(db)) {
    fail_all(db, &db->waiting);
    sg_gauge_add(&sg_stats.db_queries_queued, -(int64_t)db->n_waiting);
    db->n_waiting = 0;
  }
  if (db->closing)
    return;
  /* Back off, with jitter so the nodes of a cluster do not all knock at once. */
  int ms = c->backoff_ms + (int)(random() % (c->backoff_ms / 2 + 1));
  c->backoff_ms =
      c->backoff_ms * 2 > SG_DB_BACKOFF_MAX_MS ? SG_DB_BACKOFF_MAX_MS : c->backoff_ms * 2;
  struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
  event_add(c->retry, &tv);
}

static void on_retry(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  conn_start(arg);
}

static void on_io(evutil_socket_t fd, short what, void *arg);

/* (Re)binds the events to the connection's socket, which libpq may change while it tries the
 * hosts of a multi-host connection string. */
static void conn_watch(db_conn *c, int readable, int writable) {
  int fd = PQsocket(c->pg);
  if (fd != c->fd) {
    conn_unwatch(c);
    c->fd = fd;
    c->rev = event_new(c->db->base, fd, EV_READ | EV_PERSIST, on_io, c);
    c->wev = event_new(c->db->base, fd, EV_WRITE | EV_PERSIST, on_io, c);
  }
  if (readable)
    event_add(c->rev, NULL);
  else
    event_del(c->rev);
  if (writable)
    event_add(c->wev, NULL);
  else
    event_del(c->wev);
}

/* Set-up steps, each its own query and Sync: the session setting, then every statement. */
static void setup_step_done(void *arg, PGresult *res) {
  db_conn *c = arg;
  if (res == NULL)
    return; /* the connection went down; conn_down has it in hand */
  if (PQresultStatus(res) != PGRES_COMMAND_OK) {
    c->setup_failed = 1;
    sg_log_begin(SG_LOG_ERROR, "db_setup_failed");
    sg_log_cstr("sqlstate", sg_db_sqlstate(res));
    sg_log_str("error", PQresultErrorMessage(res), strcspn(PQresultErrorMessage(res), "\n"));
    sg_log_end();
  }
  if (--c->setup_left > 0)
    return;
  if (c->setup_failed) {
    conn_down(c, "preparing statements failed (is the schema migrated?)");
    return;
  }
  set_ready(c, 1);
  if (c->down_logged)
    sg_logf(SG_LOG_INFO, "db_connection_restored", "connected to the database again");
  c->down_logged = 0;
  c->ever_up = 1;
  c->backoff_ms = SG_DB_BACKOFF_MIN_MS;
  sg_db *db = c->db;
  while (!sg_list_empty(&db->waiting) && c->n_inflight < SG_DB_MAX_INFLIGHT) {
    sg_db_req *r = SG_CONTAINER_OF(db->waiting.next, sg_db_req, link);
    sg_list_remove(&r->link);
    db->n_waiting--;
    sg_gauge_add(&sg_stats.db_queries_queued, -1);
    conn_send(c, r);
  }
}

static void push_setup(db_conn *c, int ok) {
  sg_db_req *r = sg_calloc(1, sizeof(*r));
  r->stmt = -1;
  r->cb = setup_step_done;
  r->arg = c;
  sg_list_push(c->inflight.prev, &r->link);
  c->n_inflight++;
  c->setup_left++;
  if (!ok)
    c->setup_failed = 1;
}

static void conn_setup(db_conn *c) {
  const sg_db_options *o = c->db->opts;
  c->state = CONN_PREPARING;
  c->setup_failed = 0;
  c->setup_left = 0;
  int ok = PQsetnonblocking(c->pg, 1) == 0 && PQenterPipelineMode(c->pg) == 1;
  if (!ok) {
    conn_down(c, "cannot enter pipeline mode");
    return;
  }
  /* A query stuck in the database must not hold a call forever. */
  ok = PQsendQueryParams(c->pg, "SET statement_timeout = 30000", 0, NULL, NULL, NULL, NULL, 0) &&
       PQpipelineSync(c->pg);
  push_setup(c, ok);
  for (size_t i = 0; i < o->n_stmts && ok; i++) {
    ok = PQsendPrepare(c->pg, o->stmts[i].name, o->stmts[i].sql, o->stmts[i].n_params, NULL) &&
         PQpipelineSync(c->pg);
    push_setup(c, ok);
  }
  if (!ok) {
    conn_down(c, "cannot send the set-up queries");
    return;
  }
  conn_flush(c);
}

static void conn_connecting(db_conn *c) {
  switch (PQconnectPoll(c->pg)) {
  case PGRES_POLLING_READING:
    conn_watch(c, 1, 0);
    break;
  case PGRES_POLLING_WRITING:
    conn_watch(c, 0, 1);
    break;
  case PGRES_POLLING_OK:
    conn_watch(c, 1, 0);
    conn_setup(c);
    break;
  default:
    conn_down(c, "connection attempt failed");
  }
}

/* Server notices (e.g. PostgreSQL's "WARNING: terminating connection due to immediate
 * shutdown command" as a failover begins) are not for the log: libpq's default processor would
 * print them raw on stderr, among the structured lines. The loss itself is logged by conn_down.
 */
static void quiet_notice(void *arg, const char *message) {
  (void)arg;
  (void)message;
}

static void conn_start(db_conn *c) {
  const char *keys[] = {"dbname", "fallback_application_name", NULL};
  const char *values[] = {c->db->opts->conninfo, "sealgate", NULL};
  c->pg = PQconnectStartParams(keys, values, 1);
  if (c->pg == NULL || PQstatus(c->pg) == CONNECTION_BAD) {
    conn_down(c, "cannot start a connection (bad connection string?)");
    return;
  }
  PQsetNoticeProcessor(c->pg, quiet_notice, NULL);
  c->state = CONN_CONNECTING;
  conn_watch(c, 0, 1);
}

/* --- Queries ------------------------------------------------------------------------------- */

static void complete_head(db_conn *c) {
  sg_db_req *r = SG_CONTAINER_OF(c->inflight.next, sg_db_req, link);
  sg_list_remove(&r->link);
  c->n_inflight--;
  if (r->stmt >= 0) {
    ExecStatusType st = r->result != NULL ? PQresultStatus(r->result) : PGRES_FATAL_ERROR;
    count_done(r, st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK ? SG_DB_RESULT_OK
                                                                  : SG_DB_RESULT_ERROR);
  }
  r->cb(r->arg, r->result);
  if (r->result != NULL)
    PQclear(r->result);
  free(r);
}

/* Takes every result that has fully arrived. Each request ends with the PGRES_PIPELINE_SYNC of
 * its own Sync. */
static void conn_results(db_conn *c) {
  while (c->pg != NULL && !sg_list_empty(&c->inflight)) {
    if (PQisBusy(c->pg))
      break;
    sg_db_req *head = SG_CONTAINER_OF(c->inflight.next, sg_db_req, link);
    PGresult *res = PQgetResult(c->pg);
    if (res == NULL) {
      if (head->query_done)
        break;
      head->query_done = 1;
      continue;
    }
    if (PQresultStatus(res) == PGRES_PIPELINE_SYNC) {
      PQclear(res);
      complete_head(c);
      continue;
    }
    if (head->result == NULL)
      head->result = res;
    else
      PQclear(res);
  }
}

static void conn_flush(db_conn *c) {
  int rv = PQflush(c->pg);
  if (rv < 0)
    conn_down(c, "sending to the database failed");
  else
    conn_watch(c, 1, rv == 1);
}

static void on_io(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  db_conn *c = arg;
  if (c->state == CONN_CONNECTING) {
    conn_connecting(c);
    return;
  }
  if ((what & EV_READ) && !PQconsumeInput(c->pg)) {
    conn_down(c, "reading from the database failed");
    return;
  }
  conn_results(c);
  if (c->pg != NULL && PQstatus(c->pg) == CONNECTION_BAD) {
    conn_down(c, "the database closed the connection");
    return;
  }
  if (c->pg != NULL)
    conn_flush(c);
}

static void conn_send(db_conn *c, sg_db_req *r) {
  const sg_db_stmt *st = &c->db->opts->stmts[r->stmt];
  sg_list_push(c->inflight.prev, &r->link);
  c->n_inflight++;
  r->counted = 1;
  sg_gauge_add(&sg_stats.db_queries_inflight, 1);
  if (!PQsendQueryPrepared(c->pg, st->name, st->n_params, r->values, r->lengths, r->formats, 0) ||
      !PQpipelineSync(c->pg)) {
    conn_down(c, "sending a query failed");
    return;
  }
  conn_flush(c);
}

static db_conn *pick(sg_db *db) {
  db_conn *best = NULL;
  for (int i = 0; i < db->n; i++) {
    db_conn *c = &db->conns[i];
    if (c->state == CONN_READY && c->n_inflight < SG_DB_MAX_INFLIGHT &&
        (best == NULL || c->n_inflight < best->n_inflight))
      best = c;
  }
  return best;
}

/* Worth waiting for: a connection is up but busy, or one is still making its first attempt. */
static int worth_waiting(const sg_db *db) {
  for (int i = 0; i < db->n; i++) {
    const db_conn *c = &db->conns[i];
    if (c->state == CONN_READY || (!c->ever_up && c->state != CONN_DOWN))
      return 1;
  }
  return 0;
}

void sg_db_exec(sg_db *db, int stmt, const char *const *values, const int *lengths,
                const int *formats, sg_db_cb cb, void *arg) {
  sg_db_req *r = sg_calloc(1, sizeof(*r));
  sg_list_init(&r->link);
  r->stmt = stmt;
  r->values = values;
  r->lengths = lengths;
  r->formats = formats;
  r->cb = cb;
  r->arg = arg;
  db_conn *c = db->closing ? NULL : pick(db);
  if (c != NULL) {
    conn_send(c, r);
  } else if (!db->closing && worth_waiting(db) && db->n_waiting < (size_t)db->opts->max_queued) {
    sg_list_push(db->waiting.prev, &r->link);
    db->n_waiting++;
    sg_gauge_add(&sg_stats.db_queries_queued, 1);
  } else {
    fail_later(db, r);
  }
}

/* --- Pool ---------------------------------------------------------------------------------- */

sg_db *sg_db_new(struct event_base *base, const sg_db_options *opts) {
  sg_db *db = sg_calloc(1, sizeof(*db));
  db->base = base;
  db->opts = opts;
  db->n = opts->connections > 0 ? opts->connections : 1;
  db->conns = sg_calloc((size_t)db->n, sizeof(*db->conns));
  sg_list_init(&db->waiting);
  sg_list_init(&db->failed);
  db->deliver = event_new(base, -1, 0, on_deliver, db);
  for (int i = 0; i < db->n; i++) {
    db_conn *c = &db->conns[i];
    c->db = db;
    c->fd = -1;
    c->backoff_ms = SG_DB_BACKOFF_MIN_MS;
    sg_list_init(&c->inflight);
    c->retry = evtimer_new(base, on_retry, c);
    conn_start(c);
  }
  return db;
}

void sg_db_free(sg_db *db) {
  if (db == NULL)
    return;
  db->closing = 1;
  for (int i = 0; i < db->n; i++) {
    db_conn *c = &db->conns[i];
    event_free(c->retry);
    c->retry = NULL;
    conn_unwatch(c);
    if (c->pg != NULL)
      PQfinish(c->pg);
    c->pg = NULL;
    set_ready(c, 0);
    fail_all(db, &c->inflight);
  }
  fail_all(db, &db->waiting);
  sg_gauge_add(&sg_stats.db_queries_queued, -(int64_t)db->n_waiting);
  db->n_waiting = 0;
  on_deliver(-1, 0, db); /* the loop is ending: tell everyone now */
  event_free(db->deliver);
  free(db->conns);
  free(db);
}
