/* The insides of a session and its calls, shared by rpc/h2.c (the HTTP/2 side) and rpc/call.c
 * (what handlers see and how responses become frames). Nothing outside server/rpc includes
 * this. */
#ifndef SG_RPC_CALL_INT_H
#define SG_RPC_CALL_INT_H

#include <string.h>

#include <nghttp2/nghttp2.h>

#include "core/list.h"
#include "rpc/call.h"
#include "rpc/compress.h"
#include "rpc/frame.h"
#include "rpc/h2.h"
#include "rpc/router.h"

struct sg_h2 {
  nghttp2_session *session;
  const sg_h2_options *opts;
  struct event_base *base;
  sg_h2_hooks hooks;
  void *user_data;
  char *peer;
  sg_list calls; /* open calls, through sg_call.link */
  size_t open;
  size_t partial;     /* of those, streams whose request header block is still arriving */
  size_t out_queued;  /* response bytes calls have queued and nghttp2 has not taken yet */
  size_t in_buffered; /* bytes held by the calls' request decoders */
  int in_recv;
  int draining;     /* shutdown notice sent */
  int goaway_final; /* final GOAWAY submitted */
  double reset_tokens;
  int64_t reset_refill_ns;
  int64_t last_frame_ns;
  int frame_seen; /* a complete frame arrived during this sg_h2_recv */
};

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
  sg_arena *scratch; /* bidi: each request is unpacked here and dropped after its handler run */
  sg_h2 *h2;         /* NULL once the stream is gone */
  int32_t stream_id;
  sg_list link; /* in h2->calls while the stream is open */
  int refs;     /* one for the open stream, one while the handler holds the call */

  /* Request, from the headers. */
  const char *method, *path, *content_type, *accept_encoding, *timeout;
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
  size_t out_queued; /* this call's part of h2->out_queued */
  int status;        /* the gRPC status sent or queued; -1 before */
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
  const char *key_id, *key_prefix; /* the API key that authenticated the call (sg_call_set_key) */
  const char *peer;
  struct event_base *base;
};

/* "-bin" metadata carries bytes, base64-encoded on the wire. */
static inline int sg_md_is_bin(const char *name, size_t len) {
  return len > 4 && memcmp(name + len - 4, "-bin", 4) == 0;
}

/* From h2.c: asks the owner to flush output produced outside sg_h2_recv. */
void sg_h2_kick(sg_h2 *h2);

/* From call.c, for h2.c. */
sg_call *sg_call_new(sg_h2 *h2, int32_t stream_id);
void sg_md_add(sg_arena *arena, sg_md_list *list, const char *name, size_t name_len,
               const char *value, size_t value_len);
/* Unpacks a request message as the route's input type, within the call's memory budget. Returns
 * the message, or NULL with *over_budget set when the budget (not the bytes) was the problem. */
ProtobufCMessage *sg_call_unpack(sg_call *call, const uint8_t *data, size_t len, int *over_budget);
/* Ends the call with a status, sent in trailers (or Trailers-Only) behind any queued messages.
 * Leaves the handler's hold alone. Does nothing once a status was set. */
void sg_call_end(sg_call *call, int code, const char *msg);
/* Ends the call at once with RST_STREAM, dropping queued output: for when the status could
 * not reach the client (it stopped reading, the deadline passed mid-response). Records
 * |code| for the log even if a status was queued. */
void sg_call_abort(sg_call *call, int code, const char *msg);
/* Answers at the HTTP level with |http_status| and no gRPC body (415, 405). */
void sg_call_reject_http(sg_call *call, int http_status, int code, const char *msg);
/* Starts the grpc-timeout clock: when it runs out the call ends with DEADLINE_EXCEEDED. */
void sg_call_arm_deadline(sg_call *call, int64_t timeout_ns);
/* Runs the handler with |msg| and takes the handler's hold on the first run. */
void sg_call_invoke(sg_call *call, const ProtobufCMessage *msg);
/* Delivers the cancel callback once if the handler holds the call. */
void sg_call_cancel(sg_call *call);
/* The stream is gone: drops queued output and request buffers (returning them to the
 * session's budgets), stops the deadline, and cuts the call loose from the session. */
void sg_call_detach(sg_call *call);
/* Drops one reference; the last one frees the call and its arena. */
void sg_call_release(sg_call *call);

#endif
