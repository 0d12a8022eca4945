/* The handler's view of one RPC.
 *
 * A call lives on the event-loop thread that accepted its connection; every function here must
 * be called from that thread. Handlers may answer at once or later (after a database round
 * trip, a timer, a status change), but:
 *
 *   A handler that has been invoked must end its call exactly once, with sg_call_finish or
 *   sg_call_reply, also when the call was cancelled meanwhile. Until then the call, its arena
 *   and its request stay valid; afterwards they must not be touched.
 *
 * When the client cancels, the deadline passes or the connection drops, the callback set with
 * sg_call_on_cancel runs (once); responses sent after that are dropped silently. */
#ifndef SG_RPC_CALL_H
#define SG_RPC_CALL_H

#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "core/arena.h"
#include "sealgate/status.h"

struct event_base;

typedef struct sg_call sg_call;

typedef enum {
  SG_METHOD_UNARY,            /* one request, one response */
  SG_METHOD_SERVER_STREAMING, /* one request, any number of responses */
  SG_METHOD_BIDI_STREAMING,   /* requests handed over one by one as they arrive */
} sg_method_kind;

/* For unary and server-streaming methods the handler runs once, when the client has sent its
 * request and half-closed; the request lives in the call's arena until the call ends. For
 * bidirectional streaming it runs for each request message as it arrives, then once more with
 * |request| NULL when the client half-closes; each request is valid only during its run (a
 * long stream must not accumulate every message it ever received). */
typedef void (*sg_handler_fn)(sg_call *call, const ProtobufCMessage *request);

typedef struct {
  const char *name; /* the method's name in the service descriptor, e.g. "Check" */
  sg_method_kind kind;
  sg_handler_fn handler;
  /* Optional: decode requests as this type instead of the descriptor's input, which must be
   * wire-compatible (reflection v1alpha is served with the v1 message types). */
  const ProtobufCMessageDescriptor *input;
} sg_method_impl;

/* A service as the router sees it: the protobuf-c descriptor names its methods; methods with
 * no entry in |methods| answer UNIMPLEMENTED. */
typedef struct {
  const ProtobufCServiceDescriptor *descriptor;
  const sg_method_impl *methods;
  size_t n_methods;
  void *data; /* handed to handlers through sg_call_service_data */
} sg_service;

typedef struct {
  const char *name; /* lower-case */
  size_t name_len;
  const char *value; /* for "-bin" keys: the decoded bytes */
  size_t value_len;
} sg_metadata;

/* --- Reading the call --------------------------------------------------------------------- */

/* "/package.Service/Method" */
const char *sg_call_path(const sg_call *call);
void *sg_call_service_data(const sg_call *call);
sg_arena *sg_call_arena(sg_call *call);
struct event_base *sg_call_event_base(const sg_call *call);
/* The client's address, "host:port". */
const char *sg_call_peer(const sg_call *call);

/* The first value of metadata |name| (lower-case), or NULL. |len| may be NULL. */
const char *sg_call_metadata(const sg_call *call, const char *name, size_t *len);
/* Every custom metadata entry, in arrival order. */
const sg_metadata *sg_call_metadata_all(const sg_call *call, size_t *n);

/* Nonzero once the call has been cancelled, has timed out, or has been finished. */
int sg_call_is_done(const sg_call *call);

/* Monotonic nanoseconds (CLOCK_MONOTONIC) at which the deadline passes, or INT64_MAX. */
int64_t sg_call_deadline(const sg_call *call);

/* --- Answering ----------------------------------------------------------------------------- */

/* Registers |cb| to run once if the call is cancelled before the handler finishes it. */
void sg_call_on_cancel(sg_call *call, void (*cb)(sg_call *call, void *arg), void *arg);

/* Adds response metadata. Initial metadata must be added before the first message. Names must
 * be lower-case; values of "-bin" names are raw bytes and are sent base64-encoded. */
void sg_call_add_initial_metadata(sg_call *call, const char *name, const void *value, size_t len);
void sg_call_add_trailing_metadata(sg_call *call, const char *name, const void *value, size_t len);

/* Queues one response message. Returns 0, or -1 if the call is already done (the message is
 * dropped) or the connection's response queue is full because the client is not reading (the
 * call is then reset with RESOURCE_EXHAUSTED; the handler must still finish it). */
int sg_call_send(sg_call *call, const ProtobufCMessage *msg);

/* Ends the call with |code| and a status message made from |fmt| (NULL or "" for none). The
 * message reaches the client: never put internals, secrets or tokens in it. */
void sg_call_finish(sg_call *call, sg_status_code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* sg_call_send followed by sg_call_finish(call, SG_STATUS_OK, NULL). */
void sg_call_reply(sg_call *call, const ProtobufCMessage *msg);

/* Records the organization for the RPC's log line. |org| is copied. */
void sg_call_set_org(sg_call *call, const char *org);

/* Records the API key that authenticated the call: its id and the prefix an operator sees
 * (never the key itself), for the audit trail. Both are copied. */
void sg_call_set_key(sg_call *call, const char *key_id, const char *key_prefix);

/* What sg_call_set_key recorded, or "" before (and for calls it never ran for). */
const char *sg_call_key_id(const sg_call *call);
const char *sg_call_key_prefix(const sg_call *call);

/* Frees the calling loop thread's cache of spare call arenas (when the loop ends). */
void sg_call_pool_drain(void);

#endif
