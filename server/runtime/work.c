#include "runtime/work.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <time.h>

#include "core/mem.h"

typedef struct sg_job {
  struct sg_job *next;
  sg_loop *loop;
  void (*work)(void *arg);
  void (*done)(void *arg);
  void *arg;
} sg_job;

typedef struct sg_worker {
  pthread_t thread;
} sg_worker;

static struct {
  pthread_mutex_t lock;
  pthread_cond_t wake;   /* idle workers wait here for a job (or for shutdown) */
  pthread_cond_t exited; /* sg_work_shutdown waits here for the last worker */
  sg_job *head, *tail;
  unsigned n_queued, n_threads, n_idle;
  int stopping;
  /* The worker that exited last, not yet joined. Each exiting worker joins its predecessor, so
   * no loop thread ever waits in pthread_join and at most one thread is left to join. */
  sg_worker *last_exited;
} pool = {
    .lock = PTHREAD_MUTEX_INITIALIZER,
    .wake = PTHREAD_COND_INITIALIZER,
    .exited = PTHREAD_COND_INITIALIZER,
};

static void join_worker(sg_worker *w) {
  if (w == NULL)
    return;
  pthread_join(w->thread, NULL);
  free(w);
}

/* With the lock held: the next job, waiting for one while the pool runs; NULL once the worker
 * has been idle for SG_WORK_IDLE_SECONDS or the pool is shutting down with nothing queued. */
static sg_job *take_job(void) {
  struct timespec until;
  clock_gettime(CLOCK_MONOTONIC, &until);
  until.tv_sec += SG_WORK_IDLE_SECONDS;
  while (pool.head == NULL) {
    if (pool.stopping)
      return NULL;
    pool.n_idle++;
    int rv = pthread_cond_clockwait(&pool.wake, &pool.lock, CLOCK_MONOTONIC, &until);
    pool.n_idle--;
    if (rv == ETIMEDOUT && pool.head == NULL)
      return NULL;
  }
  sg_job *job = pool.head;
  pool.head = job->next;
  if (pool.head == NULL)
    pool.tail = NULL;
  pool.n_queued--;
  return job;
}

static void run_job(sg_job *job) {
  job->work(job->arg);
  if (job->done != NULL)
    sg_loop_post(job->loop, job->done, job->arg);
  free(job);
}

static void *worker_main(void *self) {
  pthread_mutex_lock(&pool.lock);
  for (sg_job *job; (job = take_job()) != NULL;) {
    pthread_mutex_unlock(&pool.lock);
    run_job(job);
    pthread_mutex_lock(&pool.lock);
  }
  sg_worker *prev = pool.last_exited;
  pool.last_exited = self;
  if (--pool.n_threads == 0)
    pthread_cond_broadcast(&pool.exited);
  pthread_mutex_unlock(&pool.lock);
  join_worker(prev);
  return NULL;
}

/* Starts a worker with every signal blocked: process signals (SIGTERM, SIGINT) are for the
 * threads that handle them, and a command's child resets its own mask (runtime/proc.c). */
static void start_worker(void) {
  sg_worker *w = sg_malloc(sizeof(*w));
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  int rv = pthread_create(&w->thread, NULL, worker_main, w);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (rv == 0)
    return;
  free(w);
  pthread_mutex_lock(&pool.lock);
  int none = --pool.n_threads == 0;
  pthread_mutex_unlock(&pool.lock);
  if (none) /* the queued job would never run */
    sg_fatal("cannot start a worker thread");
}

void sg_work_submit(sg_loop *loop, void (*work)(void *arg), void (*done)(void *arg), void *arg) {
  sg_job *job = sg_malloc(sizeof(*job));
  *job = (sg_job){.loop = loop, .work = work, .done = done, .arg = arg};
  pthread_mutex_lock(&pool.lock);
  if (pool.tail != NULL)
    pool.tail->next = job;
  else
    pool.head = job;
  pool.tail = job;
  pool.n_queued++;
  /* Idle workers that have been signalled still count as idle until they wake, so this starts
   * a thread exactly when the queue outgrows the workers about to take from it. */
  int spawn = pool.n_queued > pool.n_idle && pool.n_threads < SG_WORK_MAX_THREADS;
  if (spawn)
    pool.n_threads++;
  if (pool.n_idle > 0)
    pthread_cond_signal(&pool.wake);
  pthread_mutex_unlock(&pool.lock);
  if (spawn)
    start_worker();
}

void sg_work_shutdown(void) {
  pthread_mutex_lock(&pool.lock);
  pool.stopping = 1;
  pthread_cond_broadcast(&pool.wake);
  while (pool.n_threads > 0)
    pthread_cond_wait(&pool.exited, &pool.lock);
  sg_worker *last = pool.last_exited;
  pool.last_exited = NULL;
  pool.stopping = 0;
  pthread_mutex_unlock(&pool.lock);
  join_worker(last);
}
