/* Blocking work off the event loops: a pool of worker threads that runs a job (a command, a
 * directory copy) and hands the completion back to the loop that asked, through its mailbox.
 *
 * Scheduling: a job starts at once on an idle worker, or on a new thread while fewer than
 * SG_WORK_MAX_THREADS exist; only beyond that cap does it wait, first in first out. Jobs never
 * share a thread, so a short job is delayed by long ones (commands run for minutes) only when
 * all SG_WORK_MAX_THREADS threads are busy with them: callers that start long jobs on behalf of
 * clients bound how many they start, so that the cap is never reached by them alone. A worker
 * left idle for SG_WORK_IDLE_SECONDS exits; workers block every signal. */
#ifndef SG_RUNTIME_WORK_H
#define SG_RUNTIME_WORK_H

#include "net/loop.h"

#define SG_WORK_MAX_THREADS  32
#define SG_WORK_IDLE_SECONDS 30

/* Runs |work|(|arg|) on a worker thread, then |done|(|arg|) on |loop|'s thread (sg_loop_post;
 * |done| may be NULL). |work| may block; |done| must not. If |loop| stops before the job ends,
 * |done| never runs (see sg_loop_post), so |arg| must not be the only owner of anything that
 * outlives the loop. Thread-safe; never blocks beyond a short lock. Aborts the process if no
 * worker exists and none can be created (as allocation failure does, core/mem.h). */
void sg_work_submit(sg_loop *loop, void (*work)(void *arg), void (*done)(void *arg), void *arg);

/* Waits until every job submitted so far, running or queued, has run and every worker thread
 * has exited (their completions are posted as usual). For tests and process exit; must not be
 * called from a job. The pool may be used again afterwards. */
void sg_work_shutdown(void);

#endif
