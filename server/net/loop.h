/* Event loops: one libevent base per worker thread (libuv's "one loop per thread"), and a
 * mailbox through which any thread hands work to a loop. Connections, calls and their timers
 * belong to exactly one loop and are touched only from its thread. */
#ifndef SG_NET_LOOP_H
#define SG_NET_LOOP_H

#include <stddef.h>

struct event_base;

typedef struct sg_loop sg_loop;
typedef void (*sg_task_fn)(void *arg);

/* Creates a loop (not yet running) and registers it for sg_loop_post_all. */
sg_loop *sg_loop_new(unsigned id);

/* Frees a loop whose thread has been joined (or never started). */
void sg_loop_free(sg_loop *loop);

struct event_base *sg_loop_base(sg_loop *loop);
unsigned sg_loop_id(const sg_loop *loop);

/* Runs |fn|(|arg|) on the loop's thread, after work posted before it. Thread-safe; never
 * blocks beyond a short lock. If the loop has stopped, the task is dropped and |fn| never
 * runs: a task that owns resources must not be posted to a stopping loop. */
void sg_loop_post(sg_loop *loop, sg_task_fn fn, void *arg);

/* sg_loop_post to every loop created so far. */
void sg_loop_post_all(sg_task_fn fn, void *arg);

/* Starts the loop's thread. Returns 0 or -1 (errno set). */
int sg_loop_start(sg_loop *loop);

/* Called from the loop's own thread: the loop returns after the current iteration. */
void sg_loop_stop(sg_loop *loop);

/* Waits for the loop's thread to return. */
void sg_loop_join(sg_loop *loop);

/* The loop running on the calling thread, or NULL. */
sg_loop *sg_loop_current(void);

/* Runs the loop on the calling thread until sg_loop_stop (used by tests and sg_loop_start). */
void sg_loop_run(sg_loop *loop);

#endif
