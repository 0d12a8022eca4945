#include "proxy/proxy.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "core/clock.h"
#include "core/log.h"
#include "core/mem.h"
#include "core/stats.h"
#include "crypto/token.h"
#include "net/listener.h"
#include "policy/host.h"
#include "proxy/addr.h"
#include "proxy/h2.h"
#include "db/audit_writer.h"
#include "proxy/http1.h"
#include "proxy/leaf.h"
#include "proxy/redact.h"
#include "proxy/scan.h"
#include "proxy/subst.h"
#include "proxy/view.h"
#include "rpc/b64.h"

/* Bytes queued toward a slow peer before the other side stops being read. */
#define PIPE_HIGH (1u << 20)
#define PIPE_LOW  (256u << 10)

struct sg_proxy {
  const sg_proxy_options *opts;
  SSL_CTX *sandbox_tls;  /* what sandboxes connect to inside a CONNECT tunnel */
  SSL_CTX *upstream_tls; /* what the proxy connects upstream with, verifying */
  sg_leaf_cache *leaves;
  sg_cidr_list *allow;
  sg_resolve_map *fixed;
  sg_resolve_config resolve;
  uint16_t *ports;
  size_t n_ports;
};

typedef enum {
  P_HEAD,       /* waiting for a request head (proxy leg or inside the tunnel) */
  P_AUTH,       /* waiting for the sandbox's view */
  P_RESOLVE,    /* waiting for DNS */
  P_CONNECT,    /* waiting for the upstream connection and its handshake */
  P_HANDSHAKE,  /* the sandbox's TLS handshake inside the tunnel */
  P_BODY_CL,    /* buffering a Content-Length body */
  P_BODY_CHUNK, /* streaming a chunked body */
  P_RESPONSE,   /* relaying the response */
  P_PIPE,       /* an upgraded connection: opaque bytes both ways */
  P_CLOSING     /* flushing a last answer, then closing */
} pstate;

typedef enum { R_NONE, R_LENGTH, R_CHUNKED, R_CLOSE } rframing;

typedef struct pconn {
  sg_proxy *px;
  struct event_base *base;
  struct bufferevent *cli, *up;
  struct event *head_timer; /* --proxy-head-timeout: a request head arriving too slowly */
  pstate state;
  char peer[64];
  struct pconn *prev, *next;

  /* The sandbox, once authenticated. */
  sg_view *view;
  char sandbox_id[SG_UUID_LEN + 1];
  uint8_t cred_digest[32];

  /* Where this connection goes: fixed by CONNECT, or by each plain-http request. */
  int tunnel;             /* the target came from CONNECT: TLS upstream */
  uint16_t standard_port; /* 443 for CONNECT, 80 for plain http: allowed without the flag */
  int in_tunnel;          /* the sandbox's TLS inside the tunnel is up: requests come through it */
  sg_authority target;
  struct sockaddr_storage addr;
  int sni_state;            /* 0 none, 1 matches the CONNECT host, -1 differs */
  struct ticket *resolving; /* a DNS answer on its way */
  int up_ready;             /* |up| connected and idle or busy with this request */
  int up_h2;                /* upstream chose h2 */
  int up_h1_only;           /* the sandbox chose HTTP/1.1: connect upstream offering only that */
  sg_h2_tunnel *h2;         /* both sides chose h2: the tunnel's streams are its business */

  /* The request at hand. */
  char *head;       /* a copy of its head; |req| points into it */
  size_t head_seen; /* bytes of the next head already looked at */
  size_t head_len;
  sg_h1_request req;
  sg_subst rq; /* what it may substitute, and what it did */
  uint64_t body_left;
  sg_h1_chunked chunked;
  sg_scanner scanner;
  struct evbuffer *pending; /* scanned body bytes waiting to become a chunk */
  int64_t started_ns;
  int tunnel_counted; /* in sealgate_proxy_tunnels_open */

  /* The response at hand. */
  int resp_head_done;
  int resp_status;
  rframing rin; /* how upstream frames the body */
  int rechunk;  /* we send the client a chunked body of our own */
  int redacting;
  int client_close;      /* close the client connection once the response is sent */
  int client_eof;        /* the client half-closed its side */
  struct evbuffer *held; /* the head of a request whose body is being buffered */
  int upstream_close;
  uint64_t resp_left;
  sg_h1_chunked resp_chunked;
} pconn;

static __thread pconn *conns;

/* A DNS answer may come back after the connection is gone: the pending resolution holds a
 * ticket that the connection disowns when it closes. */
typedef struct ticket {
  pconn *pc;
} ticket;

/* --- Small helpers --------------------------------------------------------------------- */

static void pc_free(pconn *pc);
static void on_client_read(struct bufferevent *bev, void *arg);
static void on_upstream_read(struct bufferevent *bev, void *arg);
static void on_client_event(struct bufferevent *bev, short what, void *arg);
static void on_upstream_event(struct bufferevent *bev, short what, void *arg);
static void on_client_write(struct bufferevent *bev, void *arg);
static void on_upstream_write(struct bufferevent *bev, void *arg);
static void process_head(pconn *pc);
static void after_auth(pconn *pc);
static void forward_request(pconn *pc);
static void connect_upstream(pconn *pc);

static const char *status_text(int status) {
  switch (status) {
  case 200:
    return "Connection established";
  case 400:
    return "Bad Request";
  case 403:
    return "Forbidden";
  case 407:
    return "Proxy Authentication Required";
  case 408:
    return "Request Timeout";
  case 413:
    return "Content Too Large";
  case 431:
    return "Request Header Fields Too Large";
  case 502:
    return "Bad Gateway";
  case 503:
    return "Service Unavailable";
  case 504:
    return "Gateway Timeout";
  default:
    return "Error";
  }
}

static void log_request(pconn *pc, int status, const char *why) {
  sg_log_begin(status >= 400 ? SG_LOG_WARN : SG_LOG_INFO, "proxy_request");
  if (pc->sandbox_id[0])
    sg_log_cstr("sandbox", pc->sandbox_id);
  sg_log_cstr("method", pc->rq.method);
  if (pc->target.host[0])
    sg_log_cstr("host", pc->target.host);
  if (pc->rq.path[0])
    sg_log_cstr("path", pc->rq.path);
  sg_log_int("status", status);
  if (why != NULL)
    sg_log_cstr("reason", why);
  sg_log_cstr("peer", pc->peer);
  if (pc->started_ns != 0)
    sg_log_double("ms", (double)(sg_now_ns() - pc->started_ns) / 1e6);
  sg_log_end();
}

/* The metrics' view of the same request; |why| is set when the proxy answered itself. */
static void count_request(int status, const char *why) {
  sg_stats_proxy_request(status, why != NULL ? SG_PROXY_REFUSED : SG_PROXY_FORWARDED);
}

static void audit(pconn *pc, const sg_view_secret *s, sg_audit_decision d, const char *reason) {
  pc->rq.view = pc->view;
  pc->rq.host = pc->target.host;
  sg_subst_audit_event(&pc->rq, s, d, reason);
}

/* Ends the connection once what is queued for the client has been sent (on_client_write). */
static void close_after_flush(pconn *pc) {
  if (pc->up != NULL) {
    bufferevent_free(pc->up);
    pc->up = NULL;
    pc->up_ready = 0;
  }
  pc->state = P_CLOSING;
  bufferevent_disable(pc->cli, EV_READ);
  bufferevent_setwatermark(pc->cli, EV_WRITE, 0, 0);
  bufferevent_setcb(pc->cli, NULL, on_client_write, on_client_event, pc);
  bufferevent_enable(pc->cli, EV_WRITE);
  on_client_write(pc->cli, pc);
}

/* Answers the client with |status| and a short plain-text body, then closes the connection:
 * after an error the proxy cannot tell where the client's next request would start. */
static void fail(pconn *pc, int status, const char *why) {
  if (pc->state == P_CLOSING)
    return;
  log_request(pc, status, why);
  count_request(status, why);
  if (pc->cli == NULL) {
    pc_free(pc);
    return;
  }
  struct evbuffer *out = bufferevent_get_output(pc->cli);
  evbuffer_add_printf(out, "HTTP/1.1 %d %s\r\n", status, status_text(status));
  if (status == 407)
    evbuffer_add_printf(out, "Proxy-Authenticate: Basic realm=\"sealgate\"\r\n");
  evbuffer_add_printf(out,
                      "Content-Type: text/plain; charset=utf-8\r\nContent-Length: %zu\r\n"
                      "Connection: close\r\n\r\n%s\n",
                      strlen(why) + 1, why);
  close_after_flush(pc);
}

/* --- The pool of idle upstream connections ---------------------------------------------- */

/* When a sandbox's connection ends while its upstream connection is idle and reusable, that
 * connection waits here (per loop) for the next tunnel of the same organization to the same
 * host, port and address, which then skips the TCP and TLS handshakes upstream. Only HTTP/1.1
 * connections are kept; one that upstream closes, or that sends anything, while it waits is
 * dropped. */
