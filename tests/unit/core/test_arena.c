/* The per-RPC arena: aligned bump allocations released all at once, and the protobuf-c allocator
 * that unpacks requests into it. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/arena.h"
#include "grpc/health/v1/health.pb-c.h"

static sg_arena *arena;

static void setup(void) {
  arena = sg_arena_new();
}

static void teardown(void) {
  sg_arena_free(arena);
}

TestSuite(arena, .init = setup, .fini = teardown);

static int aligned16(const void *p) {
  return ((uintptr_t)p & 15) == 0;
}

Test(arena, allocations_are_aligned_to_16_bytes) {
  for (size_t i = 0; i < 1000; i++) {
    size_t size = i % 37 + (i % 5 == 0 ? 2000 : 0); /* small, odd and large sizes */
    void *p = sg_arena_alloc(arena, size);
    cr_assert(aligned16(p), "allocation %zu of %zu bytes at %p", i, size, p);
  }
}

Test(arena, allocations_do_not_overlap) {
  enum { N = 600 };
  unsigned char *p[N];
  size_t size[N];
  for (size_t i = 0; i < N; i++) {
    size[i] = (i * 13) % 97 + (i % 50 == 0 ? 3000 : 0);
    p[i] = sg_arena_alloc(arena, size[i]);
    memset(p[i], (int)(i & 0xff), size[i]);
  }

  for (size_t i = 0; i < N; i++)
    for (size_t j = 0; j < size[i]; j++)
      cr_assert_eq(p[i][j], (unsigned char)(i & 0xff), "allocation %zu byte %zu overwritten", i, j);
}

Test(arena, a_zero_size_allocation_is_valid_and_distinct) {
  void *a = sg_arena_alloc(arena, 0);
  void *b = sg_arena_alloc(arena, 0);
  void *c = sg_arena_alloc(arena, 1);

  cr_assert_not_null(a);
  cr_assert_not_null(b);
  cr_assert_neq(a, b);
  cr_assert_neq(a, c);
  cr_assert_neq(b, c);
  cr_assert(aligned16(a) && aligned16(b));
}

Test(arena, large_allocations_work) {
  size_t sizes[] = {1025, 4096, 5000, 70000, 1 << 20};
  unsigned char *p[5];
  for (size_t i = 0; i < 5; i++) {
    p[i] = sg_arena_alloc(arena, sizes[i]);
    cr_assert(aligned16(p[i]));
    memset(p[i], 'a' + (int)i, sizes[i]);
  }

  for (size_t i = 0; i < 5; i++) {
    cr_assert_eq(p[i][0], 'a' + i);
    cr_assert_eq(p[i][sizes[i] - 1], 'a' + i, "the last byte of %zu", sizes[i]);
  }
}

Test(arena, used_counts_the_bytes_handed_out) {
  cr_assert_eq(sg_arena_used(arena), 0);

  sg_arena_alloc(arena, 100);
  size_t after_small = sg_arena_used(arena);
  sg_arena_alloc(arena, 5000);

  cr_assert_geq(after_small, 100);
  cr_assert_geq(sg_arena_used(arena), after_small + 5000);
}

Test(arena, reset_brings_used_back_to_0) {
  for (int i = 0; i < 100; i++)
    sg_arena_alloc(arena, 300);
  sg_arena_alloc(arena, 10000);

  sg_arena_reset(arena);

  cr_assert_eq(sg_arena_used(arena), 0);
}

Test(arena, a_reset_arena_serves_new_allocations) {
  for (int i = 0; i < 100; i++)
    sg_arena_alloc(arena, 300); /* spill into more chunks */
  sg_arena_alloc(arena, 10000);
  sg_arena_reset(arena);

  char *small = sg_arena_alloc(arena, 64);
  char *large = sg_arena_alloc(arena, 8000);
  memset(small, 's', 64);
  memset(large, 'l', 8000);

  cr_assert_eq(small[63], 's');
  cr_assert_eq(large[7999], 'l');
  cr_assert_geq(sg_arena_used(arena), 64 + 8000);
}

Test(arena, reset_keeps_the_first_chunk) {
  void *first = sg_arena_alloc(arena, 32);
  for (int i = 0; i < 100; i++)
    sg_arena_alloc(arena, 200);

  sg_arena_reset(arena);

  cr_assert_eq(sg_arena_alloc(arena, 32), first);
}

Test(arena, zalloc_zero_fills_reused_memory) {
  unsigned char *p = sg_arena_alloc(arena, 512);
  memset(p, 0xff, 512);
  sg_arena_reset(arena);

  unsigned char *z = sg_arena_zalloc(arena, 512);

  for (size_t i = 0; i < 512; i++)
    cr_assert_eq(z[i], 0, "byte %zu", i);
}

