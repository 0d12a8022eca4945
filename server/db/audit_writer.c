#include "db/audit_writer.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libpq-fe.h>

#include "core/arena.h"
#include "core/clock.h"
#include "core/log.h"
#include "core/mem.h"
#include "crypto/token.h"
#include "db/migrate.h"
#include "db/pgtext.h"
#include "db/pool.h"

#define BACKOFF_MIN_MS    100
#define BACKOFF_MAX_MS    5000
#define DROP_LOG_EVERY_NS 1000000000LL

/* One statement per batch, sixteen text arrays of equal length. Counters are taken from the
 * rows actually inserted, so a batch sent again after a lost answer (same ids) counts nothing
 * twice. Secrets are locked in id order: writers on several nodes never deadlock each other.
 * The org_id condition keeps an event from counting against another organization's secret. */
static const char INSERT_SQL[] =
    "WITH ev AS (SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::timestamptz[], $4::text[], "
    "$5::text[], $6::text[], $7::bigint[], $8::text[], $9::text[], $10::text[], $11::text[], "
    "$12::text[], $13::text[], $14::text[], $15::text[], $16::text[]) AS e(id, org_id, time, "
    "sandbox_id, store_id, secret_name, secret_version, host, method, path, decision, reason, "
    "actor_key_id, actor, action, resource)), "
    "ins AS (INSERT INTO audit_events (id, org_id, time, sandbox_id, store_id, secret_name, "
    "secret_version, host, method, path, decision, reason, actor_key_id, actor, action, "
    "resource) "
    "SELECT id, org_id, time, nullif(sandbox_id, '')::uuid, nullif(store_id, '')::uuid, "
    "secret_name, secret_version, host, method, path, decision, reason, "
    "nullif(actor_key_id, '')::uuid, actor, action, resource FROM ev "
    "ON CONFLICT (id) DO NOTHING RETURNING org_id, store_id, secret_name, time, decision), "
    "used AS (SELECT org_id, store_id, secret_name, count(*) AS n, max(time) AS t FROM ins "
    "WHERE decision = 'substituted' AND store_id IS NOT NULL "
    "GROUP BY org_id, store_id, secret_name), "
    "locked AS MATERIALIZED (SELECT s.id, u.n, u.t FROM secrets s JOIN used u "
    "ON s.store_id = u.store_id AND s.name = u.secret_name AND s.org_id = u.org_id "
    "WHERE s.deleted_at IS NULL ORDER BY s.id FOR UPDATE OF s) "
    "UPDATE secrets s SET use_count = s.use_count + l.n, "
    "last_used_at = greatest(coalesce(s.last_used_at, l.t), l.t) FROM locked l WHERE s.id = l.id";

/* An event's text fields, and the statement's parameters (in INSERT_SQL's order). */
enum {
  F_ORG,
  F_SANDBOX,
  F_STORE,
  F_NAME,
  F_HOST,
  F_METHOD,
  F_PATH,
  F_REASON,
  F_ACTOR_KEY,
  F_ACTOR,
  F_ACTION,
  F_RESOURCE,
  N_FIELDS
};
enum {
  P_ID,
  P_ORG,
  P_TIME,
  P_SANDBOX,
  P_STORE,
  P_NAME,
  P_VERSION,
  P_HOST,
  P_METHOD,
  P_PATH,
  P_DECISION,
  P_REASON,
  P_ACTOR_KEY,
  P_ACTOR,
  P_ACTION,
  P_RESOURCE,
  N_PARAMS
};
static const int field_param[N_FIELDS] = {P_ORG,       P_SANDBOX, P_STORE,  P_NAME,
                                          P_HOST,      P_METHOD,  P_PATH,   P_REASON,
                                          P_ACTOR_KEY, P_ACTOR,   P_ACTION, P_RESOURCE};

