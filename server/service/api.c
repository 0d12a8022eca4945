#include "service/api.h"

#include "service/sandbox.h"
#include "service/secret.h"
#include "service/secret_store.h"

#include "sealgate/v1/audit.pb-c.h"
#include "sealgate/v1/sandbox.pb-c.h"
#include "sealgate/v1/secret.pb-c.h"
#include "sealgate/v1/secret_store.pb-c.h"

/* Services whose methods have no implementation yet: the router answers UNIMPLEMENTED for
 * each, naming it. */
static const sg_service not_yet[] = {
    {&sealgate__v1__audit_service__descriptor, NULL, 0, NULL},
};

void sg_api_register(sg_router *router) {
  sg_router_add(router, &sg_secret_store_service);
  sg_router_add(router, &sg_secret_service);
  sg_router_add(router, &sg_sandbox_service);
  for (size_t i = 0; i < sizeof(not_yet) / sizeof(not_yet[0]); i++)
    sg_router_add(router, &not_yet[i]);
}
