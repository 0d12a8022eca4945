#include "proxy/h2.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <nghttp2/nghttp2.h>

#include "core/clock.h"
#include "core/log.h"
#include "core/mem.h"
#include "core/stats.h"
#include "proxy/addr.h"
#include "proxy/scan.h"
#include "proxy/subst.h"

/* Bytes queued toward one side before the other side stops being read. */
#define H2_HIGH (1u << 20)
#define H2_LOW  (256u << 10)

typedef struct hdr {
  char *name, *value;
  size_t name_len, value_len;
} hdr;

typedef struct hdrs {
  hdr *v;
  size_t n, cap, bytes;
} hdrs;

typedef struct stream {
  struct sg_h2_tunnel *t;
  int32_t cid, uid; /* the sandbox's stream and upstream's (0 until submitted) */
  hdrs req, resp, trailers;
  int grpc;
  int req_ended, resp_ended, resp_submitted;
  int cli_closed, up_closed;
  int waiting; /* headers complete, waiting for a fresh view */
  sg_subst rq;
  sg_scanner scanner;
  struct evbuffer *reqbuf, *respbuf;
  int redact_body;
  int status;
  int refused; /* the proxy answered (refuse, or no upstream response), not upstream */
  int64_t started_ns;
  struct stream *next_waiting;
  struct stream *prev, *next; /* the tunnel's streams */
} stream;

struct sg_h2_tunnel {
  struct bufferevent *cli, *up;
  nghttp2_session *cs, *us; /* toward the sandbox (server), toward upstream (client) */
  sg_view *view;
  char host[SG_HOST_MAX + 1];
  uint16_t port;
  const char *withhold;
  char peer[64];
  void (*closed)(void *);
  void *arg;
  int view_pending;
  stream *waiting;
  stream *streams;
  int in_callback, dead;
};

static void tunnel_end(sg_h2_tunnel *t);
static int flush(sg_h2_tunnel *t);
static void submit_upstream(stream *st);

/* --- Headers --------------------------------------------------------------------------- */

static void hdrs_add(hdrs *h, const char *name, size_t nlen, const char *value, size_t vlen) {
  if (h->n == h->cap) {
    h->cap = h->cap ? 2 * h->cap : 16;
    h->v = sg_realloc(h->v, h->cap * sizeof(*h->v));
  }
  hdr *x = &h->v[h->n++];
  x->name = sg_strndup(name, nlen);
  x->value = sg_malloc(vlen + 1);
  memcpy(x->value, value, vlen);
  x->value[vlen] = '\0';
  x->name_len = nlen;
  x->value_len = vlen;
  h->bytes += nlen + vlen;
}

static void hdrs_free(hdrs *h) {
  for (size_t i = 0; i < h->n; i++) {
    free(h->v[i].name);
    sg_subst_free_text(h->v[i].value, h->v[i].value_len);
  }
  free(h->v);
  memset(h, 0, sizeof(*h));
}

static const hdr *hdrs_get(const hdrs *h, const char *name) {
  for (size_t i = 0; i < h->n; i++)
    if (strcmp(h->v[i].name, name) == 0)
      return &h->v[i];
  return NULL;
}

/* Headers HTTP/2 forbids or that describe one hop only. */
static int connection_specific(const char *name) {
  return strcmp(name, "connection") == 0 || strcmp(name, "keep-alive") == 0 ||
         strcmp(name, "proxy-connection") == 0 || strcmp(name, "transfer-encoding") == 0 ||
         strcmp(name, "upgrade") == 0 || strcmp(name, "proxy-authorization") == 0;
}

/* --- Streams --------------------------------------------------------------------------- */

static void stream_free(stream *st) {
  if (st->prev)
    st->prev->next = st->next;
  else
    st->t->streams = st->next;
  if (st->next)
    st->next->prev = st->prev;
  sg_subst_end(&st->rq);
  hdrs_free(&st->req);
  hdrs_free(&st->resp);
  hdrs_free(&st->trailers);
  if (st->reqbuf != NULL)
    evbuffer_free(st->reqbuf);
  if (st->respbuf != NULL)
    evbuffer_free(st->respbuf);
  free(st);
}