static const size_t field_max[N_FIELDS] = {
    SG_UUID_LEN,       SG_UUID_LEN,         SG_UUID_LEN,         SG_AUDIT_NAME_MAX,
    SG_AUDIT_HOST_MAX, SG_AUDIT_METHOD_MAX, SG_AUDIT_PATH_MAX,   SG_AUDIT_REASON_MAX,
    SG_UUID_LEN,       SG_AUDIT_ACTOR_MAX,  SG_AUDIT_ACTION_MAX, SG_AUDIT_RESOURCE_MAX};

/* A queued event: one allocation, its fields stored after the header. */
typedef struct {
  int64_t time_us; /* CLOCK_REALTIME when recorded */
  uint64_t version;
  sg_audit_decision decision;
  size_t size;              /* of the allocation, for the queue's byte bound */
  char id[SG_UUID_LEN + 1]; /* drawn when first batched, kept across retries */
  const char *f[N_FIELDS];
  char text[];
} event;

/* The queue, a ring of SG_AUDIT_QUEUE_MAX slots; |ring| is NULL while no writer runs. */
static struct {
  pthread_mutex_t lock;
  pthread_cond_t wake; /* the writer waits on it; monotonic clock */
  event **ring;
  size_t head, n, bytes;
  int flush, stopping;
  int64_t stop_deadline_ns;
} q = {.lock = PTHREAD_MUTEX_INITIALIZER};

static _Atomic uint64_t written, dropped;
static _Atomic uint64_t unreported; /* drops the writer has not logged yet */
static uint64_t lost_at_stop;       /* the writer's batch, given up at the stop deadline */
static pthread_t thread;
static const char *db_conninfo;

uint64_t sg_audit_written(void) {
  return atomic_load(&written);
}

uint64_t sg_audit_dropped(void) {
  return atomic_load(&dropped);
}

static double read_written(void *arg) {
  (void)arg;
  return (double)sg_audit_written();
}

static double read_dropped(void *arg) {
  (void)arg;
  return (double)sg_audit_dropped();
}

void sg_audit_metrics(sg_metrics *m) {
  sg_metrics_counter_fn(m, "sealgate_audit_events_written_total",
                        "Audit events written to PostgreSQL.", NULL, read_written, NULL);
  sg_metrics_counter_fn(m, "sealgate_audit_events_dropped_total",
                        "Audit events dropped (queue full, writer stopped, malformed).", NULL,
                        read_dropped, NULL);
}

const char *sg_audit_decision_name(sg_audit_decision decision) {
  switch (decision) {
  case SG_AUDIT_SUBSTITUTED:
    return "substituted";
  case SG_AUDIT_WITHHELD:
    return "withheld";
  case SG_AUDIT_DENIED:
    return "denied";
  case SG_AUDIT_REDACTED:
    return "redacted";
  case SG_AUDIT_CREATED:
    return "created";
  case SG_AUDIT_UPDATED:
    return "updated";
  case SG_AUDIT_DELETED:
    return "deleted";
  }
  return NULL;
}

static void count_drops(uint64_t n) {
  atomic_fetch_add(&dropped, n);
  atomic_fetch_add(&unreported, n);
}

/* --- Recording ----------------------------------------------------------------------------- */

/* Stores |s| as field |field| keeps it into |out| (NULL: only measures): printable ASCII as is,
 * any other byte as %XX, cut before the byte that would pass the field's maximum; a path ends
 * before its query or fragment. Returns the length. */
static size_t store_text(const char *s, int field, char *out) {
  static const char hex[] = "0123456789ABCDEF";
  size_t n = 0;
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (field == F_PATH && (c == '?' || c == '#'))
      break;
    int plain = c >= 0x20 && c < 0x7f;
    if (n + (plain ? 1 : 3) > field_max[field])
      break;
    if (out != NULL && plain) {
      out[n] = (char)c;
    } else if (out != NULL) {
      out[n] = '%';
      out[n + 1] = hex[c >> 4];
      out[n + 2] = hex[c & 15];
    }
    n += plain ? 1 : 3;
  }
  return n;
}

