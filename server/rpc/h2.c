/* HTTP/2 server session for gRPC on nghttp2 (sans I/O; see h2.h). */
#include "rpc/h2.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nghttp2/nghttp2.h>

#include "core/clock.h"
#include "core/log.h"
#include "core/mem.h"
#include "rpc/b64.h"
#include "rpc/call_int.h"
#include "rpc/pbcheck.h"
#include "rpc/rpcstats.h"
#include "rpc/timeout.h"

/* Request bodies stream in; a generous window keeps large messages from stalling on
 * WINDOW_UPDATE round trips. Message size, not the window, bounds what a stream buffers. */
#define SG_H2_STREAM_WINDOW (1 << 20)
#define SG_H2_CONN_WINDOW   (4 << 20)

void sg_h2_kick(sg_h2 *h2) {
  if (!h2->in_recv && h2->hooks.want_write != NULL)
    h2->hooks.want_write(h2->user_data);
}

size_t sg_h2_open_streams(const sg_h2 *h2) {
  return h2->open - h2->partial;
}

int64_t sg_h2_last_activity(const sg_h2 *h2) {
  return h2->last_frame_ns;
}

void sg_h2_terminate(sg_h2 *h2) {
  nghttp2_session_terminate_session(h2->session, NGHTTP2_NO_ERROR);
  sg_h2_kick(h2);
}

static sg_call *stream_call(sg_h2 *h2, int32_t stream_id) {
  return nghttp2_session_get_stream_user_data(h2->session, stream_id);
}

/* --- The RPC log line ---------------------------------------------------------------------- */

static void log_rpc(const sg_call *call, int code, int64_t duration_ns) {
  if (!sg_log_enabled(SG_LOG_INFO))
    return;
  sg_log_begin(SG_LOG_INFO, "rpc");
  if (call->path != NULL)
    sg_log_str("method", call->path, call->path_len);
  else
    sg_log_cstr("method", "-");
  sg_log_cstr("status", sg_status_code_name(code));
  if (call->http_status != 0)
    sg_log_int("http_status", call->http_status);
  sg_log_double("duration_ms", (double)duration_ns / 1e6);
  sg_log_cstr("peer", call->peer);
  sg_log_cstr("org", call->org ? call->org : "-");
  if (call->route != NULL && call->route->kind != SG_METHOD_UNARY) {
    sg_log_int("msgs_in", call->msgs_in);
    sg_log_int("msgs_out", call->msgs_out);
  }
  sg_log_end();
}

/* --- Request headers ----------------------------------------------------------------------- */

static int name_is(const uint8_t *name, size_t len, const char *lit) {
  return strlen(lit) == len && memcmp(name, lit, len) == 0;
}

static const char *keep(sg_call *call, const uint8_t *value, size_t len) {
  return sg_arena_strndup(call->arena, (const char *)value, len);
}

/* A "-bin" value may hold several base64 values joined by ',' (PROTOCOL-HTTP2.md). Each part
 * beyond the first is an entry of its own and counts against the header-list limit like a
 * field of its own would, so commas cannot multiply what a small header costs us. */
static int add_bin_metadata(sg_h2 *h2, sg_call *call, const uint8_t *name, size_t name_len,
                            const uint8_t *value, size_t len) {
  size_t start = 0;
  for (size_t i = 0; i <= len; i++) {
    if (i < len && value[i] != ',')
      continue;
    size_t part = i - start;
    if (start > 0) {
      call->header_bytes += name_len + part + 32;
      if (call->header_bytes > h2->opts->max_header_list_bytes) {
        call->headers_too_large = 1;
        return 0;
      }
    }
    if (part == 0 && len > 0)
      return -1; /* ",," or a leading or trailing comma: no value is empty by accident */
    uint8_t *bytes = sg_arena_alloc(call->arena, part / 4 * 3 + 3);
    size_t n;
    if (sg_b64_decode((const char *)value + start, part, bytes, &n) != 0)
      return -1;
    sg_md_add(call->arena, &call->md, (const char *)name, name_len, (const char *)bytes, n);
    start = i + 1;
  }
  return 0;
}

