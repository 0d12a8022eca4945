#include "service/api.h"

#include "sealgate/v1/audit.pb-c.h"
#include "sealgate/v1/sandbox.pb-c.h"
#include "sealgate/v1/secret.pb-c.h"
#include "sealgate/v1/secret_store.pb-c.h"

/* No method has an implementation yet: the router answers UNIMPLEMENTED for each, naming it. */
static const sg_service services[] = {
    {&sealgate__v1__secret_store_service__descriptor, NULL, 0, NULL},
    {&sealgate__v1__secret_service__descriptor, NULL, 0, NULL},
    {&sealgate__v1__sandbox_service__descriptor, NULL, 0, NULL},
    {&sealgate__v1__audit_service__descriptor, NULL, 0, NULL},
};

void sg_api_register(sg_router *router) {
  for (size_t i = 0; i < sizeof(services) / sizeof(services[0]); i++)
    sg_router_add(router, &services[i]);
}
