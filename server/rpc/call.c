/* The call object: what handlers see (call.h) and how responses become HTTP/2 frames. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>

#include "core/clock.h"
#include "core/mem.h"
#include "rpc/b64.h"
#include "rpc/call_int.h"
#include "rpc/pct.h"

/* Responses at least this large are compressed when the client's request was; below it the
 * gzip header costs more than it saves. */
#define SG_COMPRESS_MIN 256

/* Spare arenas kept per loop thread, so steady traffic allocates none. */
#define SG_ARENA_POOL 64
static _Thread_local sg_arena *arena_pool[SG_ARENA_POOL];
static _Thread_local size_t arena_pool_n;

static sg_arena *arena_get(void) {
  return arena_pool_n > 0 ? arena_pool[--arena_pool_n] : sg_arena_new();
}

static void arena_put(sg_arena *a) {
  if (arena_pool_n < SG_ARENA_POOL) {
    sg_arena_reset(a);
    arena_pool[arena_pool_n++] = a;
  } else {
    sg_arena_free(a);
  }
}

void sg_call_pool_drain(void) {
  while (arena_pool_n > 0)
    sg_arena_free(arena_pool[--arena_pool_n]);
}

sg_call *sg_call_new(sg_h2 *h2, int32_t stream_id) {
  sg_arena *arena = arena_get();
  sg_call *call = sg_arena_zalloc(arena, sizeof(*call));
  call->arena = arena;
  call->h2 = h2;
  call->stream_id = stream_id;
  sg_list_init(&call->link);
  call->refs = 1;
  call->status = -1;
  call->deadline = INT64_MAX;
  call->start_ns = sg_now_ns();
  /* A copy: the call may outlive its connection while a handler still holds it. */
  call->peer = sg_arena_strndup(arena, h2->peer, strlen(h2->peer));
  call->base = h2->base;
  sg_frame_decoder_init(&call->dec, h2->opts->max_message_bytes);
  return call;
}

/* Memory a request may take to unpack: generous for real messages, bounded for hostile ones. */
static size_t unpack_budget(const sg_call *call) {
  return 4 * call->dec.max_len + 65536;
}

ProtobufCMessage *sg_call_unpack(sg_call *call, const uint8_t *data, size_t len, int *over_budget) {
  sg_arena *a = call->arena;
  size_t budget = sg_arena_used(a) + unpack_budget(call);
  if (call->route->kind == SG_METHOD_BIDI_STREAMING) {
    if (call->scratch == NULL)
      call->scratch = arena_get();
    a = call->scratch;
    budget = unpack_budget(call);
  }
  sg_arena_set_pb_budget(a, budget);
  ProtobufCMessage *msg =
      protobuf_c_message_unpack(call->route->input, sg_arena_allocator(a), len, data);
  *over_budget = msg == NULL && sg_arena_pb_refused(a);
  sg_arena_set_pb_budget(a, 0);
  return msg;
}

/* Frees queued responses and gives their bytes back to the session's budget. */
static void drop_output(sg_call *call) {
  for (sg_outbuf *o = call->out_head, *next; o != NULL; o = next) {
    next = o->next;
    if (o->heap)
      free(o);
  }
  call->out_head = call->out_tail = NULL;
  if (call->h2 != NULL)
    call->h2->out_queued -= call->out_queued;
  call->out_queued = 0;
}

void sg_call_detach(sg_call *call) {
  if (call->h2 == NULL)
    return;
  drop_output(call);
  call->h2->in_buffered -= call->dec.buf_cap;
  sg_frame_decoder_free(&call->dec);
  if (call->deadline_ev != NULL)
    event_del(call->deadline_ev);
  call->h2 = NULL;
}

static void free_call(sg_call *call) {
  sg_call_detach(call);
  if (call->scratch != NULL)
    arena_put(call->scratch);
  arena_put(call->arena);
}

void sg_call_release(sg_call *call) {
  if (--call->refs == 0)
    free_call(call);
}

/* --- Metadata ------------------------------------------------------------------------------ */

