#include "net/conn.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>
#include <openssl/err.h>

#include "core/log.h"
#include "core/mem.h"
#include "rpc/call_int.h"

/* Reads and writes go through these per-thread buffers; a connection only gets a buffer of
 * its own for bytes the socket would not take yet. */
#define SG_IO_BUF 65536
static _Thread_local uint8_t read_buf[SG_IO_BUF];
static _Thread_local uint8_t write_buf[SG_IO_BUF];

/* After a shutdown notice, the final GOAWAY follows the client's PING answer, or this. */
#define SG_GOAWAY_FALLBACK_MS 1000
/* Reads per readiness event before yielding to other connections. */
#define SG_READS_PER_EVENT 8

typedef struct sg_conn {
  int fd;
  SSL *ssl;
  sg_h2 *h2;
  const sg_conn_options *opts;
  struct event *rev, *wev, *timer;
  uint8_t *pending; /* bytes the socket did not take yet */
  size_t pending_len, pending_off;
  unsigned handshaking : 1;
  unsigned draining : 1;
  unsigned flush_queued : 1;
  unsigned read_paused : 1;
  unsigned closed : 1;
  char peer[64];
  struct sg_conn *prev, *next;
} sg_conn;

/* The connections of this thread's loop. */
static _Thread_local sg_conn *conns;
static _Thread_local size_t n_conns;
static _Thread_local void (*drained_cb)(void *);
static _Thread_local void *drained_arg;

size_t sg_conn_count(void) {
  return n_conns;
}

static void arm_timer(sg_conn *c, int64_t ms) {
  struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000 * 1000)};
  event_add(c->timer, &tv);
}

static void conn_free(sg_conn *c) {
  if (c->prev != NULL)
    c->prev->next = c->next;
  else
    conns = c->next;
  if (c->next != NULL)
    c->next->prev = c->prev;
  n_conns--;
  event_free(c->rev);
  event_free(c->wev);
  event_free(c->timer);
  sg_h2_free(c->h2); /* cancels open calls; their handlers may finish them later */
  if (c->ssl != NULL)
    SSL_free(c->ssl);
  close(c->fd);
  free(c->pending);
  free(c);
  if (n_conns == 0 && drained_cb != NULL) {
    void (*cb)(void *) = drained_cb;
    drained_cb = NULL;
    cb(drained_arg);
  }
}

/* Closing is deferred to a zero-timeout event so no caller up the stack (a handler, an
 * nghttp2 callback) ever touches a freed connection. */
static void on_close_now(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  conn_free(arg);
}

static void conn_close(sg_conn *c) {
  if (c->closed)
    return;
  c->closed = 1;
  event_del(c->rev);
  event_del(c->wev);
  event_del(c->timer);
  event_assign(c->timer, event_get_base(c->rev), -1, 0, on_close_now, c);
  event_active(c->timer, EV_TIMEOUT, 1);
}

/* --- Socket and TLS I/O -------------------------------------------------------------------- */

enum { IO_AGAIN = -1, IO_ERROR = -2 };

static ssize_t io_read(sg_conn *c, uint8_t *buf, size_t cap) {
  if (c->ssl == NULL) {
    ssize_t n = recv(c->fd, buf, cap, 0);
    if (n >= 0)
      return n;
    return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? IO_AGAIN : IO_ERROR;
  }
  int n = SSL_read(c->ssl, buf, (int)cap);
  if (n > 0)
    return n;
  switch (SSL_get_error(c->ssl, n)) {
  case SSL_ERROR_WANT_READ:
    return IO_AGAIN;
  case SSL_ERROR_WANT_WRITE:
    event_add(c->wev, NULL);
    return IO_AGAIN;
  case SSL_ERROR_ZERO_RETURN:
    return 0;
  default:
    ERR_clear_error();
    return IO_ERROR;
  }
}

/* Returns the bytes written (possibly fewer than |len|, 0 if the socket is full) or IO_ERROR. */
static ssize_t io_write(sg_conn *c, const uint8_t *buf, size_t len) {
  if (c->ssl == NULL) {
    ssize_t n = send(c->fd, buf, len, MSG_NOSIGNAL);
    if (n >= 0)
      return n;
    return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? 0 : IO_ERROR;
  }
  int n = SSL_write(c->ssl, buf, (int)len);
  if (n > 0)
    return n;
  int err = SSL_get_error(c->ssl, n);
  if (err == SSL_ERROR_WANT_WRITE || err == SSL_ERROR_WANT_READ)
    return 0;
  ERR_clear_error();
  return IO_ERROR;
}

static int has_pending(const sg_conn *c) {
  return c->pending_len > c->pending_off;
}