static void stream_log(stream *st) {
  sg_log_begin(st->status >= 400 || st->status == 0 ? SG_LOG_WARN : SG_LOG_INFO, "proxy_request");
  if (st->t->view != NULL)
    sg_log_cstr("sandbox", st->t->view->sandbox_id);
  sg_log_cstr("method", st->rq.method);
  sg_log_cstr("host", st->t->host);
  sg_log_cstr("path", st->rq.path);
  sg_log_cstr("protocol", st->grpc ? "grpc" : "h2");
  sg_log_int("status", st->status);
  sg_log_cstr("peer", st->t->peer);
  sg_log_double("ms", (double)(sg_now_ns() - st->started_ns) / 1e6);
  sg_log_end();
  sg_stats_proxy_request(st->status, st->refused ? SG_PROXY_REFUSED : SG_PROXY_FORWARDED);
}

/* Both sides are done with |st|: it goes. */
static void stream_maybe_free(stream *st) {
  if (!st->cli_closed || (st->uid > 0 && !st->up_closed) || st->waiting)
    return;
  sg_subst_audit(&st->rq);
  stream_log(st);
  if (st->uid > 0)
    nghttp2_session_set_stream_user_data(st->t->us, st->uid, NULL);
  stream_free(st);
}

/* --- Bodies ---------------------------------------------------------------------------- */

static int to_reqbuf(void *arg, const char *data, size_t len) {
  stream *st = arg;
  return evbuffer_add(st->reqbuf, data, len) == 0 ? 0 : -1;
}

static int to_respbuf(void *arg, const char *data, size_t len) {
  stream *st = arg;
  return evbuffer_add(st->respbuf, data, len) == 0 ? 0 : -1;
}

/* Both directions read from a stream's buffer: deferred while it is empty and the body goes on. */
static ssize_t read_buf(struct evbuffer *buf, int ended, int32_t sid, nghttp2_session *session,
                        const hdrs *trailers, uint8_t *out, size_t length, uint32_t *flags) {
  size_t n = evbuffer_get_length(buf);
  if (n == 0 && !ended)
    return NGHTTP2_ERR_DEFERRED;
  if (n > length)
    n = length;
  evbuffer_remove(buf, out, n);
  if (ended && evbuffer_get_length(buf) == 0) {
    *flags |= NGHTTP2_DATA_FLAG_EOF;
    if (trailers != NULL && trailers->n > 0) {
      nghttp2_nv *nv = sg_calloc(trailers->n, sizeof(*nv));
      for (size_t i = 0; i < trailers->n; i++)
        nv[i] =
            (nghttp2_nv){(uint8_t *)trailers->v[i].name, (uint8_t *)trailers->v[i].value,
                         trailers->v[i].name_len, trailers->v[i].value_len, NGHTTP2_NV_FLAG_NONE};
      *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
      nghttp2_submit_trailer(session, sid, nv, trailers->n);
      free(nv);
    }
  }
  return (ssize_t)n;
}

static ssize_t read_request(nghttp2_session *session, int32_t sid, uint8_t *out, size_t length,
                            uint32_t *flags, nghttp2_data_source *src, void *user) {
  (void)user;
  stream *st = src->ptr;
  return read_buf(st->reqbuf, st->req_ended, sid, session, NULL, out, length, flags);
}

static ssize_t read_response(nghttp2_session *session, int32_t sid, uint8_t *out, size_t length,
                             uint32_t *flags, nghttp2_data_source *src, void *user) {
  (void)user;
  stream *st = src->ptr;
  return read_buf(st->respbuf, st->resp_ended, sid, session, &st->trailers, out, length, flags);
}

/* The request body goes upstream: scanned, except a gRPC body (framed by length). */
static void request_data(stream *st, const uint8_t *data, size_t len) {
  if (st->grpc || st->waiting || st->uid <= 0)
    evbuffer_add(st->reqbuf, data, len);
  else
    sg_scan_feed(&st->scanner, (const char *)data, len);
  if (st->uid > 0)
    nghttp2_session_resume_data(st->t->us, st->uid);
}

static void request_ended(stream *st) {
  st->req_ended = 1;
  if (st->uid > 0) {
    if (!st->grpc)
      sg_scan_finish(&st->scanner);
    nghttp2_session_resume_data(st->t->us, st->uid);
  }
}

/* --- Toward upstream ------------------------------------------------------------------- */

