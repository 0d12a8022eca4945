#include "test_service.h"

#include <string.h>

#include <event2/event.h>

#include "db/audit_writer.h"
#include "sealgate/testing/v1/test_service.pb-c.h"
#include "service/health.h"

#define ECHO_INITIAL      "x-sealgate-echo-initial"
#define ECHO_TRAILING_BIN "x-sealgate-echo-trailing-bin"

/* A call waiting on a timer. Lives in the call's arena. */
typedef struct {
  sg_call *call;
  const Sealgate__Testing__V1__TestRequest *req;
  struct event *timer;
  int sent;
} pending;

static void echo_metadata(sg_call *call) {
  size_t len;
  const char *v = sg_call_metadata(call, ECHO_INITIAL, &len);
  if (v != NULL)
    sg_call_add_initial_metadata(call, ECHO_INITIAL, v, len);
  v = sg_call_metadata(call, ECHO_TRAILING_BIN, &len);
  if (v != NULL)
    sg_call_add_trailing_metadata(call, ECHO_TRAILING_BIN, v, len);
}

static void fill_response(pending *p, Sealgate__Testing__V1__TestResponse *resp) {
  sealgate__testing__v1__test_response__init(resp);
  resp->message = (char *)p->req->message;
  resp->index = p->sent;
  if (p->req->response_size > 0) {
    resp->payload.len = (size_t)p->req->response_size;
    resp->payload.data = sg_arena_alloc(sg_call_arena(p->call), resp->payload.len);
    memset(resp->payload.data, 'x', resp->payload.len);
  }
}

static void finish(pending *p) {
  const Sealgate__Testing__V1__EchoStatus *st = p->req->response_status;
  event_del(p->timer);
  if (st != NULL && st->code != 0)
    sg_call_finish(p->call, (sg_status_code)st->code, "%s", st->message);
  else
    sg_call_finish(p->call, SG_STATUS_OK, NULL);
}

static void cancelled(sg_call *call, void *arg) {
  (void)call;
  pending *p = arg;
  event_del(p->timer);
  sg_call_finish(p->call, SG_STATUS_CANCELLED, NULL);
}

static void arm(pending *p, int ms) {
  struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
  event_add(p->timer, &tv);
}

static void step(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  pending *p = arg;
  const Sealgate__Testing__V1__TestRequest *req = p->req;
  int streaming = req->count > 0;
  int failing = req->response_status != NULL && req->response_status->code != 0;
  if (!failing && (!streaming || p->sent < req->count)) {
    Sealgate__Testing__V1__TestResponse resp;
    fill_response(p, &resp);
    sg_call_send(p->call, &resp.base);
    p->sent++;
  }
  if (streaming && !failing && p->sent < req->count) {
    arm(p, req->interval_ms);
    return;
  }
  finish(p);
}

static void start(sg_call *call, const ProtobufCMessage *msg) {
  pending *p = sg_arena_zalloc(sg_call_arena(call), sizeof(*p));
  p->call = call;
  p->req = (const void *)msg;
  p->timer = sg_arena_alloc(sg_call_arena(call), event_get_struct_event_size());
  event_assign(p->timer, sg_call_event_base(call), -1, 0, step, p);
  sg_call_on_cancel(call, cancelled, p);
  echo_metadata(call);
  if (p->req->delay_ms > 0)
    arm(p, p->req->delay_ms);
  else
    step(-1, 0, p);
}

static void set_health(sg_call *call, const ProtobufCMessage *msg) {
  const Sealgate__Testing__V1__SetHealthRequest *req = (const void *)msg;
  if (sg_health_set(req->service, req->status) != 0) {
    sg_call_finish(call, SG_STATUS_NOT_FOUND, "unknown service");
    return;
  }
  Sealgate__Testing__V1__SetHealthResponse resp = SEALGATE__TESTING__V1__SET_HEALTH_RESPONSE__INIT;
  sg_call_reply(call, &resp.base);
}

static void record_audit(sg_call *call, const ProtobufCMessage *msg) {
  const Sealgate__Testing__V1__RecordAuditRequest *req = (const void *)msg;
  sg_audit_event ev = {req->org_id,          req->sandbox_id, req->store_id, req->secret_name,
                       req->secret_version,  req->host,       req->method,   req->path,
                       SG_AUDIT_SUBSTITUTED, req->reason};
  int d = SG_AUDIT_SUBSTITUTED;
  while (d <= SG_AUDIT_REDACTED && strcmp(req->decision, sg_audit_decision_name(d)) != 0)
    d++;
  if (d > SG_AUDIT_REDACTED) {
    sg_call_finish(call, SG_STATUS_INVALID_ARGUMENT, "decision: unknown");
    return;
  }
  ev.decision = (sg_audit_decision)d;
  for (int32_t i = 0; i < req->copies; i++)
    sg_audit_record(&ev);
  if (req->flush)
    sg_audit_flush_now();
  Sealgate__Testing__V1__RecordAuditResponse resp =
      SEALGATE__TESTING__V1__RECORD_AUDIT_RESPONSE__INIT;
  resp.written = sg_audit_written();
  resp.dropped = sg_audit_dropped();
  sg_call_reply(call, &resp.base);
}

static const sg_method_impl methods[] = {
    {"UnaryCall", SG_METHOD_UNARY, start, NULL},
    {"StreamingCall", SG_METHOD_SERVER_STREAMING, start, NULL},
    {"SetHealth", SG_METHOD_UNARY, set_health, NULL},
    {"RecordAudit", SG_METHOD_UNARY, record_audit, NULL},
};

const sg_service sg_test_service = {&sealgate__testing__v1__test_service__descriptor, methods,
                                    sizeof(methods) / sizeof(methods[0]), NULL};
