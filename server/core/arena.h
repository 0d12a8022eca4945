/* A bump-pointer arena in the manner of h2o's h2o_mem_pool_t and PostgreSQL's memory
 * contexts: every allocation made for one RPC (the call object, header strings, the unpacked
 * request, the response) comes from the call's arena and is released all at once when the
 * stream closes. There is no per-object free path to get wrong. */
#ifndef SG_CORE_ARENA_H
#define SG_CORE_ARENA_H

#include <stdarg.h>
#include <stddef.h>

#include <protobuf-c/protobuf-c.h>

typedef struct sg_arena sg_arena;

/* Creates an arena whose first chunk is allocated with it. Never returns NULL. */
sg_arena *sg_arena_new(void);

/* Releases every allocation and the arena itself. */
void sg_arena_free(sg_arena *arena);

/* Releases every allocation but keeps the first chunk, so a reset arena can serve the next RPC
 * without touching malloc. Memory returned earlier must not be used after this. */
void sg_arena_reset(sg_arena *arena);

/* Returns |size| bytes aligned for any type, valid until the next reset. Never returns NULL;
 * a zero |size| returns a valid unique pointer. */
void *sg_arena_alloc(sg_arena *arena, size_t size);

/* Like sg_arena_alloc, zero-filled. */
void *sg_arena_zalloc(sg_arena *arena, size_t size);

/* Copies |len| bytes of |s| and a terminating NUL into the arena. */
char *sg_arena_strndup(sg_arena *arena, const char *s, size_t len);

/* printf into the arena. */
char *sg_arena_printf(sg_arena *arena, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
char *sg_arena_vprintf(sg_arena *arena, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));

/* A protobuf-c allocator drawing from |arena|; its free is a no-op. The allocator lives in the
 * arena and stays valid until the arena is freed (resets keep it). Messages unpacked with it
 * must not be passed to protobuf_c_message_free_unpacked. */
ProtobufCAllocator *sg_arena_allocator(sg_arena *arena);

/* Makes the protobuf-c allocator refuse (return NULL, so unpacking fails cleanly) once the
 * arena has handed out more than |budget| bytes in all; 0 removes the limit. A reset removes
 * it too. Untrusted messages can cost many times their wire size to unpack (each 2-byte
 * unknown field becomes a record of its own); the budget bounds that per call. */
void sg_arena_set_pb_budget(sg_arena *arena, size_t budget);

/* Nonzero if the protobuf-c allocator refused an allocation since the budget was set. */
int sg_arena_pb_refused(const sg_arena *arena);

/* Bytes handed out since the last reset (for tests and accounting). */
size_t sg_arena_used(const sg_arena *arena);

#endif
