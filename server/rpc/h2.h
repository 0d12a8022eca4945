/* The server side of one HTTP/2 connection carrying gRPC, without any I/O: bytes go in with
 * sg_h2_recv and come out with sg_h2_pull, so the socket layer (net/conn.c), the unit tests
 * and the fuzzers drive it alike. Built on nghttp2's nghttp2_session_mem_recv/mem_send.
 *
 * It validates each request (method, content-type, path, encoding, timeout, header size),
 * reassembles messages, calls the routed handler, and writes responses, trailers and
 * Trailers-Only errors as grpc's PROTOCOL-HTTP2.md describes. */
#ifndef SG_RPC_H2_H
#define SG_RPC_H2_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "rpc/router.h"

struct event_base;

typedef struct {
  const sg_router *router;
  /* Larger requests: RESOURCE_EXHAUSTED. Unpacking one may take up to 4x this (plus 64 KiB)
   * of memory; a message that needs more is refused the same way. */
  size_t max_message_bytes;
  uint32_t max_concurrent_streams; /* SETTINGS_MAX_CONCURRENT_STREAMS */
  /* SETTINGS_MAX_HEADER_LIST_SIZE. A larger request header block gets RESOURCE_EXHAUSTED; one
   * more than 4x larger is not decoded further and its stream is reset (INTERNAL_ERROR). */
  uint32_t max_header_list_bytes;
  /* Response bytes the calls of one connection may have queued that the client has not read;
   * a call that would go past it is reset (RST_STREAM ENHANCE_YOUR_CALM). */
  size_t max_queued_bytes;
  /* Bytes of partial request messages one connection may hold across its streams; the call
   * that would go past it ends with RESOURCE_EXHAUSTED. */
  size_t max_buffered_bytes;
  /* Rapid Reset (CVE-2023-44487) guard: a token bucket of |reset_burst| tokens refilled at
   * |reset_rate| per second; each stream the client resets takes one; when none is left the
   * connection gets GOAWAY(ENHANCE_YOUR_CALM). */
  uint32_t reset_burst;
  uint32_t reset_rate;
  /* Every finished call is counted here (rpc/rpcstats.h); NULL: not counted. */
  struct sg_rpc_stats *stats;
} sg_h2_options;

typedef struct {
  /* Output became available outside sg_h2_recv (a handler answered later, a deadline passed):
   * the owner should call sg_h2_pull soon. */
  void (*want_write)(void *user_data);
} sg_h2_hooks;

typedef struct sg_h2 sg_h2;

enum {
  SG_H2_ERR_FATAL = -1, /* protocol error: send what sg_h2_pull still gives, then close */
};

/* Creates a session and queues the server's SETTINGS. |options| and |hooks| must outlive it;
 * |peer| is copied. Timers (deadlines) run on |base|. */
sg_h2 *sg_h2_new(const sg_h2_options *options, struct event_base *base, const char *peer,
                 const sg_h2_hooks *hooks, void *user_data);

/* Tears the session down. Open calls are cancelled: their handlers get the cancel callback
 * and may still finish them later. */
void sg_h2_free(sg_h2 *h2);

/* Processes |len| received bytes. Returns 0 or SG_H2_ERR_FATAL. */
int sg_h2_recv(sg_h2 *h2, const uint8_t *data, size_t len);

/* Points |*data| at the next bytes to send and returns their count; 0 when nothing is pending,
 * SG_H2_ERR_FATAL on an internal error. The bytes stay valid until the next call. */
ssize_t sg_h2_pull(sg_h2 *h2, const uint8_t **data);

/* Nonzero when the session wants neither to read nor to write: the connection may close. */
int sg_h2_done(sg_h2 *h2);

/* Graceful shutdown: announces GOAWAY, lets open calls finish, refuses new ones. Calling it
 * again sends the final GOAWAY at once (the owner's fallback if the client never answers the
 * PING that normally triggers it). */
void sg_h2_shutdown(sg_h2 *h2);

/* Closes the session at once with GOAWAY(NO_ERROR), for an idle connection. */
void sg_h2_terminate(sg_h2 *h2);

/* Calls open on the session: streams whose request header block has arrived in full. A stream
 * whose headers are still arriving does not count, so a peer trickling a header block byte by
 * byte cannot hold the idle timeout off (it never completes a frame either). */
size_t sg_h2_open_streams(const sg_h2 *h2);

/* Monotonic time (ns) of the last complete frame received; a peer trickling partial frames
 * does not move it. */
int64_t sg_h2_last_activity(const sg_h2 *h2);

#endif
