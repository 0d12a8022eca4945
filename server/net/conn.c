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

#include "core/clock.h"
#include "core/list.h"
#include "core/log.h"
#include "core/mem.h"

/* Reads and writes go through these per-thread buffers; a connection only gets a buffer of
 * its own for bytes the socket would not take yet. */
#define SG_IO_BUF 65536
static _Thread_local uint8_t read_buf[SG_IO_BUF];
static _Thread_local uint8_t write_buf[SG_IO_BUF];

#define MS 1000000LL
/* After a shutdown notice, the final GOAWAY follows the client's PING answer, or this. */
#define SG_GOAWAY_FALLBACK_NS (1000 * MS)
/* After an idle GOAWAY, a client that neither closes nor lets it through is closed on. */
#define SG_CLOSE_AFTER_GOAWAY_NS (5000 * MS)
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
  int64_t started_ns;    /* accepted at: the handshake deadline counts from here */
  int64_t stalled_since; /* pending bytes last moved at (0: nothing pending) */
  int64_t goaway_ns;     /* shutdown notice or idle GOAWAY submitted at */
  int64_t timer_at;      /* the armed timer fires at (INT64_MAX: not armed) */
  unsigned handshaking : 1;
  unsigned draining : 1;    /* graceful shutdown under way */
  unsigned drain_final : 1; /* the final GOAWAY has been asked for */
  unsigned terminating : 1; /* idle GOAWAY sent: closing */
  unsigned flush_queued : 1;
  unsigned read_paused : 1;
  unsigned closed : 1;
  unsigned tls_read_wants_write : 1; /* SSL_read needs the socket writable first */
  unsigned tls_write_wants_read : 1; /* SSL_write needs the socket readable first */
  char peer[64];
  sg_list link;
} sg_conn;

/* The connections of this thread's loop. A thread-local cannot be initialized with its own
 * address, hence the lazy set-up. */
static _Thread_local sg_list conns;
static _Thread_local size_t n_conns;
static _Thread_local void (*drained_cb)(void *);
static _Thread_local void *drained_arg;

static sg_list *conn_list(void) {
  if (conns.next == NULL)
    sg_list_init(&conns);
  return &conns;
}

size_t sg_conn_count(void) {
  return n_conns;
}

