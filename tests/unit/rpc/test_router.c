/* The router: every method a service descriptor declares gets the route "/package.Service/Method"
 * (PROTOCOL-HTTP2.md, Path), implemented or not; anything else is unknown. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "grpc/health/v1/health.pb-c.h"
#include "grpc/reflection/v1/reflection.pb-c.h"
#include "grpc/reflection/v1alpha/reflection.pb-c.h"
#include "rpc/call.h"
#include "rpc/router.h"
#include "sealgate/testing/v1/test_service.pb-c.h"
#include "sealgate/v1/audit.pb-c.h"
#include "sealgate/v1/sandbox.pb-c.h"
#include "sealgate/v1/secret.pb-c.h"
#include "sealgate/v1/secret_store.pb-c.h"

static sg_router *router;

static void setup(void) {
  router = sg_router_new();
}

static void teardown(void) {
  sg_router_free(router);
}

TestSuite(router, .init = setup, .fini = teardown);

static void check(sg_call *call, const ProtobufCMessage *request) {
  (void)call, (void)request;
}

static void other_handler(sg_call *call, const ProtobufCMessage *request) {
  (void)call, (void)request;
}

static int health_data;

/* grpc.health.v1.Health implementing only Check; Watch stays declared but unimplemented. */
static const sg_method_impl health_methods[] = {{"Check", SG_METHOD_UNARY, check, NULL}};
static const sg_service health = {&grpc__health__v1__health__descriptor, health_methods, 1,
                                  &health_data};

static const sg_route *find(const char *path) {
  return sg_router_find(router, path, strlen(path));
}

static void assert_unknown(const char *path) {
  cr_assert_null(find(path), "\"%s\" was found", path);
}

/* Asserts that every method |svc|'s descriptor declares resolves to a route of |svc|. */
static void assert_every_method_resolves(const sg_service *svc) {
  const ProtobufCServiceDescriptor *d = svc->descriptor;
  for (unsigned i = 0; i < d->n_methods; i++) {
    char path[256];
    int n = snprintf(path, sizeof(path), "/%s/%s", d->name, d->methods[i].name);
    const sg_route *route = sg_router_find(router, path, (size_t)n);
    cr_assert_not_null(route, "%s is not routed", path);
    cr_assert_str_eq(route->path, path);
    cr_assert_eq(route->path_len, (size_t)n);
    cr_assert_eq(route->service, svc, "%s", path);
    cr_assert_eq(route->input, d->methods[i].input, "%s", path);
    cr_assert_eq(route->output, d->methods[i].output, "%s", path);
  }
}

Test(router, an_implemented_method_is_found_with_its_handler) {
  sg_router_add(router, &health);

  const sg_route *route = find("/grpc.health.v1.Health/Check");

  cr_assert_not_null(route);
  cr_assert_eq(route->handler, check);
  cr_assert_eq(route->kind, SG_METHOD_UNARY);
  cr_assert_eq(route->input, &grpc__health__v1__health_check_request__descriptor);
  cr_assert_eq(route->output, &grpc__health__v1__health_check_response__descriptor);
  cr_assert_eq(route->service, &health);
  cr_assert_eq(route->service->data, &health_data);
  cr_assert_str_eq(route->path, "/grpc.health.v1.Health/Check");
  cr_assert_eq(route->path_len, strlen("/grpc.health.v1.Health/Check"));
}

Test(router, a_declared_but_unimplemented_method_is_found_without_a_handler) {
  sg_router_add(router, &health);

  const sg_route *route = find("/grpc.health.v1.Health/Watch");

  cr_assert_not_null(route);
  cr_assert_null(route->handler);
  cr_assert_eq(route->input, &grpc__health__v1__health_check_request__descriptor);
  cr_assert_eq(route->output, &grpc__health__v1__health_check_response__descriptor);
  cr_assert_eq(route->service, &health);
}

Test(router, an_unknown_method_or_service_is_not_found) {
  sg_router_add(router, &health);

  assert_unknown("/grpc.health.v1.Health/Nope");
  assert_unknown("/grpc.health.v1.Sickness/Check");
  assert_unknown("/grpc.health.v2.Health/Check");
  assert_unknown("/");
  assert_unknown("");
}

