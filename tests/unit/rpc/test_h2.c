/* The HTTP/2 + gRPC layer driven through bytes alone: an in-process nghttp2 client session
 * talks to sg_h2 via nghttp2_session_mem_send / sg_h2_recv and sg_h2_pull /
 * nghttp2_session_mem_recv. No sockets, no threads. */
#include <criterion/criterion.h>
#include <event2/event.h>
#include <nghttp2/nghttp2.h>
#include <string.h>

#include "core/log.h"
#include "grpc/health/v1/health.pb-c.h"
#include "rpc/b64.h"
#include "rpc/compress.h"
#include "rpc/frame.h"
#include "rpc/h2.h"
#include "sealgate/testing/v1/test_service.pb-c.h"
#include "service/health.h"
#include "test_service.h"

#define MAX_STREAMS 1024

typedef struct {
  char status[8];
  char content_type[64];
  char grpc_status[8];
  char grpc_message[512];
  char grpc_encoding[32];
  char echo_initial[64];
  char echo_trailing_bin[64];
  int header_blocks; /* HEADERS frames received */
  int trailers_only; /* the first HEADERS ended the stream */
  uint8_t data[200000];
  size_t data_len;
  int closed;
  uint32_t close_error;
  int rst_received;
  uint32_t rst_error;
} response;

typedef struct {
  const uint8_t *body;
  size_t len, off;
  size_t chunk; /* bytes per DATA frame (0: as many as fit) */
  int end_stream;
} upload;

static struct {
  struct event_base *base;
  sg_router *router;
  sg_h2_options opts;
  sg_h2 *h2;
  nghttp2_session *client;
  response resp[MAX_STREAMS];
  upload up[MAX_STREAMS];
  int goaways;
  uint32_t goaway_error;
  int32_t goaway_last_stream;
  int32_t last_goaway_seen;
} t;

static response *resp_of(int32_t id) {
  cr_assert(id > 0 && id / 2 < MAX_STREAMS);
  return &t.resp[id / 2];
}

static void copy_value(char *dst, size_t cap, const uint8_t *v, size_t len) {
  if (len >= cap)
    len = cap - 1;
  memcpy(dst, v, len);
  dst[len] = '\0';
}

static int on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name, size_t nlen,
                     const uint8_t *value, size_t vlen, uint8_t flags, void *ud) {
  (void)s, (void)flags, (void)ud;
  response *r = resp_of(f->hd.stream_id);
#define GRAB(lit, field)                                                                           \
  if (nlen == sizeof(lit) - 1 && memcmp(name, lit, nlen) == 0)                                     \
    copy_value(r->field, sizeof(r->field), value, vlen);
  GRAB(":status", status)
  GRAB("content-type", content_type)
  GRAB("grpc-status", grpc_status)
  GRAB("grpc-message", grpc_message)
  GRAB("grpc-encoding", grpc_encoding)
  GRAB("x-sealgate-echo-initial", echo_initial)
  GRAB("x-sealgate-echo-trailing-bin", echo_trailing_bin)
#undef GRAB
  return 0;
}

static int on_frame_recv(nghttp2_session *s, const nghttp2_frame *f, void *ud) {
  (void)s, (void)ud;
  if (f->hd.type == NGHTTP2_HEADERS) {
    response *r = resp_of(f->hd.stream_id);
    if (r->header_blocks++ == 0 && (f->hd.flags & NGHTTP2_FLAG_END_STREAM))
      r->trailers_only = 1;
  } else if (f->hd.type == NGHTTP2_RST_STREAM) {
    response *r = resp_of(f->hd.stream_id);
    r->rst_received = 1;
    r->rst_error = f->rst_stream.error_code;
  } else if (f->hd.type == NGHTTP2_GOAWAY) {
    t.goaways++;
    t.goaway_error = f->goaway.error_code;
    t.goaway_last_stream = f->goaway.last_stream_id;
  }
  return 0;
}

static int on_data(nghttp2_session *s, uint8_t flags, int32_t id, const uint8_t *data, size_t len,
                   void *ud) {
  (void)s, (void)flags, (void)ud;
  response *r = resp_of(id);
  cr_assert(r->data_len + len <= sizeof(r->data));
  memcpy(r->data + r->data_len, data, len);
  r->data_len += len;
  return 0;
}

static int on_close(nghttp2_session *s, int32_t id, uint32_t error, void *ud) {
  (void)s, (void)ud;
  response *r = resp_of(id);
  r->closed = 1;
  r->close_error = error;
  return 0;
}

