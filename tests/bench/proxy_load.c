/* The load generator of tests/bench/proxy.sh: HTTPS GET requests over HTTP/1.1, either straight
 * to a server or through an HTTP forward proxy (CONNECT, then TLS inside the tunnel), from ONE
 * thread driving N connections with epoll, so every row of the benchmark (direct, sealgate,
 * mitmproxy) is loaded by the same client doing the same work per request.
 *
 *   proxy_load --connect ADDR:PORT --host NAME --port PORT [--proxy] [--proxy-auth-file F]
 *              [--header-file F] [--path P] [--ca F] [--concurrency N] [--seconds S]
 *              [--warmup S] [--requests N] [--new-conn [--no-connection-close]]
 *              [--watch NAME=PID[,PID...]]...
 *
 * --connect is where the TCP connection goes: the server itself, or the proxy with --proxy,
 * which then sends "CONNECT NAME:PORT" (with Proxy-Authorization: Basic from the "user:pass"
 * in --proxy-auth-file) and needs a 2xx before the TLS handshake. TLS uses SNI NAME and, with
 * --ca, verifies the chain against that bundle and the name (as a sandbox's client would);
 * without --ca nothing is verified. Sessions are never resumed (no cache, no tickets): every
 * connection pays a full handshake, like a fresh process in a sandbox.
 *
 * Request lines come from files, not argv, since they may hold credentials: --header-file
 * holds extra header lines ("Name: value", one a line) sent with every request.
 *
 * Keep-alive mode (default): each connection is set up once and then sends one request after
 * another, the next as soon as a response is complete; a request's latency runs from its write
 * to the end of its response. --new-conn: every request gets a connection of its own (TCP
 * connect, CONNECT, handshake, the request with "Connection: close", close); its latency runs
 * from connect() to the end of the response, and the rate is new connections per second.
 * --no-connection-close leaves the header out: the client still closes after the response,
 * as a process that makes one request and exits does, but the request itself allows
 * keep-alive, so a proxy may keep its upstream connection for a later tunnel.
 *
 * Runs --warmup seconds untimed, then --seconds timed; a request counts in the window in which
 * it completed. In keep-alive mode the warm-up starts once all N connections are set up (at
 * most 30 s after the start; setup_s says how long it took), so that the window measures
 * requests on open connections only. With --requests N it stops after N responses instead (no
 * warm-up; --seconds still bounds it). Responses are parsed (Content-Length or chunked); a status
 * other than 200 counts as bad_status, a broken connection or a failed handshake as an error (the
 * first few are printed to stderr) and the connection is replaced.
 *
 * Prints one line of key=value pairs: setup_s, issued (requests started, all), rps, done
 * (timed), total (all responses), errors, bad_status, reconnects (connections the server closed
 * between requests), latency p50, p90, p99 and mean in microseconds, conns (connections set up,
 * all), leaves (distinct server certificates seen over all handshakes: through a proxy, the
 * leaves it presented), and CPU over the timed window: the client's own (getrusage), each
 * --watch group's (/proc/PID/stat, summed over its pids; PIDs that are gone count 0) and the
 * machine's busy time (/proc/stat), in microseconds per timed request (cpu_client_us,
 * cpu_NAME_us, cpu_busy_us) and in cores (cores_client, cores_NAME, cores_busy). Exits 0 once it
 * has measured (errors or not), 1 when nothing completed, 2 on a usage error. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memmem */
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#define MAX_CONNS      20000
#define BUF_CAP        65536 /* one response (head + body) must fit */
#define MAX_LEAVES     256   /* distinct certificates remembered */
#define MAX_WATCH      8
#define MAX_WATCH_PIDS 64
#define ERRORS_PRINTED 5
#define SETUP_MAX_S    30 /* keep-alive: longest wait for all N connections */

/* ST_DEAD: failed, to be replaced by the main loop; ST_IDLE: set up or answered after the end,
 * left alone until everything is closed. */
enum state {
  ST_TCP,
  ST_CONNECT_WRITE,
  ST_CONNECT_READ,
  ST_TLS,
  ST_REQUEST,
  ST_RESPONSE,
  ST_IDLE,
  ST_DEAD
};

