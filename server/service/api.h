/* The sealgate.v1 services of SPEC §2. Each method is served by the module that implements
 * it; a method no module implements yet answers UNIMPLEMENTED. */
#ifndef SG_SERVICE_API_H
#define SG_SERVICE_API_H

#include "rpc/router.h"

/* Adds SecretStoreService, SecretService, SandboxService and AuditService to |router|. */
void sg_api_register(sg_router *router);

#endif
