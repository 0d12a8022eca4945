/* sealgate.v1.AuditService: an organization reads its egress proxy's audit trail (the events
 * db/audit_writer.c writes), oldest first, filtered by sandbox, store, secret name and time,
 * keyset-paginated like the other lists. Another organization's events never appear. */
#ifndef SG_SERVICE_AUDIT_H
#define SG_SERVICE_AUDIT_H

#include "rpc/call.h"

extern const sg_service sg_audit_service;

#endif