void sg_md_add(sg_arena *arena, sg_md_list *l, const char *name, size_t name_len, const char *value,
               size_t value_len) {
  if (l->n == l->cap) {
    size_t cap = l->cap ? l->cap * 2 : 8;
    sg_metadata *items = sg_arena_alloc(arena, cap * sizeof(*items));
    if (l->n)
      memcpy(items, l->items, l->n * sizeof(*items));
    l->items = items;
    l->cap = cap;
  }
  l->items[l->n++] = (sg_metadata){sg_arena_strndup(arena, name, name_len), name_len,
                                   sg_arena_strndup(arena, value, value_len), value_len};
}

static void add_response_md(sg_call *call, sg_md_list *l, const char *name, const void *value,
                            size_t len) {
  size_t name_len = strlen(name);
  if (!sg_md_is_bin(name, name_len)) {
    sg_md_add(call->arena, l, name, name_len, value, len);
    return;
  }
  char *enc = sg_arena_alloc(call->arena, SG_B64_ENCODED_CAP(len));
  size_t n = sg_b64_encode(value, len, enc);
  sg_md_add(call->arena, l, name, name_len, enc, n);
}

void sg_call_add_initial_metadata(sg_call *call, const char *name, const void *value, size_t len) {
  if (!call->response_started)
    add_response_md(call, &call->initial_md, name, value, len);
}

void sg_call_add_trailing_metadata(sg_call *call, const char *name, const void *value, size_t len) {
  add_response_md(call, &call->trailing_md, name, value, len);
}

const char *sg_call_metadata(const sg_call *call, const char *name, size_t *len) {
  size_t name_len = strlen(name);
  for (size_t i = 0; i < call->md.n; i++) {
    const sg_metadata *m = &call->md.items[i];
    if (m->name_len == name_len && memcmp(m->name, name, name_len) == 0) {
      if (len != NULL)
        *len = m->value_len;
      return m->value;
    }
  }
  return NULL;
}

const sg_metadata *sg_call_metadata_all(const sg_call *call, size_t *n) {
  *n = call->md.n;
  return call->md.items;
}

/* --- Accessors ----------------------------------------------------------------------------- */

const char *sg_call_path(const sg_call *call) {
  return call->path ? call->path : "";
}

void *sg_call_service_data(const sg_call *call) {
  return call->route ? call->route->service->data : NULL;
}

sg_arena *sg_call_arena(sg_call *call) {
  return call->arena;
}

const char *sg_call_peer(const sg_call *call) {
  return call->peer;
}

int64_t sg_call_deadline(const sg_call *call) {
  return call->deadline;
}

int sg_call_is_done(const sg_call *call) {
  return call->status >= 0 || call->h2 == NULL || call->cancelled;
}

void sg_call_set_org(sg_call *call, const char *org) {
  call->org = sg_arena_strndup(call->arena, org, strlen(org));
}

void sg_call_set_key(sg_call *call, const char *key_id, const char *key_prefix) {
  call->key_id = sg_arena_strndup(call->arena, key_id, strlen(key_id));
  call->key_prefix = sg_arena_strndup(call->arena, key_prefix, strlen(key_prefix));
}

const char *sg_call_key_id(const sg_call *call) {
  return call->key_id ? call->key_id : "";
}

const char *sg_call_key_prefix(const sg_call *call) {
  return call->key_prefix ? call->key_prefix : "";
}

void sg_call_on_cancel(sg_call *call, void (*cb)(sg_call *, void *), void *arg) {
  call->cancel_cb = cb;
  call->cancel_arg = arg;
}

/* --- Frames -------------------------------------------------------------------------------- */

#define NV_FLAGS (NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE)

/* The arena outlives every frame of the stream, so nghttp2 may reference names and values
 * instead of copying them. */
static nghttp2_nv nv(const char *name, size_t name_len, const char *value, size_t value_len) {
  return (nghttp2_nv){(uint8_t *)name, (uint8_t *)value, name_len, value_len, NV_FLAGS};
}

#define NV_LIT(name, value) nv(name, sizeof(name) - 1, value, sizeof(value) - 1)
#define NV_STR(name, value) nv(name, sizeof(name) - 1, value, strlen(value))

static const char *const status_text[] = {"0", "1",  "2",  "3",  "4",  "5",  "6",  "7", "8",
                                          "9", "10", "11", "12", "13", "14", "15", "16"};

