#include "db/notify.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

#include <libpq-fe.h>

#include "core/log.h"
#include "db/migrate.h"

#define CHANNEL        "sealgate_invalidate"
#define POLL_MS        500
#define PING_EVERY_S   10
#define BACKOFF_MAX_MS 5000

static _Atomic uint64_t gens[SG_GEN_COUNT];
static atomic_int listening;
static atomic_int stopping;
static _Atomic uint64_t received;
static pthread_t thread;
static int started;
static const char *db_conninfo;

uint64_t sg_gen(sg_gen_kind kind) {
  return atomic_load(&listening) ? atomic_load(&gens[kind]) : 0;
}

uint64_t sg_gen_any(sg_gen_kind kind) {
  return atomic_load(&gens[kind]);
}

void sg_gen_bump(sg_gen_kind kind) {
  atomic_fetch_add(&gens[kind], 1);
}

uint64_t sg_notify_count(void) {
  return atomic_load(&received);
}

static double read_received(void *arg) {
  (void)arg;
  return (double)sg_notify_count();
}

static double read_listening(void *arg) {
  (void)arg;
  return atomic_load(&listening) ? 1 : 0;
}

void sg_notify_metrics(sg_metrics *m) {
  sg_metrics_counter_fn(m, "sealgate_notify_received_total",
                        "Cache-invalidation notifications received from PostgreSQL.", NULL,
                        read_received, NULL);
  sg_metrics_gauge_fn(m, "sealgate_notify_listening",
                      "1 while cache invalidations are heard (the LISTEN connection is up); "
                      "0 while caches are bypassed.",
                      NULL, read_listening, NULL);
}

static void bump_all(void) {
  for (int k = 0; k < SG_GEN_COUNT; k++)
    sg_gen_bump((sg_gen_kind)k);
}

static void on_payload(const char *payload) {
  static const struct {
    const char *table;
    sg_gen_kind kind;
  } tables[] = {{"api_keys:", SG_GEN_API_KEYS},
                {"secret_stores:", SG_GEN_STORES},
                {"secrets:", SG_GEN_SECRETS},
                {"sandboxes:", SG_GEN_SANDBOXES}};
  atomic_fetch_add(&received, 1);
  for (size_t i = 0; i < sizeof(tables) / sizeof(tables[0]); i++)
    if (strncmp(payload, tables[i].table, strlen(tables[i].table)) == 0) {
      sg_gen_bump(tables[i].kind);
      return;
    }
  bump_all(); /* a table this version does not know: drop everything */
}

static void nap_ms(int ms) {
  for (int slept = 0; slept < ms && !atomic_load(&stopping); slept += 100) {
    struct timespec t = {0, 100 * 1000000};
    nanosleep(&t, NULL);
  }
}

static PGconn *connect_and_listen(void) {
  char err[256];
  PGconn *pg = sg_db_connect_background(db_conninfo, "sealgate-notify", err, sizeof(err));
  if (pg == NULL)
    return NULL;
  PGresult *res = PQexec(pg, "LISTEN " CHANNEL);
  int ok = PQresultStatus(res) == PGRES_COMMAND_OK;
  PQclear(res);
  if (!ok) {
    PQfinish(pg);
    return NULL;
  }
  return pg;
}

/* Acts on every notification libpq has read. */
static void drain(PGconn *pg) {
  PGnotify *note;
  while ((note = PQnotifies(pg)) != NULL) {
    on_payload(note->extra);
    PQfreemem(note);
  }
}

/* Reads notifications until the connection fails or the process stops. */
static void serve_connection(PGconn *pg) {
  time_t last = time(NULL);
  while (!atomic_load(&stopping)) {
    struct pollfd p = {PQsocket(pg), POLLIN, 0};
    int n = poll(&p, 1, POLL_MS);
    if (n < 0 && errno != EINTR)
      return;
    if (n > 0) {
      if (PQconsumeInput(pg) == 0)
        return;
      drain(pg);
      last = time(NULL);
    } else if (time(NULL) - last >= PING_EVERY_S) {
      PGresult *res = PQexec(pg, "SELECT 1");
      int ok = PQresultStatus(res) == PGRES_TUPLES_OK;
      PQclear(res);
      if (!ok)
        return;
      drain(pg); /* notifications that came with the ping's answer */
      last = time(NULL);
    }
  }
}

static void *run(void *arg) {
  (void)arg;
  sigset_t all;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, NULL);
  int backoff = 100, warned = 0;
  while (!atomic_load(&stopping)) {
    PGconn *pg = connect_and_listen();
    if (pg == NULL) {
      if (!warned)
        sg_logf(SG_LOG_WARN, "notify_down",
                "cannot listen for cache invalidations; caching is off until it can");
      warned = 1;
      nap_ms(backoff);
      backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
      continue;
    }
    /* Whatever changed while nobody listened: start every cache over. */
    bump_all();
    atomic_store(&listening, 1);
    if (warned)
      sg_logf(SG_LOG_INFO, "notify_up", "listening for cache invalidations again");
    backoff = 100;
    warned = 0;
    serve_connection(pg);
    atomic_store(&listening, 0);
    bump_all();
    PQfinish(pg);
    if (!atomic_load(&stopping)) {
      sg_logf(SG_LOG_WARN, "notify_down",
              "lost the cache-invalidation connection; caching is off until it is back");
      warned = 1;
    }
  }
  return NULL;
}

int sg_notify_start(const char *conninfo) {
  db_conninfo = conninfo;
  atomic_store(&stopping, 0);
  if (pthread_create(&thread, NULL, run, NULL) != 0)
    return -1;
  started = 1;
  return 0;
}

void sg_notify_stop(void) {
  if (!started)
    return;
  atomic_store(&stopping, 1);
  pthread_join(thread, NULL);
  started = 0;
  atomic_store(&listening, 0);
}