static void store_header(sg_h2 *h2, sg_call *call, const uint8_t *name, size_t name_len,
                         const uint8_t *value, size_t len) {
  if (name_is(name, name_len, ":method")) {
    call->method = keep(call, value, len);
  } else if (name_is(name, name_len, ":path")) {
    call->path = keep(call, value, len);
    call->path_len = len;
  } else if (name_len > 0 && name[0] == ':') {
    /* :scheme and :authority: nghttp2 has validated them; gRPC routing does not use them. */
  } else if (name_is(name, name_len, "content-type")) {
    call->content_type = keep(call, value, len);
    call->content_type_len = len;
  } else if (name_is(name, name_len, "grpc-timeout")) {
    call->timeout = keep(call, value, len);
    call->timeout_len = len;
  } else if (name_is(name, name_len, "grpc-encoding")) {
    call->req_encoding = sg_encoding_parse((const char *)value, len);
  } else if (name_is(name, name_len, "grpc-accept-encoding")) {
    call->accept_encoding = keep(call, value, len);
    call->accept_encoding_len = len;
  } else if (name_is(name, name_len, "te") || (name_len >= 5 && memcmp(name, "grpc-", 5) == 0)) {
    /* te is checked by nghttp2 (only "trailers"); other grpc- names are reserved. */
  } else if (sg_md_is_bin((const char *)name, name_len)) {
    if (add_bin_metadata(h2, call, name, name_len, value, len) != 0)
      call->header_error = "invalid base64 in binary metadata";
  } else {
    sg_md_add(call->arena, &call->md, (const char *)name, name_len, (const char *)value, len);
  }
}

static int on_begin_headers(nghttp2_session *session, const nghttp2_frame *frame, void *ud) {
  sg_h2 *h2 = ud;
  if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
    return 0;
  sg_call *call = sg_call_new(h2, frame->hd.stream_id);
  sg_list_push(&h2->calls, &call->link);
  h2->open++;
  h2->partial++; /* not a call until its header block is complete */
  nghttp2_session_set_stream_user_data(session, frame->hd.stream_id, call);
  return 0;
}

static int on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
                     size_t name_len, const uint8_t *value, size_t value_len, uint8_t flags,
                     void *ud) {
  (void)session;
  (void)flags;
  sg_h2 *h2 = ud;
  if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
    return 0; /* gRPC requests carry no trailers worth reading */
  sg_call *call = stream_call(h2, frame->hd.stream_id);
  if (call == NULL)
    return 0;
  call->header_bytes += name_len + value_len + 32;
  if (call->header_bytes > h2->opts->max_header_list_bytes) {
    call->headers_too_large = 1;
    /* Far past the limit: stop decoding this block at all and reset the stream. */
    if (call->header_bytes > 4 * (size_t)h2->opts->max_header_list_bytes)
      return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    return 0;
  }
  store_header(h2, call, name, name_len, value, value_len);
  return 0;
}

/* "application/grpc", optionally followed by "+proto" or ";params". */
static int content_type_ok(const sg_call *call) {
  static const char base[] = "application/grpc";
  size_t n = sizeof(base) - 1, len = call->content_type_len;
  const char *ct = call->content_type;
  if (ct == NULL || len < n || strncasecmp(ct, base, n) != 0)
    return 0;
  if (len == n || ct[n] == ';')
    return 1;
  return ct[n] == '+';
}

static int subtype_ok(const sg_call *call) {
  static const char proto[] = "application/grpc+proto";
  size_t n = sizeof(proto) - 1;
  const char *ct = call->content_type;
  if (call->content_type_len <= 16 || ct[16] != '+')
    return 1;
  return call->content_type_len >= n && strncasecmp(ct, proto, n) == 0 &&
         (call->content_type_len == n || ct[n] == ';');
}

