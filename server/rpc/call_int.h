/* The call object's insides, shared by rpc/call.c (what handlers see) and rpc/h2.c (the
 * HTTP/2 side). Nothing outside server/rpc includes this. */
#ifndef SG_RPC_CALL_INT_H
#define SG_RPC_CALL_INT_H

#include <nghttp2/nghttp2.h>

#include "rpc/call.h"
#include "rpc/compress.h"
#include "rpc/frame.h"
#include "rpc/h2.h"
#include "rpc/router.h"

/* One queued response message: 5-byte prefix and body, sent by the data provider. */
typedef struct sg_outbuf {
  struct sg_outbuf *next;
  size_t len, off;
  int heap; /* malloc'd (streaming calls) rather than from the arena (unary) */
  uint8_t data[];
} sg_outbuf;

typedef struct sg_md_list {
  sg_metadata *items;
  size_t n, cap;
} sg_md_list;

struct sg_call {
  sg_arena *arena;
  sg_h2 *h2; /* NULL once the stream is gone */
  int32_t stream_id;
  struct sg_call *prev, *next; /* the session's open calls */
  int refs;                    /* one for the open stream, one while the handler holds the call */

  /* Request, from the headers. */
  const char *method, *path, *content_type, *accept_encoding, *timeout, *user_agent;
  size_t path_len, content_type_len, accept_encoding_len, timeout_len;
  sg_encoding req_encoding;
  sg_md_list md;
  const char *header_error; /* a bad header noticed while reading: INTERNAL with this */
  size_t header_bytes;      /* counted as SETTINGS_MAX_HEADER_LIST_SIZE counts them */
  const sg_route *route;
  sg_frame_decoder dec;
  ProtobufCMessage *request;
  uint32_t msgs_in, msgs_out;

  /* Response. */
  sg_md_list initial_md, trailing_md;
  sg_encoding resp_encoding;
  sg_outbuf *out_head, *out_tail;
  int status; /* the gRPC status sent or queued; -1 before */
  const char *status_msg;
  int http_status; /* when answered at the HTTP level (415, 405); 0 otherwise */

  unsigned headers_done : 1;
  unsigned half_closed : 1;
  unsigned handler_started : 1;
  unsigned handler_finished : 1;
  unsigned response_started : 1;
  unsigned trailers_submitted : 1;
  unsigned deadline_passed : 1;
  unsigned cancelled : 1; /* cancel callback delivered (or no longer deliverable) */
  unsigned headers_too_large : 1;

  void (*cancel_cb)(sg_call *, void *);
  void *cancel_arg;
  struct event *deadline_ev;
  int64_t deadline; /* monotonic ns or INT64_MAX */
  int64_t start_ns;
  const char *org;
  const char *peer;
  struct event_base *base;
};

/* From h2.c, for call.c. */
nghttp2_session *sg_h2_session(sg_h2 *h2);
void sg_h2_kick(sg_h2 *h2);
struct event_base *sg_h2_event_base(sg_h2 *h2);

/* From call.c, for h2.c. */
sg_call *sg_call_new(sg_h2 *h2, int32_t stream_id, const char *peer, size_t max_message);
/* Ends the call with a status without touching the handler's hold (protocol-level errors and
 * deadlines). Does nothing once a status went out. */
void sg_call_end(sg_call *call, int code, const char *msg);
/* Answers at the HTTP level with |http_status| and no gRPC body (415, 405). */
void sg_call_reject_http(sg_call *call, int http_status, int code, const char *msg);
/* Starts the grpc-timeout clock: when it runs out the call ends with DEADLINE_EXCEEDED. */
void sg_call_arm_deadline(sg_call *call, int64_t timeout_ns);
/* Runs the handler with |msg| and takes the handler's hold on the first run. */
void sg_call_invoke(sg_call *call, const ProtobufCMessage *msg);
/* Delivers the cancel callback once if the handler holds the call. */
void sg_call_cancel(sg_call *call);
/* Drops one reference; the last one frees the call and its arena. */
void sg_call_release(sg_call *call);
void sg_md_add(sg_arena *arena, sg_md_list *list, const char *name, size_t name_len,
               const char *value, size_t value_len);
/* Frees the calling thread's cache of spare arenas. */
void sg_call_pool_drain(void);
/* Monotonic clock in nanoseconds. */
int64_t sg_now_ns(void);

#endif
