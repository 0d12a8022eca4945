#include "rpc/router.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/mem.h"

/* Open addressing over a power-of-two table, rebuilt on growth; only start-up writes it. */
struct sg_router {
  sg_route **slots;
  size_t n_slots, n_routes;
  sg_route **routes; /* by index */
  const sg_service **services;
  size_t n_services;
};

static uint64_t hash(const char *s, size_t len) {
  uint64_t h = 1469598103934665603ULL; /* FNV-1a */
  for (size_t i = 0; i < len; i++) {
    h ^= (unsigned char)s[i];
    h *= 1099511628211ULL;
  }
  return h;
}

sg_router *sg_router_new(void) {
  sg_router *r = sg_calloc(1, sizeof(*r));
  r->n_slots = 64;
  r->slots = sg_calloc(r->n_slots, sizeof(*r->slots));
  return r;
}

void sg_router_free(sg_router *r) {
  if (r == NULL)
    return;
  for (size_t i = 0; i < r->n_slots; i++) {
    if (r->slots[i] != NULL) {
      free((char *)r->slots[i]->path);
      free(r->slots[i]);
    }
  }
  free(r->slots);
  free(r->routes);
  free(r->services);
  free(r);
}

static void insert(sg_route **slots, size_t n_slots, sg_route *route) {
  size_t i = hash(route->path, route->path_len) & (n_slots - 1);
  while (slots[i] != NULL)
    i = (i + 1) & (n_slots - 1);
  slots[i] = route;
}

static void grow(sg_router *r) {
  size_t n = r->n_slots * 2;
  sg_route **slots = sg_calloc(n, sizeof(*slots));
  for (size_t i = 0; i < r->n_slots; i++)
    if (r->slots[i] != NULL)
      insert(slots, n, r->slots[i]);
  free(r->slots);
  r->slots = slots;
  r->n_slots = n;
}

static const sg_method_impl *find_impl(const sg_service *svc, const char *name) {
  for (size_t i = 0; i < svc->n_methods; i++)
    if (strcmp(svc->methods[i].name, name) == 0)
      return &svc->methods[i];
  return NULL;
}

void sg_router_add(sg_router *r, const sg_service *svc) {
  const ProtobufCServiceDescriptor *d = svc->descriptor;
  for (size_t i = 0; i < svc->n_methods; i++)
    if (protobuf_c_service_descriptor_get_method_by_name(d, svc->methods[i].name) == NULL)
      sg_fatal("service implements a method its descriptor does not declare");
  for (unsigned i = 0; i < d->n_methods; i++) {
    const ProtobufCMethodDescriptor *m = &d->methods[i];
    sg_route *route = sg_calloc(1, sizeof(*route));
    size_t len = 1 + strlen(d->name) + 1 + strlen(m->name);
    char *path = sg_malloc(len + 1);
    snprintf(path, len + 1, "/%s/%s", d->name, m->name);
    if (sg_router_find(r, path, len) != NULL)
      sg_fatal("a gRPC method path was registered twice");
    const sg_method_impl *impl = find_impl(svc, m->name);
    route->path = path;
    route->path_len = len;
    route->input = impl && impl->input ? impl->input : m->input;
    route->output = m->output;
    route->kind = impl ? impl->kind : SG_METHOD_UNARY;
    route->handler = impl ? impl->handler : NULL;
    route->service = svc;
    route->index = r->n_routes;
    r->routes = sg_realloc(r->routes, (r->n_routes + 1) * sizeof(*r->routes));
    r->routes[r->n_routes] = route;
    if ((r->n_routes + 1) * 2 > r->n_slots)
      grow(r);
    insert(r->slots, r->n_slots, route);
    r->n_routes++;
  }
  r->services = sg_realloc(r->services, (r->n_services + 1) * sizeof(*r->services));
  r->services[r->n_services++] = svc;
}

const sg_route *sg_router_find(const sg_router *r, const char *path, size_t len) {
  size_t i = hash(path, len) & (r->n_slots - 1);
  for (sg_route *route; (route = r->slots[i]) != NULL; i = (i + 1) & (r->n_slots - 1))
    if (route->path_len == len && memcmp(route->path, path, len) == 0)
      return route;
  return NULL;
}

size_t sg_router_count(const sg_router *r) {
  return r->n_routes;
}

const sg_route *sg_router_route(const sg_router *r, size_t i) {
  return i < r->n_routes ? r->routes[i] : NULL;
}

const sg_service *const *sg_router_services(const sg_router *r, size_t *n) {
  *n = r->n_services;
  return r->services;
}