#define POOL_MAX     256
#define POOL_IDLE_NS (30LL * 1000000000)

typedef struct pooled {
  struct bufferevent *bev;
  char key[SG_UUID_LEN + SG_HOST_MAX + 64];
  struct sockaddr_storage addr;
  int64_t parked_ns;
  struct pooled *prev, *next;
} pooled;

static __thread pooled *pool_head; /* most recently parked first */
static __thread size_t pool_count;

static void pool_remove(pooled *p) {
  if (p->prev)
    p->prev->next = p->next;
  else
    pool_head = p->next;
  if (p->next)
    p->next->prev = p->prev;
  pool_count--;
  bufferevent_free(p->bev);
  free(p);
}

static void on_pooled_read(struct bufferevent *bev, void *arg) {
  (void)bev;
  pool_remove(arg); /* an idle connection has nothing to say: it is not reusable */
}

static void on_pooled_event(struct bufferevent *bev, short what, void *arg) {
  (void)bev;
  (void)what;
  pool_remove(arg);
}

static void pool_key(const pconn *pc, char *key, size_t cap) {
  snprintf(key, cap, "%s|%s|%u|%d|%d", pc->view != NULL ? pc->view->org_id : "", pc->target.host,
           (unsigned)pc->target.port, pc->tunnel, pc->up_h1_only);
}

static int same_addr(const struct sockaddr_storage *a, const struct sockaddr_storage *b) {
  if (a->ss_family != b->ss_family)
    return 0;
  size_t len = a->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
  return memcmp(a, b, len) == 0;
}

/* Keeps |pc|'s upstream connection if it is idle and reusable; takes it from |pc| then. */
static void pool_park(pconn *pc) {
  if (pc->up == NULL || !pc->up_ready || pc->up_h2 || pc->view == NULL || pc->state != P_HEAD ||
      evbuffer_get_length(bufferevent_get_input(pc->up)) != 0 ||
      evbuffer_get_length(bufferevent_get_output(pc->up)) != 0)
    return;
  while (pool_count >= POOL_MAX) {
    pooled *last = pool_head;
    while (last->next != NULL)
      last = last->next;
    pool_remove(last);
  }
  pooled *p = sg_calloc(1, sizeof(*p));
  p->bev = pc->up;
  pool_key(pc, p->key, sizeof(p->key));
  p->addr = pc->addr;
  p->parked_ns = sg_now_ns();
  p->next = pool_head;
  if (pool_head)
    pool_head->prev = p;
  pool_head = p;
  pool_count++;
  pc->up = NULL;
  pc->up_ready = 0;
  bufferevent_set_timeouts(p->bev, NULL, NULL);
  bufferevent_setcb(p->bev, on_pooled_read, NULL, on_pooled_event, p);
  bufferevent_enable(p->bev, EV_READ);
}

/* An idle connection for |pc|'s destination, or NULL. */
static struct bufferevent *pool_take(pconn *pc) {
  char key[sizeof(((pooled *)0)->key)];
  pool_key(pc, key, sizeof(key));
  int64_t now = sg_now_ns();
  for (pooled *p = pool_head, *next; p != NULL; p = next) {
    next = p->next;
    if (now - p->parked_ns > POOL_IDLE_NS) {
      pool_remove(p);
      continue;
    }
    if (strcmp(p->key, key) != 0 || !same_addr(&p->addr, &pc->addr))
      continue;
    struct bufferevent *bev = p->bev;
    p->bev = NULL;
    if (p->prev)
      p->prev->next = p->next;
    else
      pool_head = p->next;
    if (p->next)
      p->next->prev = p->prev;
    pool_count--;
    free(p);
    return bev;
  }
  return NULL;
}

static void pool_drop_all(void) {
  while (pool_head != NULL)
    pool_remove(pool_head);
}

/* --- Connection life ------------------------------------------------------------------- */

static void pc_free(pconn *pc) {
  if (pc->tunnel_counted)
    sg_gauge_add(&sg_stats.proxy_tunnels_open, -1);
  if (pc->h2 != NULL)
    sg_h2_tunnel_free(pc->h2);
  pool_park(pc);
  if (pc->state == P_AUTH && pc->sandbox_id[0])
    sg_view_cancel(pc->sandbox_id, pc);
  if (pc->resolving != NULL)
    pc->resolving->pc = NULL;
  if (pc->head_timer != NULL)
    event_free(pc->head_timer);
  if (pc->cli != NULL)
    bufferevent_free(pc->cli);
  if (pc->up != NULL)
    bufferevent_free(pc->up);
  if (pc->pending != NULL)
    evbuffer_free(pc->pending);
  if (pc->held != NULL)
    evbuffer_free(pc->held);
  sg_subst_end(&pc->rq);
  sg_view_unref(pc->view);
  free(pc->head);
  if (pc->prev)
    pc->prev->next = pc->next;
  else
    conns = pc->next;
  if (pc->next)
    pc->next->prev = pc->prev;
  OPENSSL_cleanse(pc->cred_digest, sizeof(pc->cred_digest));
  free(pc);
}

/* Both legs carry small request/response exchanges (TLS records, a CONNECT reply): Nagle's
 * algorithm against the peer's delayed ACK would hold some of them for ~40 ms. */
