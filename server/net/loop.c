#include "net/loop.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <event2/event.h>

#include "core/log.h"
#include "core/mem.h"
#include "rpc/call.h"

typedef struct sg_task {
  struct sg_task *next;
  sg_task_fn fn;
  void *arg;
} sg_task;

struct sg_loop {
  unsigned id;
  struct event_base *base;
  pthread_t thread;
  int started;
  int stop;
  int efd; /* eventfd: the mailbox's doorbell */
  struct event *mail_ev;
  pthread_mutex_t lock;
  sg_task *head, *tail;
  int closed; /* no more tasks accepted */
  struct event *log_timer;
};

/* Log lines wait in the loop thread's buffer until this much has gathered, or this long has
 * passed since the first of them: few writes under load, little delay when quiet. */
#define SG_LOG_FLUSH_BYTES 49152 /* of the thread's 64 KiB buffer */
#define SG_LOG_FLUSH_US    20000

#define SG_MAX_LOOPS 1024 /* --threads allows 256 workers; tests create loops of their own */
static sg_loop *all_loops[SG_MAX_LOOPS];
static size_t n_loops;
static pthread_mutex_t all_lock = PTHREAD_MUTEX_INITIALIZER;
static _Thread_local sg_loop *current;

static void on_mail(evutil_socket_t fd, short what, void *arg) {
  (void)what;
  sg_loop *loop = arg;
  uint64_t v;
  if (read(fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
    sg_logf(SG_LOG_WARN, "loop_mailbox", "eventfd read failed");
  pthread_mutex_lock(&loop->lock);
  sg_task *t = loop->head;
  loop->head = loop->tail = NULL;
  pthread_mutex_unlock(&loop->lock);
  while (t != NULL) {
    sg_task *next = t->next;
    t->fn(t->arg);
    free(t);
    t = next;
  }
}

sg_loop *sg_loop_new(unsigned id) {
  sg_loop *loop = sg_calloc(1, sizeof(*loop));
  loop->id = id;
  struct event_config *cfg = event_config_new();
  /* Each base is used by exactly one thread: no libevent locking needed. */
  event_config_set_flag(cfg, EVENT_BASE_FLAG_NOLOCK);
  /* CLOCK_MONOTONIC rather than libevent's default CLOCK_MONOTONIC_COARSE, whose ticks (4 ms
   * at HZ=250) would end a call's deadline up to a tick before the client's own. */
  event_config_set_flag(cfg, EVENT_BASE_FLAG_PRECISE_TIMER);
  loop->base = event_base_new_with_config(cfg);
  event_config_free(cfg);
  if (loop->base == NULL)
    sg_fatal("event_base_new failed");
  loop->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (loop->efd < 0)
    sg_fatal("eventfd failed");
  loop->mail_ev = event_new(loop->base, loop->efd, EV_READ | EV_PERSIST, on_mail, loop);
  event_add(loop->mail_ev, NULL);
  pthread_mutex_init(&loop->lock, NULL);
  pthread_mutex_lock(&all_lock);
  if (n_loops == SG_MAX_LOOPS)
    sg_fatal("too many event loops");
  all_loops[n_loops++] = loop;
  pthread_mutex_unlock(&all_lock);
  return loop;
}

void sg_loop_free(sg_loop *loop) {
  if (loop == NULL)
    return;
  pthread_mutex_lock(&all_lock);
  for (size_t i = 0; i < n_loops; i++) {
    if (all_loops[i] == loop) {
      all_loops[i] = all_loops[--n_loops];
      break;
    }
  }
  pthread_mutex_unlock(&all_lock);
  for (sg_task *t = loop->head, *next; t != NULL; t = next) {
    next = t->next;
    free(t);
  }
  event_free(loop->mail_ev);
  close(loop->efd);
  event_base_free(loop->base);
  pthread_mutex_destroy(&loop->lock);
  free(loop);
}

struct event_base *sg_loop_base(sg_loop *loop) {
  return loop->base;
}

unsigned sg_loop_id(const sg_loop *loop) {
  return loop->id;
}

sg_loop *sg_loop_current(void) {
  return current;
}

void sg_loop_post(sg_loop *loop, sg_task_fn fn, void *arg) {
  sg_task *t = sg_malloc(sizeof(*t));
  t->next = NULL;
  t->fn = fn;
  t->arg = arg;
  pthread_mutex_lock(&loop->lock);
  if (loop->closed) {
    pthread_mutex_unlock(&loop->lock);
    free(t);
    return;
  }
  int was_empty = loop->head == NULL;
  if (loop->tail != NULL)
    loop->tail->next = t;
  else
    loop->head = t;
  loop->tail = t;
  pthread_mutex_unlock(&loop->lock);
  if (was_empty) {
    uint64_t one = 1;
    if (write(loop->efd, &one, sizeof(one)) < 0 && errno != EAGAIN)
      sg_fatal("eventfd write failed");
  }
}

void sg_loop_post_all(sg_task_fn fn, void *arg) {
  pthread_mutex_lock(&all_lock);
  for (size_t i = 0; i < n_loops; i++)
    sg_loop_post(all_loops[i], fn, arg);
  pthread_mutex_unlock(&all_lock);
}

void sg_loop_stop(sg_loop *loop) {
  loop->stop = 1;
  event_base_loopbreak(loop->base);
}

static void on_log_timer(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  (void)arg;
  sg_log_flush();
}

void sg_loop_run(sg_loop *loop) {
  current = loop;
  sg_log_set_buffered(1);
  loop->log_timer = evtimer_new(loop->base, on_log_timer, NULL);
  /* One iteration at a time, so log lines can be flushed in batches between them. */
  while (!loop->stop) {
    if (event_base_loop(loop->base, EVLOOP_ONCE) < 0)
      break;
    size_t pending = sg_log_pending();
    if (pending >= SG_LOG_FLUSH_BYTES) {
      sg_log_flush();
    } else if (pending > 0 && !evtimer_pending(loop->log_timer, NULL)) {
      struct timeval tv = {0, SG_LOG_FLUSH_US};
      evtimer_add(loop->log_timer, &tv);
    }
  }
  event_free(loop->log_timer);
  loop->log_timer = NULL;
  pthread_mutex_lock(&loop->lock);
  loop->closed = 1;
  pthread_mutex_unlock(&loop->lock);
  sg_log_flush();
  sg_log_set_buffered(0);
  sg_call_pool_drain();
  current = NULL;
}

static void *thread_main(void *arg) {
  sg_loop_run(arg);
  return NULL;
}

int sg_loop_start(sg_loop *loop) {
  int rv = pthread_create(&loop->thread, NULL, thread_main, loop);
  if (rv != 0) {
    errno = rv;
    return -1;
  }
  loop->started = 1;
  return 0;
}

void sg_loop_join(sg_loop *loop) {
  if (loop->started) {
    pthread_join(loop->thread, NULL);
    loop->started = 0;
  }
}
