/* The work pool: jobs run off the loop, their completions on it; jobs run side by side up to
 * the cap (a short job is not held up by long ones below it) and queue beyond it; shutdown
 * waits for what was submitted. The loop runs on the test's own thread. */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <time.h>
#include <unistd.h>

#include "net/loop.h"
#include "runtime/work.h"

static sg_loop *loop;
static pthread_t loop_thread;

static struct {
  pthread_mutex_t lock;
  pthread_cond_t cond;
  int started, running, max_running, finished, released;
  int done, expect_done;
  int wrong_thread; /* a work ran on the loop, or a completion off it */
} st = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};

static void setup(void) {
  loop = sg_loop_new(0);
  loop_thread = pthread_self();
}

static void teardown(void) {
  sg_work_shutdown();
  sg_loop_free(loop);
}

TestSuite(work, .init = setup, .fini = teardown, .timeout = 60);

/* A job that holds its thread until the test releases it. */
static void blocking_work(void *arg) {
  (void)arg;
  pthread_mutex_lock(&st.lock);
  if (sg_loop_current() != NULL || pthread_equal(pthread_self(), loop_thread))
    st.wrong_thread = 1;
  st.started++;
  if (++st.running > st.max_running)
    st.max_running = st.running;
  pthread_cond_broadcast(&st.cond);
  while (!st.released)
    pthread_cond_wait(&st.cond, &st.lock);
  st.running--;
  st.finished++;
  pthread_mutex_unlock(&st.lock);
}

static void quick_work(void *arg) {
  (void)arg;
  pthread_mutex_lock(&st.lock);
  if (sg_loop_current() != NULL || pthread_equal(pthread_self(), loop_thread))
    st.wrong_thread = 1;
  st.finished++;
  pthread_cond_broadcast(&st.cond);
  pthread_mutex_unlock(&st.lock);
}

/* Runs on the loop: counts, and stops the loop at the expected count. */
static void count_done(void *arg) {
  (void)arg;
  if (sg_loop_current() != loop || !pthread_equal(pthread_self(), loop_thread))
    st.wrong_thread = 1;
  if (++st.done == st.expect_done)
    sg_loop_stop(loop);
}

/* Waits up to |seconds| for |*counter| (under st.lock) to reach |n|; returns its value. */
static int wait_count(const int *counter, int n, int seconds) {
  struct timespec until;
  clock_gettime(CLOCK_REALTIME, &until);
  until.tv_sec += seconds;
  pthread_mutex_lock(&st.lock);
  while (*counter < n && pthread_cond_timedwait(&st.cond, &st.lock, &until) != ETIMEDOUT) {
  }
  int v = *counter;
  pthread_mutex_unlock(&st.lock);
  return v;
}

static void release_all(void) {
  pthread_mutex_lock(&st.lock);
  st.released = 1;
  pthread_cond_broadcast(&st.cond);
  pthread_mutex_unlock(&st.lock);
}

Test(work, work_runs_off_the_loop_and_done_on_it) {
  enum { N = 200 };
  st.expect_done = N;
  for (int i = 0; i < N; i++)
    sg_work_submit(loop, quick_work, count_done, NULL);
  sg_loop_run(loop);
  cr_assert_eq(st.done, N);
  cr_assert_eq(st.finished, N);
  cr_assert_eq(st.wrong_thread, 0);
}

Test(work, jobs_run_side_by_side_up_to_the_cap_and_queue_beyond) {
  enum { N = SG_WORK_MAX_THREADS + 8 };
  st.expect_done = N;
  for (int i = 0; i < N; i++)
    sg_work_submit(loop, blocking_work, count_done, NULL);
  cr_assert_eq(wait_count(&st.started, SG_WORK_MAX_THREADS, 20), SG_WORK_MAX_THREADS);
  usleep(200000); /* time for a thread beyond the cap to start, were there one */
  pthread_mutex_lock(&st.lock);
  cr_assert_eq(st.started, SG_WORK_MAX_THREADS);
  pthread_mutex_unlock(&st.lock);
  release_all();
  sg_loop_run(loop);
  cr_assert_eq(st.done, N);
  cr_assert_eq(st.max_running, SG_WORK_MAX_THREADS);
  cr_assert_eq(st.wrong_thread, 0);
}

Test(work, short_job_is_not_held_up_by_long_ones_below_the_cap) {
  enum { LONG = 4 };
  st.expect_done = LONG + 1;
  for (int i = 0; i < LONG; i++)
    sg_work_submit(loop, blocking_work, count_done, NULL);
  cr_assert_eq(wait_count(&st.started, LONG, 20), LONG);
  sg_work_submit(loop, quick_work, count_done, NULL);
  cr_assert_eq(wait_count(&st.finished, 1, 20), 1);
  pthread_mutex_lock(&st.lock);
  cr_assert_eq(st.running, LONG); /* the long jobs are all still running */
  pthread_mutex_unlock(&st.lock);
  release_all();
  sg_loop_run(loop);
  cr_assert_eq(st.done, LONG + 1);
}

static void slow_work(void *arg) {
  usleep(200000);
  quick_work(arg);
}

Test(work, shutdown_waits_for_running_and_queued_jobs) {
  for (int i = 0; i < SG_WORK_MAX_THREADS + 4; i++)
    sg_work_submit(loop, slow_work, count_done, NULL);
  sg_work_shutdown();
  cr_assert_eq(st.finished, SG_WORK_MAX_THREADS + 4);
  /* The completions wait in the loop's mailbox; sg_loop_free drops them. */
}

Test(work, pool_works_again_after_shutdown) {
  sg_work_submit(loop, quick_work, NULL, NULL);
  sg_work_shutdown();
  cr_assert_eq(st.finished, 1);
  st.expect_done = 1;
  sg_work_submit(loop, quick_work, count_done, NULL);
  sg_loop_run(loop);
  cr_assert_eq(st.finished, 2);
  cr_assert_eq(st.done, 1);
}