typedef struct {
  int fd;
  SSL *ssl;
  enum state st;
  char buf[BUF_CAP]; /* CONNECT request being written, or what has been read */
  size_t len, off;
  uint64_t started_ns; /* this request's write (keep-alive), or connect() (--new-conn) */
  int fresh;           /* no request completed on this connection yet */
} conn;

typedef struct {
  char name[32];
  int pids[MAX_WATCH_PIDS];
  int npids;
  uint64_t start_ticks, end_ticks;
} watch;

static struct {
  struct sockaddr_in addr;
  const char *host, *path, *ca;
  int port, use_proxy, new_conn, no_close_header, concurrency;
  double seconds, warmup;
  uint64_t max_requests;
  char request[8192];
  size_t request_len;
  char connect_req[2048];
  size_t connect_len;
  SSL_CTX *ctx;
  int ep;
  watch watches[MAX_WATCH];
  int nwatch;
} cfg;

static struct {
  uint64_t window_start, window_end; /* ns, monotonic */
  uint64_t issued, total, done, errors, bad_status, reconnects, conns;
  int dead; /* connections in ST_DEAD */
  uint64_t *lat;
  size_t nlat, caplat;
  unsigned char leaves[MAX_LEAVES][32];
  int nleaves, leaves_overflow;
} st;

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void usage(void) {
  fprintf(stderr,
          "usage: proxy_load --connect ADDR:PORT --host NAME --port PORT [--proxy]\n"
          "       [--proxy-auth-file F] [--header-file F] [--path P] [--ca F] [--concurrency N]\n"
          "       [--seconds S] [--warmup S] [--requests N] [--new-conn [--no-connection-close]]\n"
          "       [--watch NAME=PID,...]\n");
  exit(2);
}

static void die(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "proxy_load: ");
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\n");
  va_end(ap);
  exit(1);
}

/* Reads a small file whole (NUL-terminated); dies if it cannot. */
static char *slurp(const char *path, size_t *len_out) {
  FILE *f = fopen(path, "rb");
  if (f == NULL)
    die("cannot open %s: %s", path, strerror(errno));
  char *buf = malloc(4097);
  size_t n = fread(buf, 1, 4096, f);
  if (!feof(f))
    die("%s is larger than 4 KiB", path);
  fclose(f);
  buf[n] = '\0';
  if (len_out != NULL)
    *len_out = n;
  return buf;
}

/* Appends the lines of |text| to |out| as CRLF-terminated header lines. */
static size_t append_header_lines(char *out, size_t off, size_t cap, const char *text) {
  const char *p = text;
  while (*p != '\0') {
    size_t n = strcspn(p, "\r\n");
    if (n > 0) {
      if (off + n + 2 >= cap)
        die("headers too long");
      memcpy(out + off, p, n);
      memcpy(out + off + n, "\r\n", 2);
      off += n + 2;
    }
    p += n;
    p += strspn(p, "\r\n");
  }
  return off;
}

static void build_requests(const char *header_file, const char *auth_file) {
  char authority[300];
  if (cfg.port == 443)
    snprintf(authority, sizeof authority, "%s", cfg.host);
  else
    snprintf(authority, sizeof authority, "%s:%d", cfg.host, cfg.port);
  int n = snprintf(cfg.request, sizeof cfg.request,
                   "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: sealgate-proxy-load\r\n"
                   "Accept: */*\r\n",
                   cfg.path, authority);
  size_t off = (size_t)n;
  if (header_file != NULL) {
    char *h = slurp(header_file, NULL);
    off = append_header_lines(cfg.request, off, sizeof cfg.request, h);
    free(h);
  }
  if (cfg.new_conn && !cfg.no_close_header)
    off = append_header_lines(cfg.request, off, sizeof cfg.request, "Connection: close");
  memcpy(cfg.request + off, "\r\n", 2);
  cfg.request_len = off + 2;

  if (!cfg.use_proxy)
    return;
  n = snprintf(cfg.connect_req, sizeof cfg.connect_req, "CONNECT %s:%d HTTP/1.1\r\nHost: %s:%d\r\n",
               cfg.host, cfg.port, cfg.host, cfg.port);
  off = (size_t)n;
  if (auth_file != NULL) {
    size_t len;
    char *cred = slurp(auth_file, &len);
    while (len > 0 && (cred[len - 1] == '\n' || cred[len - 1] == '\r'))
      len--;
    unsigned char b64[8192];
    EVP_EncodeBlock(b64, (unsigned char *)cred, (int)len);
    OPENSSL_cleanse(cred, len);
    free(cred);
    n = snprintf(cfg.connect_req + off, sizeof cfg.connect_req - off,
                 "Proxy-Authorization: Basic %s\r\n", (char *)b64);
    off += (size_t)n;
  }
  if (off + 2 >= sizeof cfg.connect_req)
    die("CONNECT request too long");
  memcpy(cfg.connect_req + off, "\r\n", 2);
  cfg.connect_len = off + 2;
}

