/* The audit trail of management calls: every call that changes an organization's state
 * (stores, secrets, sandboxes, checkpoints, snapshots) records one event once the change has
 * been made — who (the API key's id and shown prefix), what (the method), which resource,
 * when. Calls that fail change nothing and record nothing. Events go through the batched
 * audit writer (db/audit_writer.h): recording is a copy under a short lock, never a wait for
 * PostgreSQL. */
#ifndef SG_SERVICE_CHANGE_H
#define SG_SERVICE_CHANGE_H

#include <stdint.h>

#include "db/audit_writer.h"
#include "rpc/call.h"

/* The resource a call changed; NULL or 0 for what does not apply. |resource| names it in
 * full: "sandboxes/<id>/checkpoints/<id>" or "snapshots/<name>"; left NULL, it is derived
 * from the ids: "stores/<id>/secrets/<name>", "stores/<id>" or "sandboxes/<id>". */
typedef struct {
  const char *store_id;
  const char *secret_name;
  uint64_t secret_version;
  const char *sandbox_id;
  const char *resource;
} sg_change;

/* Records that |call|, authenticated for |org| (service/auth.h), made |what| (SG_AUDIT_CREATED,
 * UPDATED or DELETED) to |c|'s resource. The action is the call's method name. Call it when
 * the change is known to be made, before the call is finished. */
void sg_change_record(sg_call *call, const char *org, sg_audit_decision what, const sg_change *c);

#endif