static void no_delay(int fd) {
  int one = 1;
  (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* --- The request-head timer (--proxy-head-timeout) ---------------------------------------
 *
 * The idle timeout restarts with every byte, so a client trickling a head one byte at a time
 * would hold a connection (and its buffers) forever. This timer does not: it starts when a
 * connection opens (its first head), when the sandbox's TLS handshake inside a tunnel starts,
 * and at the first byte of each later head on a keep-alive connection, and stops when the head
 * is complete. If it fires first: 408 and close (during the TLS handshake: close). */

static void on_head_timeout(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  pconn *pc = arg;
  if (pc->state == P_HANDSHAKE) {
    sg_log_begin(SG_LOG_WARN, "proxy_head_timeout");
    sg_log_cstr("peer", pc->peer);
    sg_log_cstr("detail", "TLS handshake inside the tunnel not finished in time; closing");
    sg_log_end();
    pc_free(pc);
    return;
  }
  if (pc->state != P_HEAD)
    return;
  pc->rq.method[0] = '\0';
  pc->rq.path[0] = '\0';
  pc->started_ns = 0;
  fail(pc, 408, "request head not received in time");
}

static void head_timer_start(pconn *pc) {
  int64_t t = pc->px->opts->head_timeout_ms;
  if (t <= 0 || pc->head_timer == NULL || evtimer_pending(pc->head_timer, NULL))
    return;
  struct timeval tv = {(time_t)(t / 1000), (suseconds_t)(t % 1000) * 1000};
  evtimer_add(pc->head_timer, &tv);
}

static void head_timer_stop(pconn *pc) {
  if (pc->head_timer != NULL)
    evtimer_del(pc->head_timer);
}

void sg_proxy_conn_start(sg_proxy *px, int fd, const char *peer) {
  sg_loop *loop = sg_loop_current();
  no_delay(fd);
  pconn *pc = sg_calloc(1, sizeof(*pc));
  pc->px = px;
  pc->base = sg_loop_base(loop);
  snprintf(pc->peer, sizeof(pc->peer), "%s", peer);
  pc->cli = bufferevent_socket_new(pc->base, fd, BEV_OPT_CLOSE_ON_FREE);
  if (pc->cli == NULL) {
    close(fd);
    free(pc);
    return;
  }
  pc->next = conns;
  if (conns)
    conns->prev = pc;
  conns = pc;
  int64_t idle = px->opts->idle_timeout_ms;
  struct timeval tv = {(time_t)(idle / 1000), (suseconds_t)(idle % 1000) * 1000};
  bufferevent_set_timeouts(pc->cli, idle > 0 ? &tv : NULL, NULL);
  bufferevent_setwatermark(pc->cli, EV_READ, 0, px->opts->max_head_bytes + PIPE_HIGH);
  bufferevent_setwatermark(pc->cli, EV_WRITE, PIPE_LOW, 0);
  bufferevent_setcb(pc->cli, on_client_read, on_client_write, on_client_event, pc);
  bufferevent_enable(pc->cli, EV_READ | EV_WRITE);
  pc->head_timer = evtimer_new(pc->base, on_head_timeout, pc);
  head_timer_start(pc); /* the first head counts from the connection's start */
}

void sg_proxy_close_all(void) {
  while (conns != NULL) {
    conns->state = P_CLOSING; /* nothing goes to the pool now */
    pc_free(conns);
  }
  pool_drop_all();
  sg_view_cache_drop();
}

/* Lingering close: what the client still sends is read and dropped for a moment after our
 * last answer, so that closing with unread input (which makes the kernel send a reset) cannot
 * destroy that answer before the client has read it. */
static void on_linger_read(struct bufferevent *bev, void *arg) {
  (void)arg;
  struct evbuffer *in = bufferevent_get_input(bev);
  evbuffer_drain(in, evbuffer_get_length(in));
}

static void on_linger_event(struct bufferevent *bev, short what, void *arg) {
  (void)bev;
  (void)what;
  pc_free(arg);
}

static void on_client_write(struct bufferevent *bev, void *arg) {
  pconn *pc = arg;
  if (pc->state == P_CLOSING) {
    if (evbuffer_get_length(bufferevent_get_output(bev)) != 0)
      return;
    evutil_socket_t fd = bufferevent_getfd(bev);
    if (fd < 0 || shutdown(fd, SHUT_WR) != 0) {
      pc_free(pc);
      return;
    }
    struct timeval tv = {2, 0};
    bufferevent_set_timeouts(bev, &tv, NULL);
    bufferevent_setwatermark(bev, EV_READ, 0, 0);
    bufferevent_setcb(bev, on_linger_read, NULL, on_linger_event, pc);
    bufferevent_enable(bev, EV_READ);
    return;
  }
  /* The client caught up: read upstream again. */
  if (pc->up != NULL)
    bufferevent_enable(pc->up, EV_READ);
}

static void on_upstream_write(struct bufferevent *bev, void *arg) {
  (void)bev;
  pconn *pc = arg;
  if (pc->cli != NULL && (pc->state == P_BODY_CHUNK || pc->state == P_PIPE))
    bufferevent_enable(pc->cli, EV_READ);
}

/* Moves what |src| has to |dst|'s output, pausing |src| while |dst| is behind. */
static void relay(struct bufferevent *src, struct bufferevent *dst, struct evbuffer *data) {
  evbuffer_add_buffer(bufferevent_get_output(dst), data);
  if (evbuffer_get_length(bufferevent_get_output(dst)) > PIPE_HIGH)
    bufferevent_disable(src, EV_READ);
}

static void h2_closed(void *arg) {
  pconn *pc = arg;
  pc->h2 = NULL;
  pc_free(pc);
}

/* Hands both connections to an HTTP/2 tunnel (proxy/h2.h). */
static void start_h2(pconn *pc) {
  sg_h2_tunnel_options o = {
      .cli = pc->cli,
      .up = pc->up,
      .view = pc->view,
      .host = pc->target.host,
      .port = pc->target.port,
      .withhold = pc->sni_state == 1   ? NULL
                  : pc->sni_state == 0 ? "no TLS SNI"
                                       : "TLS SNI differs from the CONNECT host",
      .peer = pc->peer,
      .idle_timeout_ms = pc->px->opts->idle_timeout_ms,
      .closed = h2_closed,
      .arg = pc,
  };
  pc->h2 = sg_h2_tunnel_start(&o);
  if (pc->h2 == NULL) {
    pc_free(pc);
    return;
  }
  pc->cli = pc->up = NULL;
  pc->view = NULL; /* the reference went to the tunnel */
  pc->state = P_PIPE;
}

static void on_client_event(struct bufferevent *bev, short what, void *arg) {
  (void)bev;
  pconn *pc = arg;
  if (what & BEV_EVENT_CONNECTED) {
    /* The sandbox's TLS handshake inside the tunnel is done. */
    head_timer_stop(pc); /* the first byte of a head inside starts it again */
    SSL *ssl = bufferevent_openssl_get_ssl(pc->cli);
    const char *sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    char norm[SG_HOST_MAX + 1];
    if (sni == NULL)
      pc->sni_state = pc->target.is_ip ? 1 : 0;
    else
      pc->sni_state =
          sg_host_normalize(sni, strlen(sni), norm) == 0 && strcmp(norm, pc->target.host) == 0 ? 1
                                                                                               : -1;
    const unsigned char *alpn = NULL;
    unsigned int alpn_len = 0;
    SSL_get0_alpn_selected(ssl, &alpn, &alpn_len);
    if (alpn_len == 2 && memcmp(alpn, "h2", 2) == 0 && pc->up != NULL && pc->up_h2) {
      start_h2(pc);
      return;
    }
    if (pc->up_h2 && pc->up != NULL) {
      /* The sandbox speaks HTTP/1.1 to an upstream that chose h2: the next request connects
       * again, offering HTTP/1.1 alone. */
      bufferevent_free(pc->up);
      pc->up = NULL;
      pc->up_ready = 0;
      pc->up_h2 = 0;
      pc->up_h1_only = 1;
    }
    pc->state = P_HEAD;
    pc->in_tunnel = 1;
    if (evbuffer_get_length(bufferevent_get_input(pc->cli)) > 0)
      process_head(pc);
    return;
  }
  if ((what & BEV_EVENT_EOF) && !(what & BEV_EVENT_ERROR) &&
      (pc->state == P_AUTH || pc->state == P_RESOLVE || pc->state == P_CONNECT ||
       pc->state == P_RESPONSE)) {
    /* The client stopped sending after its request (a half-close): answer it, then close. */
    pc->client_eof = 1;
    bufferevent_disable(pc->cli, EV_READ);
    return;
  }
  pc_free(pc); /* EOF, error or idle timeout: nothing to answer */
}

/* --- Authentication -------------------------------------------------------------------- */

/* Decodes "Basic base64(sandbox_id:secret)": the id into pc->sandbox_id, the secret's digest
 * into pc->cred_digest. Returns 0, or -1 if the header is missing or malformed. */
static int parse_credential(pconn *pc) {
  const sg_h1_header *h = NULL;
  for (size_t i = 0; i < pc->req.num_headers; i++)
    if (sg_h1_header_eq(&pc->req.headers[i], "proxy-authorization")) {
      if (h != NULL)
        return -1;
      h = &pc->req.headers[i];
    }
  if (h == NULL || h->value_len < 6 || strncasecmp(h->value, "basic ", 6) != 0)
    return -1;
  const char *b = h->value + 6;
  size_t blen = h->value_len - 6;
  while (blen > 0 && *b == ' ')
    b++, blen--;
  if (blen == 0 || blen > 256)
    return -1;
  uint8_t plain[256];
  size_t plen;
  if (sg_b64_decode(b, blen, plain, &plen) != 0)
    return -1;
  int rv = -1;
  uint8_t *colon = memchr(plain, ':', plen);
  if (colon != NULL && colon - plain == SG_UUID_LEN) {
    memcpy(pc->sandbox_id, plain, SG_UUID_LEN);
    pc->sandbox_id[SG_UUID_LEN] = '\0';
    size_t slen = plen - SG_UUID_LEN - 1;
    if (sg_uuid_is_canonical(pc->sandbox_id) && slen > 0) {
      SHA256(colon + 1, slen, pc->cred_digest);
      rv = 0;
    }
  }
  OPENSSL_cleanse(plain, sizeof(plain));
  if (rv != 0)
    pc->sandbox_id[0] = '\0';
  return rv;
}

static void on_view(void *arg, sg_view_status status, sg_view *view) {
  pconn *pc = arg;
  if (status != SG_VIEW_OK) {
    if (status == SG_VIEW_NOT_FOUND)
      fail(pc, 407, "proxy credential not valid");
    else
      fail(pc, status == SG_VIEW_UNAVAILABLE ? 503 : 502, "sandbox lookup failed");
    return;
  }
  sg_view_unref(pc->view);
  pc->view = view;
  after_auth(pc);
}

/* Checks the credential against the view. Returns 0, or -1 after answering. */
static int check_credential(pconn *pc) {
  /* A wrong credential is logged and counted, not audited: anyone who knows a sandbox id (it
   * is no secret) could otherwise fill its organization's trail, and the writer's queue, with
   * rows whose host and path they choose. The credential's holder is not who is asking. */
  if (CRYPTO_memcmp(pc->view->proxy_digest, pc->cred_digest, 32) != 0) {
    sg_view_unref(pc->view);
    pc->view = NULL;
    fail(pc, 407, "proxy credential not valid");
    return -1;
  }
  /* From here the caller holds the sandbox's credential: its refusals are audited. */
  if (!sg_view_live(pc->view)) {
    audit(pc, NULL, SG_AUDIT_DENIED, "sandbox has ended");
    fail(pc, 407, "sandbox has ended");
    return -1;
  }
  return 0;
}

/* Gets a fresh view of the sandbox, then carries on with after_auth. */
static void need_view(pconn *pc) {
  if (pc->view != NULL && sg_view_fresh(pc->view)) {
    after_auth(pc);
    return;
  }
  pc->state = P_AUTH;
  sg_view *v = sg_view_get(pc->sandbox_id, on_view, pc);
  if (v != NULL)
    on_view(pc, SG_VIEW_OK, v);
}

/* --- Where the request goes ------------------------------------------------------------ */

static int port_allowed(const sg_proxy *px, uint16_t port, uint16_t standard) {
  if (port == standard)
    return 1;
  for (size_t i = 0; i < px->n_ports; i++)
    if (px->ports[i] == port)
      return 1;
  return 0;
}

static void on_resolved(void *arg, sg_resolve_status status, const struct sockaddr_storage *addr,
                        const char *why) {
  ticket *t = arg;
  pconn *pc = t->pc;
  free(t);
  if (pc == NULL)
    return;
  pc->resolving = NULL;
  if (status == SG_RESOLVE_FORBIDDEN) {
    audit(pc, NULL, SG_AUDIT_DENIED, why);
    char msg[160];
    snprintf(msg, sizeof(msg), "destination address not allowed (%s)", why);
    fail(pc, 403, msg);
    return;
  }
  if (status != SG_RESOLVE_OK) {
    fail(pc, 502, "cannot resolve the host");
    return;
  }
  pc->addr = *addr;
  connect_upstream(pc);
}

static void resolve_target(pconn *pc) {
  pc->state = P_RESOLVE;
  ticket *t = sg_malloc(sizeof(*t));
  t->pc = pc;
  pc->resolving = t;
  sg_resolve_async(sg_loop_current(), &pc->px->resolve, pc->target.host, pc->target.port,
                   on_resolved, t);
}

/* --- Upstream -------------------------------------------------------------------------- */

static void upstream_failed(pconn *pc) {
  const char *why = "cannot connect upstream";
  if (pc->tunnel || pc->up != NULL) {
    SSL *ssl = pc->up != NULL ? bufferevent_openssl_get_ssl(pc->up) : NULL;
    long verify = ssl != NULL ? SSL_get_verify_result(ssl) : X509_V_OK;
    if (verify != X509_V_OK)
      why = verify == X509_V_ERR_HOSTNAME_MISMATCH || verify == X509_V_ERR_IP_ADDRESS_MISMATCH
                ? "upstream certificate does not match the host"
                : "upstream certificate not trusted";
    else if (ssl != NULL && ERR_peek_error() != 0)
      why = "upstream TLS handshake failed";
  }
  ERR_clear_error();
  fail(pc, 502, why);
}

static void start_client_tls(pconn *pc);

static int relay_response_body(pconn *pc);
static void end_response(pconn *pc);

static void on_upstream_event(struct bufferevent *bev, short what, void *arg) {
  (void)bev;
  pconn *pc = arg;
  if (what & BEV_EVENT_CONNECTED) {
    pc->up_ready = 1;
    if (pc->tunnel) {
      const unsigned char *alpn = NULL;
      unsigned int alpn_len = 0;
      SSL_get0_alpn_selected(bufferevent_openssl_get_ssl(pc->up), &alpn, &alpn_len);
      pc->up_h2 = alpn_len == 2 && memcmp(alpn, "h2", 2) == 0;
    }
    bufferevent_enable(pc->up, EV_READ | EV_WRITE);
    if (pc->state != P_CONNECT)
      return;
    if (pc->req.form == SG_H1_TARGET_AUTHORITY) {
      start_client_tls(pc); /* the CONNECT is answered once upstream is verified */
      return;
    }
    forward_request(pc);
    return;
  }
  if (pc->state == P_CONNECT) {
    upstream_failed(pc);
    return;
  }
  if (pc->state == P_RESPONSE && (what & BEV_EVENT_EOF) && pc->rin == R_CLOSE &&
      pc->resp_head_done) {
    /* A close-delimited body ended: send what is left; a body we re-chunked gets its last
     * chunk, and the client's connection may then go on. */
    if (evbuffer_get_length(bufferevent_get_input(pc->up)) > 0)
      relay_response_body(pc);
    bufferevent_free(pc->up);
    pc->up = NULL;
    pc->up_ready = 0;
    if (pc->redacting)
      sg_redact_finish(&pc->rq.reflector);
    if (pc->rechunk)
      evbuffer_add(bufferevent_get_output(pc->cli), SG_H1_LAST_CHUNK, SG_H1_LAST_CHUNK_LEN);
    end_response(pc);
    return;
  }
  if (pc->state == P_PIPE && (what & BEV_EVENT_EOF)) {
    /* Upstream ended an upgraded connection: what it sent last still reaches the client. */
    struct evbuffer *in = bufferevent_get_input(pc->up);
    evbuffer_add_buffer(bufferevent_get_output(pc->cli), in);
    close_after_flush(pc);
    return;
  }
  if (pc->state == P_PIPE || pc->state == P_RESPONSE || pc->state == P_BODY_CHUNK ||
      pc->state == P_BODY_CL) {
    if (pc->state == P_RESPONSE && !pc->resp_head_done) {
      fail(pc, 502, "upstream closed the connection");
      return;
    }
    pc_free(pc); /* mid-message: the client cannot be told more than a closed connection */
    return;
  }
  /* Idle between requests: the next request reconnects. */
  bufferevent_free(pc->up);
  pc->up = NULL;
  pc->up_ready = 0;
}

static void connect_upstream(pconn *pc) {
  pc->state = P_CONNECT;
  pc->up_ready = 0;
  if (pc->up != NULL) {
    bufferevent_free(pc->up);
    pc->up = NULL;
  }
  struct bufferevent *up = pool_take(pc);
  if (up != NULL) {
    pc->up = up;
    bufferevent_setcb(up, on_upstream_read, on_upstream_write, on_upstream_event, pc);
    int64_t t = pc->px->opts->upstream_timeout_ms;
    struct timeval tv = {(time_t)(t / 1000), (suseconds_t)(t % 1000) * 1000};
    bufferevent_set_timeouts(up, &tv, &tv);
    bufferevent_setwatermark(up, EV_WRITE, PIPE_LOW, 0);
    bufferevent_setwatermark(up, EV_READ, 0, PIPE_HIGH);
    on_upstream_event(up, BEV_EVENT_CONNECTED, pc);
    return;
  }
  if (pc->tunnel) {
    SSL *ssl = SSL_new(pc->px->upstream_tls);
    if (ssl == NULL) {
      fail(pc, 502, "cannot set up upstream TLS");
      return;
    }
    /* Verify the certificate for the CONNECT host: never an empty name (OpenSSL would skip
     * the check), the IP itself for an IP literal, and SNI only for names (RFC 6066). */
    static const unsigned char h1[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
    if (pc->up_h1_only)
      SSL_set_alpn_protos(ssl, h1, sizeof(h1));
    X509_VERIFY_PARAM *param = SSL_get0_param(ssl);
    X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    int ok = pc->target.host[0] != '\0' &&
             (pc->target.is_ip ? X509_VERIFY_PARAM_set1_ip_asc(param, pc->target.host)
                               : X509_VERIFY_PARAM_set1_host(param, pc->target.host, 0) &&
                                     SSL_set_tlsext_host_name(ssl, pc->target.host));
    if (!ok) {
      SSL_free(ssl);
      fail(pc, 502, "cannot set up upstream TLS");
      return;
    }
    up = bufferevent_openssl_socket_new(pc->base, -1, ssl, BUFFEREVENT_SSL_CONNECTING,
                                        BEV_OPT_CLOSE_ON_FREE);
    if (up != NULL)
      bufferevent_openssl_set_allow_dirty_shutdown(up, 1);
  } else {
    up = bufferevent_socket_new(pc->base, -1, BEV_OPT_CLOSE_ON_FREE);
  }
  if (up == NULL) {
    fail(pc, 502, "cannot connect upstream");
    return;
  }
  pc->up = up;
  int64_t t = pc->px->opts->upstream_timeout_ms;
  struct timeval tv = {(time_t)(t / 1000), (suseconds_t)(t % 1000) * 1000};
  bufferevent_set_timeouts(up, &tv, &tv);
  bufferevent_setwatermark(up, EV_WRITE, PIPE_LOW, 0);
  bufferevent_setwatermark(up, EV_READ, 0, PIPE_HIGH);
  bufferevent_setcb(up, on_upstream_read, on_upstream_write, on_upstream_event, pc);
  socklen_t len =
      pc->addr.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
  if (bufferevent_socket_connect(up, (struct sockaddr *)&pc->addr, (int)len) != 0) {
    upstream_failed(pc);
    return;
  }
  no_delay(bufferevent_getfd(up));
}

/* --- The sandbox's TLS inside the tunnel ------------------------------------------------- */

static void start_client_tls(pconn *pc) {
  struct evbuffer *out = bufferevent_get_output(pc->cli);
  if (evbuffer_get_length(bufferevent_get_input(pc->cli)) > 0) {
    fail(pc, 400, "data sent before the tunnel was established");
    return;
  }
  SSL *ssl = SSL_new(pc->px->sandbox_tls);
  if (ssl != NULL)
    SSL_set_app_data(ssl, pc); /* alpn_select offers h2 only if upstream chose it */
  char err[160];
  if (ssl == NULL ||
      sg_leaf_cache_use(pc->px->leaves, pc->target.host, ssl, err, sizeof(err)) != 0) {
    if (ssl != NULL)
      SSL_free(ssl);
    fail(pc, 502, "cannot make an interception certificate");
    return;
  }
  log_request(pc, 200, NULL);
  sg_stats_proxy_request(200, SG_PROXY_CONNECT);
  /* The answer goes out in the clear, then the socket changes hands to a TLS bufferevent. */
  char ok[] = "HTTP/1.1 200 Connection established\r\n\r\n";
  evutil_socket_t fd = bufferevent_getfd(pc->cli);
  (void)out;
  ssize_t n = send(fd, ok, sizeof(ok) - 1, MSG_NOSIGNAL);
  if (n != (ssize_t)(sizeof(ok) - 1)) {
    SSL_free(ssl);
    pc_free(pc);
    return;
  }
  pc->tunnel_counted = 1;
  sg_gauge_add(&sg_stats.proxy_tunnels_open, 1);
  /* Detach the fd from the plain bufferevent without closing it. */
  bufferevent_setfd(pc->cli, -1);
  bufferevent_free(pc->cli);
  pc->cli = bufferevent_openssl_socket_new(pc->base, fd, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                           BEV_OPT_CLOSE_ON_FREE);
  if (pc->cli == NULL) {
    close(fd);
    pc_free(pc);
    return;
  }
  bufferevent_openssl_set_allow_dirty_shutdown(pc->cli, 1);
  int64_t idle = pc->px->opts->idle_timeout_ms;
  struct timeval tv = {(time_t)(idle / 1000), (suseconds_t)(idle % 1000) * 1000};
  bufferevent_set_timeouts(pc->cli, idle > 0 ? &tv : NULL, NULL);
  bufferevent_setwatermark(pc->cli, EV_READ, 0, pc->px->opts->max_head_bytes + PIPE_HIGH);
  bufferevent_setwatermark(pc->cli, EV_WRITE, PIPE_LOW, 0);
  bufferevent_setcb(pc->cli, on_client_read, on_client_write, on_client_event, pc);
  bufferevent_enable(pc->cli, EV_READ | EV_WRITE);
  pc->state = P_HANDSHAKE;
  free(pc->head);
  pc->head = NULL;
  head_timer_stop(pc);
  head_timer_start(pc); /* the handshake inside the tunnel must finish in time too */
}

/* --- Requests -------------------------------------------------------------------------- */

static void on_client_read(struct bufferevent *bev, void *arg);

/* Emits the scanner's output into the pending chunk. */
static int emit_pending(void *arg, const char *data, size_t len) {
  pconn *pc = arg;
  return evbuffer_add(pc->pending, data, len) == 0 ? 0 : -1;
}

/* Sends the pending bytes upstream as one chunk. */
static void flush_chunk(pconn *pc) {
  size_t n = evbuffer_get_length(pc->pending);
  if (n == 0)
    return;
  char line[20];
  size_t l = sg_h1_chunk_header(line, n);
  struct evbuffer *out = bufferevent_get_output(pc->up);
  evbuffer_add(out, line, l);
  evbuffer_add_buffer(out, pc->pending);
  evbuffer_add(out, "\r\n", 2);
}

static int on_body_data(void *arg, const char *data, size_t len) {
  pconn *pc = arg;
  return sg_scan_feed(&pc->scanner, data, len);
}

static void begin_response(pconn *pc);

/* Streams the chunked body the client sends, re-chunked after substitution. */
static void pump_chunked(pconn *pc) {
  struct evbuffer *in = bufferevent_get_input(pc->cli);
  while (evbuffer_get_length(in) > 0 && !sg_h1_chunked_done(&pc->chunked)) {
    struct evbuffer_iovec v;
    if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
      break;
    ssize_t used = sg_h1_chunked_decode(&pc->chunked, v.iov_base, v.iov_len, on_body_data, pc);
    if (used < 0) {
      fail(pc, 400, sg_h1_chunked_why(&pc->chunked));
      return;
    }
    evbuffer_drain(in, (size_t)used);
  }
  if (sg_h1_chunked_done(&pc->chunked)) {
    sg_scan_finish(&pc->scanner);
    flush_chunk(pc);
    evbuffer_add(bufferevent_get_output(pc->up), SG_H1_LAST_CHUNK, SG_H1_LAST_CHUNK_LEN);
    begin_response(pc);
    return;
  }
  flush_chunk(pc);
  if (evbuffer_get_length(bufferevent_get_output(pc->up)) > PIPE_HIGH)
    bufferevent_disable(pc->cli, EV_READ);
}

/* Sends a buffered Content-Length body once all of it is in. */
static void pump_length(pconn *pc) {
  struct evbuffer *in = bufferevent_get_input(pc->cli);
  if (evbuffer_get_length(in) < pc->body_left) {
    if (pc->client_eof)
      fail(pc, 400, "request body cut short");
    return;
  }
  const char *body = (const char *)evbuffer_pullup(in, (ev_ssize_t)pc->body_left);
  sg_scan_init(&pc->scanner, sg_subst_lookup, &pc->rq, emit_pending, pc);
  sg_scan_feed(&pc->scanner, body, pc->body_left);
  sg_scan_finish(&pc->scanner);
  evbuffer_drain(in, pc->body_left);
  struct evbuffer *out = bufferevent_get_output(pc->up);
  evbuffer_add_buffer(out, pc->held);
  evbuffer_free(pc->held);
  pc->held = NULL;
  evbuffer_add_printf(out, "Content-Length: %zu\r\n\r\n", evbuffer_get_length(pc->pending));
  evbuffer_add_buffer(out, pc->pending);
  begin_response(pc);
}

/* Adds a header value with its tokens substituted. */
static void add_value(pconn *pc, struct evbuffer *h, const sg_h1_header *f) {
  size_t n;
  char *v = sg_subst_header(&pc->rq, f->name, f->name_len, f->value, f->value_len, &n);
  if (v == NULL) {
    evbuffer_add(h, f->value, f->value_len);
    return;
  }
  evbuffer_add(h, v, n);
  sg_subst_free_text(v, n);
}

/* The head the proxy sends upstream, without its framing line and final CRLF. */
static struct evbuffer *build_head(pconn *pc, const char *target, size_t target_len) {
  struct evbuffer *h = evbuffer_new();
  const sg_h1_request *r = &pc->req;
  evbuffer_add(h, r->method, r->method_len);
  evbuffer_add(h, " ", 1);
  size_t n;
  char *t = sg_subst_target(&pc->rq, target, target_len, &n);
  if (t != NULL) {
    evbuffer_add(h, t, n);
    sg_subst_free_text(t, n);
  } else {
    evbuffer_add(h, target, target_len);
  }
  evbuffer_add(h, " HTTP/1.1\r\n", 11);
  for (size_t i = 0; i < r->num_headers; i++) {
    const sg_h1_header *f = &r->headers[i];
    /* Host goes on even if a Connection header names it: upstream needs it. */
    if ((sg_h1_is_hop_by_hop(r->headers, r->num_headers, f->name, f->name_len) &&
         !sg_h1_header_eq(f, "host")) ||
        sg_h1_header_eq(f, "content-length") || sg_h1_header_eq(f, "expect"))
      continue;
    evbuffer_add(h, f->name, f->name_len);
    evbuffer_add(h, ": ", 2);
    add_value(pc, h, f);
    evbuffer_add(h, "\r\n", 2);
  }
  if (r->upgrade) {
    for (size_t i = 0; i < r->num_headers; i++)
      if (sg_h1_header_eq(&r->headers[i], "upgrade")) {
        evbuffer_add(h, "Upgrade: ", 9);
        add_value(pc, h, &r->headers[i]);
        evbuffer_add(h, "\r\n", 2);
      }
    evbuffer_add(h, "Connection: Upgrade\r\n", 21);
  }
  return h;
}

/* Sends the request at hand upstream (its head now, its body as it comes). */
static void forward_request(pconn *pc) {
  if (pc->up == NULL || !pc->up_ready) {
    connect_upstream(pc);
    return;
  }
  const sg_h1_request *r = &pc->req;
  struct evbuffer *head;
  sg_h1_target t;
  pc->rq.view = pc->view;
  pc->rq.host = pc->target.host;
  if (r->form == SG_H1_TARGET_ABSOLUTE &&
      sg_h1_split_target(r->target, r->target_len, &t, NULL) == 0) {
    /* Upstream gets origin form: the path, then the query. */
    char *p = sg_malloc(t.path_len + t.query_len + 1);
    memcpy(p, t.path, t.path_len);
    memcpy(p + t.path_len, t.query, t.query_len);
    head = build_head(pc, p, t.path_len + t.query_len);
    free(p);
  } else {
    head = build_head(pc, r->target, r->target_len);
  }
  if (r->expect_continue && (r->chunked || r->content_length > 0))
    evbuffer_add(bufferevent_get_output(pc->cli), "HTTP/1.1 100 Continue\r\n\r\n", 25);
  if (pc->pending == NULL)
    pc->pending = evbuffer_new();
  if (r->chunked) {
    evbuffer_add(head, "Transfer-Encoding: chunked\r\n\r\n", 30);
    evbuffer_add_buffer(bufferevent_get_output(pc->up), head);
    evbuffer_free(head);
    sg_h1_chunked_init(&pc->chunked, 0);
    sg_scan_init(&pc->scanner, sg_subst_lookup, &pc->rq, emit_pending, pc);
    pc->state = P_BODY_CHUNK;
    pump_chunked(pc);
    return;
  }
  if (r->content_length > 0) {
    pc->body_left = (uint64_t)r->content_length;
    pc->state = P_BODY_CL;
    bufferevent_setwatermark(pc->cli, EV_READ, 0,
                             pc->body_left + pc->px->opts->max_head_bytes + PIPE_HIGH);
    if (pc->held != NULL)
      evbuffer_free(pc->held);
    pc->held = head; /* the head waits for the body: its Content-Length is not known yet */
    pump_length(pc);
    return;
  }
  if (r->content_length == 0)
    evbuffer_add(head, "Content-Length: 0\r\n", 19);
  evbuffer_add(head, "\r\n", 2);
  evbuffer_add_buffer(bufferevent_get_output(pc->up), head);
  evbuffer_free(head);
  begin_response(pc);
}

/* --- Responses ------------------------------------------------------------------------- */

static int emit_client(void *arg, const char *data, size_t len) {
  pconn *pc = arg;
  struct evbuffer *out = bufferevent_get_output(pc->cli);
  if (pc->rechunk) {
    char line[20];
    size_t l = sg_h1_chunk_header(line, len);
    evbuffer_add(out, line, l);
    evbuffer_add(out, data, len);
    return evbuffer_add(out, "\r\n", 2);
  }
  return evbuffer_add(out, data, len);
}

static void begin_response(pconn *pc) {
  sg_subst_audit(&pc->rq);
  pc->state = P_RESPONSE;
  pc->resp_head_done = 0;
  pc->redacting = 0;
  pc->rechunk = 0;
  pc->redacting = sg_subst_arm_reflector(&pc->rq, emit_client, pc);
  bufferevent_setwatermark(pc->cli, EV_READ, 0, pc->px->opts->max_head_bytes + PIPE_HIGH);
  if (pc->up != NULL && evbuffer_get_length(bufferevent_get_input(pc->up)) > 0)
    on_upstream_read(pc->up, pc);
}

/* The response is complete: get ready for the next request, or close. */
static void end_response(pconn *pc) {
  log_request(pc, pc->resp_status, NULL);
  count_request(pc->resp_status, NULL);
  if (pc->redacting)
    sg_redact_free(&pc->rq.reflector);
  pc->redacting = 0;
  if (pc->upstream_close && pc->up != NULL) {
    bufferevent_free(pc->up);
    pc->up = NULL;
    pc->up_ready = 0;
  }
  free(pc->head);
  pc->head = NULL;
  pc->started_ns = 0;
  if (pc->client_close) {
    close_after_flush(pc);
    return;
  }
  pc->state = P_HEAD;
  bufferevent_enable(pc->cli, EV_READ);
  if (evbuffer_get_length(bufferevent_get_input(pc->cli)) > 0)
    on_client_read(pc->cli, pc);
}

static int header_is_identity_coded(const sg_h1_response *r) {
  for (size_t i = 0; i < r->num_headers; i++)
    if (sg_h1_header_eq(&r->headers[i], "content-encoding") &&
        !(r->headers[i].value_len == 8 && strncasecmp(r->headers[i].value, "identity", 8) == 0))
      return 0;
  return 1;
}

/* Writes the response head to the client. Returns 0, or -1 after failing the connection. */
static int relay_response_head(pconn *pc) {
  struct evbuffer *in = bufferevent_get_input(pc->up);
  size_t avail = evbuffer_get_length(in);
  size_t max = pc->px->opts->max_head_bytes;
  const char *buf = (const char *)evbuffer_pullup(in, (ev_ssize_t)(avail < max ? avail : max));
  sg_h1_response res;
  int is_head = pc->req.method_len == 4 && memcmp(pc->req.method, "HEAD", 4) == 0;
  int n = sg_h1_parse_response(buf, avail < max ? avail : max, max, is_head, &res);
  if (n == SG_H1_PARTIAL)
    return 1;
  if (n < 0) {
    fail(pc, 502, "upstream sent a malformed response");
    return -1;
  }
  if (res.status >= 100 && res.status < 200 && res.status != 101) {
    evbuffer_drain(in, (size_t)n); /* 100 Continue was ours to send; others are dropped */
    return 2;
  }
  struct evbuffer *out = bufferevent_get_output(pc->cli);
  pc->resp_status = res.status;
  int upgrading = res.status == 101;
  if (upgrading && !pc->req.upgrade) {
    fail(pc, 502, "upstream switched protocols unasked");
    return -1;
  }
  int redact_body =
      pc->redacting && header_is_identity_coded(&res) && !res.no_body && !res.transfer_coded;
  pc->rin = res.no_body || upgrading  ? R_NONE
            : res.chunked             ? R_CHUNKED
            : res.content_length >= 0 ? R_LENGTH
                                      : R_CLOSE;
  pc->resp_left = res.content_length > 0 ? (uint64_t)res.content_length : 0;
  pc->client_close = !pc->req.keep_alive || pc->client_eof;
  pc->upstream_close = !res.keep_alive || pc->rin == R_CLOSE;
  /* Our own framing when the body changes length: chunked for an HTTP/1.1 client, the
   * end of the connection for HTTP/1.0. */
  pc->rechunk = 0;
  if (redact_body && pc->rin != R_NONE) {
    if (pc->req.minor_version >= 1)
      pc->rechunk = 1;
    else
      pc->client_close = 1;
  }
  if (pc->rin == R_CLOSE && !pc->rechunk)
    pc->client_close = 1;
  evbuffer_add_printf(out, "HTTP/1.1 %d ", res.status);
  evbuffer_add(out, res.reason, res.reason_len);
  evbuffer_add(out, "\r\n", 2);
  for (size_t i = 0; i < res.num_headers; i++) {
    const sg_h1_header *f = &res.headers[i];
    if (sg_h1_is_hop_by_hop(res.headers, res.num_headers, f->name, f->name_len))
      continue;
    if (pc->rechunk && sg_h1_header_eq(f, "content-length"))
      continue;
    evbuffer_add(out, f->name, f->name_len);
    evbuffer_add(out, ": ", 2);
    if (pc->redacting) {
      size_t rn;
      char *r = sg_redact_all(&pc->rq.reflector, f->value, f->value_len, &rn, NULL);
      evbuffer_add(out, r, rn);
      free(r);
    } else {
      evbuffer_add(out, f->value, f->value_len);
    }
    evbuffer_add(out, "\r\n", 2);
  }
  if (upgrading) {
    for (size_t i = 0; i < res.num_headers; i++)
      if (sg_h1_header_eq(&res.headers[i], "upgrade")) {
        evbuffer_add(out, "Upgrade: ", 9);
        evbuffer_add(out, res.headers[i].value, res.headers[i].value_len);
        evbuffer_add(out, "\r\n", 2);
      }
    evbuffer_add(out, "Connection: Upgrade\r\n", 21);
  } else if (res.transfer_coded && pc->rin == R_CHUNKED) {
    /* "gzip, chunked": the chunks are relayed as they are, so their coding goes on too. */
    for (size_t i = 0; i < res.num_headers; i++)
      if (sg_h1_header_eq(&res.headers[i], "transfer-encoding")) {
        evbuffer_add(out, "Transfer-Encoding: ", 19);
        evbuffer_add(out, res.headers[i].value, res.headers[i].value_len);
        evbuffer_add(out, "\r\n", 2);
      }
  } else if (pc->rechunk || (pc->rin == R_CHUNKED)) {
    evbuffer_add(out, "Transfer-Encoding: chunked\r\n", 28);
  }
  if (pc->client_close && !upgrading)
    evbuffer_add(out, "Connection: close\r\n", 19);
  evbuffer_add(out, "\r\n", 2);
  evbuffer_drain(in, (size_t)n);
  pc->resp_head_done = 1;
  pc->redacting = redact_body;
  if (pc->rin == R_CHUNKED)
    sg_h1_chunked_init(&pc->resp_chunked, 0);
  if (upgrading) {
    log_request(pc, 101, NULL);
    count_request(101, NULL);
    pc->state = P_PIPE;
    bufferevent_set_timeouts(pc->cli, NULL, NULL);
    bufferevent_set_timeouts(pc->up, NULL, NULL);
    bufferevent_setwatermark(pc->cli, EV_READ, 0, PIPE_HIGH);
    bufferevent_enable(pc->cli, EV_READ);
    if (evbuffer_get_length(bufferevent_get_input(pc->cli)) > 0)
      on_client_read(pc->cli, pc);
  }
  return 0;
}

static int on_resp_chunk(void *arg, const char *data, size_t len) {
  pconn *pc = arg;
  return sg_redact_feed(&pc->rq.reflector, data, len);
}

static int count_only(void *arg, const char *data, size_t len) {
  (void)arg;
  (void)data;
  (void)len;
  return 0;
}

/* Relays body bytes from upstream; returns 1 when the body is complete. */
static int relay_response_body(pconn *pc) {
  struct evbuffer *in = bufferevent_get_input(pc->up);
  struct evbuffer *out = bufferevent_get_output(pc->cli);
  switch (pc->rin) {
  case R_NONE:
    return 1;
  case R_LENGTH: {
    size_t n = evbuffer_get_length(in);
    if (n > pc->resp_left)
      n = (size_t)pc->resp_left;
    if (pc->redacting) {
      const char *p = (const char *)evbuffer_pullup(in, (ev_ssize_t)n);
      sg_redact_feed(&pc->rq.reflector, p, n);
      evbuffer_drain(in, n);
    } else {
      evbuffer_remove_buffer(in, out, n);
    }
    pc->resp_left -= n;
    if (pc->resp_left > 0)
      return 0;
    if (pc->redacting)
      sg_redact_finish(&pc->rq.reflector);
    if (pc->rechunk)
      evbuffer_add(out, SG_H1_LAST_CHUNK, SG_H1_LAST_CHUNK_LEN);
    return 1;
  }
  case R_CHUNKED:
    while (evbuffer_get_length(in) > 0 && !sg_h1_chunked_done(&pc->resp_chunked)) {
      struct evbuffer_iovec v;
      if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
        break;
      ssize_t used = sg_h1_chunked_decode(&pc->resp_chunked, v.iov_base, v.iov_len,
                                          pc->redacting ? on_resp_chunk : count_only, pc);
      if (used < 0) {
        pc_free(pc);
        return -1;
      }
      if (pc->redacting)
        evbuffer_drain(in, (size_t)used);
      else
        evbuffer_remove_buffer(in, out, (size_t)used);
    }
    if (!sg_h1_chunked_done(&pc->resp_chunked))
      return 0;
    if (pc->redacting) {
      sg_redact_finish(&pc->rq.reflector);
      evbuffer_add(out, SG_H1_LAST_CHUNK, SG_H1_LAST_CHUNK_LEN);
    }
    return 1;
  case R_CLOSE:
    if (pc->redacting) {
      size_t n = evbuffer_get_length(in);
      const char *p = (const char *)evbuffer_pullup(in, (ev_ssize_t)n);
      sg_redact_feed(&pc->rq.reflector, p, n);
      evbuffer_drain(in, n);
    } else {
      evbuffer_add_buffer(out, in);
    }
    return 0; /* ends with upstream's EOF (on_upstream_event) */
  }
  return 0;
}

static void on_upstream_read(struct bufferevent *bev, void *arg) {
  pconn *pc = arg;
  if (pc->state == P_PIPE) {
    relay(bev, pc->cli, bufferevent_get_input(bev));
    return;
  }
  if (pc->state != P_RESPONSE) {
    /* Bytes nobody asked for (before a request, or while one is still being sent): a
     * response cannot precede its request, so the upstream is misbehaving or answering
     * early; the latter is handled once the request is sent. */
    if (pc->state == P_HEAD && pc->up != NULL) {
      bufferevent_free(pc->up);
      pc->up = NULL;
      pc->up_ready = 0;
    }
    return;
  }
  while (!pc->resp_head_done) {
    int rv = relay_response_head(pc);
    if (rv == 2)
      continue;
    if (rv != 0)
      return;
    if (pc->state == P_PIPE) {
      if (evbuffer_get_length(bufferevent_get_input(bev)) > 0)
        relay(bev, pc->cli, bufferevent_get_input(bev));
      return;
    }
  }
  int done = relay_response_body(pc);
  if (done < 0)
    return;
  if (evbuffer_get_length(bufferevent_get_output(pc->cli)) > PIPE_HIGH)
    bufferevent_disable(bev, EV_READ);
  if (done)
    end_response(pc);
}

/* --- Reading requests ------------------------------------------------------------------ */

static void on_client_read(struct bufferevent *bev, void *arg) {
  pconn *pc = arg;
  switch (pc->state) {
  case P_HEAD:
    process_head(pc);
    return;
  case P_BODY_CL:
    pump_length(pc);
    return;
  case P_BODY_CHUNK:
    pump_chunked(pc);
    return;
  case P_PIPE:
    if (pc->up != NULL)
      relay(bev, pc->up, bufferevent_get_input(bev));
    return;
  default:
    return; /* a pipelined request waits in the buffer for its turn */
  }
}

/* Nonzero if the Host header (or the absolute-form authority) names the CONNECT host. */
static int host_agrees(pconn *pc, const char *authority, size_t len) {
  sg_authority a;
  if (sg_authority_parse(authority, len, 443, &a) != 0)
    return 0;
  return strcmp(a.host, pc->target.host) == 0 && a.port == pc->target.port;
}

/* A request inside the tunnel: decide whether its tokens may be substituted, then send it. */
static void tunnel_request(pconn *pc) {
  const sg_h1_request *r = &pc->req;
  pc->rq.withhold = NULL;
  if (r->form == SG_H1_TARGET_AUTHORITY) {
    fail(pc, 400, "CONNECT inside a tunnel");
    return;
  }
  const char *authority = r->host;
  size_t alen = r->host_len;
  sg_h1_target t;
  if (r->form == SG_H1_TARGET_ABSOLUTE) {
    const char *why = NULL;
    if (sg_h1_split_target(r->target, r->target_len, &t, &why) != 0) {
      fail(pc, 400, why != NULL ? why : "bad request target");
      return;
    }
    authority = t.authority;
    alen = t.authority_len;
  }
  if (pc->sni_state == 0)
    pc->rq.withhold = "no TLS SNI";
  else if (pc->sni_state < 0)
    pc->rq.withhold = "TLS SNI differs from the CONNECT host";
  else if (authority == NULL || !host_agrees(pc, authority, alen))
    pc->rq.withhold = "Host differs from the CONNECT host";
  forward_request(pc);
}

/* A request on the proxy leg: CONNECT, or a plain-http request in absolute form. */
static void proxy_request(pconn *pc) {
  const sg_h1_request *r = &pc->req;
  const char *authority;
  size_t alen;
  uint16_t standard;
  if (r->form == SG_H1_TARGET_AUTHORITY) {
    authority = r->target;
    alen = r->target_len;
    standard = 443;
  } else if (r->form == SG_H1_TARGET_ABSOLUTE) {
    sg_h1_target t;
    const char *why = NULL;
    if (sg_h1_split_target(r->target, r->target_len, &t, &why) != 0) {
      fail(pc, 400, why != NULL ? why : "bad request target");
      return;
    }
    if (!(t.scheme_len == 4 && strncasecmp(t.scheme, "http", 4) == 0)) {
      fail(pc, 400, "only http:// in absolute form; https goes through CONNECT");
      return;
    }
    authority = t.authority;
    alen = t.authority_len;
    standard = 80;
  } else {
    fail(pc, 400, "not a proxy request (use CONNECT or an absolute URL)");
    return;
  }
  sg_authority a;
  if (sg_authority_parse(authority, alen, r->form == SG_H1_TARGET_AUTHORITY ? 0 : 80, &a) != 0 ||
      memmem(a.host, strlen(a.host), SG_TOKEN_PREFIX, SG_TOKEN_PREFIX_LEN) != NULL) {
    fail(pc, 400, "bad host");
    return;
  }
  /* A plain-http connection may move between hosts; a new host means a new upstream. */
  if (pc->up != NULL && (strcmp(a.host, pc->target.host) != 0 || a.port != pc->target.port)) {
    bufferevent_free(pc->up);
    pc->up = NULL;
    pc->up_ready = 0;
  }
  pc->target = a;
  pc->tunnel = r->form == SG_H1_TARGET_AUTHORITY;
  pc->rq.withhold = "plain http: a secret never travels in the clear";
  if (parse_credential(pc) != 0) {
    fail(pc, 407, "proxy credential missing or malformed");
    return;
  }
  pc->standard_port = standard; /* the port needs no --proxy-allow-port (after_auth) */
  need_view(pc);
}

#define HOST_NO_LONGER_ALLOWED "host no longer in the sandbox's egress allowlist"

/* After the view: the credential, the allowlist, then the address. */
static void after_auth(pconn *pc) {
  if (!pc->in_tunnel) {
    if (check_credential(pc) != 0)
      return;
    /* Checked once the sandbox is known, so the refusal is audited like the others. */
    if (!port_allowed(pc->px, pc->target.port, pc->standard_port)) {
      audit(pc, NULL, SG_AUDIT_DENIED, "port not allowed");
      fail(pc, 403, "port not allowed");
      return;
    }
    if (!sg_view_host_allowed(pc->view, pc->target.host)) {
      audit(pc, NULL, SG_AUDIT_DENIED, "host not in the sandbox's egress allowlist");
      fail(pc, 403, "host not in the sandbox's egress allowlist");
      return;
    }
    if (pc->up != NULL && pc->up_ready) {
      forward_request(pc); /* plain http, same host as before */
      return;
    }
    resolve_target(pc);
    return;
  }
  /* Inside the tunnel: the view was refreshed; the sandbox must still be live, and the
   * tunnel's host still in its allowlist (a store's allowlist change reaches open tunnels at
   * their next request, not only new CONNECTs). */
  if (!sg_view_live(pc->view)) {
    fail(pc, 403, "sandbox has ended");
    return;
  }
  if (!sg_view_host_allowed(pc->view, pc->target.host)) {
    audit(pc, NULL, SG_AUDIT_DENIED, HOST_NO_LONGER_ALLOWED);
    fail(pc, 403, HOST_NO_LONGER_ALLOWED);
    return;
  }
  tunnel_request(pc);
}

static void process_head(pconn *pc) {
  struct evbuffer *in = bufferevent_get_input(pc->cli);
  size_t avail = evbuffer_get_length(in);
  if (avail == 0)
    return;
  head_timer_start(pc); /* no-op if it runs already (since the connection's start) */
  size_t max = pc->px->opts->max_head_bytes;
  size_t take = avail < max ? avail : max;
  const char *buf = (const char *)evbuffer_pullup(in, (ev_ssize_t)take);
  if (!sg_h1_head_worth_parsing(buf, take, pc->head_seen, max)) {
    pc->head_seen = take;
    return;
  }
  pc->head_seen = take;
  int n = sg_h1_parse_request(buf, take, max, &pc->req);
  if (n == SG_H1_PARTIAL)
    return;
  head_timer_stop(pc);
  pc->head_seen = 0;
  snprintf(pc->rq.method, sizeof(pc->rq.method), "%.*s",
           n > 0 ? (int)(pc->req.method_len < 15 ? pc->req.method_len : 15) : 0,
           n > 0 ? pc->req.method : "");
  pc->rq.path[0] = '\0';
  pc->started_ns = sg_now_ns();
  if (n == SG_H1_TOO_LARGE) {
    fail(pc, 431, pc->req.why != NULL ? pc->req.why : "request head too large");
    return;
  }
  if (n < 0) {
    fail(pc, 400, pc->req.why != NULL ? pc->req.why : "malformed request");
    return;
  }
  /* Keep our own copy of the head: |req| points into it while the request waits. */
  free(pc->head);
  pc->head = sg_malloc((size_t)n);
  memcpy(pc->head, buf, (size_t)n);
  pc->head_len = (size_t)n;
  evbuffer_drain(in, (size_t)n);
  sg_h1_parse_request(pc->head, pc->head_len, max, &pc->req);
  const char *path = pc->req.target;
  size_t path_len = pc->req.form == SG_H1_TARGET_AUTHORITY ? 0 : pc->req.target_len;
  sg_h1_target t;
  if (pc->req.form == SG_H1_TARGET_ABSOLUTE &&
      sg_h1_split_target(pc->req.target, pc->req.target_len, &t, NULL) == 0) {
    path = t.path;
    path_len = t.path_len;
  }
  sg_subst_begin(&pc->rq, pc->view, pc->target.host, NULL, pc->req.method, pc->req.method_len, path,
                 path_len);
  if (pc->req.content_length > 0 &&
      (uint64_t)pc->req.content_length > pc->px->opts->max_body_bytes) {
    fail(pc, 413, "request body too large to inspect");
    return;
  }
  if (pc->req.upgrade && !pc->in_tunnel) {
    fail(pc, 400, "upgrade requests need https");
    return;
  }
  if (pc->in_tunnel) {
    need_view(pc); /* the view may have gone stale since the last request */
    return;
  }
  proxy_request(pc);
}

/* --- Set-up ---------------------------------------------------------------------------- */

/* The sandbox gets h2 only where upstream chose it: each side of the tunnel then speaks the
 * same protocol, and no request is translated. */
static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned int inlen, void *arg) {
  (void)arg;
  pconn *pc = SSL_get_app_data(ssl);
  static const unsigned char both[] = {2, 'h', '2', 8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
  const unsigned char *protos = pc != NULL && pc->up_h2 ? both : both + 3;
  unsigned int plen = pc != NULL && pc->up_h2 ? sizeof(both) : sizeof(both) - 3;
  if (SSL_select_next_proto((unsigned char **)out, outlen, protos, plen, in, inlen) !=
      OPENSSL_NPN_NEGOTIATED)
    return SSL_TLSEXT_ERR_NOACK;
  return SSL_TLSEXT_ERR_OK;
}

sg_proxy *sg_proxy_new(const sg_proxy_options *opts, char *err, size_t errlen) {
  sg_proxy *px = sg_calloc(1, sizeof(*px));
  px->opts = opts;
  px->sandbox_tls = SSL_CTX_new(TLS_server_method());
  px->upstream_tls = SSL_CTX_new(TLS_client_method());
  if (px->sandbox_tls == NULL || px->upstream_tls == NULL) {
    snprintf(err, errlen, "cannot create TLS contexts");
    sg_proxy_free(px);
    return NULL;
  }
  SSL_CTX_set_min_proto_version(px->sandbox_tls, TLS1_2_VERSION);
  /* Many servers (and clients) close TCP without TLS close_notify; a close-delimited body or
   * an upgraded connection then ends there, as it would for a client talking to them
   * directly. */
  SSL_CTX_set_options(px->sandbox_tls, SSL_OP_IGNORE_UNEXPECTED_EOF);
  SSL_CTX_set_options(px->upstream_tls, SSL_OP_IGNORE_UNEXPECTED_EOF);
  SSL_CTX_set_alpn_select_cb(px->sandbox_tls, alpn_select, NULL);
  SSL_CTX_set_mode(px->sandbox_tls, SSL_MODE_RELEASE_BUFFERS);
  SSL_CTX_set_min_proto_version(px->upstream_tls, TLS1_2_VERSION);
  SSL_CTX_set_verify(px->upstream_tls, SSL_VERIFY_PEER, NULL);
  SSL_CTX_set_mode(px->upstream_tls, SSL_MODE_RELEASE_BUFFERS);
  static const unsigned char both[] = {2, 'h', '2', 8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
  SSL_CTX_set_alpn_protos(px->upstream_tls, both, sizeof(both));
  if (SSL_CTX_set_default_verify_paths(px->upstream_tls) != 1) {
    snprintf(err, errlen, "cannot load the system's trusted certificates");
    sg_proxy_free(px);
    return NULL;
  }
  if (opts->upstream_ca != NULL &&
      SSL_CTX_load_verify_locations(px->upstream_tls, opts->upstream_ca, NULL) != 1) {
    snprintf(err, errlen, "--upstream-ca %s: not a readable PEM certificate bundle",
             opts->upstream_ca);
    ERR_clear_error();
    sg_proxy_free(px);
    return NULL;
  }
  px->allow = sg_cidr_list_new();
  px->fixed = sg_resolve_map_new();
  px->resolve = (sg_resolve_config){px->fixed, px->allow};
  for (size_t i = 0; i < opts->allow_cidrs.n; i++) {
    char why[160];
    if (sg_cidr_list_add(px->allow, opts->allow_cidrs.items[i], why, sizeof(why)) != 0) {
      snprintf(err, errlen, "--proxy-allow-cidr %s: %s", opts->allow_cidrs.items[i], why);
      sg_proxy_free(px);
      return NULL;
    }
  }
  for (size_t i = 0; i < opts->resolve.n; i++) {
    char why[160];
    if (sg_resolve_map_add(px->fixed, opts->resolve.items[i], why, sizeof(why)) != 0) {
      snprintf(err, errlen, "--proxy-resolve %s: %s", opts->resolve.items[i], why);
      sg_proxy_free(px);
      return NULL;
    }
  }
  px->ports = sg_calloc(opts->allow_ports.n + 1, sizeof(*px->ports));
  for (size_t i = 0; i < opts->allow_ports.n; i++) {
    char *end;
    long v = strtol(opts->allow_ports.items[i], &end, 10);
    if (*end != '\0' || v < 1 || v > 65535) {
      snprintf(err, errlen, "--proxy-allow-port %s: not a port number (1-65535)",
               opts->allow_ports.items[i]);
      sg_proxy_free(px);
      return NULL;
    }
    px->ports[px->n_ports++] = (uint16_t)v;
  }
  px->leaves = sg_leaf_cache_new(opts->ca, 4096);
  return px;
}

void sg_proxy_free(sg_proxy *px) {
  if (px == NULL)
    return;
  if (px->sandbox_tls != NULL)
    SSL_CTX_free(px->sandbox_tls);
  if (px->upstream_tls != NULL)
    SSL_CTX_free(px->upstream_tls);
  sg_leaf_cache_free(px->leaves);
  sg_cidr_list_free(px->allow);
  sg_resolve_map_free(px->fixed);
  free(px->ports);
  free(px);
}

uint64_t sg_proxy_leaves_minted(const sg_proxy *px) {
  return sg_leaf_cache_minted(px->leaves);
}
