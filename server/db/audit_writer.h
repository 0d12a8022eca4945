/* The audit trail's writer (SPEC §5: every substitution and every denial is audited; and
 * every management call that changed something, with the API key that made it).
 *
 * Any thread records an event with sg_audit_record: the event is copied into a queue under a
 * short lock and the caller moves on; nothing waits for PostgreSQL on the request path. One
 * thread per process, with a blocking libpq connection of its own, writes the queue in
 * batches: every ~SG_AUDIT_BATCH_MS, or at once when SG_AUDIT_BATCH_MAX events wait. A batch
 * is one statement (arrays unnested into a multi-row INSERT into audit_events), and in the
 * same transaction it counts the batch's substitutions into the secrets' use_count and
 * last_used_at. Event ids are drawn by the writer and kept across retries, so a batch whose
 * answer was lost and is sent again inserts and counts nothing twice.
 *
 * While PostgreSQL cannot be reached the writer retries with backoff and keeps the queue.
 * The queue is bounded (SG_AUDIT_QUEUE_MAX events, SG_AUDIT_QUEUE_MAX_BYTES bytes): beyond
 * that the oldest events are dropped and counted, and the writer logs how many, at most one
 * line a second. A log line never carries an event's contents.
 *
 * What is stored is never a value: the copy of |path| ends before the first '?' or '#' (a
 * query may carry tokens or credentials), any sealed token inside a field is masked, and
 * every text field is kept as printable ASCII (any other byte becomes %XX) and cut to its
 * SG_AUDIT_*_MAX bytes, so that no event can make a batch fail. */
#ifndef SG_DB_AUDIT_WRITER_H
#define SG_DB_AUDIT_WRITER_H

#include <stdint.h>

#include "core/metrics.h"

#define SG_AUDIT_BATCH_MS        100
#define SG_AUDIT_BATCH_MAX       1000
#define SG_AUDIT_QUEUE_MAX       100000
#define SG_AUDIT_QUEUE_MAX_BYTES (64u << 20)
#define SG_AUDIT_STOP_WAIT_MS    5000

/* The longest each text field is stored (bytes, after escaping); longer ones are cut. */
#define SG_AUDIT_NAME_MAX     128
#define SG_AUDIT_HOST_MAX     255
#define SG_AUDIT_METHOD_MAX   32
#define SG_AUDIT_PATH_MAX     1024
#define SG_AUDIT_REASON_MAX   256
#define SG_AUDIT_ACTOR_MAX    32
#define SG_AUDIT_ACTION_MAX   64
#define SG_AUDIT_RESOURCE_MAX 512

/* What the proxy did, or what a management call did to its resource (AuditEvent.decision). */
typedef enum {
  SG_AUDIT_SUBSTITUTED, /* a sealed token was replaced by its value */
  SG_AUDIT_WITHHELD,    /* a token was forwarded untouched: its secret does not allow the host */
  SG_AUDIT_DENIED,      /* the request was refused (allowlist, address, credential) */
  SG_AUDIT_REDACTED,    /* a value echoed in a response was replaced by its token */
  /* Management calls (service/change.h); these, and only these, have an action. */
  SG_AUDIT_CREATED,
  SG_AUDIT_UPDATED,
  SG_AUDIT_DELETED
} sg_audit_decision;

/* One event, as the proxy or a management call describes it. The strings are copied by
 * sg_audit_record and need not outlive the call; NULL is taken as "". Ids are UUIDs in text
 * form; sandbox_id, store_id and actor_key_id may be "" for none, org_id may not. */
typedef struct {
  const char *org_id;
  const char *sandbox_id;
  const char *store_id;
  const char *secret_name;
  uint64_t secret_version;
  const char *host;
  const char *method;
  const char *path; /* the request path as the sandbox sent it; the query is cut off here */
  sg_audit_decision decision;
  const char *reason; /* sealgate's own words ("host not in the store's allowlist") */
  /* Management calls only ("" for the proxy's decisions): */
  const char *actor_key_id; /* the API key's id */
  const char *actor;        /* the API key's shown prefix ("osk_" + 8), never the key */
  const char *action;       /* the method, e.g. "SetSecret" */
  const char *resource;     /* e.g. "stores/<id>/secrets/<name>" */
} sg_audit_event;

/* Starts the writer thread on |conninfo| (which must outlive it); it connects by itself and
 * keeps retrying. Returns 0, or -1 if the thread could not be started or the writer runs
 * already. */
int sg_audit_start(const char *conninfo);

/* Writes what is queued and stops the writer, waiting at most about SG_AUDIT_STOP_WAIT_MS
 * (plus a statement in flight) for the database; events still queued then are dropped,
 * counted and logged. Events recorded afterwards are dropped. Does nothing if the writer is
 * not running. */
void sg_audit_stop(void);

/* Queues a copy of |ev|, stamped with the current time. Any thread; never blocks beyond a
 * short lock and never fails: an event with a malformed id, a management decision without an
 * action or a proxy decision with one, or one recorded while no writer runs, is dropped and
 * counted. */
void sg_audit_record(const sg_audit_event *ev);

/* Wakes the writer to write what is queued now rather than at its next tick (tests). */
void sg_audit_flush_now(void);

/* Events written to the database, and events dropped, since the process started (tests and
 * metrics). */
uint64_t sg_audit_written(void);
uint64_t sg_audit_dropped(void);

/* Registers sealgate_audit_events_written_total and sealgate_audit_events_dropped_total on
 * |m|, read at scrape time. */
void sg_audit_metrics(sg_metrics *m);

/* The decision as AuditEvent.decision spells it ("substituted", ...), or NULL for a value that
 * is none of them. */
const char *sg_audit_decision_name(sg_audit_decision decision);

#endif