static ssize_t read_upload(nghttp2_session *s, int32_t id, uint8_t *buf, size_t length,
                           uint32_t *flags, nghttp2_data_source *src, void *ud) {
  (void)s, (void)id, (void)ud;
  upload *u = src->ptr;
  size_t n = u->len - u->off;
  if (n > length)
    n = length;
  if (u->chunk > 0 && n > u->chunk)
    n = u->chunk;
  if (n > 0)
    memcpy(buf, u->body + u->off, n);
  u->off += n;
  if (u->off == u->len) {
    if (u->end_stream)
      *flags |= NGHTTP2_DATA_FLAG_EOF;
    else if (n == 0)
      return NGHTTP2_ERR_DEFERRED;
  }
  return (ssize_t)n;
}

static void want_write(void *ud) {
  (void)ud;
}

static const sg_h2_hooks hooks = {want_write};

static void start(size_t max_message) {
  memset(&t, 0, sizeof(t));
  sg_log_init(SG_LOG_ERROR, SG_LOG_TEXT, 2);
  t.base = event_base_new();
  t.router = sg_router_new();
  sg_router_add(t.router, &sg_health_service);
  sg_router_add(t.router, &sg_test_service);
  sg_health_register("");
  sg_health_register("grpc.health.v1.Health");
  t.opts = (sg_h2_options){.router = t.router,
                           .max_message_bytes = max_message,
                           .max_concurrent_streams = 100,
                           .max_header_list_bytes = 4096,
                           .max_queued_bytes = 1 << 20,
                           .max_buffered_bytes = 1 << 20,
                           .reset_burst = 500,
                           .reset_rate = 100};
  t.h2 = sg_h2_new(&t.opts, t.base, "127.0.0.1:1", &hooks, NULL);
  nghttp2_session_callbacks *cbs;
  nghttp2_session_callbacks_new(&cbs);
  nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data);
  nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_close);
  nghttp2_session_client_new(&t.client, cbs, NULL);
  nghttp2_session_callbacks_del(cbs);
  nghttp2_submit_settings(t.client, NGHTTP2_FLAG_NONE, NULL, 0);
}

static void setup(void) {
  start(4096);
}

static void teardown(void) {
  if (t.h2 != NULL)
    sg_h2_free(t.h2);
  nghttp2_session_del(t.client);
  sg_router_free(t.router);
  sg_health_reset();
  event_base_free(t.base);
}

/* Moves bytes both ways until neither side has anything to say. Returns the server's status
 * (0 or SG_H2_ERR_FATAL). */
static int pump(void) {
  for (int round = 0; round < 10000; round++) {
    size_t moved = 0;
    const uint8_t *data;
    ssize_t n;
    while ((n = nghttp2_session_mem_send(t.client, &data)) > 0) {
      moved += (size_t)n;
      if (sg_h2_recv(t.h2, data, (size_t)n) != 0)
        return SG_H2_ERR_FATAL;
    }
    while ((n = sg_h2_pull(t.h2, &data)) > 0) {
      moved += (size_t)n;
      cr_assert(nghttp2_session_mem_recv(t.client, data, (size_t)n) == n);
    }
    if (moved == 0)
      return 0;
  }
  cr_assert_fail("pump did not settle");
  return SG_H2_ERR_FATAL;
}

/* Runs timers (deadlines, slow handlers) for |ms|, pumping after each. */
static void run_for(int ms) {
  struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
  event_base_loopexit(t.base, &tv);
  event_base_dispatch(t.base);
  pump();
}

#define NV(n, v)                                                                                   \
  { (uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v), NGHTTP2_NV_FLAG_NONE }

/* A framed message: prefix + |msg| packed. */
static size_t frame_msg(const ProtobufCMessage *msg, uint8_t *out) {
  size_t len = protobuf_c_message_pack(msg, out + SG_FRAME_HEADER_LEN);
  sg_frame_header_write(out, 0, (uint32_t)len);
  return len + SG_FRAME_HEADER_LEN;
}

static int32_t request_full(const char *method, const char *path, const char *content_type,
                            const nghttp2_nv *extra, size_t n_extra, const uint8_t *body,
                            size_t len, size_t chunk, int end_stream) {
  nghttp2_nv nva[16] = {NV(":method", method), NV(":scheme", "http"),
                        NV(":path", path),     NV(":authority", "test"),
                        NV("te", "trailers"),  NV("content-type", content_type)};
  size_t n = 6;
  for (size_t i = 0; i < n_extra; i++)
    nva[n++] = extra[i];
  int32_t id = (int32_t)nghttp2_session_get_next_stream_id(t.client);
  upload *u = &t.up[id / 2];
  *u = (upload){body, len, 0, chunk, end_stream};
  nghttp2_data_provider prd = {.source.ptr = u, .read_callback = read_upload};
  cr_assert_eq(
      nghttp2_submit_request(t.client, NULL, nva, n, body || end_stream ? &prd : NULL, NULL), id);
  return id;
}