/* Overwrites the digits of every sealed token in |s| (also one cut short) with '*'. */
static void mask_tokens(char *s) {
  while ((s = strstr(s, SG_TOKEN_PREFIX)) != NULL) {
    s += SG_TOKEN_PREFIX_LEN;
    for (int i = 0; i < SG_TOKEN_LEN - SG_TOKEN_PREFIX_LEN &&
                    ((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f'));
         i++)
      *s++ = '*';
  }
}

static int id_ok(const char *id, int optional) {
  return (optional && *id == '\0') || sg_uuid_is_canonical(id);
}

/* A copy of |ev| stamped with the time, or NULL if it is malformed. */
static event *event_new(const sg_audit_event *ev) {
  const char *in[N_FIELDS] = {ev->org_id,       ev->sandbox_id, ev->store_id, ev->secret_name,
                              ev->host,         ev->method,     ev->path,     ev->reason,
                              ev->actor_key_id, ev->actor,      ev->action,   ev->resource};
  size_t len[N_FIELDS], total = 0;
  for (int i = 0; i < N_FIELDS; i++) {
    if (in[i] == NULL)
      in[i] = "";
    len[i] = store_text(in[i], i, NULL);
    total += len[i] + 1;
  }
  /* A management change has an action, a proxy decision none (the table checks it too). */
  int change = ev->decision >= SG_AUDIT_CREATED;
  if (!id_ok(in[F_ORG], 0) || !id_ok(in[F_SANDBOX], 1) || !id_ok(in[F_STORE], 1) ||
      !id_ok(in[F_ACTOR_KEY], 1) || sg_audit_decision_name(ev->decision) == NULL ||
      change != (in[F_ACTION][0] != '\0'))
    return NULL;
  event *e = sg_malloc(sizeof(*e) + total);
  struct timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  e->time_us = (int64_t)now.tv_sec * 1000000 + now.tv_nsec / 1000;
  e->version = ev->secret_version > INT64_MAX ? INT64_MAX : ev->secret_version;
  e->decision = ev->decision;
  e->size = sizeof(*e) + total;
  e->id[0] = '\0';
  char *p = e->text;
  for (int i = 0; i < N_FIELDS; i++) {
    store_text(in[i], i, p);
    p[len[i]] = '\0';
    mask_tokens(p);
    e->f[i] = p;
    p += len[i] + 1;
  }
  return e;
}

void sg_audit_record(const sg_audit_event *ev) {
  event *e = event_new(ev);
  if (e == NULL) {
    count_drops(1);
    return;
  }
  pthread_mutex_lock(&q.lock);
  if (q.ring == NULL) {
    pthread_mutex_unlock(&q.lock);
    free(e);
    count_drops(1);
    return;
  }
  /* Full: the oldest make room (the newest events say most about what is going on now). */
  while (q.n > 0 && (q.n == SG_AUDIT_QUEUE_MAX || q.bytes + e->size > SG_AUDIT_QUEUE_MAX_BYTES)) {
    event *old = q.ring[q.head];
    q.head = (q.head + 1) % SG_AUDIT_QUEUE_MAX;
    q.n--;
    q.bytes -= old->size;
    free(old);
    count_drops(1);
  }
  q.ring[(q.head + q.n) % SG_AUDIT_QUEUE_MAX] = e;
  q.n++;
  q.bytes += e->size;
  if (q.n == SG_AUDIT_BATCH_MAX)
    pthread_cond_signal(&q.wake);
  pthread_mutex_unlock(&q.lock);
}

void sg_audit_flush_now(void) {
  pthread_mutex_lock(&q.lock);
  if (q.ring != NULL) {
    q.flush = 1;
    pthread_cond_signal(&q.wake);
  }
  pthread_mutex_unlock(&q.lock);
}

/* --- The writer thread --------------------------------------------------------------------- */

typedef struct {
  PGconn *pg;
  sg_arena *arena; /* one batch's parameters */
  event *batch[SG_AUDIT_BATCH_MAX];
  size_t n;
  int backoff_ms;
  int down;     /* the last attempt failed; said so in the log */
  int stopping; /* as of the last take_batch, with the deadline */
  int64_t stop_deadline_ns;
  uint64_t drops_pending;
  int64_t drops_logged_ns;
} writer;

/* Waits on q.wake until |until_ns| (monotonic) or a signal. Called with q.lock held. */
static void wait_until(int64_t until_ns) {
  struct timespec ts = {(time_t)(until_ns / 1000000000), (long)(until_ns % 1000000000)};
  pthread_cond_timedwait(&q.wake, &q.lock, &ts);
}

/* Logs the drops recorders counted, at most one line a second. */
static void report_drops(writer *w, int final) {
  w->drops_pending += atomic_exchange(&unreported, 0);
  int64_t now = sg_now_ns();
  if (w->drops_pending == 0 || (!final && now - w->drops_logged_ns < DROP_LOG_EVERY_NS))
    return;
  sg_log_begin(SG_LOG_WARN, "audit_dropped");
  sg_log_int("events", (int64_t)w->drops_pending);
  sg_log_int("total", (int64_t)atomic_load(&dropped));
  sg_log_cstr("detail", "audit events dropped: the queue was full (database slow or down) or "
                        "an event was malformed");
  sg_log_end();
  w->drops_pending = 0;
  w->drops_logged_ns = now;
}

/* Fills the writer's batch from the queue, after waiting up to SG_AUDIT_BATCH_MS for it to
 * fill unless it is full already, a flush was asked or a stop is under way. Returns 0 when
 * the writer should end (stopping, and nothing is left to write), else 1. */
static int take_batch(writer *w) {
  pthread_mutex_lock(&q.lock);
  if (w->n == 0 && q.n < SG_AUDIT_BATCH_MAX && !q.flush && !q.stopping)
    wait_until(sg_now_ns() + SG_AUDIT_BATCH_MS * 1000000LL);
  q.flush = 0;
  if (w->n == 0)
    while (q.n > 0 && w->n < SG_AUDIT_BATCH_MAX) {
      event *e = q.ring[q.head];
      q.head = (q.head + 1) % SG_AUDIT_QUEUE_MAX;
      q.n--;
      q.bytes -= e->size;
      w->batch[w->n++] = e;
    }
  w->stopping = q.stopping;
  w->stop_deadline_ns = q.stop_deadline_ns;
  int more = w->n > 0 || !q.stopping;
  pthread_mutex_unlock(&q.lock);
  report_drops(w, 0);
  return more;
}

static void free_batch(writer *w) {
  for (size_t i = 0; i < w->n; i++)
    free(w->batch[i]);
  w->n = 0;
}

/* "YYYY-MM-DD HH:MM:SS.ffffff+00", as timestamptz reads it. */
static char *time_text(sg_arena *a, int64_t us) {
  time_t sec = (time_t)(us / 1000000);
  struct tm tm;
  gmtime_r(&sec, &tm);
  return sg_arena_printf(a, "%04d-%02d-%02d %02d:%02d:%02d.%06d+00", tm.tm_year + 1900,
                         tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                         (int)(us % 1000000));
}

/* The batch as INSERT_SQL's sixteen text[] literals, in the writer's arena. Draws the ids of
 * events that have none yet. Returns 0, or -1 if the CSPRNG failed. */
static int batch_params(writer *w, const char *values[N_PARAMS]) {
  sg_arena *a = w->arena;
  sg_arena_reset(a);
  char **col[N_PARAMS];
  for (int c = 0; c < N_PARAMS; c++)
    col[c] = sg_arena_alloc(a, w->n * sizeof(char *));
  for (size_t i = 0; i < w->n; i++) {
    event *e = w->batch[i];
    if (e->id[0] == '\0' && sg_uuid_generate(e->id) != 0)
      return -1;
    col[P_ID][i] = e->id;
    col[P_TIME][i] = time_text(a, e->time_us);
    col[P_VERSION][i] = sg_arena_printf(a, "%llu", (unsigned long long)e->version);
    col[P_DECISION][i] = (char *)sg_audit_decision_name(e->decision);
    for (int f = 0; f < N_FIELDS; f++)
      col[field_param[f]][i] = (char *)e->f[f];
  }
  for (int c = 0; c < N_PARAMS; c++)
    values[c] = sg_pg_array(a, col[c], w->n);
  return 0;
}

/* Nonzero for a failure worth sending the same batch again for: the connection, a failover
 * (a standby answered: read-only), a conflict with another transaction, a server short of
 * resources, or an error libpq made up itself (no SQLSTATE). */
static int transient(const char *state) {
  static const char *const classes[] = {"08", "40", "53", "57", "58"};
  for (size_t i = 0; i < SG_ARRAY_LEN(classes); i++)
    if (strncmp(state, classes[i], 2) == 0)
      return 1;
  return state[0] == '\0' || strcmp(state, "25006") == 0;
}

static void went_down(writer *w, const char *why) {
  if (!w->down) {
    sg_log_begin(SG_LOG_WARN, "audit_down");
    sg_log_cstr("error", why);
    sg_log_cstr("detail", "cannot write audit events; keeping them queued and retrying");
    sg_log_end();
  }
  w->down = 1;
}

/* Sends the batch. Returns 0 when it is done with (written, or refused for what it holds and
 * dropped), or -1 when it should be sent again later. */
static int write_batch(writer *w) {
  char err[256];
  if (w->pg == NULL &&
      (w->pg = sg_db_connect_background(db_conninfo, "sealgate-audit", err, sizeof(err))) == NULL) {
    went_down(w, err);
    return -1;
  }
  const char *values[N_PARAMS];
  if (batch_params(w, values) != 0) {
    went_down(w, "cannot draw event ids");
    return -1;
  }
  PGresult *res = PQexecParams(w->pg, INSERT_SQL, N_PARAMS, NULL, values, NULL, NULL, 0);
  if (PQresultStatus(res) == PGRES_COMMAND_OK) {
    PQclear(res);
    atomic_fetch_add(&written, w->n);
    free_batch(w);
    if (w->down)
      sg_logf(SG_LOG_INFO, "audit_up", "writing audit events again");
    w->down = 0;
    w->backoff_ms = BACKOFF_MIN_MS;
    return 0;
  }
  const char *state = sg_db_sqlstate(res);
  if (PQstatus(w->pg) == CONNECTION_BAD || transient(state)) {
    snprintf(err, sizeof(err), "the batch failed with SQLSTATE %s", state[0] ? state : "(none)");
    went_down(w, err);
    /* A new connection follows a failover; a conflict is retried on this one. */
    if (PQstatus(w->pg) == CONNECTION_BAD || strncmp(state, "40", 2) != 0) {
      PQfinish(w->pg);
      w->pg = NULL;
    }
    PQclear(res);
    return -1;
  }
  /* Refused for what it holds: sent again it would fail again and hold up the whole trail. A
   * data exception's message may quote the input, so only other classes' are logged. */
  const char *primary = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
  sg_log_begin(SG_LOG_ERROR, "audit_refused");
  sg_log_cstr("sqlstate", state);
  sg_log_cstr("error", strncmp(state, "22", 2) != 0 && primary ? primary : "");
  sg_log_int("events", (int64_t)w->n);
  sg_log_cstr("detail", "the database refused a batch of audit events; they are dropped");
  sg_log_end();
  atomic_fetch_add(&dropped, w->n);
  free_batch(w);
  PQclear(res);
  return 0;
}

/* Sleeps the backoff after a failed write; a stop cuts it short, and a stop's deadline
 * bounds it. */
static void nap(writer *w) {
  pthread_mutex_lock(&q.lock);
  int64_t now = sg_now_ns(), until = now + (int64_t)w->backoff_ms * 1000000;
  int was_stopping = q.stopping;
  if (was_stopping && until > q.stop_deadline_ns)
    until = q.stop_deadline_ns;
  while (now < until && q.stopping == was_stopping) {
    wait_until(until);
    now = sg_now_ns();
  }
  pthread_mutex_unlock(&q.lock);
  w->backoff_ms = w->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : w->backoff_ms * 2;
}

static void *run(void *arg) {
  (void)arg;
  sigset_t all;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, NULL);
  writer *w = sg_calloc(1, sizeof(*w));
  w->arena = sg_arena_new();
  w->backoff_ms = BACKOFF_MIN_MS;
  while (take_batch(w)) {
    if (w->stopping && sg_now_ns() >= w->stop_deadline_ns) {
      lost_at_stop = w->n; /* sg_audit_stop reports it with the rest of the queue */
      atomic_fetch_add(&dropped, w->n);
      free_batch(w);
      break;
    }
    if (w->n > 0 && write_batch(w) != 0)
      nap(w);
  }
  report_drops(w, 1);
  PQfinish(w->pg);
  sg_arena_free(w->arena);
  free(w);
  return NULL;
}

int sg_audit_start(const char *conninfo) {
  pthread_mutex_lock(&q.lock);
  if (q.ring != NULL) {
    pthread_mutex_unlock(&q.lock);
    return -1;
  }
  pthread_condattr_t attr;
  pthread_condattr_init(&attr);
  pthread_condattr_setclock(&attr, CLOCK_MONOTONIC); /* sg_now_ns's clock */
  pthread_cond_init(&q.wake, &attr);
  pthread_condattr_destroy(&attr);
  q.ring = sg_calloc(SG_AUDIT_QUEUE_MAX, sizeof(*q.ring));
  q.head = q.n = q.bytes = 0;
  q.flush = q.stopping = 0;
  db_conninfo = conninfo;
  int rv = pthread_create(&thread, NULL, run, NULL);
  if (rv != 0) {
    free(q.ring);
    q.ring = NULL;
    pthread_cond_destroy(&q.wake);
  }
  pthread_mutex_unlock(&q.lock);
  return rv == 0 ? 0 : -1;
}

void sg_audit_stop(void) {
  pthread_mutex_lock(&q.lock);
  if (q.ring == NULL || q.stopping) {
    pthread_mutex_unlock(&q.lock);
    return;
  }
  q.stopping = 1;
  q.stop_deadline_ns = sg_now_ns() + SG_AUDIT_STOP_WAIT_MS * 1000000LL;
  pthread_cond_signal(&q.wake);
  pthread_mutex_unlock(&q.lock);
  pthread_join(thread, NULL);

  /* What the writer left (only after giving up at the deadline) and what came meanwhile. */
  pthread_mutex_lock(&q.lock);
  event **ring = q.ring;
  size_t head = q.head, n = q.n;
  q.ring = NULL;
  q.n = q.bytes = 0;
  q.stopping = 0;
  pthread_cond_destroy(&q.wake);
  pthread_mutex_unlock(&q.lock);
  for (size_t i = 0; i < n; i++)
    free(ring[(head + i) % SG_AUDIT_QUEUE_MAX]);
  free(ring);
  atomic_fetch_add(&dropped, n);
  uint64_t lost = lost_at_stop + n;
  lost_at_stop = 0;
  if (lost > 0) {
    sg_log_begin(SG_LOG_ERROR, "audit_lost");
    sg_log_int("events", (int64_t)lost);
    sg_log_cstr("detail", "audit events not written at shutdown: the database did not take "
                          "them in time");
    sg_log_end();
  }
}
