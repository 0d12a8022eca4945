/* The client channel (include/sealgate/channel.h): one HTTP/2 connection, driven by an I/O
 * thread with poll(2), carrying the calls of any number of user threads.
 *
 * Lifetimes. A call has two references: its user thread's and, once queued, the I/O thread's,
 * dropped right after the call is marked done. So a user thread that gives up early (deadline,
 * sg_stream_free) sets `cancel`, wakes the I/O thread and lets go without waiting for it, and
 * the I/O thread never touches freed memory. Every call holds a reference to its channel, as
 * does the channel's handle (sg_channel_free) and a running name resolution: the channel's
 * memory outlives the last of them.
 *
 * Synchronization. The channel's lock guards only what both sides touch: the submit queue, the
 * I/O thread's sleeping flag, and a stream's received messages. Everything else the I/O thread
 * owns and uses without a lock (connections, sessions, calls in flight), so user threads never
 * wait for its socket and HTTP/2 work. A finished call is published with a release store of
 * `done` followed by a post of the call's semaphore, which is all its thread waits on: one
 * futex wait and one wake per call.
 *
 * Names are resolved on a short-lived thread of their own, so that a slow DNS server stalls
 * neither the calls on other connections nor deadlines; every address is tried in turn. */
#include "sealgate/channel.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <poll.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <nghttp2/nghttp2.h>
#include <openssl/err.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>

#include "core/list.h"
#include "core/mem.h"
#include "rpc/b64.h"
#include "rpc/compress.h"
#include "rpc/frame.h"
#include "rpc/pct.h"
#include "rpc/timeout.h"

#ifndef SG_VERSION
#define SG_VERSION "dev"
#endif

#define IO_BUF              65536
#define MAX_RESPONSE_BYTES  (64u << 20) /* one response message at most */
#define TRANSPARENT_RETRIES 3           /* a stream the server refused before it began */
#define RETRY_BASE_MS       100
#define RETRY_CAP_MS        5000
#define FLUSH_BATCH         65536 /* bytes gathered from nghttp2 before one write */

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* One message received on a stream, waiting for the user thread. */
typedef struct msg {
  struct msg *next;
  size_t len;
  uint8_t data[];
} msg;

typedef enum { CANCEL_NONE, CANCEL_DEADLINE, CANCEL_USER } cancel_reason;

typedef struct conn conn;

typedef struct call {
  sg_list link; /* in the channel's submit queue, or its connection's active list */
  int refs;     /* atomic: the user thread's, and the I/O thread's while it is queued or runs */
  sg_channel *ch;
  conn *cn; /* the connection carrying its stream, once it has one */
  char *path;
  uint8_t *req; /* message header + request */
  size_t req_len, req_off;
  nghttp2_nv *nva;
  size_t n_nva;
  char timeout_text[SG_TIMEOUT_MAX_LEN + 1];
  int64_t deadline; /* monotonic ns, INT64_MAX for none */
  int32_t stream_id;
  int refused; /* times the server refused the stream before processing it */
  int cancel;  /* a cancel_reason; atomic: set by the user thread, read by the I/O thread */
  /* What came back. */
  int http_status;
  int grpc_status; /* -1 until a grpc-status header arrives */
  char grpc_message[512];
  sg_encoding encoding;
  sg_frame_decoder dec;
  msg *head, *tail; /* received messages not yet taken */
  size_t n_msgs;
  int decode_error; /* INTERNAL: a message did not decode */
  /* Outcome. */
  int streaming; /* a server-streaming call: its reader waits for each message */
  int done;      /* atomic: 1 once |status| is final and the I/O thread is done with the call */
  sg_status status;
  sem_t wakeup; /* posted when the call is done, and for each message of a stream */
} call;

typedef enum {
  CONN_DOWN,
  CONN_RESOLVING,
  CONN_CONNECTING,
  CONN_HANDSHAKING,
  CONN_READY,
  CONN_DRAINING
} conn_state;

/* A name being resolved by a thread of its own. */
typedef struct resolve_job {
  int refs; /* atomic: the resolver thread's and the connection's */
  sg_channel *ch;
  int done; /* under the channel's lock, with error and addrs */
  int error;
  struct addrinfo *addrs;
} resolve_job;

/* One HTTP/2 connection. The channel sends new calls on its current connection; one that the
 * server sent GOAWAY moves to the draining list, where the calls it carries run to their end
 * while new calls go out on a fresh connection. I/O thread only. */
typedef struct conn {
  sg_list link; /* in the channel's draining list */
  sg_channel *ch;
  conn_state state;
  int fd;
  SSL *ssl;
  nghttp2_session *session;
  sg_list active; /* calls with a stream on this connection */
  int64_t connect_deadline;
  resolve_job *job;                   /* CONN_RESOLVING */
  struct addrinfo *addrs, *next_addr; /* to connect to, in turn */
  char connect_error[128];            /* why the last address failed */
  int handshake_wants_write;          /* TLS: SSL_connect waits to write */
  uint8_t *pending;                   /* bytes the socket did not take yet */
  size_t pending_len, pending_off;
  int want_read_for_write; /* TLS: SSL_write needs a read first */
  int want_write_for_read; /* TLS: SSL_read needs a write first */
  char tls_error[128];     /* why the last TLS read or write failed */
  short revents;           /* from the last poll */
} conn;

struct sg_channel {
  int refs; /* atomic: the handle's, each call's, each running resolution's */
  char host[256], port[16], authority[280], server_name[256];
  char *api_key;
  int tls;
  SSL_CTX *ssl_ctx;
  int64_t connect_timeout_ns;

  pthread_t thread;
  int wake_fd;
  pthread_mutex_t lock;
  sg_list submit; /* queued by user threads, not yet given to nghttp2 */
  int stopping;
  int io_sleeping; /* the I/O thread is in poll(2) (or about to be) */
  int wake_sent;   /* the eventfd was written since it last read it */

  /* I/O thread only. */
  conn *cur;
  sg_list draining;
};

/* --- Completing calls ---------------------------------------------------------------------- */

static void set_status(sg_status *st, int code, const char *msg_text) {
  st->code = code;
  snprintf(st->message, sizeof(st->message), "%s", msg_text ? msg_text : "");
}

static int cancel_of(const call *c) {
  return __atomic_load_n(&c->cancel, __ATOMIC_ACQUIRE);
}

static int is_done(const call *c) {
  return __atomic_load_n(&c->done, __ATOMIC_ACQUIRE);
}

/* Marks |c| done with |code|, takes it off whatever list holds it (the caller holds the lock if
 * that is the submit queue), wakes its thread and drops the I/O thread's reference. */
static void call_unref(call *c);

static void finish(call *c, int code, const char *text) {
  if (c->done)
    return;
  sg_list_remove(&c->link);
  set_status(&c->status, code, text);
  __atomic_store_n(&c->done, 1, __ATOMIC_RELEASE);
  sem_post(&c->wakeup);
  call_unref(c); /* the I/O thread's reference: its last touch */
}

/* The status a finished stream earned, from its trailers, its HTTP status or how it ended
 * (PROTOCOL-HTTP2.md, and http-grpc-status-mapping.md for a missing grpc-status). */