static int32_t request(const char *path, const uint8_t *body, size_t len) {
  return request_full("POST", path, "application/grpc", NULL, 0, body, len, 0, 1);
}

#define UNARY_CALL "/sealgate.testing.v1.TestService/UnaryCall"

/* A complete TestService/UnaryCall with extra headers. */
static int32_t unary_with(const nghttp2_nv *extra, size_t n_extra, const uint8_t *msg, size_t len) {
  return request_full("POST", UNARY_CALL, "application/grpc", extra, n_extra, msg, len, 0, 1);
}

static int32_t health_check(const char *service) {
  static uint8_t buf[256];
  Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
  req.service = (char *)service;
  size_t len = frame_msg(&req.base, buf);
  return request("/grpc.health.v1.Health/Check", buf, len);
}

static int grpc_status(int32_t id) {
  response *r = resp_of(id);
  cr_assert(r->grpc_status[0] != '\0', "stream %d got no grpc-status", id);
  return atoi(r->grpc_status);
}

TestSuite(h2, .init = setup, .fini = teardown);

Test(h2, unary_call_gets_headers_one_message_and_trailers) {
  int32_t id = health_check("");
  cr_assert_eq(pump(), 0);
  response *r = resp_of(id);
  cr_assert_str_eq(r->status, "200");
  cr_assert_str_eq(r->content_type, "application/grpc");
  cr_assert_eq(r->header_blocks, 2, "response headers, then trailers");
  cr_assert_not(r->trailers_only);
  cr_assert_eq(grpc_status(id), 0);
  cr_assert_eq(r->data_len, 7);
  cr_assert_eq(r->data[0], 0, "not compressed");
  Grpc__Health__V1__HealthCheckResponse *msg =
      grpc__health__v1__health_check_response__unpack(NULL, r->data_len - 5, r->data + 5);
  cr_assert_not_null(msg);
  cr_assert_eq(msg->status, GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING);
  grpc__health__v1__health_check_response__free_unpacked(msg, NULL);
  cr_assert(r->closed);
  cr_assert_eq(r->close_error, NGHTTP2_NO_ERROR);
}

/* A framed TestRequest. */
static size_t test_request(uint8_t *buf, int delay_ms, int response_size, size_t payload,
                           int status_code, const char *status_message) {
  Sealgate__Testing__V1__TestRequest req = SEALGATE__TESTING__V1__TEST_REQUEST__INIT;
  Sealgate__Testing__V1__EchoStatus st = SEALGATE__TESTING__V1__ECHO_STATUS__INIT;
  static uint8_t zeros[100000];
  req.delay_ms = delay_ms;
  req.response_size = response_size;
  req.payload.data = zeros;
  req.payload.len = payload;
  if (status_code != 0) {
    st.code = status_code;
    st.message = (char *)status_message;
    req.response_status = &st;
  }
  return frame_msg(&req.base, buf);
}

static uint8_t body[120000];

Test(h2, unknown_method_is_a_trailers_only_unimplemented) {
  size_t len = test_request(body, 0, 0, 0, 0, NULL);
  int32_t id = request("/sealgate.testing.v1.TestService/Nope", body, len);
  pump();
  response *r = resp_of(id);
  cr_assert(r->trailers_only, "one HEADERS frame with END_STREAM");
  cr_assert_eq(r->data_len, 0);
  cr_assert_str_eq(r->status, "200");
  cr_assert_eq(grpc_status(id), SG_STATUS_UNIMPLEMENTED);
  cr_assert(strstr(r->grpc_message, "TestService/Nope") != NULL);
}

Test(h2, unknown_service_is_unimplemented) {
  int32_t id = request("/no.Such/Method", NULL, 0);
  pump();
  cr_assert(resp_of(id)->trailers_only);
  cr_assert_eq(grpc_status(id), SG_STATUS_UNIMPLEMENTED);
}

Test(h2, wrong_content_type_gets_http_415) {
  int32_t id = request_full("POST", "/grpc.health.v1.Health/Check", "application/json", NULL, 0,
                            NULL, 0, 0, 1);
  pump();
  cr_assert_str_eq(resp_of(id)->status, "415");
  cr_assert(resp_of(id)->closed);
}