/* ------------------------------------------------------------------ CPU accounting */

/* utime + stime of |pid| in clock ticks (all its threads), 0 if it is gone. */
static uint64_t pid_ticks(int pid) {
  char path[64], buf[1024];
  snprintf(path, sizeof path, "/proc/%d/stat", pid);
  FILE *f = fopen(path, "r");
  if (f == NULL)
    return 0;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  const char *p = strrchr(buf, ')'); /* the command name may hold spaces */
  if (p == NULL)
    return 0;
  unsigned long long ut = 0, stt = 0;
  /* fields after ")": state(3) ... utime(14) stime(15) */
  if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &stt) != 2)
    return 0;
  return ut + stt;
}

static uint64_t watch_ticks(const watch *w) {
  uint64_t t = 0;
  for (int i = 0; i < w->npids; i++)
    t += pid_ticks(w->pids[i]);
  return t;
}

/* Busy ticks of all cores (everything but idle and iowait) from /proc/stat. */
static uint64_t busy_ticks(void) {
  FILE *f = fopen("/proc/stat", "r");
  if (f == NULL)
    return 0;
  unsigned long long v[8] = {0};
  int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
                 &v[4], &v[5], &v[6], &v[7]);
  fclose(f);
  if (n < 8)
    return 0;
  return v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
}

static double self_cpu_s(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
         ru.ru_stime.tv_usec / 1e6;
}

static void parse_watch(const char *arg) {
  if (cfg.nwatch == MAX_WATCH)
    die("too many --watch");
  watch *w = &cfg.watches[cfg.nwatch++];
  const char *eq = strchr(arg, '=');
  if (eq == NULL || eq == arg || (size_t)(eq - arg) >= sizeof w->name)
    usage();
  memcpy(w->name, arg, (size_t)(eq - arg));
  for (const char *p = eq + 1; *p != '\0';) {
    char *end;
    long pid = strtol(p, &end, 10);
    if (end == p || pid <= 0 || w->npids == MAX_WATCH_PIDS)
      usage();
    w->pids[w->npids++] = (int)pid;
    p = *end == ',' ? end + 1 : end;
    if (*end != ',' && *end != '\0')
      usage();
  }
}

/* ------------------------------------------------------------------ one connection */

static void fail(conn *c, const char *fmt, ...);
static void open_conn(conn *c);

static void record_leaf(SSL *ssl) {
  X509 *cert = SSL_get0_peer_certificate(ssl);
  unsigned char md[32];
  unsigned int n = 0;
  if (cert == NULL || X509_digest(cert, EVP_sha256(), md, &n) != 1 || n != 32)
    return;
  for (int i = 0; i < st.nleaves; i++)
    if (memcmp(st.leaves[i], md, 32) == 0)
      return;
  if (st.nleaves == MAX_LEAVES) {
    st.leaves_overflow = 1;
    return;
  }
  memcpy(st.leaves[st.nleaves++], md, 32);
}

static void close_conn(conn *c) {
  if (c->ssl != NULL) {
    SSL_free(c->ssl);
    c->ssl = NULL;
  }
  if (c->fd >= 0)
    close(c->fd);
  c->fd = -1;
}

static int in_window(uint64_t t) {
  return t >= st.window_start && t < st.window_end;
}