static void finish_from_stream(call *c, uint32_t error_code) {
  int cancel = cancel_of(c);
  if (cancel == CANCEL_DEADLINE) {
    finish(c, SG_STATUS_DEADLINE_EXCEEDED, "deadline exceeded");
  } else if (cancel == CANCEL_USER) {
    finish(c, SG_STATUS_CANCELLED, "cancelled");
  } else if (c->decode_error) {
    finish(c, SG_STATUS_INTERNAL, c->grpc_message);
  } else if (c->grpc_status >= 0) {
    finish(c, c->grpc_status, c->grpc_message);
  } else if (error_code == NGHTTP2_REFUSED_STREAM) {
    finish(c, SG_STATUS_UNAVAILABLE, "the server refused the stream");
  } else if (error_code == NGHTTP2_CANCEL) {
    finish(c, SG_STATUS_CANCELLED, "the server cancelled the call");
  } else if (error_code == NGHTTP2_ENHANCE_YOUR_CALM) {
    finish(c, SG_STATUS_RESOURCE_EXHAUSTED, "the server said to enhance our calm");
  } else if (error_code == NGHTTP2_INADEQUATE_SECURITY) {
    finish(c, SG_STATUS_PERMISSION_DENIED, "the server found the connection's security inadequate");
  } else if (c->http_status != 0 && c->http_status != 200) {
    char text[96];
    int code;
    switch (c->http_status) {
    case 400:
      code = SG_STATUS_INTERNAL;
      break;
    case 401:
      code = SG_STATUS_UNAUTHENTICATED;
      break;
    case 403:
      code = SG_STATUS_PERMISSION_DENIED;
      break;
    case 404:
      code = SG_STATUS_UNIMPLEMENTED;
      break;
    case 429:
    case 502:
    case 503:
    case 504:
      code = SG_STATUS_UNAVAILABLE;
      break;
    default:
      code = SG_STATUS_UNKNOWN;
    }
    snprintf(text, sizeof(text), "HTTP status %d without a gRPC status", c->http_status);
    finish(c, code, text);
  } else {
    finish(c, SG_STATUS_INTERNAL, "the stream ended without a gRPC status");
  }
}

static void free_msgs(call *c) {
  while (c->head != NULL) {
    msg *next = c->head->next;
    free(c->head);
    c->head = next;
  }
  c->tail = NULL;
  c->n_msgs = 0;
}

/* --- nghttp2 callbacks (user data: the conn) ----------------------------------------------- */

static call *stream_call(nghttp2_session *s, int32_t id) {
  return nghttp2_session_get_stream_user_data(s, id);
}

static int name_is(const uint8_t *name, size_t len, const char *lit) {
  return strlen(lit) == len && memcmp(name, lit, len) == 0;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name, size_t nlen,
                     const uint8_t *value, size_t vlen, uint8_t flags, void *ud) {
  (void)flags;
  (void)ud;
  call *c = stream_call(s, f->hd.stream_id);
  if (c == NULL || f->hd.type != NGHTTP2_HEADERS)
    return 0;
  char text[16];
  if (name_is(name, nlen, ":status") && vlen < sizeof(text)) {
    memcpy(text, value, vlen);
    text[vlen] = '\0';
    c->http_status = atoi(text);
  } else if (name_is(name, nlen, "grpc-status")) {
    /* Digits only; a code outside 0..16, or no number at all, is UNKNOWN. */
    int code = vlen > 0 && vlen < 4 ? 0 : -1;
    for (size_t i = 0; code >= 0 && i < vlen; i++)
      code = value[i] >= '0' && value[i] <= '9' ? code * 10 + (value[i] - '0') : -1;
    c->grpc_status = code >= 0 && code <= 16 ? code : SG_STATUS_UNKNOWN;
  } else if (name_is(name, nlen, "grpc-message")) {
    /* Decoded whole (it only shrinks), then cut to fit, so that no %XX is split. */
    char *plain = sg_malloc(vlen + 1);
    size_t n = sg_pct_decode((const char *)value, vlen, plain);
    plain[n] = '\0';
    snprintf(c->grpc_message, sizeof(c->grpc_message), "%s", plain);
    free(plain);
  } else if (name_is(name, nlen, "grpc-encoding")) {
    c->encoding = sg_encoding_parse((const char *)value, vlen);
  }
  return 0;
}

static int keep_message(void *ud, int compressed, const uint8_t *data, size_t len) {
  call *c = ud;
  uint8_t *plain = NULL;
  if (compressed) {
    size_t plain_len;
    if (c->encoding == SG_ENCODING_IDENTITY || c->encoding == SG_ENCODING_UNSUPPORTED ||
        sg_decompress(c->encoding, data, len, MAX_RESPONSE_BYTES, &plain, &plain_len) != 0) {
      c->decode_error = 1;
      snprintf(c->grpc_message, sizeof(c->grpc_message), "could not decompress the response");
      return SG_FRAME_ERR_STOPPED;
    }
    data = plain;
    len = plain_len;
  }
  msg *m = sg_malloc(sizeof(*m) + len);
  m->next = NULL;
  m->len = len;
  memcpy(m->data, data, len);
  free(plain);
  /* A stream's reader takes messages while the call runs; a unary call's only once it is done. */
  if (c->streaming)
    pthread_mutex_lock(&c->ch->lock);
  if (c->tail)
    c->tail->next = m;
  else
    c->head = m;
  c->tail = m;
  c->n_msgs++;
  if (c->streaming) {
    pthread_mutex_unlock(&c->ch->lock);
    sem_post(&c->wakeup);
  }
  return 0;
}

static int on_data(nghttp2_session *s, uint8_t flags, int32_t id, const uint8_t *data, size_t len,
                   void *ud) {
  (void)flags;
  (void)ud;
  call *c = stream_call(s, id);
  if (c == NULL || c->decode_error)
    return 0;
  int rv = sg_frame_decoder_feed(&c->dec, data, len, keep_message, c);
  if (rv == SG_FRAME_ERR_TOO_LARGE || rv == SG_FRAME_ERR_BAD_FLAG) {
    c->decode_error = 1;
    snprintf(c->grpc_message, sizeof(c->grpc_message), "malformed or oversized response message");
  }
  if (c->decode_error)
    nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, id, NGHTTP2_CANCEL);
  return 0;
}

static void requeue(sg_channel *ch, call *c);

static int on_stream_close(nghttp2_session *s, int32_t id, uint32_t error_code, void *ud) {
  conn *cn = ud;
  call *c = stream_call(s, id);
  if (c == NULL)
    return 0;
  nghttp2_session_set_stream_user_data(s, id, NULL);
  /* Refused before the server began it (REFUSED_STREAM, or above a GOAWAY's last stream):
   * nothing happened, so it may go again, on a new connection if this one is going away. */
  if (error_code == NGHTTP2_REFUSED_STREAM && c->grpc_status < 0 && c->http_status == 0 &&
      cancel_of(c) == CANCEL_NONE && c->refused < TRANSPARENT_RETRIES) {
    c->refused++;
    requeue(cn->ch, c);
    return 0;
  }
  if (!c->decode_error && c->grpc_status >= 0 && sg_frame_decoder_finish(&c->dec) != 0) {
    c->decode_error = 1;
    snprintf(c->grpc_message, sizeof(c->grpc_message), "response stream ended inside a message");
  }
  finish_from_stream(c, error_code);
  return 0;
}

static ssize_t read_request(nghttp2_session *s, int32_t id, uint8_t *buf, size_t length,
                            uint32_t *flags, nghttp2_data_source *src, void *ud) {
  (void)s;
  (void)id;
  (void)ud;
  call *c = src->ptr;
  size_t n = c->req_len - c->req_off;
  if (n > length)
    n = length;
  memcpy(buf, c->req + c->req_off, n);
  c->req_off += n;
  if (c->req_off == c->req_len)
    *flags |= NGHTTP2_DATA_FLAG_EOF;
  return (ssize_t)n;
}

static nghttp2_session_callbacks *callbacks;
static pthread_once_t callbacks_once = PTHREAD_ONCE_INIT;