Test(h2, content_type_lookalike_gets_http_415) {
  int32_t id = request_full("POST", "/grpc.health.v1.Health/Check", "application/grpcx", NULL, 0,
                            NULL, 0, 0, 1);
  pump();
  cr_assert_str_eq(resp_of(id)->status, "415");
}

Test(h2, content_type_with_proto_suffix_is_grpc) {
  static uint8_t buf[16];
  Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
  size_t len = frame_msg(&req.base, buf);
  int32_t id = request_full("POST", "/grpc.health.v1.Health/Check", "application/grpc+proto", NULL,
                            0, buf, len, 0, 1);
  pump();
  cr_assert_eq(grpc_status(id), 0);
}

Test(h2, get_is_refused_with_405) {
  int32_t id = request_full("GET", "/grpc.health.v1.Health/Check", "application/grpc", NULL, 0,
                            NULL, 0, 0, 0);
  pump();
  cr_assert_str_eq(resp_of(id)->status, "405");
}

Test(h2, message_split_across_many_data_frames_is_reassembled) {
  static uint8_t buf[64];
  Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
  req.service = "grpc.health.v1.Health";
  size_t len = frame_msg(&req.base, buf);
  int32_t id = request_full("POST", "/grpc.health.v1.Health/Check", "application/grpc", NULL, 0,
                            buf, len, 1, 1);
  pump();
  cr_assert_eq(grpc_status(id), 0);
  cr_assert_eq(resp_of(id)->data_len, 7);
}

Test(h2, two_messages_on_a_unary_call_are_unimplemented) {
  static uint8_t buf[32];
  Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
  size_t one = frame_msg(&req.base, buf);
  memcpy(buf + one, buf, one);
  int32_t id = request("/grpc.health.v1.Health/Check", buf, 2 * one);
  pump();
  cr_assert_eq(grpc_status(id), SG_STATUS_UNIMPLEMENTED);
}

Test(h2, no_message_on_a_unary_call_is_unimplemented) {
  int32_t id = request_full("POST", "/grpc.health.v1.Health/Check", "application/grpc", NULL, 0,
                            NULL, 0, 0, 1);
  pump();
  cr_assert_eq(grpc_status(id), SG_STATUS_UNIMPLEMENTED);
}

Test(h2, stream_ending_inside_a_message_is_internal) {
  static uint8_t buf[8];
  sg_frame_header_write(buf, 0, 100);
  int32_t id = request("/grpc.health.v1.Health/Check", buf, 7);
  pump();
  cr_assert_eq(grpc_status(id), SG_STATUS_INTERNAL);
}

Test(h2, unparsable_message_is_internal) {
  static uint8_t buf[16];
  sg_frame_header_write(buf, 0, 3);
  memcpy(buf + 5, "\xff\xff\xff", 3);
  int32_t id = request("/grpc.health.v1.Health/Check", buf, 8);
  pump();
  cr_assert_eq(grpc_status(id), SG_STATUS_INTERNAL);
}

Test(h2, oversize_message_is_refused_before_it_arrives_and_the_stream_reset) {
  /* Only the header of a too-large message is sent and the request stays open: the server
   * must answer at once and then reset the stream with NO_ERROR. */
  sg_frame_header_write(body, 0, 5000);
  int32_t id = request_full("POST", UNARY_CALL, "application/grpc", NULL, 0, body, 5, 0, 0);
  pump();
  response *r = resp_of(id);
  cr_assert_eq(grpc_status(id), SG_STATUS_RESOURCE_EXHAUSTED);
  cr_assert(strstr(r->grpc_message, "larger than max") != NULL);
  cr_assert(r->rst_received, "RST_STREAM after the early response");
  cr_assert_eq(r->rst_error, NGHTTP2_NO_ERROR);
}

Test(h2, message_at_the_size_limit_is_accepted) {
  /* TestRequest with a payload field: 3 bytes of tag+length overhead for a 4093-byte payload
   * (2-byte varint) makes the message exactly 4096 bytes, the limit. */
  size_t len = test_request(body, 0, 0, 4093, 0, NULL);
  cr_assert_eq(len - 5, 4096);
  int32_t id = request(UNARY_CALL, body, len);
  pump();
  cr_assert_eq(grpc_status(id), 0);
}

Test(h2, metadata_over_the_header_list_limit_is_resource_exhausted) {
  static char big[3000];
  memset(big, 'a', sizeof(big) - 1);
  nghttp2_nv extra[2] = {NV("x-one", big), NV("x-two", big)};
  int32_t id = request_full("POST", "/grpc.health.v1.Health/Check", "application/grpc", extra, 2,
                            NULL, 0, 0, 1);
  pump();
  cr_assert_eq(grpc_status(id), SG_STATUS_RESOURCE_EXHAUSTED);
}