static void record_latency(uint64_t ns) {
  if (st.nlat == st.caplat) {
    st.caplat = st.caplat ? st.caplat * 2 : 65536;
    st.lat = realloc(st.lat, st.caplat * sizeof *st.lat);
    if (st.lat == NULL)
      die("out of memory");
  }
  st.lat[st.nlat++] = ns;
}

/* May another request start? */
static int may_issue(void) {
  if (cfg.max_requests > 0 && st.issued >= cfg.max_requests)
    return 0;
  return now_ns() < st.window_end;
}

static void start_request(conn *c) {
  c->st = ST_REQUEST;
  c->len = 0;
  if (!cfg.new_conn) { /* --new-conn: counted and timed from open_conn */
    st.issued++;
    c->started_ns = now_ns();
  }
}

/* Finds the end of a complete HTTP/1.1 response at the start of |b| (|n| bytes). Returns the
 * number of bytes it takes (its status in |*status|, a "Connection: close" in |*close_after|),
 * 0 if it is not complete yet, -1 if it is malformed. */
static long parse_response(const char *b, size_t n, int *status, int *close_after) {
  const char *end = memmem(b, n, "\r\n\r\n", 4);
  if (end == NULL)
    return n >= BUF_CAP ? -1 : 0;
  size_t head = (size_t)(end - b) + 4;
  if (n < 12 || memcmp(b, "HTTP/1.", 7) != 0)
    return -1;
  *status = atoi(b + 9);
  *close_after = memcmp(b, "HTTP/1.0", 8) == 0;
  long clen = -1;
  int chunked = 0;
  const char *line = memchr(b, '\n', head);
  /* header lines lie between the status line and |end|; the last one's LF is at end + 1 */
  for (line = line != NULL ? line + 1 : end; line < end;) {
    const char *eol = memchr(line, '\n', (size_t)(end + 2 - line));
    size_t ll = (size_t)(eol - line);
    if (ll > 15 && strncasecmp(line, "content-length:", 15) == 0)
      clen = strtol(line + 15, NULL, 10);
    else if (ll > 18 && strncasecmp(line, "transfer-encoding:", 18) == 0)
      chunked = memmem(line, ll, "chunked", 7) != NULL;
    else if (ll > 11 && strncasecmp(line, "connection:", 11) == 0)
      *close_after = memmem(line, ll, "close", 5) != NULL;
    line = eol + 1;
  }
  if (*status == 204 || *status == 304)
    return (long)head;
  if (chunked) {
    size_t p = head;
    for (;;) {
      const char *crlf = memmem(b + p, n - p, "\r\n", 2);
      if (crlf == NULL)
        return 0;
      char *e;
      unsigned long size = strtoul(b + p, &e, 16);
      if (e == b + p)
        return -1;
      p = (size_t)(crlf - b) + 2;
      if (size == 0) { /* no trailers expected: the last chunk is followed by an empty line */
        if (n - p < 2)
          return 0;
        return memcmp(b + p, "\r\n", 2) == 0 ? (long)(p + 2) : -1;
      }
      if (n - p < size + 2)
        return n >= BUF_CAP ? -1 : 0;
      p += size + 2;
    }
  }
  if (clen < 0)
    return -1; /* read-to-EOF bodies are not expected here */
  if (n < head + (size_t)clen)
    return head + (size_t)clen > BUF_CAP ? -1 : 0;
  return (long)(head + (size_t)clen);
}

/* A complete response was read. */
static void on_response(conn *c, int status, int close_after) {
  uint64_t t = now_ns();
  st.total++;
  if (status != 200)
    st.bad_status++;
  if (in_window(t)) {
    st.done++;
    record_latency(t - c->started_ns);
  }
  c->fresh = 0;
  if (cfg.new_conn || close_after) {
    if (!cfg.new_conn)
      st.reconnects++;
    SSL_shutdown(c->ssl); /* close_notify, best effort: the socket is non-blocking */
    close_conn(c);
    if (may_issue())
      open_conn(c);
    return;
  }
  if (may_issue())
    start_request(c);
  else
    c->st = ST_IDLE;
}