static void make_callbacks(void) {
  if (nghttp2_session_callbacks_new(&callbacks) != 0)
    sg_fatal("nghttp2_session_callbacks_new failed");
  nghttp2_session_callbacks_set_on_header_callback(callbacks, on_header);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks, on_data);
  nghttp2_session_callbacks_set_on_stream_close_callback(callbacks, on_stream_close);
}

/* --- Connection ---------------------------------------------------------------------------- */

static conn *conn_new(sg_channel *ch) {
  conn *cn = sg_calloc(1, sizeof(*cn));
  sg_list_init(&cn->link);
  sg_list_init(&cn->active);
  cn->ch = ch;
  cn->fd = -1;
  cn->state = CONN_DOWN;
  return cn;
}

/* Fails the calls in flight on a lost connection (they may have run on the server). */
static void fail_active(conn *cn, const char *why) {
  char text[512];
  snprintf(text, sizeof(text), "connection to %s lost: %.200s", cn->ch->authority, why);
  while (!sg_list_empty(&cn->active))
    finish(SG_CONTAINER_OF(cn->active.next, call, link), SG_STATUS_UNAVAILABLE, text);
}

/* Fails the calls waiting for a connection that could not be made. */
static void fail_queued(sg_channel *ch, const char *why) {
  char text[512];
  snprintf(text, sizeof(text), "cannot connect to %s: %.200s", ch->authority, why);
  pthread_mutex_lock(&ch->lock);
  while (!sg_list_empty(&ch->submit))
    finish(SG_CONTAINER_OF(ch->submit.next, call, link), SG_STATUS_UNAVAILABLE, text);
  pthread_mutex_unlock(&ch->lock);
}

static void job_unref(resolve_job *j) {
  if (j == NULL || __atomic_sub_fetch(&j->refs, 1, __ATOMIC_ACQ_REL) != 0)
    return;
  if (j->addrs != NULL)
    freeaddrinfo(j->addrs);
  free(j);
}

static void conn_close(conn *cn) {
  job_unref(cn->job);
  cn->job = NULL;
  if (cn->addrs != NULL)
    freeaddrinfo(cn->addrs);
  cn->addrs = cn->next_addr = NULL;
  cn->handshake_wants_write = 0;
  if (cn->session != NULL) {
    /* Its calls are finished or failed first: nghttp2_session_del calls no callbacks. */
    nghttp2_session_del(cn->session);
    cn->session = NULL;
  }
  if (cn->ssl != NULL) {
    SSL_free(cn->ssl);
    cn->ssl = NULL;
  }
  if (cn->fd >= 0)
    close(cn->fd);
  cn->fd = -1;
  free(cn->pending);
  cn->pending = NULL;
  cn->pending_len = cn->pending_off = 0;
  cn->want_read_for_write = cn->want_write_for_read = 0;
  cn->state = CONN_DOWN;
}

/* Closes |cn| after a failure: its calls end UNAVAILABLE, and so do the queued ones when the
 * connection never came up (they were waiting for it). */
static void conn_lost(conn *cn, const char *why) {
  if (cn->session == NULL && cn == cn->ch->cur)
    fail_queued(cn->ch, why);
  fail_active(cn, why);
  conn_close(cn);
}

/* Starts a non-blocking connect to the next address; when none is left, the connection is
 * lost with the last address's error. */
static void connect_next(conn *cn) {
  while (cn->next_addr != NULL) {
    struct addrinfo *ai = cn->next_addr;
    cn->next_addr = ai->ai_next;
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd >= 0 && (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0 || errno == EINPROGRESS)) {
      int one = 1;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
      cn->fd = fd;
      cn->state = CONN_CONNECTING;
      return;
    }
    snprintf(cn->connect_error, sizeof(cn->connect_error), "%s", strerror(errno));
    if (fd >= 0)
      close(fd);
  }
  conn_lost(cn, cn->connect_error[0] ? cn->connect_error : "no address to connect to");
}

static void channel_unref(sg_channel *ch);
static void wake(sg_channel *ch);

static void *resolve_main(void *arg) {
  resolve_job *j = arg;
  sg_channel *ch = j->ch;
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
  int rv = getaddrinfo(ch->host, ch->port, &hints, &res);
  pthread_mutex_lock(&ch->lock);
  j->error = rv;
  j->addrs = rv == 0 ? res : NULL;
  j->done = 1;
  pthread_mutex_unlock(&ch->lock);
  wake(ch);
  job_unref(j);
  channel_unref(ch);
  return NULL;
}

static void conn_start(conn *cn) {
  sg_channel *ch = cn->ch;
  cn->connect_deadline = now_ns() + ch->connect_timeout_ns;
  cn->connect_error[0] = '\0';
  struct addrinfo hints = {.ai_family = AF_UNSPEC,
                           .ai_socktype = SOCK_STREAM,
                           .ai_flags = AI_NUMERICHOST},
                  *res;
  if (getaddrinfo(ch->host, ch->port, &hints, &res) == 0) { /* an address: no lookup */
    cn->addrs = cn->next_addr = res;
    connect_next(cn);
    return;
  }
  resolve_job *j = sg_calloc(1, sizeof(*j));
  j->refs = 2;
  j->ch = ch;
  __atomic_add_fetch(&ch->refs, 1, __ATOMIC_RELAXED);
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_t t;
  if (pthread_create(&t, &attr, resolve_main, j) != 0)
    resolve_main(j); /* no thread to be had: resolve here */
  pthread_attr_destroy(&attr);
  cn->job = j;
  cn->state = CONN_RESOLVING;
}

/* The resolver thread finished: connect to what it found. */
static void resolved(conn *cn) {
  sg_channel *ch = cn->ch;
  pthread_mutex_lock(&ch->lock);
  int done = cn->job->done;
  pthread_mutex_unlock(&ch->lock);
  if (!done)
    return;
  resolve_job *j = cn->job;
  cn->job = NULL;
  if (j->error != 0) {
    char why[160];
    snprintf(why, sizeof(why), "name resolution failed: %s", gai_strerror(j->error));
    job_unref(j);
    conn_lost(cn, why);
    return;
  }
  cn->addrs = cn->next_addr = j->addrs;
  j->addrs = NULL;
  job_unref(j);
  connect_next(cn);
}

static void session_start(conn *cn) {
  pthread_once(&callbacks_once, make_callbacks);
  if (nghttp2_session_client_new(&cn->session, callbacks, cn) != 0)
    sg_fatal("nghttp2_session_client_new failed");
  nghttp2_settings_entry settings[] = {{NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
                                       {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20}};
  nghttp2_submit_settings(cn->session, NGHTTP2_FLAG_NONE, settings, 2);
  nghttp2_session_set_local_window_size(cn->session, NGHTTP2_FLAG_NONE, 0, 4 << 20);
  cn->state = CONN_READY;
}

static void tls_step(conn *cn) {
  ERR_clear_error();
  int rv = SSL_connect(cn->ssl);
  if (rv == 1) {
    const unsigned char *alpn;
    unsigned alpn_len;
    SSL_get0_alpn_selected(cn->ssl, &alpn, &alpn_len);
    if (alpn_len != 2 || memcmp(alpn, "h2", 2) != 0) {
      conn_lost(cn, "the server did not agree to HTTP/2 (ALPN h2)");
      return;
    }
    session_start(cn);
    return;
  }
  int err = SSL_get_error(cn->ssl, rv);
  if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
    cn->handshake_wants_write = err == SSL_ERROR_WANT_WRITE;
    return;
  }
  char why[160];
  long verify = SSL_get_verify_result(cn->ssl);
  if (verify != X509_V_OK)
    snprintf(why, sizeof(why), "TLS: the server's certificate did not verify (%s)",
             X509_verify_cert_error_string(verify));
  else
    snprintf(why, sizeof(why), "TLS handshake failed: %s",
             ERR_reason_error_string(ERR_peek_error()) ? ERR_reason_error_string(ERR_peek_error())
                                                       : "connection closed");
  conn_lost(cn, why);
}