static size_t append_md(nghttp2_nv *out, const sg_md_list *l) {
  for (size_t i = 0; i < l->n; i++)
    out[i] = nv(l->items[i].name, l->items[i].name_len, l->items[i].value, l->items[i].value_len);
  return l->n;
}

/* Status fields: grpc-status, grpc-message (percent-encoded, omitted when empty), trailing
 * metadata. Returns the number of entries written. */
static size_t status_nv(sg_call *call, nghttp2_nv *out) {
  size_t n = 0;
  int code = call->status >= 0 && call->status <= 16 ? call->status : SG_STATUS_UNKNOWN;
  out[n++] = NV_STR("grpc-status", status_text[code]);
  if (call->status_msg != NULL && call->status_msg[0] != '\0') {
    size_t len = strlen(call->status_msg);
    char *enc = sg_arena_alloc(call->arena, sg_pct_encoded_len(call->status_msg, len));
    size_t enc_len = sg_pct_encode(call->status_msg, len, enc);
    out[n++] = nv("grpc-message", 12, enc, enc_len);
  }
  n += append_md(out + n, &call->trailing_md);
  return n;
}

static ssize_t data_read(nghttp2_session *session, int32_t stream_id, uint8_t *buf, size_t length,
                         uint32_t *flags, nghttp2_data_source *source, void *user_data);

static nghttp2_nv *nv_array(sg_call *call, size_t extra) {
  return sg_arena_alloc(call->arena,
                        (extra + call->initial_md.n + call->trailing_md.n) * sizeof(nghttp2_nv));
}

/* Response headers common to every answer: grpc-accept-encoding goes to clients that compress
 * and into the error that refuses an encoding; plain calls do without it (one header less to
 * encode per response). */
static size_t common_nv(sg_call *call, nghttp2_nv *nva) {
  size_t n = 0;
  nva[n++] = NV_LIT("content-type", "application/grpc");
  if (call->req_encoding != SG_ENCODING_IDENTITY)
    nva[n++] = NV_LIT("grpc-accept-encoding", SG_ACCEPT_ENCODINGS);
  return n;
}

static void start_response(sg_call *call) {
  nghttp2_nv *nva = nv_array(call, 4);
  size_t n = 0;
  nva[n++] = NV_LIT(":status", "200");
  n += common_nv(call, nva + n);
  if (call->resp_encoding != SG_ENCODING_IDENTITY)
    nva[n++] = NV_STR("grpc-encoding", sg_encoding_name(call->resp_encoding));
  n += append_md(nva + n, &call->initial_md);
  nghttp2_data_provider prd = {.source.ptr = call, .read_callback = data_read};
  call->response_started = 1;
  if (nghttp2_submit_response(call->h2->session, call->stream_id, nva, n, &prd) != 0)
    nghttp2_submit_rst_stream(call->h2->session, NGHTTP2_FLAG_NONE, call->stream_id,
                              NGHTTP2_INTERNAL_ERROR);
}

/* One HEADERS frame with END_STREAM carrying the status: Trailers-Only for calls that end
 * before any message was sent (|http_status| "200"), or an HTTP-level refusal. |extra| holds
 * up to one more header. */
static void submit_headers_only(sg_call *call, const char *http_status, const nghttp2_nv *extra) {
  nghttp2_nv *nva = nv_array(call, 6);
  size_t n = 0;
  nva[n++] = NV_STR(":status", http_status);
  n += common_nv(call, nva + n);
  if (extra != NULL)
    nva[n++] = *extra;
  n += append_md(nva + n, &call->initial_md);
  n += status_nv(call, nva + n);
  call->response_started = 1;
  call->trailers_submitted = 1;
  nghttp2_submit_response(call->h2->session, call->stream_id, nva, n, NULL);
}