/* All headers are in: validate, route, and arm the deadline. */
static void on_request_headers(sg_h2 *h2, sg_call *call) {
  char msg[256];
  if (!call->headers_done)
    h2->partial--;
  call->headers_done = 1;
  if (call->headers_too_large) {
    snprintf(msg, sizeof(msg), "request metadata exceeds the limit of %u bytes",
             h2->opts->max_header_list_bytes);
    sg_call_end(call, SG_STATUS_RESOURCE_EXHAUSTED, msg);
    return;
  }
  if (call->method == NULL || strcmp(call->method, "POST") != 0) {
    sg_call_reject_http(call, 405, SG_STATUS_UNIMPLEMENTED, "gRPC requests must use POST");
    return;
  }
  if (!content_type_ok(call)) {
    snprintf(msg, sizeof(msg), "invalid gRPC request content-type \"%.64s\"",
             call->content_type ? call->content_type : "");
    sg_call_reject_http(call, 415, SG_STATUS_INTERNAL, msg);
    return;
  }
  if (!subtype_ok(call)) {
    sg_call_end(call, SG_STATUS_UNIMPLEMENTED, "only application/grpc+proto is supported");
    return;
  }
  call->route = sg_router_find(h2->opts->router, call->path, call->path_len);
  if (call->route == NULL || call->route->handler == NULL) {
    snprintf(msg, sizeof(msg), "%s: %.160s",
             call->route ? "method not implemented" : "unknown service or method", call->path);
    call->route = NULL;
    sg_call_end(call, SG_STATUS_UNIMPLEMENTED, msg);
    return;
  }
  if (call->header_error != NULL) {
    sg_call_end(call, SG_STATUS_INTERNAL, call->header_error);
    return;
  }
  if (call->req_encoding == SG_ENCODING_UNSUPPORTED) {
    sg_call_end(call, SG_STATUS_UNIMPLEMENTED,
                "grpc-encoding not supported; supported: " SG_ACCEPT_ENCODINGS);
    return;
  }
  if (call->req_encoding != SG_ENCODING_IDENTITY && call->accept_encoding != NULL &&
      sg_encoding_accepted(call->accept_encoding, call->accept_encoding_len, call->req_encoding))
    call->resp_encoding = call->req_encoding;
  if (call->timeout != NULL) {
    int64_t ns;
    if (sg_timeout_parse(call->timeout, call->timeout_len, &ns) != 0) {
      sg_call_end(call, SG_STATUS_INTERNAL, "malformed grpc-timeout");
      return;
    }
    sg_call_arm_deadline(call, ns);
  }
}

/* --- Request messages ---------------------------------------------------------------------- */

/* A decompressed request is wiped before it is freed: it may carry a secret value. */
static void free_plain(uint8_t *plain, size_t len) {
  if (plain != NULL) {
    explicit_bzero(plain, len);
    free(plain);
  }
}

static int on_message(void *ud, int compressed, const uint8_t *data, size_t len) {
  sg_call *call = ud;
  char msg[192];
  uint8_t *plain = NULL;
  size_t plain_len = 0;
  if (compressed) {
    if (call->req_encoding == SG_ENCODING_IDENTITY) {
      sg_call_end(call, SG_STATUS_INTERNAL, "compressed message without grpc-encoding");
      return SG_FRAME_ERR_STOPPED;
    }
    int rv = sg_decompress(call->req_encoding, data, len, call->dec.max_len, &plain, &plain_len);
    if (rv != 0) {
      if (rv == SG_COMPRESS_ERR_TOO_LARGE)
        snprintf(msg, sizeof(msg), "decompressed message larger than max (%zu bytes)",
                 call->dec.max_len);
      else
        snprintf(msg, sizeof(msg), "could not decompress %s message",
                 sg_encoding_name(call->req_encoding));
      sg_call_end(
          call, rv == SG_COMPRESS_ERR_TOO_LARGE ? SG_STATUS_RESOURCE_EXHAUSTED : SG_STATUS_INTERNAL,
          msg);
      return SG_FRAME_ERR_STOPPED;
    }
    data = plain;
    len = plain_len;
  }
  char field[96];
  if (sg_pb_check_strings(call->route->input, data, len, field, sizeof(field)) != 0) {
    free_plain(plain, plain_len);
    snprintf(msg, sizeof(msg), "%s: must be UTF-8 text without NUL characters", field);
    sg_call_end(call, SG_STATUS_INVALID_ARGUMENT, msg);
    return SG_FRAME_ERR_STOPPED;
  }
  int over_budget;
  ProtobufCMessage *req = sg_call_unpack(call, data, len, &over_budget);
  free_plain(plain, plain_len);
  if (req == NULL) {
    if (over_budget)
      snprintf(msg, sizeof(msg), "request message needs too much memory to unpack");
    else
      snprintf(msg, sizeof(msg), "could not parse request message as %s", call->route->input->name);
    sg_call_end(call, over_budget ? SG_STATUS_RESOURCE_EXHAUSTED : SG_STATUS_INTERNAL, msg);
    return SG_FRAME_ERR_STOPPED;
  }
  call->msgs_in++;
  if (call->route->kind == SG_METHOD_BIDI_STREAMING) {
    sg_call_invoke(call, req);
    return call->status >= 0 ? SG_FRAME_ERR_STOPPED : 0;
  }
  if (call->request != NULL) {
    sg_call_end(call, SG_STATUS_UNIMPLEMENTED, "more than one request message for a unary call");
    return SG_FRAME_ERR_STOPPED;
  }
  call->request = req;
  return 0;
}

