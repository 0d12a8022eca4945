#include "core/arena.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/mem.h"

/* The first chunk is sized so that a typical unary RPC (call object, a handful of headers,
 * small request and response) never needs a second one. Requests larger than a quarter of a
 * chunk get their own allocation ("directs", as h2o calls them). */
#define SG_ARENA_CHUNK 4096
#define SG_ARENA_ALIGN 16

typedef struct sg_arena_chunk {
  struct sg_arena_chunk *next;
  size_t cap; /* usable bytes in data */
  _Alignas(SG_ARENA_ALIGN) unsigned char data[];
} sg_arena_chunk;

struct sg_arena {
  sg_arena_chunk *chunk; /* current chunk; the first one is never freed before sg_arena_free */
  sg_arena_chunk *first;
  size_t pos;            /* bump offset in chunk->data */
  sg_arena_chunk *large; /* direct allocations */
  size_t used;
  size_t pb_budget; /* 0: none */
  int pb_refused;
  ProtobufCAllocator pb;
};

static sg_arena_chunk *chunk_new(size_t cap) {
  sg_arena_chunk *c = sg_malloc(sizeof(*c) + cap);
  c->next = NULL;
  c->cap = cap;
  return c;
}

static void *pb_alloc(void *data, size_t size) {
  sg_arena *a = data;
  if (a->pb_budget != 0 && (size > a->pb_budget || a->used > a->pb_budget - size)) {
    a->pb_refused = 1;
    return NULL;
  }
  return sg_arena_alloc(a, size);
}

static void pb_free(void *data, void *ptr) {
  (void)data;
  (void)ptr;
}

sg_arena *sg_arena_new(void) {
  sg_arena *a = sg_calloc(1, sizeof(*a));
  a->first = a->chunk = chunk_new(SG_ARENA_CHUNK);
  a->pb.alloc = pb_alloc;
  a->pb.free = pb_free;
  a->pb.allocator_data = a;
  return a;
}

/* Arenas hold what calls decode and encode: SetSecret values, decrypted values on their way
 * to the proxy's views, sealed tokens. Memory is wiped before it is reused or given back, so
 * a later heap reader (a core dump the process forbids, a bug reading freed memory) finds
 * none of it. explicit_bzero, not memset: the compiler may not drop it before free(). */
static void free_list(sg_arena_chunk *c) {
  while (c != NULL) {
    sg_arena_chunk *next = c->next;
    explicit_bzero(c->data, c->cap);
    free(c);
    c = next;
  }
}

void sg_arena_reset(sg_arena *a) {
  /* The current chunk is filled up to pos; every earlier one may be filled to its end. */
  explicit_bzero(a->first->data, a->chunk == a->first ? a->pos : a->first->cap);
  free_list(a->first->next);
  free_list(a->large);
  a->first->next = NULL;
  a->large = NULL;
  a->chunk = a->first;
  a->pos = 0;
  a->used = 0;
  a->pb_budget = 0;
  a->pb_refused = 0;
}

void sg_arena_free(sg_arena *a) {
  if (a == NULL)
    return;
  sg_arena_reset(a);
  free(a->first);
  free(a);
}

void *sg_arena_alloc(sg_arena *a, size_t size) {
  size_t need = (size + SG_ARENA_ALIGN - 1) & ~(size_t)(SG_ARENA_ALIGN - 1);
  if (need == 0)
    need = SG_ARENA_ALIGN;
  /* Rounding up must not wrap, nor may the chunk header added by chunk_new. */
  if (need < size || need > SIZE_MAX - sizeof(sg_arena_chunk))
    sg_fatal("arena allocation size overflow");
  a->used += need;
  if (need > SG_ARENA_CHUNK / 4) {
    sg_arena_chunk *c = chunk_new(need);
    c->next = a->large;
    a->large = c;
    return c->data;
  }
  if (a->pos + need > a->chunk->cap) {
    sg_arena_chunk *c = chunk_new(SG_ARENA_CHUNK);
    c->next = a->chunk->next;
    a->chunk->next = c;
    a->chunk = c;
    a->pos = 0;
  }
  void *p = a->chunk->data + a->pos;
  a->pos += need;
  return p;
}

void *sg_arena_zalloc(sg_arena *a, size_t size) {
  void *p = sg_arena_alloc(a, size);
  memset(p, 0, size);
  return p;
}

char *sg_arena_strndup(sg_arena *a, const char *s, size_t len) {
  char *p = sg_arena_alloc(a, len + 1);
  memcpy(p, s, len);
  p[len] = '\0';
  return p;
}

char *sg_arena_vprintf(sg_arena *a, const char *fmt, va_list ap) {
  va_list ap2;
  va_copy(ap2, ap);
  int n = vsnprintf(NULL, 0, fmt, ap2);
  va_end(ap2);
  if (n < 0)
    n = 0;
  char *p = sg_arena_alloc(a, (size_t)n + 1);
  vsnprintf(p, (size_t)n + 1, fmt, ap);
  return p;
}

char *sg_arena_printf(sg_arena *a, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char *p = sg_arena_vprintf(a, fmt, ap);
  va_end(ap);
  return p;
}

ProtobufCAllocator *sg_arena_allocator(sg_arena *a) {
  return &a->pb;
}

void sg_arena_set_pb_budget(sg_arena *a, size_t budget) {
  a->pb_budget = budget;
  a->pb_refused = 0;
}

int sg_arena_pb_refused(const sg_arena *a) {
  return a->pb_refused;
}

size_t sg_arena_used(const sg_arena *a) {
  return a->used;
}