static void connected(conn *cn) {
  sg_channel *ch = cn->ch;
  int err = 0;
  socklen_t len = sizeof(err);
  getsockopt(cn->fd, SOL_SOCKET, SO_ERROR, &err, &len);
  if (err != 0) { /* this address failed: the next one */
    snprintf(cn->connect_error, sizeof(cn->connect_error), "%s", strerror(err));
    close(cn->fd);
    cn->fd = -1;
    connect_next(cn);
    return;
  }
  if (!ch->tls) {
    session_start(cn);
    return;
  }
  cn->ssl = SSL_new(ch->ssl_ctx);
  SSL_set_fd(cn->ssl, cn->fd);
  struct in6_addr ip;
  if (inet_pton(AF_INET, ch->server_name, &ip) != 1 &&
      inet_pton(AF_INET6, ch->server_name, &ip) != 1)
    SSL_set_tlsext_host_name(cn->ssl, ch->server_name); /* SNI names hosts, never addresses */
  SSL_set1_host(cn->ssl, ch->server_name); /* the certificate must name this host (or IP) */
  SSL_set_connect_state(cn->ssl);
  cn->state = CONN_HANDSHAKING;
  tls_step(cn);
}

/* --- Socket I/O ---------------------------------------------------------------------------- */

/* Keeps OpenSSL's reason for a failed TLS read or write (e.g. the server's alert when it wants a
 * client certificate) for the message the calls end with. */
static void note_tls_error(conn *cn) {
  const char *why = ERR_reason_error_string(ERR_peek_error());
  snprintf(cn->tls_error, sizeof(cn->tls_error), "%s", why ? why : "");
}

/* > 0 bytes, 0 EOF, -1 would block, -2 error */
static ssize_t sock_read(conn *cn, uint8_t *buf, size_t cap) {
  if (cn->ssl == NULL) {
    ssize_t n = recv(cn->fd, buf, cap, 0);
    if (n >= 0)
      return n;
    return errno == EAGAIN || errno == EINTR ? -1 : -2;
  }
  ERR_clear_error();
  int n = SSL_read(cn->ssl, buf, (int)cap);
  if (n > 0)
    return n;
  int err = SSL_get_error(cn->ssl, n);
  note_tls_error(cn);
  if (err == SSL_ERROR_WANT_READ)
    return -1;
  if (err == SSL_ERROR_WANT_WRITE) {
    cn->want_write_for_read = 1;
    return -1;
  }
  return err == SSL_ERROR_ZERO_RETURN ? 0 : -2;
}

/* bytes written (0: would block), or -1 on error */
static ssize_t sock_write(conn *cn, const uint8_t *buf, size_t len) {
  if (cn->ssl == NULL) {
    ssize_t n = send(cn->fd, buf, len, MSG_NOSIGNAL);
    if (n >= 0)
      return n;
    return errno == EAGAIN || errno == EINTR ? 0 : -1;
  }
  cn->want_read_for_write = 0;
  ERR_clear_error();
  int n = SSL_write(cn->ssl, buf, (int)len);
  if (n > 0)
    return n;
  int err = SSL_get_error(cn->ssl, n);
  note_tls_error(cn);
  if (err == SSL_ERROR_WANT_WRITE)
    return 0;
  if (err == SSL_ERROR_WANT_READ) {
    cn->want_read_for_write = 1;
    return 0;
  }
  return -1;
}

static void keep(conn *cn, const uint8_t *p, size_t n) {
  if (cn->pending_off > 0) {
    memmove(cn->pending, cn->pending + cn->pending_off, cn->pending_len - cn->pending_off);
    cn->pending_len -= cn->pending_off;
    cn->pending_off = 0;
  }
  cn->pending = sg_realloc(cn->pending, cn->pending_len + n);
  memcpy(cn->pending + cn->pending_len, p, n);
  cn->pending_len += n;
}

/* Sends what nghttp2 has, gathered into one write per FLUSH_BATCH bytes. Returns 0, or -1 after
 * losing the connection. */
static int flush_out(conn *cn) {
  for (;;) {
    if (cn->pending_len > cn->pending_off) {
      ssize_t w = sock_write(cn, cn->pending + cn->pending_off, cn->pending_len - cn->pending_off);
      if (w < 0 && cn->ssl != NULL && cn->tls_error[0] == '\0') {
        uint8_t alert[256]; /* the server's TLS alert may be waiting: it says why */
        sock_read(cn, alert, sizeof(alert));
      }
      if (w < 0) {
        char why[256];
        snprintf(why, sizeof(why), "write failed%s%s", cn->tls_error[0] ? ": TLS: " : "",
                 cn->tls_error);
        conn_lost(cn, why);
        return -1;
      }
      cn->pending_off += (size_t)w;
      if (cn->pending_off < cn->pending_len)
        return 0; /* the socket is full: poll says when to go on */
      cn->pending_len = cn->pending_off = 0;
    }
    const uint8_t *data;
    ssize_t n = 0;
    while (cn->pending_len < FLUSH_BATCH && (n = nghttp2_session_mem_send(cn->session, &data)) > 0)
      keep(cn, data, (size_t)n);
    if (n < 0) {
      conn_lost(cn, "HTTP/2 error");
      return -1;
    }
    if (cn->pending_len == 0)
      return 0;
  }
}

/* Reads what the socket has and feeds it to nghttp2. Returns 0, or -1 after losing the
 * connection. */
static int read_in(conn *cn) {
  static _Thread_local uint8_t buf[IO_BUF];
  for (;;) {
    ssize_t n = sock_read(cn, buf, sizeof(buf));
    if (n == -1)
      return 0;
    if (n == 0 || n == -2) {
      char why[256];
      snprintf(why, sizeof(why), "%s%s%s",
               n == 0 ? "the server closed the connection" : "read failed",
               cn->tls_error[0] ? ": TLS: " : "", cn->tls_error);
      conn_lost(cn, why);
      return -1;
    }
    if (nghttp2_session_mem_recv(cn->session, buf, (size_t)n) < 0) {
      conn_lost(cn, "HTTP/2 protocol error");
      return -1;
    }
    /* A short read emptied the socket (poll reports more); TLS may hold decrypted bytes. */
    if ((size_t)n < sizeof(buf) && (cn->ssl == NULL || SSL_pending(cn->ssl) == 0))
      return 0;
  }
}

/* --- Submitting ---------------------------------------------------------------------------- */

static void requeue(sg_channel *ch, call *c) {
  sg_list_remove(&c->link);
  c->cn = NULL;
  c->stream_id = 0;
  c->req_off = 0;
  c->http_status = 0;
  c->grpc_status = -1;
  c->grpc_message[0] = '\0';
  sg_frame_decoder_free(&c->dec);
  sg_frame_decoder_init(&c->dec, MAX_RESPONSE_BYTES);
  free_msgs(c);
  pthread_mutex_lock(&ch->lock);
  sg_list_push(&ch->submit, &c->link); /* at the front: it was first */
  pthread_mutex_unlock(&ch->lock);
}