static int on_data_chunk(nghttp2_session *session, uint8_t flags, int32_t stream_id,
                         const uint8_t *data, size_t len, void *ud) {
  (void)session;
  (void)flags;
  sg_h2 *h2 = ud;
  sg_call *call = stream_call(h2, stream_id);
  if (call == NULL || call->route == NULL || call->status >= 0)
    return 0; /* answered already: the rest of the body is read and dropped */
  size_t cap_before = call->dec.buf_cap;
  int rv = sg_frame_decoder_feed(&call->dec, data, len, on_message, call);
  h2->in_buffered += call->dec.buf_cap - cap_before;
  char msg[128];
  if (rv == SG_FRAME_ERR_TOO_LARGE) {
    snprintf(msg, sizeof(msg), "received message larger than max (%u vs. %zu bytes)",
             call->dec.declared_len, call->dec.max_len);
    sg_call_end(call, SG_STATUS_RESOURCE_EXHAUSTED, msg);
  } else if (rv == SG_FRAME_ERR_BAD_FLAG) {
    sg_call_end(call, SG_STATUS_INTERNAL, "invalid compressed flag in message header");
  } else if (h2->in_buffered > h2->opts->max_buffered_bytes) {
    /* Many streams each holding part of a large message: the connection's share is spent. */
    sg_call_end(call, SG_STATUS_RESOURCE_EXHAUSTED,
                "partial requests on this connection exceed their memory limit");
  }
  if (call->status >= 0) { /* nothing more will be decoded: give the buffer back now */
    h2->in_buffered -= call->dec.buf_cap;
    sg_frame_decoder_free(&call->dec);
  }
  return 0;
}

/* The client has sent END_STREAM. */
static void on_half_close(sg_call *call) {
  call->half_closed = 1;
  if (call->status >= 0 || call->route == NULL)
    return;
  if (sg_frame_decoder_finish(&call->dec) != 0) {
    sg_call_end(call, SG_STATUS_INTERNAL, "request stream ended inside a message");
    return;
  }
  if (call->route->kind == SG_METHOD_BIDI_STREAMING)
    sg_call_invoke(call, NULL);
  else if (call->request == NULL)
    sg_call_end(call, SG_STATUS_UNIMPLEMENTED, "no request message for a unary call");
  else
    sg_call_invoke(call, call->request);
}

/* --- Connection-level events --------------------------------------------------------------- */

/* Rapid Reset guard; returns nonzero when the connection must go. */
static int reset_flood(sg_h2 *h2) {
  int64_t now = sg_now_ns();
  h2->reset_tokens += (double)(now - h2->reset_refill_ns) * h2->opts->reset_rate / 1e9;
  if (h2->reset_tokens > h2->opts->reset_burst)
    h2->reset_tokens = h2->opts->reset_burst;
  h2->reset_refill_ns = now;
  if (h2->reset_tokens < 1)
    return 1;
  h2->reset_tokens -= 1;
  return 0;
}

static void final_goaway(sg_h2 *h2) {
  if (h2->goaway_final)
    return;
  h2->goaway_final = 1;
  nghttp2_submit_goaway(h2->session, NGHTTP2_FLAG_NONE,
                        nghttp2_session_get_last_proc_stream_id(h2->session), NGHTTP2_NO_ERROR,
                        NULL, 0);
}