Test(h2, malformed_grpc_timeout_is_internal) {
  size_t len = test_request(body, 0, 0, 0, 0, NULL);
  nghttp2_nv extra[1] = {NV("grpc-timeout", "123456789S")};
  int32_t id = unary_with(extra, 1, body, len);
  pump();
  cr_assert_eq(grpc_status(id), SG_STATUS_INTERNAL);
}

Test(h2, slow_handler_past_its_deadline_ends_deadline_exceeded) {
  size_t len = test_request(body, 5000, 0, 0, 0, NULL);
  nghttp2_nv extra[1] = {NV("grpc-timeout", "50m")};
  int32_t id = unary_with(extra, 1, body, len);
  pump();
  cr_assert_not(resp_of(id)->closed, "the handler is still waiting");
  run_for(300);
  cr_assert(resp_of(id)->closed);
  cr_assert_eq(grpc_status(id), SG_STATUS_DEADLINE_EXCEEDED);
  cr_assert_eq(sg_h2_open_streams(t.h2), 0);
}

Test(h2, deadline_passing_before_the_request_ends_resets_with_cancel) {
  size_t len = test_request(body, 0, 0, 0, 0, NULL);
  nghttp2_nv extra[1] = {NV("grpc-timeout", "20m")};
  int32_t id = request_full("POST", UNARY_CALL, "application/grpc", extra, 1, body, len, 0, 0);
  pump();
  run_for(200);
  response *r = resp_of(id);
  cr_assert_eq(grpc_status(id), SG_STATUS_DEADLINE_EXCEEDED);
  cr_assert(r->rst_received);
  cr_assert_eq(r->rst_error, NGHTTP2_CANCEL);
}

Test(h2, client_cancel_of_a_slow_call_frees_it) {
  size_t len = test_request(body, 5000, 0, 0, 0, NULL);
  int32_t id = request(UNARY_CALL, body, len);
  pump();
  cr_assert_eq(sg_h2_open_streams(t.h2), 1);
  nghttp2_submit_rst_stream(t.client, NGHTTP2_FLAG_NONE, id, NGHTTP2_CANCEL);
  pump();
  cr_assert_eq(sg_h2_open_streams(t.h2), 0);
  /* The handler's timer is gone with the call: running the loop past it changes nothing. */
  run_for(50);
  cr_assert_eq(resp_of(id)->grpc_status[0], '\0');
}

Test(h2, status_message_is_percent_encoded_on_the_wire) {
  size_t len = test_request(body, 0, 0, 0, SG_STATUS_ABORTED, "50% \xe2\x98\xba\n");
  int32_t id = request(UNARY_CALL, body, len);
  pump();
  cr_assert_eq(grpc_status(id), SG_STATUS_ABORTED);
  cr_assert_str_eq(resp_of(id)->grpc_message, "50%25 %E2%98%BA%0A");
}

Test(h2, gzip_request_is_decompressed_and_large_response_compressed) {
  static uint8_t plain[64];
  Sealgate__Testing__V1__TestRequest req = SEALGATE__TESTING__V1__TEST_REQUEST__INIT;
  req.response_size = 4000;
  req.message = "hello";
  size_t plen = protobuf_c_message_pack(&req.base, plain);
  uint8_t *packed;
  size_t packed_len;
  sg_compress(SG_ENCODING_GZIP, plain, plen, &packed, &packed_len);
  sg_frame_header_write(body, 1, (uint32_t)packed_len);
  memcpy(body + 5, packed, packed_len);
  free(packed);
  nghttp2_nv extra[2] = {NV("grpc-encoding", "gzip"), NV("grpc-accept-encoding", "identity,gzip")};
  int32_t id = unary_with(extra, 2, body, packed_len + 5);
  pump();
  response *r = resp_of(id);
  cr_assert_eq(grpc_status(id), 0);
  cr_assert_str_eq(r->grpc_encoding, "gzip");
  cr_assert_eq(r->data[0], 1, "compressed flag");
  uint8_t *out;
  size_t out_len;
  cr_assert_eq(
      sg_decompress(SG_ENCODING_GZIP, r->data + 5, r->data_len - 5, 1 << 20, &out, &out_len), 0);
  Sealgate__Testing__V1__TestResponse *msg =
      sealgate__testing__v1__test_response__unpack(NULL, out_len, out);
  cr_assert_not_null(msg);
  cr_assert_str_eq(msg->message, "hello");
  cr_assert_eq(msg->payload.len, 4000);
  sealgate__testing__v1__test_response__free_unpacked(msg, NULL);
  free(out);
}

