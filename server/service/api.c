#include "service/api.h"

#include "service/audit.h"
#include "service/sandbox.h"
#include "service/secret.h"
#include "service/secret_store.h"

void sg_api_register(sg_router *router) {
  sg_router_add(router, &sg_secret_store_service);
  sg_router_add(router, &sg_secret_service);
  sg_router_add(router, &sg_sandbox_service);
  sg_router_add(router, &sg_audit_service);
}