static void keep_pending(sg_conn *c, const uint8_t *p, size_t n) {
  if (c->pending_off > 0) {
    memmove(c->pending, c->pending + c->pending_off, c->pending_len - c->pending_off);
    c->pending_len -= c->pending_off;
    c->pending_off = 0;
  }
  c->pending = sg_realloc(c->pending, c->pending_len + n);
  memcpy(c->pending + c->pending_len, p, n);
  c->pending_len += n;
}

/* Writes |n| bytes or keeps what the socket refused. Returns 1 if all went out, 0 if some
 * wait in pending, -1 on a socket error. */
static int emit(sg_conn *c, const uint8_t *p, size_t n) {
  if (has_pending(c)) {
    keep_pending(c, p, n); /* order matters: never overtake bytes already waiting */
    return 0;
  }
  ssize_t w = io_write(c, p, n);
  if (w < 0)
    return -1;
  if ((size_t)w < n) {
    keep_pending(c, p + w, n - (size_t)w);
    return 0;
  }
  return 1;
}

static void pause_reading(sg_conn *c) {
  if (!c->read_paused) {
    c->read_paused = 1;
    event_del(c->rev);
  }
}

static void resume_reading(sg_conn *c) {
  if (c->read_paused) {
    c->read_paused = 0;
    event_add(c->rev, NULL);
  }
}

/* Sends whatever the session has, in batches of up to SG_IO_BUF bytes per write. While the
 * socket is full nothing more is pulled and nothing more is read: backpressure reaches the
 * client through TCP. */
static void conn_flush(sg_conn *c) {
  c->flush_queued = 0;
  if (c->closed || c->handshaking)
    return;
  if (has_pending(c)) {
    ssize_t w = io_write(c, c->pending + c->pending_off, c->pending_len - c->pending_off);
    if (w < 0)
      goto fail;
    c->pending_off += (size_t)w;
    if (has_pending(c))
      goto blocked;
    free(c->pending);
    c->pending = NULL;
    c->pending_len = c->pending_off = 0;
  }
  size_t len = 0;
  while (!has_pending(c)) {
    const uint8_t *data;
    ssize_t n = sg_h2_pull(c->h2, &data);
    if (n < 0)
      goto fail;
    if (n == 0)
      break;
    if ((size_t)n <= SG_IO_BUF - len) {
      memcpy(write_buf + len, data, (size_t)n);
      len += (size_t)n;
      continue;
    }
    if (len > 0 && emit(c, write_buf, len) < 0)
      goto fail;
    len = 0;
    if (emit(c, data, (size_t)n) < 0)
      goto fail;
  }
  if (len > 0 && emit(c, write_buf, len) < 0)
    goto fail;
  if (has_pending(c))
    goto blocked;
  event_del(c->wev);
  resume_reading(c);
  if (sg_h2_done(c->h2))
    conn_close(c);
  return;
blocked:
  event_add(c->wev, NULL);
  pause_reading(c);
  return;
fail:
  conn_close(c);
}

static void on_flush_soon(void *arg) {
  sg_conn *c = arg;
  if (!c->flush_queued && !c->closed) {
    c->flush_queued = 1;
    event_active(c->wev, EV_WRITE, 1);
  }
}

/* --- Events -------------------------------------------------------------------------------- */

static void start_timer(sg_conn *c);

static void conn_handshake(sg_conn *c) {
  ERR_clear_error();
  int rv = SSL_do_handshake(c->ssl);
  if (rv == 1) {
    const unsigned char *alpn = NULL;
    unsigned alpn_len = 0;
    SSL_get0_alpn_selected(c->ssl, &alpn, &alpn_len);
    if (alpn_len != 2 || memcmp(alpn, "h2", 2) != 0) {
      sg_logf(SG_LOG_DEBUG, "tls_handshake", "client did not negotiate h2");
      conn_close(c);
      return;
    }
    c->handshaking = 0;
    event_del(c->wev);
    start_timer(c);
    conn_flush(c);
    event_active(c->rev, EV_READ, 1); /* TLS may hold application data already */
    return;
  }
  switch (SSL_get_error(c->ssl, rv)) {
  case SSL_ERROR_WANT_READ:
    event_del(c->wev);
    return;
  case SSL_ERROR_WANT_WRITE:
    event_add(c->wev, NULL);
    return;
  default:
    if (sg_log_enabled(SG_LOG_DEBUG)) {
      char detail[160];
      ERR_error_string_n(ERR_peek_error(), detail, sizeof(detail));
      sg_log_begin(SG_LOG_DEBUG, "tls_handshake_failed");
      sg_log_cstr("peer", c->peer);
      sg_log_cstr("error", detail);
      sg_log_end();
    }
    ERR_clear_error();
    conn_close(c);
  }
}