static ssize_t data_read(nghttp2_session *session, int32_t stream_id, uint8_t *buf, size_t length,
                         uint32_t *flags, nghttp2_data_source *source, void *user_data) {
  (void)user_data;
  sg_call *call = source->ptr;
  size_t n = 0;
  while (n < length && call->out_head != NULL) {
    sg_outbuf *o = call->out_head;
    size_t k = o->len - o->off;
    if (k > length - n)
      k = length - n;
    memcpy(buf + n, o->data + o->off, k);
    o->off += k;
    n += k;
    if (o->off == o->len) {
      call->out_head = o->next;
      if (call->out_head == NULL)
        call->out_tail = NULL;
      call->out_queued -= o->len;
      call->h2->out_queued -= o->len;
      if (o->heap)
        free(o);
    }
  }
  if (call->out_head == NULL && call->status >= 0 && !call->trailers_submitted) {
    nghttp2_nv *nva = nv_array(call, 2);
    size_t nn = status_nv(call, nva);
    *flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
    call->trailers_submitted = 1;
    if (nghttp2_submit_trailer(session, stream_id, nva, nn) != 0)
      return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    return (ssize_t)n;
  }
  return n == 0 ? NGHTTP2_ERR_DEFERRED : (ssize_t)n;
}

/* Nudges the session after queueing output from outside a receive. */
static void wake(sg_call *call) {
  nghttp2_session_resume_data(call->h2->session, call->stream_id);
  sg_h2_kick(call->h2);
}

/* --- Answering ----------------------------------------------------------------------------- */

static sg_outbuf *outbuf_new(sg_call *call, size_t body_len) {
  size_t size = sizeof(sg_outbuf) + SG_FRAME_HEADER_LEN + body_len;
  int heap = call->route == NULL || call->route->kind != SG_METHOD_UNARY;
  sg_outbuf *o = heap ? sg_malloc(size) : sg_arena_alloc(call->arena, size);
  o->next = NULL;
  o->len = SG_FRAME_HEADER_LEN + body_len;
  o->off = 0;
  o->heap = heap;
  return o;
}

/* Packs |msg| behind a message header, compressed when the call compresses and it pays. */
static sg_outbuf *pack(sg_call *call, const ProtobufCMessage *msg, size_t len) {
  sg_outbuf *o;
  if (call->resp_encoding != SG_ENCODING_IDENTITY && len >= SG_COMPRESS_MIN) {
    uint8_t *plain = sg_malloc(len), *packed;
    size_t packed_len;
    protobuf_c_message_pack(msg, plain);
    sg_compress(call->resp_encoding, plain, len, &packed, &packed_len);
    free(plain);
    o = outbuf_new(call, packed_len);
    sg_frame_header_write(o->data, 1, (uint32_t)packed_len);
    memcpy(o->data + SG_FRAME_HEADER_LEN, packed, packed_len);
    free(packed);
  } else {
    o = outbuf_new(call, len);
    sg_frame_header_write(o->data, 0, (uint32_t)len);
    protobuf_c_message_pack(msg, o->data + SG_FRAME_HEADER_LEN);
  }
  return o;
}

int sg_call_send(sg_call *call, const ProtobufCMessage *msg) {
  if (sg_call_is_done(call))
    return -1;
  size_t len = protobuf_c_message_get_packed_size(msg);
  if (len > UINT32_MAX) {
    sg_call_end(call, SG_STATUS_INTERNAL, "response message too large");
    return -1;
  }
  sg_h2 *h2 = call->h2;
  if (h2->out_queued + len > h2->opts->max_queued_bytes) {
    /* The client takes nothing while the handler keeps producing: stop before memory does. */
    sg_call_abort(call, SG_STATUS_RESOURCE_EXHAUSTED, "response queue full: client not reading");
    return -1;
  }
  sg_outbuf *o = pack(call, msg, len);
  if (call->out_tail != NULL)
    call->out_tail->next = o;
  else
    call->out_head = o;
  call->out_tail = o;
  call->out_queued += o->len;
  h2->out_queued += o->len;
  call->msgs_out++;
  if (!call->response_started)
    start_response(call);
  wake(call);
  return 0;
}

void sg_call_end(sg_call *call, int code, const char *msg) {
  if (call->status >= 0)
    return;
  /* Anything outside the 17 gRPC codes is a bug in the caller; the client sees UNKNOWN and so
   * does the log, and the call is ended either way. */
  call->status = code >= 0 && code <= SG_STATUS_UNAUTHENTICATED ? code : SG_STATUS_UNKNOWN;
  call->status_msg = msg ? sg_arena_strndup(call->arena, msg, strlen(msg)) : NULL;
  if (call->h2 == NULL)
    return;
  if (!call->response_started)
    submit_headers_only(call, "200", NULL);
  wake(call);
}