static void submit_one(conn *cn, call *c) {
  /* grpc-timeout carries what is left of the deadline. */
  if (c->deadline != INT64_MAX) {
    int64_t left = c->deadline - now_ns();
    sg_timeout_format(left > 0 ? left : 1, c->timeout_text);
    for (size_t i = 0; i < c->n_nva; i++)
      if (c->nva[i].namelen == 12 && memcmp(c->nva[i].name, "grpc-timeout", 12) == 0)
        c->nva[i].valuelen = strlen(c->timeout_text);
  }
  nghttp2_data_provider prd = {.source.ptr = c, .read_callback = read_request};
  int32_t id = nghttp2_submit_request(cn->session, NULL, c->nva, c->n_nva, &prd, c);
  if (id == NGHTTP2_ERR_STREAM_ID_NOT_AVAILABLE) {
    /* This connection has used up its stream ids: the call goes on the next one. */
    cn->state = CONN_DRAINING;
    requeue(cn->ch, c);
    return;
  }
  if (id < 0) {
    finish(c, SG_STATUS_INTERNAL, "could not start the HTTP/2 stream");
    return;
  }
  c->stream_id = id;
  c->cn = cn;
  sg_list_remove(&c->link);
  sg_list_push(cn->active.prev, &c->link);
}

/* Ends the calls in |list| whose deadline passed or whose thread gave up. */
static void sweep_list(sg_list *list, int64_t now) {
  sg_list *pos, *tmp;
  sg_list_foreach_safe(pos, tmp, list) {
    call *c = SG_CONTAINER_OF(pos, call, link);
    if (c->deadline <= now) {
      int none = CANCEL_NONE;
      __atomic_compare_exchange_n(&c->cancel, &none, CANCEL_DEADLINE, 0, __ATOMIC_ACQ_REL,
                                  __ATOMIC_ACQUIRE);
    }
    if (cancel_of(c) == CANCEL_NONE)
      continue;
    if (c->cn != NULL && c->cn->session != NULL) {
      nghttp2_session_set_stream_user_data(c->cn->session, c->stream_id, NULL);
      nghttp2_submit_rst_stream(c->cn->session, NGHTTP2_FLAG_NONE, c->stream_id, NGHTTP2_CANCEL);
    }
    finish_from_stream(c, NGHTTP2_CANCEL);
  }
}

/* --- The I/O thread ------------------------------------------------------------------------ */

static int64_t earliest_deadline(sg_list *list, int64_t t) {
  for (sg_list *pos = list->next; pos != list; pos = pos->next) {
    call *c = SG_CONTAINER_OF(pos, call, link);
    if (c->deadline < t)
      t = c->deadline;
  }
  return t;
}

static int64_t next_wakeup(sg_channel *ch) {
  int64_t t = earliest_deadline(&ch->submit, INT64_MAX);
  t = earliest_deadline(&ch->cur->active, t);
  for (sg_list *pos = ch->draining.next; pos != &ch->draining; pos = pos->next)
    t = earliest_deadline(&SG_CONTAINER_OF(pos, conn, link)->active, t);
  conn *cn = ch->cur;
  if ((cn->state == CONN_RESOLVING || cn->state == CONN_CONNECTING ||
       cn->state == CONN_HANDSHAKING) &&
      cn->connect_deadline < t)
    t = cn->connect_deadline;
  return t;
}

/* Drives one connection after a poll. */
static void conn_step(conn *cn, int64_t now) {
  short revents = cn->revents;
  cn->revents = 0;
  if ((cn->state == CONN_RESOLVING || cn->state == CONN_CONNECTING ||
       cn->state == CONN_HANDSHAKING) &&
      now >= cn->connect_deadline) {
    conn_lost(cn,
              cn->state == CONN_RESOLVING ? "name resolution timed out" : "connection timed out");
    return;
  }
  if (cn->state == CONN_RESOLVING)
    resolved(cn);
  else if (cn->state == CONN_CONNECTING && (revents & (POLLOUT | POLLERR | POLLHUP)))
    connected(cn);
  else if (cn->state == CONN_HANDSHAKING && revents != 0)
    tls_step(cn);
  if (cn->state != CONN_READY && cn->state != CONN_DRAINING)
    return;
  if (revents & (POLLIN | POLLHUP | POLLERR) || cn->want_read_for_write ||
      (cn->want_write_for_read && (revents & POLLOUT))) {
    cn->want_write_for_read = 0;
    if (read_in(cn) != 0)
      return;
  }
  if (cn->state == CONN_READY && nghttp2_session_check_request_allowed(cn->session) == 0)
    cn->state = CONN_DRAINING; /* GOAWAY received: this connection takes no new calls */
  sg_channel *ch = cn->ch;
  if (cn == ch->cur && cn->state == CONN_READY) {
    /* Take the whole queue at once; the streams start without the lock. */
    sg_list batch;
    sg_list_init(&batch);
    pthread_mutex_lock(&ch->lock);
    if (!sg_list_empty(&ch->submit)) {
      batch.next = ch->submit.next;
      batch.prev = ch->submit.prev;
      batch.next->prev = &batch;
      batch.prev->next = &batch;
      sg_list_init(&ch->submit);
    }
    pthread_mutex_unlock(&ch->lock);
    while (!sg_list_empty(&batch))
      submit_one(cn, SG_CONTAINER_OF(batch.next, call, link));
  }
  if (flush_out(cn) != 0)
    return;
  int idle = cn->state == CONN_DRAINING && sg_list_empty(&cn->active);
  if (cn->pending_len == 0 && (idle || (!nghttp2_session_want_read(cn->session) &&
                                        !nghttp2_session_want_write(cn->session)))) {
    fail_active(cn, "the server ended the connection");
    conn_close(cn);
  }
}

static void step(sg_channel *ch) {
  int64_t now = now_ns();
  pthread_mutex_lock(&ch->lock);
  sweep_list(&ch->submit, now);
  pthread_mutex_unlock(&ch->lock);
  sweep_list(&ch->cur->active, now);
  sg_list *pos, *tmp;
  sg_list_foreach_safe(pos, tmp, &ch->draining) {
    conn *cn = SG_CONTAINER_OF(pos, conn, link);
    sweep_list(&cn->active, now);
    conn_step(cn, now);
    if (cn->state == CONN_DOWN) {
      sg_list_remove(&cn->link);
      free(cn);
    }
  }
  conn_step(ch->cur, now);
  if (ch->cur->state == CONN_DRAINING) {
    /* Its calls finish there; new ones go out on a new connection. */
    sg_list_push(ch->draining.prev, &ch->cur->link);
    ch->cur = conn_new(ch);
  }
  pthread_mutex_lock(&ch->lock);
  int queued = !sg_list_empty(&ch->submit);
  pthread_mutex_unlock(&ch->lock);
  if (ch->cur->state == CONN_DOWN && queued)
    conn_start(ch->cur);
}

static void poll_add(conn *cn, struct pollfd *fds, conn **owners, size_t *n) {
  if (cn->fd < 0)
    return;
  short ev = POLLIN;
  if (cn->state == CONN_CONNECTING || cn->handshake_wants_write ||
      cn->pending_len > cn->pending_off || cn->want_write_for_read ||
      (cn->session != NULL && nghttp2_session_want_write(cn->session)))
    ev |= POLLOUT;
  fds[*n] = (struct pollfd){cn->fd, ev, 0};
  owners[(*n)++] = cn;
}

/* The poll set: the wake-up eventfd, then each connection with a socket. */
static size_t poll_set(sg_channel *ch, struct pollfd **fds, conn ***owners, size_t *cap) {
  size_t n = 1, want = 2;
  for (sg_list *pos = ch->draining.next; pos != &ch->draining; pos = pos->next)
    want++;
  if (want > *cap) {
    *fds = sg_realloc(*fds, want * sizeof(**fds));
    *owners = sg_realloc(*owners, want * sizeof(**owners));
    *cap = want;
  }
  (*fds)[0] = (struct pollfd){ch->wake_fd, POLLIN, 0};
  poll_add(ch->cur, *fds, *owners, &n);
  for (sg_list *pos = ch->draining.next; pos != &ch->draining; pos = pos->next)
    poll_add(SG_CONTAINER_OF(pos, conn, link), *fds, *owners, &n);
  return n;
}