static int ssl_would_block(conn *c, int r) {
  int e = SSL_get_error(c->ssl, r);
  return e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE;
}

/* Does what it can on |c| until it would block. */
static void drive(conn *c) {
  for (;;) {
    switch (c->st) {
    case ST_TCP: {
      int err = 0;
      socklen_t len = sizeof err;
      if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err == EINPROGRESS)
        return;
      if (err != 0)
        return fail(c, "connect: %s", strerror(err));
      /* still connecting: getsockopt gives 0 until it is done, so ask the socket */
      struct sockaddr_in peer;
      socklen_t pl = sizeof peer;
      if (getpeername(c->fd, (struct sockaddr *)&peer, &pl) != 0)
        return; /* not connected yet: wait for EPOLLOUT */
      if (cfg.use_proxy) {
        memcpy(c->buf, cfg.connect_req, cfg.connect_len);
        c->len = cfg.connect_len;
        c->off = 0;
        c->st = ST_CONNECT_WRITE;
      } else {
        c->st = ST_TLS;
      }
      break;
    }
    case ST_CONNECT_WRITE: {
      ssize_t w = send(c->fd, c->buf + c->off, c->len - c->off, MSG_NOSIGNAL);
      if (w < 0)
        return errno == EAGAIN ? (void)0 : fail(c, "send CONNECT: %s", strerror(errno));
      c->off += (size_t)w;
      if (c->off == c->len) {
        c->len = 0;
        c->st = ST_CONNECT_READ;
      }
      break;
    }
    case ST_CONNECT_READ: {
      ssize_t r = recv(c->fd, c->buf + c->len, BUF_CAP - 1 - c->len, 0);
      if (r < 0)
        return errno == EAGAIN ? (void)0 : fail(c, "read CONNECT response: %s", strerror(errno));
      if (r == 0)
        return fail(c, "proxy closed the connection after CONNECT");
      c->len += (size_t)r;
      c->buf[c->len] = '\0';
      char *end = strstr(c->buf, "\r\n\r\n");
      if (end == NULL) {
        if (c->len >= BUF_CAP - 1)
          return fail(c, "CONNECT response head too long");
        break;
      }
      if (strncmp(c->buf, "HTTP/1.", 7) != 0 || c->buf[9] != '2')
        return fail(c, "CONNECT answered: %.*s", (int)strcspn(c->buf, "\r\n"), c->buf);
      if ((size_t)(end + 4 - c->buf) != c->len)
        return fail(c, "bytes after the CONNECT response");
      c->len = 0;
      c->st = ST_TLS;
      break;
    }
    case ST_TLS: {
      if (c->ssl == NULL) {
        c->ssl = SSL_new(cfg.ctx);
        SSL_set_fd(c->ssl, c->fd);
        SSL_set_tlsext_host_name(c->ssl, cfg.host);
        if (cfg.ca != NULL)
          SSL_set1_host(c->ssl, cfg.host);
        SSL_set_connect_state(c->ssl);
      }
      int r = SSL_connect(c->ssl);
      if (r != 1) {
        if (ssl_would_block(c, r))
          return;
        char e[256];
        ERR_error_string_n(ERR_get_error(), e, sizeof e);
        long v = SSL_get_verify_result(c->ssl);
        return fail(c, "TLS handshake: %s%s%s", e, v != X509_V_OK ? "; verify: " : "",
                    v != X509_V_OK ? X509_verify_cert_error_string(v) : "");
      }
      st.conns++;
      record_leaf(c->ssl);
      if (!may_issue()) {
        c->st = ST_IDLE;
        return;
      }
      start_request(c);
      break;
    }
    case ST_REQUEST: {
      int w = SSL_write(c->ssl, cfg.request, (int)cfg.request_len);
      if (w <= 0)
        return ssl_would_block(c, w)
                   ? (void)0
                   : fail(c, "write request: SSL error %d", SSL_get_error(c->ssl, w));
      c->st = ST_RESPONSE;
      c->len = 0;
      break;
    }
    case ST_RESPONSE: {
      int r = SSL_read(c->ssl, c->buf + c->len, (int)(BUF_CAP - c->len));
      if (r <= 0) {
        if (ssl_would_block(c, r))
          return;
        int e = SSL_get_error(c->ssl, r);
        if (c->len == 0 && !c->fresh && (e == SSL_ERROR_ZERO_RETURN || e == SSL_ERROR_SYSCALL)) {
          /* The server ended an idle keep-alive connection: not an error; reconnect. */
          st.reconnects++;
          close_conn(c);
          if (may_issue())
            open_conn(c);
          return;
        }
        return fail(c, "read response: SSL error %d after %zu bytes", e, c->len);
      }
      c->len += (size_t)r;
      int status = 0, close_after = 0;
      long used = parse_response(c->buf, c->len, &status, &close_after);
      if (used < 0)
        return fail(c, "malformed response: %.*s", (int)strcspn(c->buf, "\r\n"), c->buf);
      if (used == 0)
        break;
      if ((size_t)used != c->len)
        return fail(c, "bytes after the response");
      on_response(c, status, close_after);
      if (c->fd < 0 || c->st != ST_REQUEST)
        return;
      break;
    }
    case ST_IDLE:
    case ST_DEAD:
      return;
    }
  }
}