static int host_agrees(const sg_h2_tunnel *t, const hdr *authority) {
  sg_authority a;
  return authority != NULL &&
         sg_authority_parse(authority->value, authority->value_len, 443, &a) == 0 &&
         strcmp(a.host, t->host) == 0 && a.port == t->port;
}

static void refuse(stream *st, int status, const char *why) {
  nghttp2_nv nv[] = {
      {(uint8_t *)":status", (uint8_t *)(status == 403 ? "403" : "502"), 7, 3, 0},
      {(uint8_t *)"content-type", (uint8_t *)"text/plain", 12, 10, 0},
  };
  st->status = status;
  st->refused = 1;
  st->resp_ended = 1;
  st->respbuf = st->respbuf ? st->respbuf : evbuffer_new();
  evbuffer_add(st->respbuf, why, strlen(why));
  nghttp2_data_provider dp = {.source.ptr = st, .read_callback = read_response};
  nghttp2_submit_response(st->t->cs, st->cid, nv, 2, &dp);
  st->up_closed = 1;
}

/* The request's headers are complete and the view is fresh: send them upstream. */
static void submit_upstream(stream *st) {
  sg_h2_tunnel *t = st->t;
  if (t->view == NULL || !sg_view_live(t->view)) {
    refuse(st, 403, "sandbox has ended");
    return;
  }
  const hdr *method = hdrs_get(&st->req, ":method");
  const hdr *path = hdrs_get(&st->req, ":path");
  const hdr *authority = hdrs_get(&st->req, ":authority");
  if (authority == NULL)
    authority = hdrs_get(&st->req, "host");
  const hdr *ct = hdrs_get(&st->req, "content-type");
  st->grpc = ct != NULL && strncasecmp(ct->value, "application/grpc", 16) == 0;
  const char *withhold = t->withhold;
  if (withhold == NULL && !host_agrees(t, authority))
    withhold = ":authority differs from the CONNECT host";
  sg_subst_begin(&st->rq, t->view, t->host, withhold, method ? method->value : "",
                 method ? method->value_len : 0, path ? path->value : "",
                 path ? path->value_len : 0);
  st->started_ns = sg_now_ns();
  if (!sg_view_host_allowed(t->view, t->host)) {
    /* The store's allowlist changed since the CONNECT: the tunnel's streams stop here. */
    const char *why = "host no longer in the sandbox's egress allowlist";
    sg_subst_audit_event(&st->rq, NULL, SG_AUDIT_DENIED, why);
    refuse(st, 403, why);
    return;
  }

  nghttp2_nv *nv = sg_calloc(st->req.n, sizeof(*nv));
  char **owned = sg_calloc(st->req.n, sizeof(*owned));
  size_t *owned_len = sg_calloc(st->req.n, sizeof(*owned_len));
  size_t n = 0;
  for (size_t i = 0; i < st->req.n; i++) {
    hdr *h = &st->req.v[i];
    if (connection_specific(h->name) || (!st->grpc && strcmp(h->name, "content-length") == 0))
      continue; /* a scanned body may change length */
    size_t vlen = h->value_len;
    char *v = NULL;
    if (strcmp(h->name, ":path") == 0)
      v = sg_subst_target(&st->rq, h->value, h->value_len, &vlen);
    else if (h->name[0] != ':')
      v = sg_subst_header(&st->rq, h->name, h->name_len, h->value, h->value_len, &vlen);
    owned[n] = v;
    owned_len[n] = vlen;
    nv[n++] = (nghttp2_nv){(uint8_t *)h->name, (uint8_t *)(v ? v : h->value), h->name_len, vlen,
                           NGHTTP2_NV_FLAG_NONE};
  }
  st->reqbuf = st->reqbuf ? st->reqbuf : evbuffer_new();
  if (!st->grpc) {
    /* What arrived while waiting is scanned now, in order. */
    struct evbuffer *early = st->reqbuf;
    st->reqbuf = evbuffer_new();
    sg_scan_init(&st->scanner, sg_subst_lookup, &st->rq, to_reqbuf, st);
    size_t len = evbuffer_get_length(early);
    if (len > 0)
      sg_scan_feed(&st->scanner, (const char *)evbuffer_pullup(early, -1), len);
    evbuffer_free(early);
    if (st->req_ended)
      sg_scan_finish(&st->scanner);
  }
  nghttp2_data_provider dp = {.source.ptr = st, .read_callback = read_request};
  int32_t id = nghttp2_submit_request(
      t->us, NULL, nv, n,
      st->req_ended && evbuffer_get_length(st->reqbuf) == 0 && !st->grpc ? NULL : &dp, st);
  for (size_t i = 0; i < n; i++)
    sg_subst_free_text(owned[i], owned_len[i]);
  free(owned);
  free(owned_len);
  free(nv);
  if (id < 0) {
    refuse(st, 502, "cannot open an upstream stream");
    return;
  }
  st->uid = id;
}

