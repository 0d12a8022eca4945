#include "service/health.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/list.h"
#include "core/mem.h"
#include "grpc/health/v1/health.pb-c.h"
#include "net/loop.h"

typedef struct {
  char *name;
  int status;
} entry;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static entry *entries;
static size_t n_entries;

/* Watch calls of this loop thread; they live in their calls' arenas. */
typedef struct watcher {
  sg_call *call;
  const char *service;
  int last_sent;
  sg_list link;
} watcher;
static _Thread_local sg_list watchers; /* lazily initialized: see watcher_list() */
static _Thread_local int draining;     /* this loop is shutting down: no new Watch */

static sg_list *watcher_list(void) {
  if (watchers.next == NULL)
    sg_list_init(&watchers);
  return &watchers;
}

static entry *find(const char *name) {
  for (size_t i = 0; i < n_entries; i++)
    if (strcmp(entries[i].name, name) == 0)
      return &entries[i];
  return NULL;
}

void sg_health_register(const char *service) {
  pthread_mutex_lock(&lock);
  if (find(service) == NULL) {
    entries = sg_realloc(entries, (n_entries + 1) * sizeof(*entries));
    entries[n_entries++] = (entry){sg_strdup(service), SG_HEALTH_SERVING};
  }
  pthread_mutex_unlock(&lock);
}

void sg_health_reset(void) {
  draining = 0;
  pthread_mutex_lock(&lock);
  for (size_t i = 0; i < n_entries; i++)
    free(entries[i].name);
  free(entries);
  entries = NULL;
  n_entries = 0;
  pthread_mutex_unlock(&lock);
}

int sg_health_get(const char *service, int *status) {
  pthread_mutex_lock(&lock);
  entry *e = find(service);
  if (e != NULL)
    *status = e->status;
  pthread_mutex_unlock(&lock);
  return e != NULL ? 0 : -1;
}

static void send_if_changed(watcher *w) {
  int status;
  if (sg_health_get(w->service, &status) != 0)
    status = SG_HEALTH_SERVICE_UNKNOWN;
  if (status == w->last_sent)
    return;
  Grpc__Health__V1__HealthCheckResponse resp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
  resp.status = (Grpc__Health__V1__HealthCheckResponse__ServingStatus)status;
  w->last_sent = status;
  sg_call_send(w->call, &resp.base);
}

/* Posted to every loop on a change: each loop re-reads the registry for its own watchers. */
static void recheck(void *arg) {
  (void)arg;
  sg_list *pos, *tmp;
  sg_list_foreach_safe(pos, tmp, watcher_list()) {
    send_if_changed(SG_CONTAINER_OF(pos, watcher, link));
  }
}

int sg_health_set(const char *service, int status) {
  pthread_mutex_lock(&lock);
  entry *e = find(service);
  int changed = e != NULL && e->status != status;
  if (e != NULL)
    e->status = status;
  pthread_mutex_unlock(&lock);
  if (changed)
    sg_loop_post_all(recheck, NULL);
  return e != NULL ? 0 : -1;
}

void sg_health_set_all(int status) {
  pthread_mutex_lock(&lock);
  for (size_t i = 0; i < n_entries; i++)
    entries[i].status = status;
  pthread_mutex_unlock(&lock);
  sg_loop_post_all(recheck, NULL);
}

static void watch_cancelled(sg_call *call, void *arg) {
  watcher *w = arg;
  sg_list_remove(&w->link);
  sg_call_finish(call, SG_STATUS_CANCELLED, NULL);
}

void sg_health_end_watches(void) {
  draining = 1;
  sg_list *pos, *tmp;
  sg_list_foreach_safe(pos, tmp, watcher_list()) {
    watcher *w = SG_CONTAINER_OF(pos, watcher, link);
    sg_list_remove(&w->link);
    sg_call_finish(w->call, SG_STATUS_UNAVAILABLE, "server is shutting down");
  }
}

static void check(sg_call *call, const ProtobufCMessage *msg) {
  const Grpc__Health__V1__HealthCheckRequest *req = (const void *)msg;
  int status;
  if (sg_health_get(req->service, &status) != 0) {
    sg_call_finish(call, SG_STATUS_NOT_FOUND, "unknown service");
    return;
  }
  Grpc__Health__V1__HealthCheckResponse resp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
  resp.status = (Grpc__Health__V1__HealthCheckResponse__ServingStatus)status;
  sg_call_reply(call, &resp.base);
}

/* An unknown service gets SERVICE_UNKNOWN and the call stays open: it may appear later. */
static void watch(sg_call *call, const ProtobufCMessage *msg) {
  const Grpc__Health__V1__HealthCheckRequest *req = (const void *)msg;
  watcher *w = sg_arena_zalloc(sg_call_arena(call), sizeof(*w));
  w->call = call;
  w->service = req->service;
  w->last_sent = -1;
  send_if_changed(w);
  if (draining) { /* opened while the connection was being told to go away */
    sg_call_finish(call, SG_STATUS_UNAVAILABLE, "server is shutting down");
    return;
  }
  sg_list_push(watcher_list(), &w->link);
  sg_call_on_cancel(call, watch_cancelled, w);
}

static const sg_method_impl methods[] = {
    {"Check", SG_METHOD_UNARY, check, NULL},
    {"Watch", SG_METHOD_SERVER_STREAMING, watch, NULL},
};

const sg_service sg_health_service = {&grpc__health__v1__health__descriptor, methods,
                                      SG_ARRAY_LEN(methods), NULL};