static void *io_main(void *arg) {
  sg_channel *ch = arg;
  /* Signals are the application's threads' business, not this one's (nor its resolver
   * threads', which inherit the mask). SIGPIPE in particular: SSL_write writes to the socket
   * with write(2), and a peer that went away must give EPIPE, not kill the process; a blocked
   * SIGPIPE raised by this thread stays pending here forever. */
  sigset_t all;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, NULL);
  struct pollfd *fds = NULL;
  conn **owners = NULL;
  size_t cap = 0;
  pthread_mutex_lock(&ch->lock);
  while (!ch->stopping) {
    pthread_mutex_unlock(&ch->lock);
    step(ch);
    size_t nfds = poll_set(ch, &fds, &owners, &cap);
    pthread_mutex_lock(&ch->lock);
    int64_t wake = next_wakeup(ch), now = now_ns();
    int timeout = wake == INT64_MAX ? -1 : wake <= now ? 0 : (int)((wake - now) / 1000000 + 1);
    /* Calls queued during the step (nobody woke us: we were not asleep) go out, or get a
     * connection, before any sleep. */
    if (!sg_list_empty(&ch->submit) &&
        (ch->cur->state == CONN_READY || ch->cur->state == CONN_DOWN))
      timeout = 0;
    ch->io_sleeping = 1;
    pthread_mutex_unlock(&ch->lock);
    int n = poll(fds, (nfds_t)nfds, timeout);
    pthread_mutex_lock(&ch->lock);
    ch->io_sleeping = 0;
    if (n > 0 && (fds[0].revents & POLLIN)) {
      uint64_t v;
      if (read(ch->wake_fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
        sg_fatal("eventfd read failed");
      ch->wake_sent = 0;
    }
    for (size_t i = 1; n > 0 && i < nfds; i++)
      owners[i]->revents = fds[i].revents;
  }
  free(fds);
  free(owners);
  /* Closing: everything still waiting ends CANCELLED. */
  while (!sg_list_empty(&ch->draining)) {
    conn *cn = SG_CONTAINER_OF(ch->draining.next, conn, link);
    sg_list_remove(&cn->link);
    while (!sg_list_empty(&cn->active))
      finish(SG_CONTAINER_OF(cn->active.next, call, link), SG_STATUS_CANCELLED, "channel closed");
    conn_close(cn);
    free(cn);
  }
  while (!sg_list_empty(&ch->cur->active))
    finish(SG_CONTAINER_OF(ch->cur->active.next, call, link), SG_STATUS_CANCELLED,
           "channel closed");
  while (!sg_list_empty(&ch->submit))
    finish(SG_CONTAINER_OF(ch->submit.next, call, link), SG_STATUS_CANCELLED, "channel closed");
  conn_close(ch->cur);
  free(ch->cur);
  ch->cur = NULL;
  pthread_mutex_unlock(&ch->lock);
  return NULL;
}

static void wake(sg_channel *ch) {
  uint64_t one = 1;
  if (write(ch->wake_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
    sg_fatal("eventfd write failed");
}

/* --- Channel ------------------------------------------------------------------------------- */

static int split_target(sg_channel *ch, const char *target) {
  const char *host = target, *colon;
  size_t hlen;
  if (target[0] == '[') {
    const char *close = strchr(target, ']');
    if (close == NULL || close[1] != ':')
      return -1;
    host = target + 1;
    hlen = (size_t)(close - host);
    colon = close + 1;
  } else {
    colon = strchr(target, ':');
    if (colon == NULL || strchr(colon + 1, ':') != NULL) /* "::1:50051": brackets needed */
      return -1;
    hlen = (size_t)(colon - target);
  }
  size_t plen = strlen(colon + 1);
  if (hlen == 0 || hlen >= sizeof(ch->host) || plen == 0 || plen >= sizeof(ch->port) ||
      strspn(colon + 1, "0123456789") != plen)
    return -1;
  memcpy(ch->host, host, hlen);
  ch->host[hlen] = '\0';
  memcpy(ch->port, colon + 1, plen + 1);
  snprintf(ch->authority, sizeof(ch->authority), "%s", target);
  return 0;
}

static const char *env_or(const char *value, const char *name) {
  if (value != NULL)
    return value;
  const char *e = getenv(name);
  return e != NULL && e[0] != '\0' ? e : NULL;
}

static SSL_CTX *client_tls(const sg_channel_options *o, const char *ca, char *err, size_t errlen) {
  SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
  if (ctx == NULL)
    return NULL;
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
  static const unsigned char alpn[] = {2, 'h', '2'};
  SSL_CTX_set_alpn_protos(ctx, alpn, sizeof(alpn));
  SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                            SSL_MODE_RELEASE_BUFFERS);
  const char *what = NULL, *file = NULL;
  if (ca != NULL ? SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1
                 : SSL_CTX_set_default_verify_paths(ctx) != 1)
    what = "cannot load the CA bundle", file = ca ? ca : "(system)";
  else if (o->tls_cert_file != NULL &&
           (SSL_CTX_use_certificate_chain_file(ctx, o->tls_cert_file) != 1 ||
            o->tls_key_file == NULL ||
            SSL_CTX_use_PrivateKey_file(ctx, o->tls_key_file, SSL_FILETYPE_PEM) != 1 ||
            SSL_CTX_check_private_key(ctx) != 1))
    what = "cannot use the client certificate and key", file = o->tls_cert_file;
  if (what != NULL) {
    snprintf(err, errlen, "%s %s", what, file);
    ERR_clear_error();
    SSL_CTX_free(ctx);
    return NULL;
  }
  return ctx;
}

sg_channel *sg_channel_new(const sg_channel_options *options, char *err, size_t errlen) {
  sg_channel_options none = {0}; /* everything from the environment */
  const sg_channel_options *o = options ? options : &none;
  sg_channel *ch = sg_calloc(1, sizeof(*ch));
  const char *target = env_or(o->target, "SEALGATE_ADDR");
  if (split_target(ch, target ? target : "127.0.0.1:50051") != 0) {
    snprintf(err, errlen, "target \"%.100s\" is not HOST:PORT (an IPv6 address in brackets)",
             target);
    free(ch);
    return NULL;
  }
  const char *ca = env_or(o->tls_ca_file, "SEALGATE_TLS_CA");
  const char *tls_env = getenv("SEALGATE_TLS");
  ch->tls = o->tls == SG_TLS_ON    ? 1
            : o->tls == SG_TLS_OFF ? 0
                                   : ca != NULL || (tls_env && strcmp(tls_env, "1") == 0);
  snprintf(ch->server_name, sizeof(ch->server_name), "%s",
           o->tls_server_name ? o->tls_server_name : ch->host);
  if (ch->tls && (ch->ssl_ctx = client_tls(o, ca, err, errlen)) == NULL) {
    free(ch);
    return NULL;
  }
  const char *key = env_or(o->api_key, "SEALGATE_API_KEY");
  ch->api_key = key ? sg_strdup(key) : NULL;
  ch->connect_timeout_ns = (o->connect_timeout_ms > 0 ? o->connect_timeout_ms : 10000) * 1000000;
  sg_list_init(&ch->submit);
  sg_list_init(&ch->draining);
  ch->cur = conn_new(ch);
  ch->refs = 1;
  pthread_mutex_init(&ch->lock, NULL);
  ch->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (ch->wake_fd < 0 || pthread_create(&ch->thread, NULL, io_main, ch) != 0)
    sg_fatal("cannot start the channel's I/O thread");
  return ch;
}

static void channel_unref(sg_channel *ch) {
  if (__atomic_sub_fetch(&ch->refs, 1, __ATOMIC_ACQ_REL) != 0)
    return;
  close(ch->wake_fd);
  pthread_mutex_destroy(&ch->lock);
  if (ch->ssl_ctx)
    SSL_CTX_free(ch->ssl_ctx);
  if (ch->api_key) {
    OPENSSL_cleanse(ch->api_key, strlen(ch->api_key));
    free(ch->api_key);
  }
  free(ch);
}

void sg_channel_free(sg_channel *ch) {
  if (ch == NULL)
    return;
  pthread_mutex_lock(&ch->lock);
  ch->stopping = 1;
  pthread_mutex_unlock(&ch->lock);
  wake(ch);
  pthread_join(ch->thread, NULL); /* every call queued or running is CANCELLED now */
  channel_unref(ch);
}

/* --- Calls --------------------------------------------------------------------------------- */

#define NV(n, v, vl)                                                                               \
  ((nghttp2_nv){(uint8_t *)(n), (uint8_t *)(v), strlen(n), (vl), NGHTTP2_NV_FLAG_NONE})

/* Builds a call: request bytes and headers. The header values live in |c| or in memory the
 * call owns until it is freed. */
static call *call_new(sg_channel *ch, const char *path, const ProtobufCMessage *req,
                      const sg_call_options *o, int64_t deadline) {
  call *c = sg_calloc(1, sizeof(*c));
  sg_list_init(&c->link);
  c->refs = 1;
  c->ch = ch;
  __atomic_add_fetch(&ch->refs, 1, __ATOMIC_RELAXED);
  c->path = sg_strdup(path);
  c->deadline = deadline;
  c->grpc_status = -1;
  sem_init(&c->wakeup, 0, 0);
  sg_frame_decoder_init(&c->dec, MAX_RESPONSE_BYTES);
  size_t len = protobuf_c_message_get_packed_size(req);
  c->req = sg_malloc(SG_FRAME_HEADER_LEN + len);
  sg_frame_header_write(c->req, 0, (uint32_t)len);
  protobuf_c_message_pack(req, c->req + SG_FRAME_HEADER_LEN);
  c->req_len = SG_FRAME_HEADER_LEN + len;
  size_t n_md = o ? o->n_metadata : 0;
  c->nva = sg_calloc(10 + n_md, sizeof(nghttp2_nv));
  nghttp2_nv *nv = c->nva;
  size_t n = 0;
  nv[n++] = NV(":method", "POST", 4);
  nv[n++] = NV(":scheme", ch->tls ? "https" : "http", ch->tls ? 5 : 4);
  nv[n++] = NV(":path", c->path, strlen(c->path));
  nv[n++] = NV(":authority", ch->authority, strlen(ch->authority));
  nv[n++] = NV("te", "trailers", 8);
  nv[n++] = NV("content-type", "application/grpc", 16);
  nv[n++] = NV("user-agent", "grpc-c-sealgate/" SG_VERSION, strlen("grpc-c-sealgate/" SG_VERSION));
  nv[n++] = NV("grpc-accept-encoding", SG_ACCEPT_ENCODINGS, strlen(SG_ACCEPT_ENCODINGS));
  if (deadline != INT64_MAX)
    nv[n++] = NV("grpc-timeout", c->timeout_text, 0); /* filled in when the call goes out */
  const char *key = o && o->api_key ? o->api_key : ch->api_key;
  if (key != NULL) {
    size_t klen = strlen(key);
    char *auth = sg_malloc(klen + 7);
    memcpy(auth, "Bearer ", 7);
    memcpy(auth + 7, key, klen);
    nv[n++] = NV("authorization", auth, klen + 7);
  }
  for (size_t i = 0; i < n_md; i++) {
    const sg_metadata_entry *m = &o->metadata[i];
    size_t nlen = strlen(m->name);
    if (nlen > 4 && strcmp(m->name + nlen - 4, "-bin") == 0) {
      char *enc = sg_malloc(SG_B64_ENCODED_CAP(m->len));
      size_t elen = sg_b64_encode(m->value, m->len, enc);
      nv[n++] = NV(m->name, enc, elen);
    } else {
      char *copy = sg_malloc(m->len + 1);
      memcpy(copy, m->value, m->len);
      nv[n++] = NV(m->name, copy, m->len);
    }
  }
  c->n_nva = n;
  return c;
}

static void call_unref(call *c) {
  if (__atomic_sub_fetch(&c->refs, 1, __ATOMIC_ACQ_REL) != 0)
    return;
  sg_channel *ch = c->ch;
  /* Header values this call allocated: authorization and metadata (after the fixed ones). */
  for (size_t i = 8; i < c->n_nva; i++) {
    if (c->nva[i].value == (uint8_t *)c->timeout_text)
      continue;
    if (c->nva[i].namelen == 13 && memcmp(c->nva[i].name, "authorization", 13) == 0)
      OPENSSL_cleanse(c->nva[i].value, c->nva[i].valuelen);
    free(c->nva[i].value);
  }
  free(c->nva);
  OPENSSL_cleanse(c->req, c->req_len); /* a SetSecret request carries a secret value */
  free(c->req);
  free_msgs(c);
  sg_frame_decoder_free(&c->dec);
  sem_destroy(&c->wakeup);
  free(c->path);
  free(c);
  channel_unref(ch);
}

/* Queues |c| for the I/O thread, waking it only if it sleeps and no wake-up is on its way: a
 * busy I/O thread takes the queue before it sleeps again. */
static void start(sg_channel *ch, call *c) {
  pthread_mutex_lock(&ch->lock);
  if (ch->stopping) { /* sg_channel_free was called: nothing goes out any more */
    pthread_mutex_unlock(&ch->lock);
    set_status(&c->status, SG_STATUS_CANCELLED, "channel closed");
    __atomic_store_n(&c->done, 1, __ATOMIC_RELEASE);
    return;
  }
  c->refs++; /* the I/O thread's; nobody else holds the call yet */
  sg_list_push(ch->submit.prev, &c->link);
  int nudge = ch->io_sleeping && !ch->wake_sent;
  if (nudge)
    ch->wake_sent = 1;
  pthread_mutex_unlock(&ch->lock);
  if (nudge)
    wake(ch);
}

/* Asks the I/O thread to end |c| (it marks it done at its next step). */
static void cancel_call(sg_channel *ch, call *c, int reason) {
  int none = CANCEL_NONE;
  __atomic_compare_exchange_n(&c->cancel, &none, reason, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
  wake(ch);
}

/* Waits for a post of |c|'s semaphore. Returns 0, or -1 when the call's deadline passed first:
 * then the I/O thread is asked to end the call, and the caller goes on without waiting for it
 * (so a deadline holds even when the I/O thread is held up). */
static int wait_post(sg_channel *ch, call *c) {
  if (c->deadline == INT64_MAX) {
    while (sem_wait(&c->wakeup) != 0)
      ; /* EINTR */
    return 0;
  }
  struct timespec ts = {(time_t)(c->deadline / 1000000000), (long)(c->deadline % 1000000000)};
  while (sem_clockwait(&c->wakeup, CLOCK_MONOTONIC, &ts) != 0) {
    if (errno == ETIMEDOUT) {
      cancel_call(ch, c, CANCEL_DEADLINE);
      return -1;
    }
  }
  return 0;
}

/* Waits until |c| is done: 0, or -1 when its deadline passed first. */
static int wait_done(sg_channel *ch, call *c) {
  while (!is_done(c))
    if (wait_post(ch, c) != 0)
      return -1;
  return 0;
}

/* Metadata a call may send: lower-case token names that are not reserved by gRPC or HTTP/2,
 * printable ASCII values (any bytes for "-bin" names). */
static int check_metadata(const sg_call_options *o, sg_status *status) {
  static const char *reserved[] = {
      "te",           "content-type",  "user-agent",           "authorization",
      "grpc-timeout", "grpc-encoding", "grpc-accept-encoding", "host",
      "connection",   "keep-alive",    "proxy-connection",     "transfer-encoding",
      "upgrade"};
  for (size_t i = 0; o != NULL && i < o->n_metadata; i++) {
    const sg_metadata_entry *m = &o->metadata[i];
    const char *why = NULL;
    size_t nlen = m->name ? strlen(m->name) : 0;
    if (nlen == 0 || strspn(m->name, "abcdefghijklmnopqrstuvwxyz0123456789-_.") != nlen)
      why = "is not a lower-case metadata name";
    else if (strncmp(m->name, "grpc-", 5) == 0)
      why = "is reserved by gRPC";
    for (size_t r = 0; why == NULL && r < sizeof(reserved) / sizeof(reserved[0]); r++)
      if (strcmp(m->name, reserved[r]) == 0)
        why = "is set by the channel";
    int bin = nlen > 4 && strcmp(m->name + nlen - 4, "-bin") == 0;
    for (size_t k = 0; why == NULL && !bin && k < m->len; k++) {
      unsigned char ch = ((const unsigned char *)m->value)[k];
      if (ch < 0x20 || ch > 0x7e)
        why = "has a value that is not printable ASCII (use a -bin name for bytes)";
    }
    if (why != NULL) {
      status->code = SG_STATUS_INVALID_ARGUMENT;
      snprintf(status->message, sizeof(status->message), "metadata[%zu] \"%.64s\" %s", i,
               m->name ? m->name : "", why);
      return -1;
    }
  }
  return 0;
}

static int64_t deadline_of(const sg_call_options *o) {
  return o && o->timeout_ms > 0 ? now_ns() + o->timeout_ms * 1000000 : INT64_MAX;
}

/* One attempt of a unary call. */
static int unary_once(sg_channel *ch, const char *path, const ProtobufCMessage *req,
                      const ProtobufCMessageDescriptor *type, ProtobufCMessage **resp,
                      const sg_call_options *o, int64_t deadline, sg_status *status) {
  call *c = call_new(ch, path, req, o, deadline);
  start(ch, c);
  if (wait_done(ch, c) != 0) {
    set_status(status, SG_STATUS_DEADLINE_EXCEEDED, "deadline exceeded");
    call_unref(c);
    return status->code;
  }
  *status = c->status;
  if (status->code == SG_STATUS_OK) {
    if (c->n_msgs != 1) {
      set_status(status, SG_STATUS_INTERNAL,
                 c->n_msgs == 0 ? "no response message" : "more than one response message");
    } else if ((*resp = protobuf_c_message_unpack(type, NULL, c->head->len, c->head->data)) ==
               NULL) {
      set_status(status, SG_STATUS_INTERNAL, "could not parse the response message");
    }
  }
  call_unref(c);
  return status->code;
}

/* Full jitter: a random pause between 0 and the exponential step, so that clients retrying
 * after the same outage spread out. */
static int64_t backoff_ns(int attempt) {
  int64_t cap = (int64_t)RETRY_BASE_MS << (attempt < 10 ? attempt : 10);
  if (cap > RETRY_CAP_MS)
    cap = RETRY_CAP_MS;
  uint32_t r;
  if (RAND_bytes((unsigned char *)&r, sizeof(r)) != 1)
    r = (uint32_t)now_ns();
  return ((int64_t)(r % (uint32_t)(cap + 1)) + 1) * 1000000;
}

int sg_channel_unary(sg_channel *ch, const char *path, const ProtobufCMessage *req,
                     const ProtobufCMessageDescriptor *type, ProtobufCMessage **resp,
                     const sg_call_options *o, sg_status *status) {
  sg_status ignored;
  if (status == NULL)
    status = &ignored;
  *resp = NULL;
  if (check_metadata(o, status) != 0)
    return status->code;
  int64_t deadline = deadline_of(o);
  /* With retry: max_attempts, else as many as fit before the deadline (5 without one). */
  int attempts = !(o && o->retry)        ? 1
                 : o->max_attempts > 0   ? o->max_attempts
                 : deadline != INT64_MAX ? INT32_MAX
                                         : 5;
  for (int attempt = 1;; attempt++) {
    int code = unary_once(ch, path, req, type, resp, o, deadline, status);
    if (code != SG_STATUS_UNAVAILABLE || attempt >= attempts)
      return code;
    int64_t pause = backoff_ns(attempt - 1);
    if (deadline != INT64_MAX && now_ns() + pause >= deadline)
      return code;
    struct timespec ts = {(time_t)(pause / 1000000000), (long)(pause % 1000000000)};
    nanosleep(&ts, NULL);
  }
}

/* --- Streams ------------------------------------------------------------------------------- */

struct sg_stream {
  sg_channel *ch;
  call *c;
  const ProtobufCMessageDescriptor *type;
  int ended; /* the reader saw the end (or ended it: deadline, a bad message) */
  sg_status end_status;
};

sg_stream *sg_channel_stream_open(sg_channel *ch, const char *path, const ProtobufCMessage *req,
                                  const ProtobufCMessageDescriptor *type,
                                  const sg_call_options *o) {
  sg_stream *s = sg_calloc(1, sizeof(*s));
  s->ch = ch;
  s->type = type;
  sg_status bad;
  if (check_metadata(o, &bad) != 0) {
    s->c = call_new(ch, path, req, NULL, INT64_MAX); /* never sent: it ends with |bad| */
    s->c->status = bad;
    s->c->done = 1;
    return s;
  }
  s->c = call_new(ch, path, req, o, deadline_of(o));
  s->c->streaming = 1;
  start(ch, s->c);
  return s;
}

static int stream_end(sg_stream *s, int code, const char *text, sg_status *status) {
  s->ended = 1;
  set_status(&s->end_status, code, text);
  if (status != NULL)
    *status = s->end_status;
  return 0;
}

int sg_stream_next(sg_stream *s, ProtobufCMessage **message, sg_status *status) {
  sg_channel *ch = s->ch;
  call *c = s->c;
  *message = NULL;
  if (s->ended) {
    if (status != NULL)
      *status = s->end_status;
    return 0;
  }
  msg *m;
  for (;;) {
    /* Messages that arrived before the end come first; appends happen under the lock. */
    pthread_mutex_lock(&ch->lock);
    m = c->head;
    if (m != NULL) {
      c->head = m->next;
      if (c->head == NULL)
        c->tail = NULL;
      c->n_msgs--;
    }
    int done = m == NULL && is_done(c);
    pthread_mutex_unlock(&ch->lock);
    if (m != NULL)
      break;
    if (done)
      return stream_end(s, c->status.code, c->status.message, status);
    if (wait_post(ch, c) != 0)
      return stream_end(s, SG_STATUS_DEADLINE_EXCEEDED, "deadline exceeded", status);
  }
  *message = protobuf_c_message_unpack(s->type, NULL, m->len, m->data);
  free(m);
  if (*message != NULL)
    return 1;
  /* The stream is over for this reader: stop the call and report INTERNAL from now on. */
  if (!is_done(c))
    cancel_call(ch, c, CANCEL_USER);
  return stream_end(s, SG_STATUS_INTERNAL, "could not parse a response message", status);
}

void sg_stream_free(sg_stream *s) {
  if (s == NULL)
    return;
  if (!is_done(s->c))
    cancel_call(s->ch, s->c, CANCEL_USER); /* the I/O thread ends it and drops its reference */
  call_unref(s->c);
  free(s);
}