static void on_view(void *arg, sg_view_status status, sg_view *view) {
  sg_h2_tunnel *t = arg;
  t->view_pending = 0;
  if (status == SG_VIEW_OK) {
    sg_view_unref(t->view);
    t->view = view;
  } else if (status == SG_VIEW_NOT_FOUND) {
    sg_view_unref(t->view);
    t->view = NULL;
  }
  stream *st = t->waiting;
  t->waiting = NULL;
  t->in_callback++;
  while (st != NULL) {
    stream *next = st->next_waiting;
    st->waiting = 0;
    if (!st->cli_closed)
      submit_upstream(st);
    stream_maybe_free(st);
    st = next;
  }
  t->in_callback--;
  flush(t);
}

static void request_ready(stream *st) {
  sg_h2_tunnel *t = st->t;
  if (t->view != NULL && !sg_view_fresh(t->view)) {
    st->waiting = 1;
    st->next_waiting = t->waiting;
    t->waiting = st;
    if (!t->view_pending) {
      t->view_pending = 1;
      sg_view *v = sg_view_get(t->view->sandbox_id, on_view, t);
      if (v != NULL) {
        /* A fresher one was in the cache: deliver it after this callback. */
        t->view_pending = 0;
        sg_view_unref(t->view);
        t->view = v;
        t->waiting = st->next_waiting;
        st->waiting = 0;
        submit_upstream(st);
      }
    }
    return;
  }
  submit_upstream(st);
}

/* --- The sandbox's session (server side) ----------------------------------------------- */

static int c_begin_headers(nghttp2_session *s, const nghttp2_frame *f, void *user) {
  sg_h2_tunnel *t = user;
  if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
    return 0;
  stream *st = sg_calloc(1, sizeof(*st));
  st->t = t;
  st->cid = f->hd.stream_id;
  st->next = t->streams;
  if (t->streams)
    t->streams->prev = st;
  t->streams = st;
  nghttp2_session_set_stream_user_data(s, st->cid, st);
  return 0;
}

static int c_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name, size_t nlen,
                    const uint8_t *value, size_t vlen, uint8_t flags, void *user) {
  (void)flags;
  (void)user;
  stream *st = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
  if (st == NULL || f->headers.cat != NGHTTP2_HCAT_REQUEST)
    return 0; /* request trailers are dropped */
  hdrs_add(&st->req, (const char *)name, nlen, (const char *)value, vlen);
  return 0;
}

static int c_frame_recv(nghttp2_session *s, const nghttp2_frame *f, void *user) {
  (void)user;
  stream *st = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
  if (st == NULL)
    return 0;
  int end = (f->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
  if (f->hd.type == NGHTTP2_HEADERS && f->headers.cat == NGHTTP2_HCAT_REQUEST) {
    st->req_ended = end;
    request_ready(st);
    return 0;
  }
  if ((f->hd.type == NGHTTP2_DATA || f->hd.type == NGHTTP2_HEADERS) && end)
    request_ended(st);
  return 0;
}

static int c_data(nghttp2_session *s, uint8_t flags, int32_t sid, const uint8_t *data, size_t len,
                  void *user) {
  (void)flags;
  (void)user;
  stream *st = nghttp2_session_get_stream_user_data(s, sid);
  if (st == NULL)
    return 0;
  if (st->reqbuf == NULL)
    st->reqbuf = evbuffer_new();
  request_data(st, data, len);
  return 0;
}

static int c_stream_close(nghttp2_session *s, int32_t sid, uint32_t code, void *user) {
  sg_h2_tunnel *t = user;
  stream *st = nghttp2_session_get_stream_user_data(s, sid);
  if (st == NULL)
    return 0;
  st->cli_closed = 1;
  if (st->uid > 0 && !st->up_closed)
    nghttp2_submit_rst_stream(t->us, NGHTTP2_FLAG_NONE, st->uid, code ? code : NGHTTP2_CANCEL);
  if (st->uid > 0 && !st->up_closed)
    return 0; /* freed when upstream's side closes */
  stream_maybe_free(st);
  return 0;
}

/* --- Upstream's session (client side) -------------------------------------------------- */

static int u_begin_headers(nghttp2_session *s, const nghttp2_frame *f, void *user) {
  (void)s;
  (void)f;
  (void)user;
  return 0;
}

static int u_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name, size_t nlen,
                    const uint8_t *value, size_t vlen, uint8_t flags, void *user) {
  (void)flags;
  (void)user;
  stream *st = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
  if (st == NULL)
    return 0;
  if (f->headers.cat == NGHTTP2_HCAT_HEADERS && st->resp_submitted)
    hdrs_add(&st->trailers, (const char *)name, nlen, (const char *)value, vlen);
  else
    hdrs_add(&st->resp, (const char *)name, nlen, (const char *)value, vlen);
  return 0;
}