static int on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *ud) {
  sg_h2 *h2 = ud;
  sg_call *call;
  h2->frame_seen = 1;
  switch (frame->hd.type) {
  case NGHTTP2_HEADERS:
    if ((call = stream_call(h2, frame->hd.stream_id)) == NULL)
      break;
    if (frame->headers.cat == NGHTTP2_HCAT_REQUEST)
      on_request_headers(h2, call);
    if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)
      on_half_close(call);
    break;
  case NGHTTP2_DATA:
    if ((frame->hd.flags & NGHTTP2_FLAG_END_STREAM) &&
        (call = stream_call(h2, frame->hd.stream_id)) != NULL)
      on_half_close(call);
    break;
  case NGHTTP2_RST_STREAM:
    if (reset_flood(h2)) {
      sg_log_begin(SG_LOG_WARN, "rapid_reset");
      sg_log_cstr("peer", h2->peer);
      sg_log_cstr("action", "GOAWAY(ENHANCE_YOUR_CALM)");
      sg_log_end();
      nghttp2_session_terminate_session(session, NGHTTP2_ENHANCE_YOUR_CALM);
    }
    break;
  case NGHTTP2_PING:
    if ((frame->hd.flags & NGHTTP2_FLAG_ACK) && h2->draining)
      final_goaway(h2);
    break;
  default:
    break;
  }
  return 0;
}

static int on_frame_send(nghttp2_session *session, const nghttp2_frame *frame, void *ud) {
  (void)ud;
  uint8_t type = frame->hd.type;
  if ((type != NGHTTP2_HEADERS && type != NGHTTP2_DATA) ||
      !(frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
    return 0;
  /* The response ended before the request did: tell the client to stop sending
   * (PROTOCOL-HTTP2.md, "RST_STREAM with NO_ERROR"); CANCEL if it was the deadline. */
  int32_t id = frame->hd.stream_id;
  if (nghttp2_session_get_stream_remote_close(session, id) == 0) {
    sg_call *call = nghttp2_session_get_stream_user_data(session, id);
    uint32_t code = call && call->deadline_passed ? NGHTTP2_CANCEL : NGHTTP2_NO_ERROR;
    nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, id, code);
  }
  return 0;
}

/* The stream is gone (finished, reset, or the session is going away). */
static void close_call(sg_h2 *h2, sg_call *call) {
  sg_list_remove(&call->link);
  h2->open--;
  if (!call->headers_done)
    h2->partial--;
  sg_call_detach(call);
  int code = call->status >= 0       ? call->status
             : call->deadline_passed ? SG_STATUS_DEADLINE_EXCEEDED
                                     : SG_STATUS_CANCELLED;
  int64_t duration_ns = sg_now_ns() - call->start_ns;
  log_rpc(call, code, duration_ns);
  if (h2->opts->stats != NULL)
    sg_rpc_stats_observe(h2->opts->stats, call->route, code, duration_ns);
  sg_call_cancel(call);
  sg_call_release(call);
}

static int on_stream_close(nghttp2_session *session, int32_t stream_id, uint32_t error_code,
                           void *ud) {
  (void)error_code;
  sg_call *call = nghttp2_session_get_stream_user_data(session, stream_id);
  if (call != NULL)
    close_call(ud, call);
  return 0;
}

/* --- Session ------------------------------------------------------------------------------- */

static nghttp2_session_callbacks *shared_callbacks;
static pthread_once_t callbacks_once = PTHREAD_ONCE_INIT;

static void make_callbacks(void) {
  nghttp2_session_callbacks *cbs;
  if (nghttp2_session_callbacks_new(&cbs) != 0)
    sg_fatal("nghttp2_session_callbacks_new failed");
  nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
  nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
  nghttp2_session_callbacks_set_on_frame_send_callback(cbs, on_frame_send);
  nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
  shared_callbacks = cbs;
}

sg_h2 *sg_h2_new(const sg_h2_options *opts, struct event_base *base, const char *peer,
                 const sg_h2_hooks *hooks, void *user_data) {
  pthread_once(&callbacks_once, make_callbacks);
  sg_h2 *h2 = sg_calloc(1, sizeof(*h2));
  h2->opts = opts;
  h2->base = base;
  h2->hooks = *hooks;
  h2->user_data = user_data;
  h2->peer = sg_strdup(peer);
  sg_list_init(&h2->calls);
  h2->reset_tokens = opts->reset_burst;
  h2->reset_refill_ns = h2->last_frame_ns = sg_now_ns();

  nghttp2_option *option;
  if (nghttp2_option_new(&option) != 0)
    sg_fatal("nghttp2_option_new failed");
  nghttp2_option_set_max_settings(option, 32);
  /* gRPC has no use for RFC 7540 stream priorities: with them off (and
   * SETTINGS_NO_RFC7540_PRIORITIES below) nghttp2 keeps no dependency tree and no closed
   * streams, which saves memory per connection and work per stream. */
  nghttp2_option_set_no_closed_streams(option, 1);
#ifdef SG_HAVE_NGHTTP2_RESET_LIMIT
  /* Debian's libnghttp2 1.52 carries the upstream Rapid Reset limiter (1000 burst, 33/s by
   * default, answered with GOAWAY(INTERNAL_ERROR)). Ours acts first, with ENHANCE_YOUR_CALM
   * and a log line; the library's stays behind it, looser, as a second line. */
  nghttp2_option_set_stream_reset_rate_limit(option, 2 * (uint64_t)opts->reset_burst,
                                             2 * (uint64_t)opts->reset_rate);
#endif
  int rv = nghttp2_session_server_new2(&h2->session, shared_callbacks, h2, option);
  nghttp2_option_del(option);
  if (rv != 0)
    sg_fatal("nghttp2_session_server_new2 failed");

  nghttp2_settings_entry settings[] = {
      {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, opts->max_concurrent_streams},
      {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, opts->max_header_list_bytes},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, SG_H2_STREAM_WINDOW},
      {NGHTTP2_SETTINGS_NO_RFC7540_PRIORITIES, 1},
  };
  nghttp2_submit_settings(h2->session, NGHTTP2_FLAG_NONE, settings, SG_ARRAY_LEN(settings));
  nghttp2_session_set_local_window_size(h2->session, NGHTTP2_FLAG_NONE, 0, SG_H2_CONN_WINDOW);
  return h2;
}

