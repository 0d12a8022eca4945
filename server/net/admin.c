#include "net/admin.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "core/mem.h"
#include "net/listener.h"
#include "net/loop.h"

/* A probe or a scrape is a few hundred bytes in; anything bigger is not one. */
#define ADMIN_MAX_HEADERS_BYTES 8192
#define ADMIN_MAX_BODY_BYTES    1024
#define ADMIN_TIMEOUT_S         10

struct sg_admin {
  sg_admin_options opts;
  sg_loop *loop;
  struct evhttp *http;
  char address[80];
};

static void reply_text(struct evhttp_request *req, int code, const char *reason, const char *type,
                       const char *body, size_t len) {
  struct evkeyvalq *h = evhttp_request_get_output_headers(req);
  evhttp_add_header(h, "Content-Type", type);
  evhttp_add_header(h, "Cache-Control", "no-store");
  struct evbuffer *out = evbuffer_new();
  if (out == NULL)
    sg_fatal("evbuffer_new failed");
  evbuffer_add(out, body, len);
  evhttp_send_reply(req, code, reason, out);
  evbuffer_free(out);
}

static void reply_plain(struct evhttp_request *req, int code, const char *reason,
                        const char *line) {
  char body[160];
  int n = snprintf(body, sizeof(body), "%s\n", line);
  reply_text(req, code, reason, "text/plain; charset=utf-8", body, (size_t)n);
}

static void serve_metrics(sg_admin *a, struct evhttp_request *req) {
  size_t len;
  char *text = sg_metrics_render(a->opts.metrics, &len);
  reply_text(req, 200, "OK", "text/plain; version=0.0.4; charset=utf-8", text, len);
  free(text);
}

static void serve_ready(sg_admin *a, struct evhttp_request *req) {
  const char *why = a->opts.not_ready != NULL ? a->opts.not_ready(a->opts.arg) : NULL;
  if (why == NULL)
    reply_plain(req, 200, "OK", "ready");
  else
    reply_plain(req, 503, "Service Unavailable", why);
}

static void on_request(struct evhttp_request *req, void *arg) {
  sg_admin *a = arg;
  const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
  const char *path = uri != NULL ? evhttp_uri_get_path(uri) : NULL;
  if (path == NULL)
    path = "";
  enum {
    METRICS,
    LIVE,
    READY,
    NONE
  } route = !strcmp(path, "/metrics")   ? METRICS
            : !strcmp(path, "/healthz") ? LIVE
            : !strcmp(path, "/livez")   ? LIVE
            : !strcmp(path, "/readyz")  ? READY
                                        : NONE;
  if (route == NONE) {
    reply_plain(req, 404, "Not Found", "not found: try /metrics, /healthz or /readyz");
    return;
  }
  enum evhttp_cmd_type method = evhttp_request_get_command(req);
  if (method != EVHTTP_REQ_GET && method != EVHTTP_REQ_HEAD) {
    evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET, HEAD");
    reply_plain(req, 405, "Method Not Allowed", "method not allowed: use GET");
    return;
  }
  if (route == METRICS)
    serve_metrics(a, req);
  else if (route == READY)
    serve_ready(a, req);
  else
    reply_plain(req, 200, "OK", "ok");
}

sg_admin *sg_admin_start(const char *addr, const sg_admin_options *opts, char *err, size_t errlen) {
  int fd = sg_listener_open(addr, err, errlen);
  if (fd < 0)
    return NULL;
  sg_admin *a = sg_calloc(1, sizeof(*a));
  a->opts = *opts;
  sg_listener_address(fd, a->address, sizeof(a->address));
  a->loop = sg_loop_new(0);
  a->http = evhttp_new(sg_loop_base(a->loop));
  if (a->http == NULL)
    sg_fatal("evhttp_new failed");
  /* Every method reaches on_request, which answers 405 itself with an Allow header. */
  evhttp_set_allowed_methods(a->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                                          EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE | EVHTTP_REQ_OPTIONS |
                                          EVHTTP_REQ_TRACE | EVHTTP_REQ_CONNECT | EVHTTP_REQ_PATCH);
  evhttp_set_max_headers_size(a->http, ADMIN_MAX_HEADERS_BYTES);
  evhttp_set_max_body_size(a->http, ADMIN_MAX_BODY_BYTES);
  evhttp_set_timeout(a->http, ADMIN_TIMEOUT_S);
  evhttp_set_gencb(a->http, on_request, a);
  if (evhttp_accept_socket_with_handle(a->http, fd) == NULL) {
    snprintf(err, errlen, "%s: cannot serve HTTP on the socket", addr);
    close(fd);
    evhttp_free(a->http);
    sg_loop_free(a->loop);
    free(a);
    return NULL;
  }
  if (sg_loop_start(a->loop) != 0) {
    snprintf(err, errlen, "cannot start the admin thread");
    evhttp_free(a->http);
    sg_loop_free(a->loop);
    free(a);
    return NULL;
  }
  return a;
}

const char *sg_admin_address(const sg_admin *a) {
  return a->address;
}

static void stop_loop(void *arg) {
  sg_loop_stop(arg);
}

void sg_admin_stop(sg_admin *a) {
  if (a == NULL)
    return;
  sg_loop_post(a->loop, stop_loop, a->loop);
  sg_loop_join(a->loop);
  evhttp_free(a->http); /* closes the listener and the connections still open */
  sg_loop_free(a->loop);
  free(a);
}