/* Headers toward the sandbox: connection-specific ones dropped, echoed values put back as
 * tokens; the Content-Length too when the body may change. */
static void redact_headers(stream *st, hdrs *h, int drop_length) {
  size_t keep = 0;
  for (size_t i = 0; i < h->n; i++) {
    hdr *x = &h->v[i];
    if (connection_specific(x->name) || (drop_length && strcmp(x->name, "content-length") == 0)) {
      free(x->name);
      sg_subst_free_text(x->value, x->value_len);
      continue;
    }
    if (sg_redact_active(&st->rq.reflector) && x->name[0] != ':') {
      size_t n;
      char *r = sg_redact_all(&st->rq.reflector, x->value, x->value_len, &n, NULL);
      sg_subst_free_text(x->value, x->value_len);
      x->value = r;
      x->value_len = n;
    }
    h->v[keep++] = *x;
  }
  h->n = keep;
}

static void submit_response(stream *st) {
  sg_h2_tunnel *t = st->t;
  const hdr *status = hdrs_get(&st->resp, ":status");
  st->status = status != NULL ? atoi(status->value) : 0;
  const hdr *ce = hdrs_get(&st->resp, "content-encoding");
  const hdr *ct = hdrs_get(&st->resp, "content-type");
  int identity = ce == NULL || strcasecmp(ce->value, "identity") == 0;
  int grpc = ct != NULL && strncasecmp(ct->value, "application/grpc", 16) == 0;
  sg_subst_audit(&st->rq);
  st->respbuf = st->respbuf ? st->respbuf : evbuffer_new();
  int armed = sg_subst_arm_reflector(&st->rq, to_respbuf, st);
  st->redact_body = armed && identity && !grpc;
  redact_headers(st, &st->resp, st->redact_body);
  nghttp2_nv *nv = sg_calloc(st->resp.n ? st->resp.n : 1, sizeof(*nv));
  for (size_t i = 0; i < st->resp.n; i++)
    nv[i] = (nghttp2_nv){(uint8_t *)st->resp.v[i].name, (uint8_t *)st->resp.v[i].value,
                         st->resp.v[i].name_len, st->resp.v[i].value_len, NGHTTP2_NV_FLAG_NONE};
  nghttp2_data_provider dp = {.source.ptr = st, .read_callback = read_response};
  nghttp2_submit_response(t->cs, st->cid, nv, st->resp.n, &dp);
  free(nv);
  st->resp_submitted = 1;
}