Test(h2, compressed_flag_without_grpc_encoding_is_internal) {
  size_t len = test_request(body, 0, 0, 0, 0, NULL);
  body[0] = 1;
  int32_t id = request(UNARY_CALL, body, len);
  pump();
  cr_assert_eq(grpc_status(id), SG_STATUS_INTERNAL);
}

Test(h2, unsupported_grpc_encoding_is_unimplemented) {
  size_t len = test_request(body, 0, 0, 0, 0, NULL);
  nghttp2_nv extra[1] = {NV("grpc-encoding", "snappy")};
  int32_t id = unary_with(extra, 1, body, len);
  pump();
  cr_assert_eq(grpc_status(id), SG_STATUS_UNIMPLEMENTED);
}

Test(h2, metadata_is_echoed_and_bin_values_travel_as_unpadded_base64) {
  size_t len = test_request(body, 0, 0, 0, 0, NULL);
  nghttp2_nv extra[2] = {NV("x-sealgate-echo-initial", "hello there"),
                         NV("x-sealgate-echo-trailing-bin", "q6ur")};
  int32_t id = unary_with(extra, 2, body, len);
  pump();
  cr_assert_eq(grpc_status(id), 0);
  cr_assert_str_eq(resp_of(id)->echo_initial, "hello there");
  cr_assert_str_eq(resp_of(id)->echo_trailing_bin, "q6ur");
}

Test(h2, padded_bin_metadata_is_accepted_and_sent_back_unpadded) {
  size_t len = test_request(body, 0, 0, 0, 0, NULL);
  nghttp2_nv extra[1] = {NV("x-sealgate-echo-trailing-bin", "q6s=")};
  int32_t id = unary_with(extra, 1, body, len);
  pump();
  cr_assert_str_eq(resp_of(id)->echo_trailing_bin, "q6s");
}

Test(h2, invalid_bin_metadata_is_internal) {
  size_t len = test_request(body, 0, 0, 0, 0, NULL);
  nghttp2_nv extra[1] = {NV("x-sealgate-echo-trailing-bin", "not base64!")};
  int32_t id = unary_with(extra, 1, body, len);
  pump();
  cr_assert_eq(grpc_status(id), SG_STATUS_INTERNAL);
}

Test(h2, server_streaming_sends_every_message_then_trailers) {
  Sealgate__Testing__V1__TestRequest req = SEALGATE__TESTING__V1__TEST_REQUEST__INIT;
  req.count = 3;
  req.interval_ms = 1;
  size_t len = frame_msg(&req.base, body);
  int32_t id = request("/sealgate.testing.v1.TestService/StreamingCall", body, len);
  pump();
  for (int i = 0; i < 20 && !resp_of(id)->closed; i++)
    run_for(10);
  response *r = resp_of(id);
  cr_assert_eq(grpc_status(id), 0);
  size_t off = 0;
  int count = 0;
  while (off + 5 <= r->data_len) {
    uint32_t mlen = (uint32_t)r->data[off + 1] << 24 | (uint32_t)r->data[off + 2] << 16 |
                    (uint32_t)r->data[off + 3] << 8 | r->data[off + 4];
    Sealgate__Testing__V1__TestResponse *m =
        sealgate__testing__v1__test_response__unpack(NULL, mlen, r->data + off + 5);
    cr_assert_not_null(m);
    cr_assert_eq(m->index, count);
    sealgate__testing__v1__test_response__free_unpacked(m, NULL);
    off += 5 + mlen;
    count++;
  }
  cr_assert_eq(count, 3);
}

Test(h2, settings_advertise_the_stream_and_header_limits) {
  pump();
  cr_assert_eq(
      nghttp2_session_get_remote_settings(t.client, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS), 100);
  cr_assert_eq(nghttp2_session_get_remote_settings(t.client, NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE),
               4096);
}