Test(router, near_misses_of_a_path_are_not_found) {
  sg_router_add(router, &health);

  assert_unknown("/grpc.health.v1.Health/Chec");    /* prefix */
  assert_unknown("/grpc.health.v1.Health/CheckX");  /* suffix */
  assert_unknown("/grpc.health.v1.Health/Check/");  /* trailing slash */
  assert_unknown("/grpc.health.v1.Health/check");   /* case */
  assert_unknown("/GRPC.HEALTH.V1.HEALTH/CHECK");   /* case */
  assert_unknown("grpc.health.v1.Health/Check");    /* no leading slash */
  assert_unknown("//grpc.health.v1.Health/Check");  /* doubled slash */
  assert_unknown("/grpc.health.v1.Health.Check");   /* dot for slash */
  assert_unknown("/Health/Check");                  /* no package */
  assert_unknown("/grpc.health.v1.Health/Check?x"); /* a query */
  assert_unknown("/grpc.health.v1.Health");         /* service alone */
}

Test(router, find_compares_exactly_len_bytes) {
  sg_router_add(router, &health);
  const char *path = "/grpc.health.v1.Health/CheckAndMore";

  cr_assert_not_null(sg_router_find(router, path, strlen("/grpc.health.v1.Health/Check")));
  /* sizeof counts the NUL: a path with a trailing NUL byte is another path. */
  cr_assert_null(sg_router_find(router, "/grpc.health.v1.Health/Check",
                                sizeof("/grpc.health.v1.Health/Check")));
}

Test(router, an_empty_router_finds_nothing_and_lists_no_services) {
  size_t n = 99;

  sg_router_services(router, &n);

  cr_assert_eq(n, 0);
  assert_unknown("/grpc.health.v1.Health/Check");
}

Test(router, a_method_kind_and_input_override_are_kept) {
  static const sg_method_impl methods[] = {
      {"Check", SG_METHOD_UNARY, check, &grpc__health__v1__health_check_response__descriptor},
      {"Watch", SG_METHOD_SERVER_STREAMING, other_handler, NULL},
  };
  static const sg_service svc = {&grpc__health__v1__health__descriptor, methods, 2, NULL};
  sg_router_add(router, &svc);

  const sg_route *c = find("/grpc.health.v1.Health/Check");
  const sg_route *w = find("/grpc.health.v1.Health/Watch");

  cr_assert_eq(c->input, &grpc__health__v1__health_check_response__descriptor);
  cr_assert_eq(w->kind, SG_METHOD_SERVER_STREAMING);
  cr_assert_eq(w->handler, other_handler);
  cr_assert_eq(w->input, &grpc__health__v1__health_check_request__descriptor);
}

static const sg_service secret_store = {&sealgate__v1__secret_store_service__descriptor, NULL, 0,
                                        NULL};
static const sg_service secret = {&sealgate__v1__secret_service__descriptor, NULL, 0, NULL};
static const sg_service sandbox = {&sealgate__v1__sandbox_service__descriptor, NULL, 0, NULL};
static const sg_service audit = {&sealgate__v1__audit_service__descriptor, NULL, 0, NULL};
static const sg_service reflection = {&grpc__reflection__v1__server_reflection__descriptor, NULL, 0,
                                      NULL};
static const sg_service reflection_alpha = {
    &grpc__reflection__v1alpha__server_reflection__descriptor, NULL, 0, NULL};
static const sg_service test_service = {&sealgate__testing__v1__test_service__descriptor, NULL, 0,
                                        NULL};

Test(router, services_are_listed_in_the_order_they_were_added) {
  sg_router_add(router, &secret);
  sg_router_add(router, &health);
  sg_router_add(router, &audit);

  size_t n = 0;
  const sg_service *const *list = sg_router_services(router, &n);

  cr_assert_eq(n, 3);
  cr_assert_eq(list[0], &secret);
  cr_assert_eq(list[1], &health);
  cr_assert_eq(list[2], &audit);
}