static int u_frame_recv(nghttp2_session *s, const nghttp2_frame *f, void *user) {
  (void)user;
  stream *st = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
  if (st == NULL)
    return 0;
  int end = (f->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
  if (f->hd.type == NGHTTP2_HEADERS) {
    if (!st->resp_submitted) {
      const hdr *status = hdrs_get(&st->resp, ":status");
      if (status != NULL && status->value[0] == '1' && !end) {
        hdrs_free(&st->resp); /* an informational response: the final one follows */
        return 0;
      }
      submit_response(st);
    } else {
      redact_headers(st, &st->trailers, 0);
    }
  }
  if (end && (f->hd.type == NGHTTP2_HEADERS || f->hd.type == NGHTTP2_DATA)) {
    if (st->redact_body)
      sg_redact_finish(&st->rq.reflector);
    st->resp_ended = 1;
    nghttp2_session_resume_data(st->t->cs, st->cid);
  }
  return 0;
}

static int u_data(nghttp2_session *s, uint8_t flags, int32_t sid, const uint8_t *data, size_t len,
                  void *user) {
  (void)flags;
  (void)user;
  stream *st = nghttp2_session_get_stream_user_data(s, sid);
  if (st == NULL || !st->resp_submitted)
    return 0;
  if (st->redact_body)
    sg_redact_feed(&st->rq.reflector, (const char *)data, len);
  else
    evbuffer_add(st->respbuf, data, len);
  nghttp2_session_resume_data(st->t->cs, st->cid);
  return 0;
}

static int u_stream_close(nghttp2_session *s, int32_t sid, uint32_t code, void *user) {
  sg_h2_tunnel *t = user;
  stream *st = nghttp2_session_get_stream_user_data(s, sid);
  if (st == NULL)
    return 0;
  st->up_closed = 1;
  if (!st->cli_closed) {
    if (code != NGHTTP2_NO_ERROR || !st->resp_submitted) {
      if (!st->resp_submitted) {
        st->status = 502;
        st->refused = 1;
      }
      nghttp2_submit_rst_stream(t->cs, NGHTTP2_FLAG_NONE, st->cid,
                                code ? code : NGHTTP2_INTERNAL_ERROR);
    }
    return 0; /* freed when the sandbox's side closes */
  }
  stream_maybe_free(st);
  return 0;
}

/* --- I/O ------------------------------------------------------------------------------- */

/* Sends what both sessions have to send. Returns 0, or -1 if the tunnel has ended (|t| is
 * gone). */
static int flush(sg_h2_tunnel *t) {
  if (t->in_callback > 0)
    return 0;
  nghttp2_session *sessions[2] = {t->cs, t->us};
  struct bufferevent *bevs[2] = {t->cli, t->up};
  for (int round = 0; round < 2; round++)
    for (int i = 0; i < 2; i++) {
      const uint8_t *data;
      ssize_t n;
      struct evbuffer *out = bufferevent_get_output(bevs[i]);
      while ((n = nghttp2_session_mem_send(sessions[i], &data)) > 0)
        evbuffer_add(out, data, (size_t)n);
      if (n < 0) {
        tunnel_end(t);
        return -1;
      }
    }
  if (!nghttp2_session_want_read(t->cs) && !nghttp2_session_want_write(t->cs)) {
    tunnel_end(t);
    return -1;
  }
  return 0;
}

static void feed(sg_h2_tunnel *t, struct bufferevent *bev, nghttp2_session *s,
                 struct bufferevent *other) {
  struct evbuffer *in = bufferevent_get_input(bev);
  t->in_callback++;
  while (evbuffer_get_length(in) > 0) {
    struct evbuffer_iovec v;
    if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
      break;
    ssize_t n = nghttp2_session_mem_recv(s, v.iov_base, v.iov_len);
    if (n < 0) {
      /* A protocol error: nghttp2 has queued a GOAWAY; it goes if it can, then we close. */
      t->in_callback--;
      if (flush(t) == 0)
        tunnel_end(t);
      return;
    }
    evbuffer_drain(in, (size_t)n);
  }
  t->in_callback--;
  if (flush(t) != 0)
    return;
  if (evbuffer_get_length(bufferevent_get_output(other)) > H2_HIGH)
    bufferevent_disable(bev, EV_READ);
}

static void on_cli_read(struct bufferevent *bev, void *arg) {
  sg_h2_tunnel *t = arg;
  feed(t, bev, t->cs, t->up);
}

static void on_up_read(struct bufferevent *bev, void *arg) {
  sg_h2_tunnel *t = arg;
  feed(t, bev, t->us, t->cli);
}

static void on_cli_write(struct bufferevent *bev, void *arg) {
  (void)bev;
  sg_h2_tunnel *t = arg;
  bufferevent_enable(t->up, EV_READ);
}

static void on_up_write(struct bufferevent *bev, void *arg) {
  (void)bev;
  sg_h2_tunnel *t = arg;
  bufferevent_enable(t->cli, EV_READ);
}

static void on_event(struct bufferevent *bev, short what, void *arg) {
  (void)bev;
  (void)what;
  tunnel_end(arg);
}

static void tunnel_end(sg_h2_tunnel *t) {
  if (t->dead)
    return;
  t->dead = 1;
  void (*closed)(void *) = t->closed;
  void *arg = t->arg;
  sg_h2_tunnel_free(t);
  if (closed != NULL)
    closed(arg);
}

void sg_h2_tunnel_free(sg_h2_tunnel *t) {
  if (t == NULL)
    return;
  if (t->view_pending && t->view != NULL)
    sg_view_cancel(t->view->sandbox_id, t);
  /* nghttp2 calls no close callback when a session is deleted: the streams left go here. */
  nghttp2_session_del(t->us);
  nghttp2_session_del(t->cs);
  while (t->streams != NULL) {
    sg_subst_audit(&t->streams->rq);
    stream_free(t->streams);
  }
  bufferevent_free(t->cli);
  bufferevent_free(t->up);
  sg_view_unref(t->view);
  free(t);
}

static nghttp2_session *make_session(int server, sg_h2_tunnel *t) {
  nghttp2_session_callbacks *cbs;
  if (nghttp2_session_callbacks_new(&cbs) != 0)
    return NULL;
  nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, server ? c_begin_headers
                                                                      : u_begin_headers);
  nghttp2_session_callbacks_set_on_header_callback(cbs, server ? c_header : u_header);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, server ? c_frame_recv : u_frame_recv);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, server ? c_data : u_data);
  nghttp2_session_callbacks_set_on_stream_close_callback(cbs,
                                                         server ? c_stream_close : u_stream_close);
  nghttp2_option *opt;
  nghttp2_option_new(&opt);
  nghttp2_option_set_no_closed_streams(opt, 1);
  nghttp2_session *s = NULL;
  int rv = server ? nghttp2_session_server_new2(&s, cbs, t, opt)
                  : nghttp2_session_client_new2(&s, cbs, t, opt);
  nghttp2_option_del(opt);
  nghttp2_session_callbacks_del(cbs);
  if (rv != 0)
    return NULL;
  nghttp2_settings_entry settings[] = {{NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 100},
                                       {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20}};
  nghttp2_submit_settings(s, NGHTTP2_FLAG_NONE, settings, 2);
  return s;
}