static void conn_free(sg_conn *c) {
  sg_list_remove(&c->link);
  n_conns--;
  event_free(c->rev);
  event_free(c->wev);
  event_free(c->timer);
  sg_h2_free(c->h2); /* cancels open calls; their handlers may finish them later */
  if (c->ssl != NULL)
    SSL_free(c->ssl);
  /* Input left unread would make close() reset the connection, and a reset drops whatever
   * is still queued to the client: the GOAWAY that says why (ENHANCE_YOUR_CALM after a Rapid
   * Reset flood, say) would never arrive. Read what is there (bounded) so the close is a FIN
   * after our last bytes. */
  for (int i = 0; i < 16 && recv(c->fd, read_buf, sizeof(read_buf), MSG_DONTWAIT) > 0; i++)
    ;
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

/* --- Timers -------------------------------------------------------------------------------- */

/* The next moment something about |c| must be looked at, or INT64_MAX: the handshake deadline,
 * a stalled write, the GOAWAY fallbacks, the idle timeout. */
static int64_t next_check(const sg_conn *c) {
  const sg_conn_options *o = c->opts;
  if (c->handshaking)
    return c->started_ns + o->handshake_timeout_ms * MS;
  int64_t t = INT64_MAX;
  if (c->stalled_since != 0)
    t = c->stalled_since + o->write_timeout_ms * MS;
  if (c->draining && !c->drain_final && c->goaway_ns + SG_GOAWAY_FALLBACK_NS < t)
    t = c->goaway_ns + SG_GOAWAY_FALLBACK_NS;
  if (c->terminating && c->goaway_ns + SG_CLOSE_AFTER_GOAWAY_NS < t)
    t = c->goaway_ns + SG_CLOSE_AFTER_GOAWAY_NS;
  if (o->idle_timeout_ms > 0 && !c->terminating && !c->draining && sg_h2_open_streams(c->h2) == 0) {
    int64_t idle_at = sg_h2_last_activity(c->h2) + o->idle_timeout_ms * MS;
    if (idle_at < t)
      t = idle_at;
  }
  return t;
}

/* Arms the timer for the next check. Called after every event, so it must be cheap: when the
 * timer already fires sooner it is left alone (it fires early, finds nothing due, and
 * reschedules), which keeps timer-heap updates off the hot path. */
static void schedule(sg_conn *c) {
  if (c->closed)
    return;
  int64_t at = next_check(c);
  if (at >= c->timer_at)
    return;
  c->timer_at = at;
  int64_t delay = at - sg_now_ns();
  if (delay < 0)
    delay = 0;
  struct timeval tv = {(time_t)(delay / 1000000000), (suseconds_t)(delay % 1000000000 / 1000)};
  event_add(c->timer, &tv);
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
  case SSL_ERROR_WANT_WRITE: /* e.g. answering a TLS 1.3 KeyUpdate */
    c->tls_read_wants_write = 1;
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
  c->tls_write_wants_read = 0;
  int n = SSL_write(c->ssl, buf, (int)len);
  if (n > 0)
    return n;
  switch (SSL_get_error(c->ssl, n)) {
  case SSL_ERROR_WANT_WRITE:
    return 0;
  case SSL_ERROR_WANT_READ:
    c->tls_write_wants_read = 1;
    return 0;
  default:
    ERR_clear_error();
    return IO_ERROR;
  }
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

/* Writes |n| bytes or keeps what the socket refused. Returns the bytes written, or -1 on a
 * socket error. */
static ssize_t emit(sg_conn *c, const uint8_t *p, size_t n) {
  if (has_pending(c)) {
    keep_pending(c, p, n); /* order matters: never overtake bytes already waiting */
    return 0;
  }
  ssize_t w = io_write(c, p, n);
  if (w < 0)
    return -1;
  if ((size_t)w < n)
    keep_pending(c, p + w, n - (size_t)w);
  return w;
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
  ssize_t moved = 0, w;
  if (has_pending(c)) {
    if ((w = io_write(c, c->pending + c->pending_off, c->pending_len - c->pending_off)) < 0)
      goto fail;
    moved += w;
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
    if (len > 0) {
      if ((w = emit(c, write_buf, len)) < 0)
        goto fail;
      moved += w;
      len = 0;
    }
    if ((w = emit(c, data, (size_t)n)) < 0)
      goto fail;
    moved += w;
  }
  if (len > 0) {
    if ((w = emit(c, write_buf, len)) < 0)
      goto fail;
    moved += w;
  }
  if (has_pending(c))
    goto blocked;
  c->stalled_since = 0;
  if (!c->tls_read_wants_write)
    event_del(c->wev);
  resume_reading(c);
  if (sg_h2_done(c->h2))
    conn_close(c);
  return;
blocked:
  if (c->stalled_since == 0 || moved > 0)
    c->stalled_since = sg_now_ns();
  if (c->tls_write_wants_read) {
    resume_reading(c); /* TLS needs to read before it can write: writability would not help */
  } else {
    event_add(c->wev, NULL);
    pause_reading(c);
  }
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

static void conn_read(sg_conn *c) {
  int i;
  for (i = 0; i < SG_READS_PER_EVENT; i++) {
    ssize_t n = io_read(c, read_buf, sizeof(read_buf));
    if (n == IO_AGAIN)
      break;
    if (n <= 0) { /* EOF or error: the client is gone */
      conn_close(c);
      return;
    }
    int rv = sg_h2_recv(c->h2, read_buf, (size_t)n);
    /* nghttp2 and the calls took what they keep; the decrypted bytes (a SetSecret value, say)
     * are not left in the thread's buffer until the next read overwrites them. */
    explicit_bzero(read_buf, (size_t)n);
    if (rv != 0) {
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

static void on_readable(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  sg_conn *c = arg;
  if (c->handshaking)
    conn_handshake(c);
  else
    conn_read(c);
  schedule(c);
}

static void on_writable(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  sg_conn *c = arg;
  if (c->handshaking) {
    conn_handshake(c);
  } else if (c->tls_read_wants_write) {
    c->tls_read_wants_write = 0;
    conn_read(c); /* the read TLS put off, then the flush */
  } else {
    conn_flush(c);
  }
  schedule(c);
}

static void on_timer(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  sg_conn *c = arg;
  const sg_conn_options *o = c->opts;
  int64_t now = sg_now_ns();
  c->timer_at = INT64_MAX;
  if (c->handshaking) {
    if (now >= c->started_ns + o->handshake_timeout_ms * MS) {
      sg_logf(SG_LOG_DEBUG, "tls_handshake_timeout", "closing connection");
      conn_close(c);
      return;
    }
  } else if (c->stalled_since != 0 && now - c->stalled_since >= o->write_timeout_ms * MS) {
    sg_log_begin(SG_LOG_INFO, "write_timeout");
    sg_log_cstr("peer", c->peer);
    sg_log_cstr("detail", "client stopped reading; closing connection");
    sg_log_end();
    conn_close(c);
    return;
  } else if (c->terminating && now - c->goaway_ns >= SG_CLOSE_AFTER_GOAWAY_NS) {
    conn_close(c);
    return;
  } else if (c->draining && !c->drain_final && now - c->goaway_ns >= SG_GOAWAY_FALLBACK_NS) {
    c->drain_final = 1;
    sg_h2_shutdown(c->h2); /* the final GOAWAY, if the PING answer has not brought it */
  } else if (o->idle_timeout_ms > 0 && !c->terminating && !c->draining &&
             sg_h2_open_streams(c->h2) == 0 &&
             now - sg_h2_last_activity(c->h2) >= o->idle_timeout_ms * MS) {
    c->terminating = 1;
    c->goaway_ns = now;
    sg_h2_terminate(c->h2);
  }
  schedule(c);
}

static const sg_h2_hooks hooks = {.want_write = on_flush_soon};

void sg_conn_start(sg_loop *loop, int fd, const char *peer, const sg_conn_options *opts) {
  struct event_base *base = sg_loop_base(loop);
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  sg_conn *c = sg_calloc(1, sizeof(*c));
  c->fd = fd;
  c->opts = opts;
  c->started_ns = sg_now_ns();
  c->timer_at = INT64_MAX;
  snprintf(c->peer, sizeof(c->peer), "%s", peer);
  c->rev = event_new(base, fd, EV_READ | EV_PERSIST, on_readable, c);
  c->wev = event_new(base, fd, EV_WRITE | EV_PERSIST, on_writable, c);
  c->timer = event_new(base, -1, 0, on_timer, c);
  c->h2 = sg_h2_new(opts->h2, base, c->peer, &hooks, c);
  if (opts->tls != NULL) {
    c->ssl = sg_tls_source_ssl(opts->tls);
    if (c->ssl == NULL)
      sg_fatal("SSL_new failed");
    SSL_set_fd(c->ssl, fd);
    SSL_set_accept_state(c->ssl);
    c->handshaking = 1;
  }
  sg_list_push(conn_list(), &c->link);
  n_conns++;
  event_add(c->rev, NULL);
  if (!c->handshaking)
    conn_flush(c); /* our SETTINGS go first */
  schedule(c);
}

void sg_conn_drain_all(void (*drained)(void *), void *arg) {
  drained_cb = drained;
  drained_arg = arg;
  if (n_conns == 0) {
    drained_cb = NULL;
    drained(arg);
    return;
  }
  sg_list *pos, *tmp;
  sg_list_foreach_safe(pos, tmp, conn_list()) {
    sg_conn *c = SG_CONTAINER_OF(pos, sg_conn, link);
    if (c->closed || c->draining)
      continue;
    if (c->handshaking) {
      conn_close(c);
      continue;
    }
    c->draining = 1;
    c->goaway_ns = sg_now_ns();
    sg_h2_shutdown(c->h2);
    schedule(c);
  }
}

void sg_conn_close_all(void) {
  sg_list *pos, *tmp;
  sg_list_foreach_safe(pos, tmp, conn_list()) {
    conn_close(SG_CONTAINER_OF(pos, sg_conn, link));
  }
}