void sg_h2_free(sg_h2 *h2) {
  if (h2 == NULL)
    return;
  /* Detach every call first: cancel callbacks may finish their calls, which must then find no
   * session to write to. */
  sg_list *pos, *tmp;
  sg_list_foreach_safe(pos, tmp, &h2->calls) {
    sg_call_detach(SG_CONTAINER_OF(pos, sg_call, link));
  }
  nghttp2_session_del(h2->session);
  sg_list_foreach_safe(pos, tmp, &h2->calls) {
    close_call(h2, SG_CONTAINER_OF(pos, sg_call, link));
  }
  free(h2->peer);
  free(h2);
}

int sg_h2_recv(sg_h2 *h2, const uint8_t *data, size_t len) {
  h2->in_recv = 1;
  ssize_t rv = nghttp2_session_mem_recv(h2->session, data, len);
  h2->in_recv = 0;
  if (h2->frame_seen) { /* one clock read per batch of frames, not per frame */
    h2->frame_seen = 0;
    h2->last_frame_ns = sg_now_ns();
  }
  if (rv < 0) {
    sg_log_begin(SG_LOG_DEBUG, "h2_error");
    sg_log_cstr("peer", h2->peer);
    sg_log_cstr("error", nghttp2_strerror((int)rv));
    sg_log_end();
    return SG_H2_ERR_FATAL;
  }
  return 0;
}

ssize_t sg_h2_pull(sg_h2 *h2, const uint8_t **data) {
  ssize_t n = nghttp2_session_mem_send(h2->session, data);
  return n < 0 ? SG_H2_ERR_FATAL : n;
}

int sg_h2_done(sg_h2 *h2) {
  return !nghttp2_session_want_read(h2->session) && !nghttp2_session_want_write(h2->session);
}

void sg_h2_shutdown(sg_h2 *h2) {
  if (!h2->draining) {
    /* Two-step GOAWAY (as nghttpx does): the notice tells the client to open no new streams;
     * the PING's answer proves it has seen the notice, and then the final GOAWAY names the last
     * stream served, so no request in flight is lost. */
    h2->draining = 1;
    nghttp2_submit_shutdown_notice(h2->session);
    nghttp2_submit_ping(h2->session, NGHTTP2_FLAG_NONE, NULL);
  } else {
    final_goaway(h2);
  }
  sg_h2_kick(h2);
}