sg_h2_tunnel *sg_h2_tunnel_start(const sg_h2_tunnel_options *o) {
  sg_h2_tunnel *t = sg_calloc(1, sizeof(*t));
  t->cs = make_session(1, t);
  t->us = make_session(0, t);
  if (t->cs == NULL || t->us == NULL) {
    if (t->cs)
      nghttp2_session_del(t->cs);
    if (t->us)
      nghttp2_session_del(t->us);
    free(t);
    return NULL;
  }
  t->cli = o->cli;
  t->up = o->up;
  t->view = o->view;
  snprintf(t->host, sizeof(t->host), "%s", o->host);
  t->port = o->port;
  t->withhold = o->withhold;
  snprintf(t->peer, sizeof(t->peer), "%s", o->peer);
  t->closed = o->closed;
  t->arg = o->arg;
  int64_t idle = o->idle_timeout_ms;
  struct timeval tv = {(time_t)(idle / 1000), (suseconds_t)(idle % 1000) * 1000};
  bufferevent_set_timeouts(t->cli, idle > 0 ? &tv : NULL, NULL);
  bufferevent_set_timeouts(t->up, NULL, NULL);
  bufferevent_setwatermark(t->cli, EV_WRITE, H2_LOW, 0);
  bufferevent_setwatermark(t->up, EV_WRITE, H2_LOW, 0);
  bufferevent_setwatermark(t->cli, EV_READ, 0, 0);
  bufferevent_setwatermark(t->up, EV_READ, 0, 0);
  bufferevent_setcb(t->cli, on_cli_read, on_cli_write, on_event, t);
  bufferevent_setcb(t->up, on_up_read, on_up_write, on_event, t);
  bufferevent_enable(t->cli, EV_READ | EV_WRITE);
  bufferevent_enable(t->up, EV_READ | EV_WRITE);
  flush(t);
  if (evbuffer_get_length(bufferevent_get_input(t->cli)) > 0)
    on_cli_read(t->cli, t);
  return t;
}