Test(h2, rapid_reset_flood_is_cut_off_with_goaway_enhance_your_calm) {
  /* CVE-2023-44487: open a stream and reset it at once, again and again. */
  size_t len = test_request(body, 5000, 0, 0, 0, NULL);
  pump();
  int sent = 0;
  for (int i = 0; i < 1000 && t.goaways == 0; i++) {
    int32_t id = request(UNARY_CALL, body, len);
    const uint8_t *data;
    ssize_t n;
    while ((n = nghttp2_session_mem_send(t.client, &data)) > 0) /* the request goes out... */
      cr_assert_eq(sg_h2_recv(t.h2, data, (size_t)n), 0);
    nghttp2_submit_rst_stream(t.client, NGHTTP2_FLAG_NONE, id, NGHTTP2_CANCEL); /* ...and dies */
    sent++;
    if (pump() != 0)
      break;
  }
  cr_assert_eq(t.goaways, 1);
  cr_assert_eq(t.goaway_error, NGHTTP2_ENHANCE_YOUR_CALM);
  cr_assert(sent > 400 && sent < 600, "cut off after the burst of 500, not before (%d)", sent);
  cr_assert(sg_h2_done(t.h2));
}

Test(h2, graceful_shutdown_finishes_calls_in_flight_then_closes) {
  size_t len = test_request(body, 100, 0, 0, 0, NULL);
  int32_t id = request(UNARY_CALL, body, len);
  pump();
  sg_h2_shutdown(t.h2);
  pump();
  cr_assert_eq(t.goaways, 2, "the notice, then the final GOAWAY after the PING answer");
  cr_assert_eq(t.goaway_last_stream, id);
  cr_assert_eq(t.goaway_error, NGHTTP2_NO_ERROR);
  cr_assert_not(sg_h2_done(t.h2), "a call is still in flight");
  run_for(300);
  cr_assert_eq(grpc_status(id), 0);
  cr_assert(sg_h2_done(t.h2));
}

Test(h2, freeing_a_session_with_calls_in_flight_cancels_them) {
  size_t len = test_request(body, 5000, 0, 0, 0, NULL);
  request(UNARY_CALL, body, len);
  request(UNARY_CALL, body, len);
  pump();
  cr_assert_eq(sg_h2_open_streams(t.h2), 2);
  sg_h2_free(t.h2); /* AddressSanitizer checks nothing leaks or is used after free */
  t.h2 = sg_h2_new(&t.opts, t.base, "127.0.0.1:1", &hooks, NULL);
  run_for(20);
}

