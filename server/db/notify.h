/* Cross-node cache invalidation (SPEC §6). PostgreSQL triggers (migration 0002) announce every
 * change to API keys, stores, secrets and sandboxes on channel "sealgate_invalidate" as
 * "<table>:<id>". One thread per process LISTENs on a connection of its own and turns each
 * notification into a new generation of that table's caches: a cached entry is good only while
 * the generation it was read under is still current.
 *
 * While that connection is down a notification could be missed, so sg_gen returns 0 ("do not
 * cache") until it is back, and every generation moves on when it reconnects: caches start
 * over. A process's own writes move the generation at once (sg_gen_bump), so a client reads
 * its writes on the node it wrote through without waiting for the notification's round trip.
 *
 * A cache captures the generation before it sends its query and stores the row under that
 * one: a change that commits while the query is in flight makes the entry stale at once. */
#ifndef SG_DB_NOTIFY_H
#define SG_DB_NOTIFY_H

#include <stdint.h>

#include "core/metrics.h"

typedef enum {
  SG_GEN_API_KEYS,
  SG_GEN_STORES,
  SG_GEN_SECRETS,
  SG_GEN_SANDBOXES,
  SG_GEN_COUNT
} sg_gen_kind;

/* Starts the listening thread on |conninfo| (which must outlive it). Returns 0 or -1. */
int sg_notify_start(const char *conninfo);

/* Stops and joins it (within about a second). */
void sg_notify_stop(void);

/* The current generation of |kind|'s caches, or 0 when nothing may be cached now. Any thread. */
uint64_t sg_gen(sg_gen_kind kind);

/* The generation of |kind| whether or not notifications are heard: it moves on every change
 * this process makes and every one it hears of. A cache that also serves while deaf (for a
 * short while) compares this one, so that its own node's writes still reach it at once. */
uint64_t sg_gen_any(sg_gen_kind kind);

/* A change this process made (and committed) to |kind|'s rows. Any thread. */
void sg_gen_bump(sg_gen_kind kind);

/* Notifications received since start (tests and metrics). */
uint64_t sg_notify_count(void);

/* Registers sealgate_notify_received_total and sealgate_notify_listening (1 while the
 * LISTEN connection is up) on |m|; both are read at scrape time. */
void sg_notify_metrics(sg_metrics *m);

#endif