static void open_conn(conn *c) {
  c->ssl = NULL;
  c->len = c->off = 0;
  c->fresh = 1;
  c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (c->fd < 0)
    die("socket: %s", strerror(errno));
  int one = 1;
  setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (cfg.new_conn) {
    st.issued++;
    c->started_ns = now_ns();
  }
  c->st = ST_TCP;
  struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLET, .data.ptr = c};
  if (epoll_ctl(cfg.ep, EPOLL_CTL_ADD, c->fd, &ev) != 0)
    die("epoll_ctl: %s", strerror(errno));
  if (connect(c->fd, (struct sockaddr *)&cfg.addr, sizeof cfg.addr) != 0 && errno != EINPROGRESS)
    return fail(c, "connect: %s", strerror(errno));
  /* wait for EPOLLOUT: drive() checks the outcome */
}

/* Counts an error on |c| and closes it; the main loop opens its replacement (never from here,
 * so that a connect() failing at once cannot recurse). */
static void fail(conn *c, const char *fmt, ...) {
  st.errors++;
  if (st.errors <= ERRORS_PRINTED) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "proxy_load: error: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
  }
  ERR_clear_error();
  close_conn(c);
  c->st = ST_DEAD;
  st.dead++;
  if (st.errors > 1000 && st.total == 0)
    die("%lu errors and no response: giving up", (unsigned long)st.errors);
}

/* ------------------------------------------------------------------ main */