Test(h2, garbage_instead_of_the_client_preface_is_fatal) {
  const char junk[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
  cr_assert_eq(sg_h2_recv(t.h2, (const uint8_t *)junk, sizeof(junk) - 1), SG_H2_ERR_FATAL);
}

/* --- Limits and lifetimes the review of the gateway core asked for ------------------------- */

/* A handler that holds its call without answering, so a test can look at the call after the
 * connection is gone. */
static sg_call *held;
static void hold(sg_call *call, const ProtobufCMessage *req) {
  (void)req;
  held = call;
}
static const sg_method_impl hold_methods[] = {{"Check", SG_METHOD_UNARY, hold, NULL}};
static const sg_service hold_service = {&grpc__health__v1__health__descriptor, hold_methods, 1,
                                        NULL};

Test(h2_hold, a_held_call_keeps_its_peer_after_the_connection_is_gone) {
  start(4096);
  sg_router_free(t.router);
  t.router = sg_router_new();
  sg_router_add(t.router, &hold_service);
  t.opts.router = t.router;
  held = NULL;
  health_check("");
  pump();
  cr_assert_not_null(held);
  sg_h2_free(t.h2);
  t.h2 = NULL;
  cr_assert(sg_call_is_done(held));
  cr_assert_str_eq(sg_call_peer(held), "127.0.0.1:1"); /* AddressSanitizer: no use after free */
  sg_call_finish(held, SG_STATUS_OK, NULL);
  teardown();
}

static void client_window(uint32_t window) {
  nghttp2_settings_entry e = {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, window};
  nghttp2_submit_settings(t.client, NGHTTP2_FLAG_NONE, &e, 1);
}

Test(h2, a_client_that_reads_nothing_cannot_make_responses_pile_up) {
  client_window(0);
  Sealgate__Testing__V1__TestRequest req = SEALGATE__TESTING__V1__TEST_REQUEST__INIT;
  req.count = 100;
  req.response_size = 50000; /* 5 MB in all against a 1 MiB connection queue */
  req.interval_ms = 1;
  size_t len = frame_msg(&req.base, body);
  int32_t id = request("/sealgate.testing.v1.TestService/StreamingCall", body, len);
  pump();
  for (int i = 0; i < 100 && !resp_of(id)->closed; i++)
    run_for(5);
  response *r = resp_of(id);
  cr_assert(r->rst_received, "the call is reset, not left to grow");
  cr_assert_eq(r->rst_error, NGHTTP2_ENHANCE_YOUR_CALM);
  cr_assert_eq(sg_h2_open_streams(t.h2), 0);
}

Test(h2, a_deadline_still_ends_a_stream_whose_data_cannot_be_sent) {
  client_window(0);
  Sealgate__Testing__V1__TestRequest req = SEALGATE__TESTING__V1__TEST_REQUEST__INIT;
  req.count = 3;
  req.interval_ms = 1;
  size_t len = frame_msg(&req.base, body);
  nghttp2_nv extra[1] = {NV("grpc-timeout", "50m")};
  int32_t id = request_full("POST", "/sealgate.testing.v1.TestService/StreamingCall",
                            "application/grpc", extra, 1, body, len, 0, 1);
  pump();
  run_for(200);
  response *r = resp_of(id);
  cr_assert(r->closed);
  cr_assert(r->rst_received, "trailers cannot pass a closed window: the stream is reset");
  cr_assert_eq(r->rst_error, NGHTTP2_CANCEL);
}

Test(h2, a_message_that_unpacks_to_far_more_than_its_size_is_refused) {
  /* 2048 two-byte unknown fields: 4 KiB on the wire, a record each once unpacked. */
  uint8_t *p = body + SG_FRAME_HEADER_LEN;
  for (int i = 0; i < 2048; i++) {
    *p++ = 15 << 3; /* field 15, varint */
    *p++ = 1;
  }
  sg_frame_header_write(body, 0, 4096);
  int32_t id = request(UNARY_CALL, body, 4096 + 5);
  pump();
  cr_assert_eq(grpc_status(id), SG_STATUS_RESOURCE_EXHAUSTED);
  cr_assert(strstr(resp_of(id)->grpc_message, "memory") != NULL);
}

Test(h2, empty_parts_of_bin_metadata_are_invalid) {
  size_t len = test_request(body, 0, 0, 0, 0, NULL);
  nghttp2_nv extra[1] = {NV("x-data-bin", "AA,,AA")};
  int32_t id = unary_with(extra, 1, body, len);
  pump();
  cr_assert_eq(grpc_status(id), SG_STATUS_INTERNAL);
}

Test(h2, every_part_of_bin_metadata_counts_against_the_header_limit) {
  /* 600 parts of 2 characters: 1.8 KB on the wire, 600 entries. */
  static char parts[2000];
  size_t n = 0;
  for (int i = 0; i < 600; i++) {
    memcpy(parts + n, i ? ",AA" : "AA", i ? 3 : 2);
    n += i ? 3 : 2;
  }
  parts[n] = '\0';
  size_t len = test_request(body, 0, 0, 0, 0, NULL);
  nghttp2_nv extra[1] = {NV("x-data-bin", parts)};
  int32_t id = unary_with(extra, 1, body, len);
  pump();
  cr_assert_eq(grpc_status(id), SG_STATUS_RESOURCE_EXHAUSTED);
}

Test(h2_big, partial_messages_are_bounded_per_connection) {
  start(512 * 1024); /* messages up to 512 KiB; 1 MiB of partial messages per connection */
  static uint8_t part[450 * 1024];
  sg_frame_header_write(part, 0, 500 * 1024);
  int32_t ids[3];
  for (int i = 0; i < 3; i++)
    ids[i] =
        request_full("POST", UNARY_CALL, "application/grpc", NULL, 0, part, sizeof(part), 0, 0);
  pump();
  int refused = 0;
  for (int i = 0; i < 3; i++)
    refused += resp_of(ids[i])->grpc_status[0] != '\0' &&
               grpc_status(ids[i]) == SG_STATUS_RESOURCE_EXHAUSTED;
  cr_assert_eq(refused, 1, "the stream that went past 1 MiB is refused, the others wait");
  teardown();
}

Test(h2, a_status_code_outside_grpc_codes_goes_out_as_unknown) {
  size_t len = test_request(body, 0, 0, 0, -1, "odd");
  int32_t id = request(UNARY_CALL, body, len);
  pump();
  cr_assert_eq(grpc_status(id), SG_STATUS_UNKNOWN);
  cr_assert_eq(sg_h2_open_streams(t.h2), 0);
}

Test(h2, a_watch_opened_while_draining_gets_one_answer_then_unavailable) {
  sg_health_end_watches(); /* this thread's loop is shutting down */
  static uint8_t buf[16];
  Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
  size_t len = frame_msg(&req.base, buf);
  int32_t id = request("/grpc.health.v1.Health/Watch", buf, len);
  pump();
  cr_assert_eq(grpc_status(id), SG_STATUS_UNAVAILABLE);
  cr_assert_eq(resp_of(id)->data_len, 7, "the current status first");
}