void sg_call_abort(sg_call *call, int code, const char *msg) {
  call->status = code;
  call->status_msg = msg ? sg_arena_strndup(call->arena, msg, strlen(msg)) : NULL;
  if (call->h2 == NULL)
    return;
  drop_output(call);
  call->response_started = 1;
  call->trailers_submitted = 1;
  /* PROTOCOL-HTTP2.md maps ENHANCE_YOUR_CALM to RESOURCE_EXHAUSTED on the client. */
  uint32_t rst = code == SG_STATUS_RESOURCE_EXHAUSTED ? NGHTTP2_ENHANCE_YOUR_CALM : NGHTTP2_CANCEL;
  nghttp2_submit_rst_stream(call->h2->session, NGHTTP2_FLAG_NONE, call->stream_id, rst);
  sg_h2_kick(call->h2);
}

void sg_call_reject_http(sg_call *call, int http_status, int code, const char *msg) {
  call->http_status = http_status;
  call->status = code;
  call->status_msg = sg_arena_strndup(call->arena, msg, strlen(msg));
  nghttp2_nv allow = NV_LIT("allow", "POST");
  submit_headers_only(call, http_status == 405 ? "405" : "415", http_status == 405 ? &allow : NULL);
}

void sg_call_finish(sg_call *call, sg_status_code code, const char *fmt, ...) {
  char *msg = NULL;
  if (fmt != NULL && fmt[0] != '\0') {
    va_list ap;
    va_start(ap, fmt);
    msg = sg_arena_vprintf(call->arena, fmt, ap);
    va_end(ap);
  }
  sg_call_end(call, (int)code, msg);
  if (call->handler_started && !call->handler_finished) {
    call->handler_finished = 1;
    sg_call_release(call);
  }
}

void sg_call_reply(sg_call *call, const ProtobufCMessage *msg) {
  sg_call_send(call, msg);
  sg_call_finish(call, SG_STATUS_OK, NULL);
}

void sg_call_invoke(sg_call *call, const ProtobufCMessage *msg) {
  if (!call->handler_started) {
    call->handler_started = 1;
    call->refs++;
  }
  call->refs++; /* the handler may finish and release the call inside; we look at it after */
  call->route->handler(call, msg);
  if (call->scratch != NULL)
    sg_arena_reset(call->scratch); /* a bidi request lives only during its handler run */
  sg_call_release(call);
}

void sg_call_cancel(sg_call *call) {
  if (call->cancelled)
    return;
  call->cancelled = 1;
  if (call->handler_started && !call->handler_finished && call->cancel_cb != NULL)
    call->cancel_cb(call, call->cancel_arg);
}

struct event_base *sg_call_event_base(const sg_call *call) {
  return call->base;
}

/* The deadline stays armed until the stream closes, whatever the handler did: it is also what
 * ends a stream whose trailers a client never lets through. */
static void deadline_passed(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  sg_call *call = arg;
  call->deadline_passed = 1;
  if (call->status < 0 && !call->response_started)
    sg_call_end(call, SG_STATUS_DEADLINE_EXCEEDED, "deadline exceeded"); /* Trailers-Only */
  else
    sg_call_abort(call, SG_STATUS_DEADLINE_EXCEEDED, "deadline exceeded"); /* RST_STREAM */
  sg_call_cancel(call);
}

void sg_call_arm_deadline(sg_call *call, int64_t timeout_ns) {
  int64_t now = sg_now_ns();
  call->deadline = timeout_ns > INT64_MAX - now ? INT64_MAX : now + timeout_ns;
  if (call->deadline == INT64_MAX)
    return;
  call->deadline_ev = sg_arena_alloc(call->arena, event_get_struct_event_size());
  event_assign(call->deadline_ev, call->base, -1, 0, deadline_passed, call);
  /* libevent counts a timeout from the time it cached when this loop iteration began, which
   * would end the call early by however long the iteration has run so far: refresh it. */
  event_base_update_cache_time(call->base);
  struct timeval tv = {(time_t)(timeout_ns / 1000000000),
                       (suseconds_t)(timeout_ns % 1000000000 / 1000)};
  event_add(call->deadline_ev, &tv);
}