Test(router, sealgates_own_services_all_resolve) {
  sg_router_add(router, &health);
  sg_router_add(router, &secret_store);
  sg_router_add(router, &secret);
  sg_router_add(router, &sandbox);
  sg_router_add(router, &audit);

  assert_every_method_resolves(&health);
  assert_every_method_resolves(&secret_store);
  assert_every_method_resolves(&secret);
  assert_every_method_resolves(&sandbox);
  assert_every_method_resolves(&audit);
  cr_assert_not_null(find("/sealgate.v1.SandboxService/RunCommand"));
  cr_assert_null(find("/sealgate.v1.SandboxService/RunCommand")->handler);
}

/* A made-up service with many methods, so that the table must grow past its first size. */
#define SYNTH_METHODS 40
static char synth_names[4][SYNTH_METHODS][16];
static char synth_service_names[4][48];
static ProtobufCMethodDescriptor synth_methods[4][SYNTH_METHODS];
static ProtobufCServiceDescriptor synth_desc[4];
static sg_service synth[4];

static void make_synthetic_services(void) {
  for (size_t s = 0; s < 4; s++) {
    snprintf(synth_service_names[s], sizeof(synth_service_names[s]),
             "sealgate.testing.synthetic.Service%zu", s);
    for (size_t m = 0; m < SYNTH_METHODS; m++) {
      snprintf(synth_names[s][m], sizeof(synth_names[s][m]), "Method%zu", m);
      synth_methods[s][m] = (ProtobufCMethodDescriptor){
          synth_names[s][m], &grpc__health__v1__health_check_request__descriptor,
          &grpc__health__v1__health_check_response__descriptor};
    }
    synth_desc[s] = (ProtobufCServiceDescriptor){
        .magic = PROTOBUF_C__SERVICE_DESCRIPTOR_MAGIC,
        .name = synth_service_names[s],
        .n_methods = SYNTH_METHODS,
        .methods = synth_methods[s],
    };
    synth[s] = (sg_service){&synth_desc[s], NULL, 0, NULL};
  }
}

Test(router, many_services_all_resolve_as_the_table_grows) {
  make_synthetic_services();
  const sg_service *all[] = {&health,   &secret_store, &secret,           &sandbox,
                             &audit,    &reflection,   &reflection_alpha, &test_service,
                             &synth[0], &synth[1],     &synth[2],         &synth[3]};
  size_t n_all = sizeof(all) / sizeof(all[0]), routes = 0;

  for (size_t i = 0; i < n_all; i++) {
    sg_router_add(router, all[i]);
    routes += all[i]->descriptor->n_methods;
    /* Everything added so far still resolves after each growth. */
    for (size_t j = 0; j <= i; j++)
      assert_every_method_resolves(all[j]);
  }

  cr_assert_gt(routes, 128, "too few routes to make the table grow");
  size_t n = 0;
  const sg_service *const *list = sg_router_services(router, &n);
  cr_assert_eq(n, n_all);
  for (size_t i = 0; i < n_all; i++)
    cr_assert_eq(list[i], all[i]);
  assert_unknown("/sealgate.testing.synthetic.Service0/Method40");
  assert_unknown("/sealgate.testing.synthetic.Service4/Method0");
}

Test(router, a_method_the_descriptor_does_not_declare_aborts, .signal = SIGABRT) {
  static const sg_method_impl methods[] = {{"Check", SG_METHOD_UNARY, check, NULL},
                                           {"Chekc", SG_METHOD_UNARY, check, NULL}};
  static const sg_service typo = {&grpc__health__v1__health__descriptor, methods, 2, NULL};

  sg_router_add(router, &typo);
}

Test(router, adding_a_service_twice_aborts, .signal = SIGABRT) {
  sg_router_add(router, &health);

  sg_router_add(router, &health);
}

Test(router, two_services_with_the_same_descriptor_abort, .signal = SIGABRT) {
  static const sg_service again = {&grpc__health__v1__health__descriptor, NULL, 0, NULL};
  sg_router_add(router, &health);

  sg_router_add(router, &again);
}