Test(arena, strndup_copies_len_bytes_and_a_nul) {
  char *s = sg_arena_strndup(arena, "hello, world", 5);

  cr_assert_str_eq(s, "hello");
}

Test(arena, strndup_keeps_embedded_nul_bytes) {
  char *s = sg_arena_strndup(arena, "a\0b", 3);

  cr_assert_arr_eq(s, "a\0b", 4);
}

Test(arena, strndup_of_nothing_is_an_empty_string) {
  char *s = sg_arena_strndup(arena, "", 0);

  cr_assert_str_eq(s, "");
}

Test(arena, printf_formats_into_the_arena) {
  char *s = sg_arena_printf(arena, "%s/%s:%d", "/pkg.Svc", "Method", 42);

  cr_assert_str_eq(s, "/pkg.Svc/Method:42");
}

Test(arena, printf_of_more_than_a_chunk_works) {
  char *s = sg_arena_printf(arena, "%6000d|", 7);

  cr_assert_eq(strlen(s), 6001);
  cr_assert_eq(s[5999], '7');
  cr_assert_eq(s[6000], '|');
  cr_assert_eq(s[0], ' ');
}

Test(arena, printf_results_stay_valid_as_more_are_made) {
  char *s[50];
  for (int i = 0; i < 50; i++)
    s[i] = sg_arena_printf(arena, "string number %d of many, padded to spill chunks %200s", i, "");

  for (int i = 0; i < 50; i++) {
    char want[32];
    snprintf(want, sizeof(want), "string number %d ", i);
    cr_assert_eq(strncmp(s[i], want, strlen(want)), 0, "string %d became \"%.30s\"", i, s[i]);
  }
}

static char *via_vprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *via_vprintf(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char *s = sg_arena_vprintf(arena, fmt, ap);
  va_end(ap);
  return s;
}

Test(arena, vprintf_formats_a_va_list) {
  cr_assert_str_eq(via_vprintf("%d-%s-%c", -3, "x", 'y'), "-3-x-y");
}

/* Packs a HealthCheckRequest naming |service|; the caller frees the result. */
static uint8_t *pack_health_request(const char *service, size_t *len) {
  Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
  req.service = (char *)service;
  *len = grpc__health__v1__health_check_request__get_packed_size(&req);
  uint8_t *buf = malloc(*len);
  cr_assert_eq(grpc__health__v1__health_check_request__pack(&req, buf), *len);
  return buf;
}

Test(arena, the_protobuf_allocator_unpacks_a_message_into_the_arena) {
  size_t len;
  uint8_t *wire = pack_health_request("sealgate.v1.SecretService", &len);

  Grpc__Health__V1__HealthCheckRequest *req =
      grpc__health__v1__health_check_request__unpack(sg_arena_allocator(arena), len, wire);
  free(wire); /* the message must not point into the wire bytes */

  cr_assert_not_null(req);
  cr_assert_str_eq(req->service, "sealgate.v1.SecretService");
  cr_assert_geq(sg_arena_used(arena), sizeof(*req) + strlen(req->service) + 1);
}

Test(arena, the_protobuf_allocator_handles_a_large_field) {
  char big[3000];
  memset(big, 'q', sizeof(big) - 1);
  big[sizeof(big) - 1] = '\0';
  size_t len;
  uint8_t *wire = pack_health_request(big, &len);

  Grpc__Health__V1__HealthCheckRequest *req =
      grpc__health__v1__health_check_request__unpack(sg_arena_allocator(arena), len, wire);
  free(wire);

  cr_assert_not_null(req);
  cr_assert_str_eq(req->service, big);
}

Test(arena, the_protobuf_allocator_survives_a_reset) {
  ProtobufCAllocator *before = sg_arena_allocator(arena);
  sg_arena_reset(arena);
  size_t len;
  uint8_t *wire = pack_health_request("after reset", &len);

  Grpc__Health__V1__HealthCheckRequest *req =
      grpc__health__v1__health_check_request__unpack(before, len, wire);
  free(wire);

  cr_assert_eq(sg_arena_allocator(arena), before);
  cr_assert_not_null(req);
  cr_assert_str_eq(req->service, "after reset");
}

Test(arena, the_protobuf_allocator_rejects_bad_wire_data) {
  const uint8_t bad[] = {0x0a, 0x10, 'x'}; /* field 1, 16 bytes announced, 1 present */

  cr_assert_null(
      grpc__health__v1__health_check_request__unpack(sg_arena_allocator(arena), sizeof(bad), bad));
}

Test(arena, an_allocation_size_that_cannot_be_met_aborts, .signal = SIGABRT) {
  sg_arena_alloc(arena, SIZE_MAX - 20);
}

Test(arena, an_allocation_of_size_max_aborts, .signal = SIGABRT) {
  sg_arena_alloc(arena, SIZE_MAX);
}