/* Starts the warm-up at |t|: the timed window follows it. */
static void set_window(uint64_t t, uint64_t *setup_done) {
  *setup_done = t;
  st.window_start = t + (uint64_t)(cfg.warmup * 1e9);
  st.window_end = st.window_start + (uint64_t)(cfg.seconds * 1e9);
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

static double pct_us(double p) {
  if (st.nlat == 0)
    return 0;
  size_t i = (size_t)(p * (double)(st.nlat - 1) + 0.5);
  return (double)st.lat[i] / 1e3;
}

int main(int argc, char **argv) {
  static const struct option opts[] = {{"connect", required_argument, 0, 'C'},
                                       {"host", required_argument, 0, 'H'},
                                       {"port", required_argument, 0, 'P'},
                                       {"proxy", no_argument, 0, 'x'},
                                       {"proxy-auth-file", required_argument, 0, 'a'},
                                       {"header-file", required_argument, 0, 'h'},
                                       {"path", required_argument, 0, 'p'},
                                       {"ca", required_argument, 0, 'k'},
                                       {"concurrency", required_argument, 0, 'c'},
                                       {"seconds", required_argument, 0, 's'},
                                       {"warmup", required_argument, 0, 'w'},
                                       {"requests", required_argument, 0, 'n'},
                                       {"new-conn", no_argument, 0, 'N'},
                                       {"no-connection-close", no_argument, 0, 'K'},
                                       {"watch", required_argument, 0, 'W'},
                                       {0, 0, 0, 0}};
  const char *connect_to = NULL, *header_file = NULL, *auth_file = NULL;
  cfg.path = "/";
  cfg.concurrency = 1;
  cfg.seconds = 5;
  int o;
  while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (o) {
    case 'C':
      connect_to = optarg;
      break;
    case 'H':
      cfg.host = optarg;
      break;
    case 'P':
      cfg.port = atoi(optarg);
      break;
    case 'x':
      cfg.use_proxy = 1;
      break;
    case 'a':
      auth_file = optarg;
      break;
    case 'h':
      header_file = optarg;
      break;
    case 'p':
      cfg.path = optarg;
      break;
    case 'k':
      cfg.ca = optarg;
      break;
    case 'c':
      cfg.concurrency = atoi(optarg);
      break;
    case 's':
      cfg.seconds = atof(optarg);
      break;
    case 'w':
      cfg.warmup = atof(optarg);
      break;
    case 'n':
      cfg.max_requests = strtoull(optarg, NULL, 10);
      break;
    case 'N':
      cfg.new_conn = 1;
      break;
    case 'K':
      cfg.no_close_header = 1;
      break;
    case 'W':
      parse_watch(optarg);
      break;
    default:
      usage();
    }
  }
  if (optind != argc || connect_to == NULL || cfg.host == NULL || cfg.port <= 0 ||
      cfg.port > 65535 || cfg.concurrency < 1 || cfg.concurrency > MAX_CONNS || cfg.seconds <= 0 ||
      cfg.warmup < 0)
    usage();
  const char *colon = strrchr(connect_to, ':');
  if (colon == NULL)
    usage();
  char ip[64];
  snprintf(ip, sizeof ip, "%.*s", (int)(colon - connect_to), connect_to);
  cfg.addr.sin_family = AF_INET;
  cfg.addr.sin_port = htons((uint16_t)atoi(colon + 1));
  if (inet_pton(AF_INET, ip, &cfg.addr.sin_addr) != 1)
    usage();
  if (cfg.max_requests > 0) {
    cfg.warmup = 0;
    if ((uint64_t)cfg.concurrency > cfg.max_requests)
      cfg.concurrency = (int)cfg.max_requests;
  }

  signal(SIGPIPE, SIG_IGN); /* a server may close first (Connection: close) */
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }

  cfg.ctx = SSL_CTX_new(TLS_client_method());
  if (cfg.ctx == NULL)
    die("SSL_CTX_new failed");
  SSL_CTX_set_session_cache_mode(cfg.ctx, SSL_SESS_CACHE_OFF);
  SSL_CTX_set_options(cfg.ctx, SSL_OP_NO_TICKET);
  static const unsigned char alpn[] = "\x08http/1.1";
  SSL_CTX_set_alpn_protos(cfg.ctx, alpn, sizeof alpn - 1);
  if (cfg.ca != NULL) {
    if (SSL_CTX_load_verify_locations(cfg.ctx, cfg.ca, NULL) != 1)
      die("cannot load CA bundle %s", cfg.ca);
    SSL_CTX_set_verify(cfg.ctx, SSL_VERIFY_PEER, NULL);
  }
  build_requests(header_file, auth_file);

  cfg.ep = epoll_create1(EPOLL_CLOEXEC);
  if (cfg.ep < 0)
    die("epoll_create1: %s", strerror(errno));
  conn *conns = calloc((size_t)cfg.concurrency, sizeof *conns);
  if (conns == NULL)
    die("out of memory");

  /* Keep-alive: the warm-up starts once every connection is set up (or SETUP_MAX_S have
   * passed), so a slow set-up of N tunnels does not eat into the window. --new-conn: it starts
   * at once (setting up connections is what is measured). */
  uint64_t t0 = now_ns(), setup_done = 0;
  st.window_start = st.window_end = UINT64_MAX;
  if (cfg.new_conn || cfg.max_requests > 0)
    set_window(t0, &setup_done);
  for (int i = 0; i < cfg.concurrency; i++)
    open_conn(&conns[i]);

  int measuring = 0;
  double cpu0 = 0, cpu1 = 0;
  uint64_t busy0 = 0, busy1 = 0, tw0 = 0, tw1 = 0;
  long hz = sysconf(_SC_CLK_TCK);
  struct epoll_event evs[512];
  for (;;) {
    uint64_t t = now_ns();
    if (setup_done == 0 &&
        (st.conns >= (uint64_t)cfg.concurrency || t >= t0 + (uint64_t)(SETUP_MAX_S * 1e9)))
      set_window(t, &setup_done);
    if (!measuring && t >= st.window_start) {
      measuring = 1;
      cpu0 = self_cpu_s();
      busy0 = busy_ticks();
      tw0 = t;
      for (int i = 0; i < cfg.nwatch; i++)
        cfg.watches[i].start_ticks = watch_ticks(&cfg.watches[i]);
    }
    if (t >= st.window_end || (cfg.max_requests > 0 && st.total >= cfg.max_requests))
      break;
    int n = epoll_wait(cfg.ep, evs, 512, 20);
    if (n < 0 && errno != EINTR)
      die("epoll_wait: %s", strerror(errno));
    for (int i = 0; i < n; i++) {
      conn *c = evs[i].data.ptr;
      if (c->fd >= 0)
        drive(c);
    }
    if (st.dead > 0) {
      if (n == 0 || st.errors > 100)
        usleep(1000); /* a failing server is not hammered at full speed */
      for (int i = 0; i < cfg.concurrency && st.dead > 0; i++) {
        if (conns[i].st == ST_DEAD) {
          st.dead--;
          conns[i].st = ST_IDLE;
          if (may_issue())
            open_conn(&conns[i]);
        }
      }
    }
  }
  cpu1 = self_cpu_s();
  busy1 = busy_ticks();
  tw1 = now_ns();
  for (int i = 0; i < cfg.nwatch; i++)
    cfg.watches[i].end_ticks = watch_ticks(&cfg.watches[i]);
  for (int i = 0; i < cfg.concurrency; i++)
    close_conn(&conns[i]);

  double window_s = (double)(tw1 - tw0) / 1e9;
  uint64_t counted = cfg.max_requests > 0 ? st.total : st.done;
  double per = counted > 0 ? 1e6 / (double)counted : 0; /* µs per request, from seconds */
  qsort(st.lat, st.nlat, sizeof *st.lat, cmp_u64);
  double mean = 0;
  for (size_t i = 0; i < st.nlat; i++)
    mean += (double)st.lat[i];
  mean = st.nlat ? mean / (double)st.nlat / 1e3 : 0;
  printf("setup_s=%.3f issued=%lu ", (double)(setup_done - t0) / 1e9, (unsigned long)st.issued);
  printf("rps=%.1f done=%lu total=%lu errors=%lu bad_status=%lu reconnects=%lu conns=%lu "
         "leaves=%d%s p50_us=%.1f p90_us=%.1f p99_us=%.1f mean_us=%.1f window_s=%.3f "
         "cpu_client_us=%.2f cores_client=%.3f",
         window_s > 0 ? (double)counted / window_s : 0, (unsigned long)st.done,
         (unsigned long)st.total, (unsigned long)st.errors, (unsigned long)st.bad_status,
         (unsigned long)st.reconnects, (unsigned long)st.conns, st.nleaves,
         st.leaves_overflow ? "+" : "", pct_us(0.5), pct_us(0.9), pct_us(0.99), mean, window_s,
         (cpu1 - cpu0) * per, window_s > 0 ? (cpu1 - cpu0) / window_s : 0);
  for (int i = 0; i < cfg.nwatch; i++) {
    const watch *w = &cfg.watches[i];
    double s = (double)(w->end_ticks - w->start_ticks) / (double)hz;
    printf(" cpu_%s_us=%.2f cores_%s=%.3f", w->name, s * per, w->name,
           window_s > 0 ? s / window_s : 0);
  }
  double busy_s = (double)(busy1 - busy0) / (double)hz;
  printf(" cpu_busy_us=%.2f cores_busy=%.3f\n", busy_s * per, window_s > 0 ? busy_s / window_s : 0);
  free(conns);
  free(st.lat);
  SSL_CTX_free(cfg.ctx);
  return st.total > 0 ? 0 : 1;
}