static void on_readable(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  sg_conn *c = arg;
  if (c->handshaking) {
    conn_handshake(c);
    return;
  }
  int i;
  for (i = 0; i < SG_READS_PER_EVENT; i++) {
    ssize_t n = io_read(c, read_buf, sizeof(read_buf));
    if (n == IO_AGAIN)
      break;
    if (n <= 0) { /* EOF or error: the client is gone */
      conn_close(c);
      return;
    }
    if (sg_h2_recv(c->h2, read_buf, (size_t)n) != 0) {
      conn_flush(c); /* nghttp2 may have queued a GOAWAY worth sending */
      conn_close(c);
      return;
    }
    if (c->read_paused || c->closed)
      break;
    /* A short plain read means the socket is drained: skip the read that would only say
     * EAGAIN (epoll is level-triggered and will call again). TLS may hold more. */
    if (c->ssl == NULL && (size_t)n < sizeof(read_buf))
      break;
  }
  /* Yielded with bytes left inside TLS, which epoll cannot see: come back. */
  if (i == SG_READS_PER_EVENT && c->ssl != NULL && SSL_pending(c->ssl) > 0)
    event_active(c->rev, EV_READ, 1);
  conn_flush(c);
}

static void on_writable(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  sg_conn *c = arg;
  if (c->handshaking)
    conn_handshake(c);
  else
    conn_flush(c);
}

static void on_timer(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  sg_conn *c = arg;
  if (c->handshaking) {
    sg_logf(SG_LOG_DEBUG, "tls_handshake_timeout", "closing connection");
    conn_close(c);
    return;
  }
  if (c->draining) {
    sg_h2_shutdown(c->h2); /* the final GOAWAY, if the PING answer has not brought it */
    return;
  }
  int64_t idle_ns = c->opts->idle_timeout_ms * 1000000;
  int64_t quiet = sg_now_ns() - sg_h2_last_activity(c->h2);
  if (sg_h2_open_streams(c->h2) == 0 && quiet >= idle_ns) {
    sg_h2_terminate(c->h2);
    return;
  }
  arm_timer(c, quiet >= idle_ns ? c->opts->idle_timeout_ms : (idle_ns - quiet) / 1000000 + 1);
}

static void start_timer(sg_conn *c) {
  if (c->handshaking)
    arm_timer(c, c->opts->handshake_timeout_ms);
  else if (c->draining)
    arm_timer(c, SG_GOAWAY_FALLBACK_MS);
  else if (c->opts->idle_timeout_ms > 0)
    arm_timer(c, c->opts->idle_timeout_ms);
}

static const sg_h2_hooks hooks = {.want_write = on_flush_soon};

void sg_conn_start(sg_loop *loop, int fd, const char *peer, const sg_conn_options *opts) {
  struct event_base *base = sg_loop_base(loop);
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  sg_conn *c = sg_calloc(1, sizeof(*c));
  c->fd = fd;
  c->opts = opts;
  snprintf(c->peer, sizeof(c->peer), "%s", peer);
  c->rev = event_new(base, fd, EV_READ | EV_PERSIST, on_readable, c);
  c->wev = event_new(base, fd, EV_WRITE | EV_PERSIST, on_writable, c);
  c->timer = event_new(base, -1, 0, on_timer, c);
  c->h2 = sg_h2_new(opts->h2, base, c->peer, &hooks, c);
  if (opts->tls != NULL) {
    c->ssl = SSL_new(opts->tls);
    if (c->ssl == NULL)
      sg_fatal("SSL_new failed");
    SSL_set_fd(c->ssl, fd);
    SSL_set_accept_state(c->ssl);
    c->handshaking = 1;
  }
  c->next = conns;
  if (conns != NULL)
    conns->prev = c;
  conns = c;
  n_conns++;
  event_add(c->rev, NULL);
  start_timer(c);
  if (!c->handshaking)
    conn_flush(c); /* our SETTINGS go first */
}

void sg_conn_drain_all(void (*drained)(void *), void *arg) {
  drained_cb = drained;
  drained_arg = arg;
  if (n_conns == 0) {
    drained_cb = NULL;
    drained(arg);
    return;
  }
  for (sg_conn *c = conns; c != NULL; c = c->next) {
    if (c->closed || c->draining)
      continue;
    if (c->handshaking) {
      conn_close(c);
      continue;
    }
    c->draining = 1;
    sg_h2_shutdown(c->h2);
    start_timer(c);
  }
}

void sg_conn_close_all(void) {
  for (sg_conn *c = conns; c != NULL; c = c->next)
    conn_close(c);
}
