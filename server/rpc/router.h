/* Maps a request's :path to the method that serves it. Built once at start-up from protobuf-c
 * service descriptors, then read concurrently by every event loop without locks. */
#ifndef SG_RPC_ROUTER_H
#define SG_RPC_ROUTER_H

#include <stddef.h>

#include "rpc/call.h"

typedef struct {
  const char *path; /* "/package.Service/Method" */
  size_t path_len;
  const ProtobufCMessageDescriptor *input;
  const ProtobufCMessageDescriptor *output;
  sg_method_kind kind;
  sg_handler_fn handler; /* NULL: the method is declared but not implemented */
  const sg_service *service;
  size_t index; /* 0, 1, ... in the order routes were added (sg_router_route) */
} sg_route;

typedef struct sg_router sg_router;

sg_router *sg_router_new(void);
void sg_router_free(sg_router *router);

/* Adds every method of |service| (which must outlive the router). Aborts on a programming
 * error: a method implementation whose name the descriptor does not have, or a service added
 * twice. */
void sg_router_add(sg_router *router, const sg_service *service);

/* Returns the route for |path|, or NULL for an unknown service or method. */
const sg_route *sg_router_find(const sg_router *router, const char *path, size_t len);

/* The number of routes, and route |i| (< that number) in the order they were added. */
size_t sg_router_count(const sg_router *router);
const sg_route *sg_router_route(const sg_router *router, size_t i);

/* The services added, in order. */
const sg_service *const *sg_router_services(const sg_router *router, size_t *n);

#endif
