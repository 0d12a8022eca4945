#include "serve.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#include "core/flags.h"
#include "core/log.h"
#include "core/secure.h"
#include "core/mem.h"
#include "core/metrics.h"
#include "core/stats.h"
#include "db/audit_writer.h"
#include "db/migrate.h"
#include "db/notify.h"
#include "db/pool.h"
#include "net/admin.h"
#include "net/conn.h"
#include "net/listener.h"
#include "net/loop.h"
#include "net/tls.h"
#include "proxy/ca.h"
#include "proxy/proxy.h"
#include "rpc/rpcstats.h"
#include "runtime/proc.h"
#include "runtime/work.h"
#include "service/api.h"
#include "service/auth.h"
#include "service/health.h"
#include "service/keyring.h"
#include "service/local_runtime.h"
#include "service/queries.h"
#include "service/reflection.h"
#include "service/sandbox.h"
#include "service/secret_store.h"

extern const unsigned char sg_descriptor_set[];
extern const size_t sg_descriptor_set_len;

typedef struct {
  const char *db;
  const char *root_key_file;
  long long db_pool_size;
  long long db_wait;
  const char *grpc_listen;
  const char *grpc_tls_listen;
  const char *tls_cert, *tls_key, *tls_client_ca;
  long long threads;
  long long rate_limit, rate_burst;
  long long max_message_bytes;
  long long max_concurrent_streams;
  long long max_header_list_bytes;
  long long idle_timeout;
  long long handshake_timeout;
  long long write_timeout;
  long long shutdown_grace;
  const char *log_level, *log_format;
  const char *data_dir;
  int local_runtime;
  const char *proxy_advertise;
  const char *sandbox_ca_file;
  const char *proxy_listen;
  const char *admin_listen;
  const char *upstream_ca;
  sg_strlist proxy_allow_cidr, proxy_allow_port, proxy_resolve;
  long long proxy_max_head_bytes, proxy_max_body_bytes;
  long long proxy_idle_timeout, proxy_upstream_timeout;
  long long proxy_head_timeout;
} serve_config;

static serve_config cfg = {
    .db_wait = 30,
    .grpc_listen = "127.0.0.1:50051",
    .threads = 0,
    .rate_limit = 1000,
    .rate_burst = 2000,
    .max_message_bytes = 4 << 20,
    .max_concurrent_streams = 100,
    .max_header_list_bytes = 16 << 10,
    .idle_timeout = 300,
    .handshake_timeout = 10,
    .write_timeout = 30,
    .shutdown_grace = 30,
    .log_level = "info",
    .log_format = "text",
    .proxy_max_head_bytes = 64 << 10,
    .proxy_max_body_bytes = 16 << 20,
    .proxy_idle_timeout = 120,
    .proxy_head_timeout = 10,
    .proxy_upstream_timeout = 60,
    .sandbox_ca_file = "/etc/sealgate/proxy-ca.pem",
};

static const sg_flag flags[] = {
    {"db", SG_FLAG_STR, &cfg.db, 0, 0, "CONNINFO",
     "PostgreSQL connection string (several hosts: \"host=a,b target_session_attrs=read-write\")"},
    {"root-key-file", SG_FLAG_STR, &cfg.root_key_file, 0, 0, "FILE",
     "root key: 64 hex characters (openssl rand -hex 32), mode 0600"},
    {"db-pool-size", SG_FLAG_INT, &cfg.db_pool_size, 0, 1024, "N",
     "database connections in all (0: two per event loop)"},
    {"db-wait", SG_FLAG_INT, &cfg.db_wait, 0, 3600, "SECONDS",
     "at start-up, wait this long for the database to answer (default 30)"},
    {"data-dir", SG_FLAG_STR, &cfg.data_dir, 0, 0, "DIR",
     "this node's files: the proxy CA (made at first start), local-runtime directories"},
    {"local-runtime", SG_FLAG_BOOL, &cfg.local_runtime, 0, 0, NULL,
     "run sandboxes as local processes (RunCommand); for development and tests"},
    {"proxy-listen", SG_FLAG_STR, &cfg.proxy_listen, 0, 0, "HOST:PORT",
     "the egress proxy's listener (HTTP forward proxy for sandboxes)"},
    {"admin-listen", SG_FLAG_STR, &cfg.admin_listen, 0, 0, "HOST:PORT",
     "admin HTTP listener: Prometheus /metrics, /healthz (liveness), /readyz (readiness)"},
    {"proxy-advertise", SG_FLAG_STR, &cfg.proxy_advertise, 0, 0, "HOST:PORT",
     "the egress proxy's address put in sandboxes' proxy.url (default: the --proxy-listen "
     "address, else 127.0.0.1:3128)"},
    {"proxy-allow-cidr", SG_FLAG_LIST, &cfg.proxy_allow_cidr, 0, 0, "CIDR",
     "a private address range the proxy may connect to (repeatable; e.g. 127.0.0.0/8 in "
     "tests)"},
    {"proxy-allow-port", SG_FLAG_LIST, &cfg.proxy_allow_port, 0, 0, "PORT",
     "a CONNECT port besides 443, or a plain-http port besides 80 (repeatable)"},
    {"proxy-resolve", SG_FLAG_LIST, &cfg.proxy_resolve, 0, 0, "HOST:ADDR",
     "a fixed DNS answer for the proxy, like curl's --resolve (repeatable; tests)"},
    {"upstream-ca", SG_FLAG_STR, &cfg.upstream_ca, 0, 0, "FILE",
     "a PEM bundle the proxy trusts for upstream servers, besides the system's"},
    {"proxy-max-head-bytes", SG_FLAG_BYTES, &cfg.proxy_max_head_bytes, 1024, 1 << 20, "SIZE",
     "largest request head the proxy accepts (default 64KiB; over it: 431)"},
    {"proxy-max-body-bytes", SG_FLAG_BYTES, &cfg.proxy_max_body_bytes, 1024, 1LL << 30, "SIZE",
     "largest Content-Length body the proxy buffers to substitute in (default 16MiB; over "
     "it: 413)"},
    {"proxy-idle-timeout", SG_FLAG_INT, &cfg.proxy_idle_timeout, 0, 86400, "SECONDS",
     "close a sandbox's proxy connection idle for this long (default 120; 0: never)"},
    {"proxy-head-timeout", SG_FLAG_INT, &cfg.proxy_head_timeout, 0, 3600, "SECONDS",
     "a request head (and a tunnel's TLS handshake) must arrive within this, counted from the "
     "connection's start or the head's first byte; else 408 and close (default 10; 0: never)"},
    {"proxy-upstream-timeout", SG_FLAG_INT, &cfg.proxy_upstream_timeout, 1, 86400, "SECONDS",
     "connect + handshake upstream, and silence while a response is due (default 60)"},
    {"sandbox-ca-file", SG_FLAG_STR, &cfg.sandbox_ca_file, 0, 0, "PATH",
     "where SSL_CERT_FILE & co. point in sandboxes without --local-runtime (the orchestrator "
     "puts proxy.ca_cert_pem there; default /etc/sealgate/proxy-ca.pem)"},
    {"grpc-listen", SG_FLAG_STR, &cfg.grpc_listen, 0, 0, "HOST:PORT",
     "cleartext HTTP/2 (h2c, prior knowledge) gRPC listener; \"off\" for none"},
    {"grpc-tls-listen", SG_FLAG_STR, &cfg.grpc_tls_listen, 0, 0, "HOST:PORT",
     "TLS gRPC listener (ALPN h2); needs --tls-cert and --tls-key"},
    {"tls-cert", SG_FLAG_STR, &cfg.tls_cert, 0, 0, "FILE", "PEM certificate chain"},
    {"tls-key", SG_FLAG_STR, &cfg.tls_key, 0, 0, "FILE", "PEM private key"},
    {"tls-client-ca", SG_FLAG_STR, &cfg.tls_client_ca, 0, 0, "FILE",
     "require client certificates issued by this CA bundle"},
    {"threads", SG_FLAG_INT, &cfg.threads, 0, 256, "N", "event-loop threads (0: one per core)"},
    {"rate-limit", SG_FLAG_INT, &cfg.rate_limit, 0, 1000000, "RPS",
     "calls a second each API key may make on this node, sustained (default 1000; 0: no "
     "limit; N nodes admit up to N times this)"},
    {"rate-burst", SG_FLAG_INT, &cfg.rate_burst, 1, 10000000, "N",
     "calls an API key may make at once before --rate-limit applies (default 2000)"},
    {"max-message-bytes", SG_FLAG_BYTES, &cfg.max_message_bytes, 1024, 1LL << 30, "SIZE",
     "largest request message, also after decompression (default 4MiB)"},
    {"max-concurrent-streams", SG_FLAG_INT, &cfg.max_concurrent_streams, 1, 100000, "N",
     "concurrent calls per connection (default 100)"},
    {"max-header-list-bytes", SG_FLAG_BYTES, &cfg.max_header_list_bytes, 1024, 1 << 20, "SIZE",
     "request metadata per call (default 16KiB)"},
    {"idle-timeout", SG_FLAG_INT, &cfg.idle_timeout, 0, 86400, "SECONDS",
     "close connections with no call for this long (default 300; 0: never)"},
    {"handshake-timeout", SG_FLAG_INT, &cfg.handshake_timeout, 1, 3600, "SECONDS",
     "TLS handshakes must finish within this (default 10)"},
    {"write-timeout", SG_FLAG_INT, &cfg.write_timeout, 1, 3600, "SECONDS",
     "close a connection whose client reads nothing for this long (default 30)"},
    {"shutdown-grace", SG_FLAG_INT, &cfg.shutdown_grace, 0, 3600, "SECONDS",
     "on SIGTERM, wait this long for calls in flight (default 30)"},
    {"log-level", SG_FLAG_STR, &cfg.log_level, 0, 0, "LEVEL", "debug, info, warn or error"},
    {"log-format", SG_FLAG_STR, &cfg.log_format, 0, 0, "FORMAT", "text (logfmt) or json"},
};

static void usage(FILE *out) {
  fprintf(out, "usage: sealgate serve [flags]\n\n"
               "Runs the gateway. Each flag can also be set through the environment variable "
               "shown.\n\nflags:\n");
  sg_flags_usage(out, flags, SG_ARRAY_LEN(flags));
}

/* --- Process state ------------------------------------------------------------------------- */

typedef struct {
  int fd;
  struct event *ev;
  const sg_conn_options *opts; /* a gRPC listener's; NULL for the proxy's */
  const char *kind;
} listener;

static struct {
  sg_loop *main;
  sg_loop **workers;
  size_t n_workers, next_worker, drained;
  listener listeners[3];
  size_t n_listeners;
  struct event *sigterm, *sigint, *sighup, *grace, *accept_pause;
  int stopping;
  sg_h2_options h2;
  sg_conn_options plain, tls;
  sg_db_options db;
  sg_proxy *proxy;
  sg_proxy_options proxy_opts;
  char proxy_address[80];
  sg_metrics *metrics;
  sg_rpc_stats *rpc_stats;
  sg_admin *admin;
} srv;

typedef struct {
  int fd;
  const sg_conn_options *opts;
  char peer[64];
} accepted;

static void start_conn(void *arg) {
  accepted *a = arg;
  if (a->opts != NULL)
    sg_conn_start(sg_loop_current(), a->fd, a->peer, a->opts);
  else
    sg_proxy_conn_start(srv.proxy, a->fd, a->peer);
  free(a);
}

static void resume_accepting(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  (void)arg;
  for (size_t i = 0; i < srv.n_listeners && !srv.stopping; i++)
    event_add(srv.listeners[i].ev, NULL);
}

/* Accepts on the main thread and deals connections round-robin to the worker loops, so load
 * spreads evenly whatever the kernel's wake-up order. */
static void on_accept(evutil_socket_t fd, short what, void *arg) {
  (void)what;
  listener *l = arg;
  for (int i = 0; i < 64; i++) {
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    int cfd = accept4(fd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (cfd < 0) {
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        /* Out of descriptors: stop accepting for a moment instead of spinning. */
        sg_logf(SG_LOG_WARN, "accept_paused", "%s; pausing accepts for 100 ms", strerror(errno));
        for (size_t j = 0; j < srv.n_listeners; j++)
          event_del(srv.listeners[j].ev);
        struct timeval tv = {0, 100000};
        event_add(srv.accept_pause, &tv);
      }
      return;
    }
    accepted *a = sg_malloc(sizeof(*a));
    a->fd = cfd;
    a->opts = l->opts;
    sg_addr_format((struct sockaddr *)&ss, a->peer, sizeof(a->peer));
    sg_loop_post(srv.workers[srv.next_worker++ % srv.n_workers], start_conn, a);
  }
}

/* --- Shutdown ------------------------------------------------------------------------------ */

static void worker_drained(void *arg);

static void main_count_drained(void *arg) {
  (void)arg;
  if (++srv.drained == srv.n_workers)
    sg_loop_stop(srv.main);
}

static void worker_drained(void *arg) {
  sg_proxy_close_all();
  sg_sandbox_sweep_stop();
  sg_secret_store_cache_drop();
  sg_db_free(sg_db_local()); /* no call is left to wait for it */
  sg_db_set_local(NULL);
  sg_loop_stop(arg);
  sg_loop_post(srv.main, main_count_drained, NULL);
}

static void worker_drain(void *arg) {
  sg_health_end_watches();
  sg_conn_drain_all(worker_drained, arg);
}

static void worker_force_close(void *arg) {
  (void)arg;
  sg_conn_close_all();
  sg_proxy_close_all();
}

static void force_close(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  (void)arg;
  sg_logf(SG_LOG_WARN, "shutdown", "grace period over; closing remaining connections");
  for (size_t i = 0; i < srv.n_workers; i++)
    sg_loop_post(srv.workers[i], worker_force_close, NULL);
}

/* SIGHUP: the gRPC listener's certificate, key and client CA are read again (a renewed
 * certificate goes live without a restart). Connections already open keep theirs; a file that
 * does not load leaves the current ones in service. */
static void on_reload(evutil_socket_t sig, short what, void *arg) {
  (void)sig;
  (void)what;
  (void)arg;
  if (srv.tls.tls == NULL) {
    sg_logf(SG_LOG_INFO, "reload", "SIGHUP received: no TLS listener, nothing to reload");
    return;
  }
  char err[512];
  if (sg_tls_source_reload(srv.tls.tls, err, sizeof(err)) != 0)
    sg_logf(SG_LOG_WARN, "reload", "SIGHUP: TLS files not reloaded, still serving the old ones: %s",
            err);
  else
    sg_logf(SG_LOG_INFO, "reload", "SIGHUP: TLS certificate reloaded for new connections");
}

static void on_signal(evutil_socket_t sig, short what, void *arg) {
  (void)what;
  (void)arg;
  if (srv.stopping) {
    force_close(-1, 0, NULL); /* a second signal: do not wait any longer */
    return;
  }
  srv.stopping = 1;
  sg_logf(SG_LOG_INFO, "shutdown", "%s received: draining connections",
          sig == SIGTERM ? "SIGTERM" : "SIGINT");
  for (size_t i = 0; i < srv.n_listeners; i++) {
    event_del(srv.listeners[i].ev);
    close(srv.listeners[i].fd);
  }
  /* Watchers hear NOT_SERVING first: the mailbox keeps order, so this reaches each loop
   * before the drain does. */
  sg_health_set_all(SG_HEALTH_NOT_SERVING);
  for (size_t i = 0; i < srv.n_workers; i++)
    sg_loop_post(srv.workers[i], worker_drain, srv.workers[i]);
  struct timeval tv = {(time_t)cfg.shutdown_grace, 0};
  event_add(srv.grace, &tv);
}

/* --- Start-up ------------------------------------------------------------------------------ */

static void raise_fd_limit(void) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

static int add_listener(const char *addr, const sg_conn_options *opts, const char *kind) {
  char err[256];
  int fd = sg_listener_open(addr, err, sizeof(err));
  if (fd < 0) {
    fprintf(stderr, "sealgate: --%s: %s\n", kind, err);
    return -1;
  }
  listener *l = &srv.listeners[srv.n_listeners++];
  l->fd = fd;
  l->opts = opts;
  l->kind = kind;
  l->ev = event_new(sg_loop_base(srv.main), fd, EV_READ | EV_PERSIST, on_accept, l);
  event_add(l->ev, NULL);
  char where[80];
  sg_listener_address(fd, where, sizeof(where));
  if (opts == NULL)
    snprintf(srv.proxy_address, sizeof(srv.proxy_address), "%s", where);
  sg_log_begin(SG_LOG_INFO, "listening");
  sg_log_cstr("listener", kind);
  sg_log_cstr("address", where);
  sg_log_end();
  return 0;
}

static int check_config(void) {
  if (cfg.db == NULL) {
    fprintf(stderr, "sealgate: --db is required (a PostgreSQL connection string; "
                    "deploy/run.sh sets up a local one)\n");
    return -1;
  }
  if (cfg.root_key_file == NULL) {
    fprintf(stderr, "sealgate: --root-key-file is required: create one with "
                    "`(umask 077; openssl rand -hex 32 > root.key)`\n");
    return -1;
  }
  if (cfg.data_dir == NULL) {
    fprintf(stderr, "sealgate: --data-dir is required: a directory for this node's files (the "
                    "proxy CA is created there at first start)\n");
    return -1;
  }
  sg_log_level level;
  sg_log_format format;
  if (sg_log_parse_level(cfg.log_level, &level) != 0) {
    fprintf(stderr, "sealgate: --log-level must be debug, info, warn or error\n");
    return -1;
  }
  if (sg_log_parse_format(cfg.log_format, &format) != 0) {
    fprintf(stderr, "sealgate: --log-format must be text or json\n");
    return -1;
  }
  sg_log_init(level, format, STDERR_FILENO);
  int has_tls_files = cfg.tls_cert != NULL || cfg.tls_key != NULL;
  if (cfg.grpc_tls_listen != NULL && (cfg.tls_cert == NULL || cfg.tls_key == NULL)) {
    fprintf(stderr, "sealgate: --grpc-tls-listen needs --tls-cert and --tls-key\n");
    return -1;
  }
  if (cfg.grpc_tls_listen == NULL && (has_tls_files || cfg.tls_client_ca != NULL)) {
    fprintf(stderr, "sealgate: --tls-cert, --tls-key and --tls-client-ca need "
                    "--grpc-tls-listen\n");
    return -1;
  }
  int plain = strcmp(cfg.grpc_listen, "off") != 0;
  if (!plain && cfg.grpc_tls_listen == NULL) {
    fprintf(stderr, "sealgate: no listener: set --grpc-listen or --grpc-tls-listen\n");
    return -1;
  }
  return 0;
}

static sg_router *build_router(const sg_serve_extras *extras) {
  sg_router *router = sg_router_new();
  sg_router_add(router, &sg_health_service);
  sg_router_add(router, &sg_reflection_v1_service);
  sg_router_add(router, &sg_reflection_v1alpha_service);
  sg_api_register(router);
  for (size_t i = 0; extras != NULL && i < extras->n_services; i++)
    sg_router_add(router, extras->services[i]);
  sg_health_register("");
  size_t n;
  const sg_service *const *svcs = sg_router_services(router, &n);
  for (size_t i = 0; i < n; i++)
    sg_health_register(svcs[i]->descriptor->name);
  return router;
}

static int run(const sg_serve_extras *extras);

/* Where sandboxes are told the proxy is: the operator's word, else our own listener (a
 * wildcard address advertised as loopback), else the conventional local port. */
static void proxy_advertised(char *out, size_t cap) {
  if (cfg.proxy_advertise != NULL || cfg.proxy_listen == NULL) {
    snprintf(out, cap, "%s", cfg.proxy_advertise ? cfg.proxy_advertise : "127.0.0.1:3128");
    return;
  }
  const char *port = strrchr(srv.proxy_address, ':');
  if (strncmp(srv.proxy_address, "0.0.0.0:", 8) == 0)
    snprintf(out, cap, "127.0.0.1%s", port);
  else if (strncmp(srv.proxy_address, "[::]:", 5) == 0)
    snprintf(out, cap, "[::1]%s", port);
  else
    snprintf(out, cap, "%s", srv.proxy_address);
}

static sg_ca *srv_ca; /* the proxy CA, from --data-dir */

/* --- Metrics and health (--admin-listen) ---------------------------------------------------- */

#ifndef SG_VERSION
#define SG_VERSION "dev"
#endif

/* /readyz: traffic is welcome unless we are draining (on_signal sets every health status to
 * NOT_SERVING first thing) or no loop has a database connection. Runs on the admin thread. */
static const char *not_ready(void *arg) {
  (void)arg;
  int status;
  if (sg_health_get("", &status) == 0 && status != SG_HEALTH_SERVING)
    return "draining: shutting down";
  if (sg_gauge_get(&sg_stats.db_connections_up) <= 0)
    return "database unreachable";
  return NULL;
}

/* Registers every metric and starts the admin endpoint if asked for. Before the loops start:
 * the RPC table must be in place before the first call. Returns 0, or -1 after saying why. */
static int start_metrics(sg_router *router) {
  srv.metrics = sg_metrics_new();
  sg_stats_register(srv.metrics, SG_VERSION);
  srv.rpc_stats = sg_rpc_stats_new(router, srv.metrics);
  srv.h2.stats = srv.rpc_stats;
  sg_notify_metrics(srv.metrics);
  sg_audit_metrics(srv.metrics);
  if (cfg.admin_listen == NULL)
    return 0;
  char err[256];
  sg_admin_options opts = {srv.metrics, not_ready, NULL};
  if ((srv.admin = sg_admin_start(cfg.admin_listen, &opts, err, sizeof(err))) == NULL) {
    fprintf(stderr, "sealgate: --admin-listen: %s\n", err);
    return -1;
  }
  sg_log_begin(SG_LOG_INFO, "listening");
  sg_log_cstr("listener", "admin-listen");
  sg_log_cstr("address", sg_admin_address(srv.admin));
  sg_log_end();
  return 0;
}

/* After the loops have stopped: no call is left to count. */
static void stop_metrics(void) {
  sg_admin_stop(srv.admin);
  srv.admin = NULL;
  srv.h2.stats = NULL;
  sg_metrics_free(srv.metrics);
  srv.metrics = NULL;
  sg_rpc_stats_free(srv.rpc_stats);
  srv.rpc_stats = NULL;
}

int sg_serve_main(int argc, char **argv, const sg_serve_extras *extras) {
  char err[512];
  int rv = sg_flags_parse(flags, SG_ARRAY_LEN(flags), argc, argv, NULL, err, sizeof(err));
  if (rv == SG_FLAGS_HELP) {
    usage(stdout);
    return 0;
  }
  if (rv != SG_FLAGS_OK) {
    fprintf(stderr, "sealgate serve: %s\n", err);
    return 2;
  }
  if (check_config() != 0)
    return 2;
  signal(SIGPIPE, SIG_IGN);
  raise_fd_limit();
  sg_log_start_writer();
  rv = run(extras);
  sg_audit_stop();
  sg_notify_stop();
  if (srv_ca != NULL)
    sg_ca_free(srv_ca);
  srv_ca = NULL;
  sg_keyring_cleanup();
  sg_log_stop_writer();
  return rv;
}

/* Connects (waiting up to --db-wait for the database to answer) and checks that the schema is
 * this binary's. Returns 0, or -1 after saying why on stderr. */
static int check_database(void) {
  char err[512];
  PGconn *pg = NULL;
  for (long long waited = 0;; waited++) {
    if ((pg = sg_db_connect_blocking(cfg.db, err, sizeof(err))) != NULL)
      break;
    if (waited >= cfg.db_wait) {
      fprintf(stderr, "sealgate: %s\n", err);
      return -1;
    }
    if (waited == 0)
      sg_logf(SG_LOG_WARN, "db_wait", "%s; retrying for up to %lld s", err, cfg.db_wait);
    sleep(1);
  }
  int rv = sg_schema_check(pg, err, sizeof(err));
  PQfinish(pg);
  if (rv != 0)
    fprintf(stderr, "sealgate: %s\n", err);
  return rv;
}

static void worker_start_db(void *arg) {
  (void)arg;
  sg_db_set_local(sg_db_new(sg_loop_base(sg_loop_current()), &srv.db));
}

static void worker_start_sweep(void *arg) {
  (void)arg;
  sg_sandbox_sweep_start();
}

/* Everything between the checked flags and the exit status. */
static int run(const sg_serve_extras *extras) {
  char err[512];
  /* Before any key is read: no core dumps, keys in locked memory (core/secure.h). */
  if (sg_secure_process(err, sizeof(err)) != SG_SECURE_OK)
    sg_logf(SG_LOG_WARN, "secure_memory", "%s", err);
  if (sg_keyring_init(cfg.root_key_file, err, sizeof(err)) != 0) {
    fprintf(stderr, "sealgate: --root-key-file: %s\n", err);
    return 1;
  }
  if (check_database() != 0)
    return 1;
  if (sg_notify_start(cfg.db) != 0)
    sg_fatal("cannot start the cache-invalidation thread");
  if (sg_audit_start(cfg.db) != 0)
    sg_fatal("cannot start the audit writer thread");
  sg_ca *ca = srv_ca = sg_ca_load_or_create(cfg.data_dir, err, sizeof(err));
  if (ca == NULL) {
    fprintf(stderr, "sealgate: --data-dir: %s\n", err);
    return 1;
  }
  if (cfg.local_runtime &&
      sg_local_runtime_init(cfg.data_dir, sg_ca_cert_pem(ca), err, sizeof(err)) != 0) {
    fprintf(stderr, "sealgate: --local-runtime: %s\n", err);
    return 1;
  }
  if (cfg.proxy_listen != NULL) {
    srv.proxy_opts = (sg_proxy_options){
        .ca = ca,
        .upstream_ca = cfg.upstream_ca,
        .allow_cidrs = cfg.proxy_allow_cidr,
        .allow_ports = cfg.proxy_allow_port,
        .resolve = cfg.proxy_resolve,
        .max_head_bytes = (size_t)cfg.proxy_max_head_bytes,
        .max_body_bytes = (size_t)cfg.proxy_max_body_bytes,
        .idle_timeout_ms = cfg.proxy_idle_timeout * 1000,
        .head_timeout_ms = cfg.proxy_head_timeout * 1000,
        .upstream_timeout_ms = cfg.proxy_upstream_timeout * 1000,
    };
    if ((srv.proxy = sg_proxy_new(&srv.proxy_opts, err, sizeof(err))) == NULL) {
      fprintf(stderr, "sealgate: %s\n", err);
      return 1;
    }
  }
  sg_auth_rate_limit((uint32_t)cfg.rate_limit, (uint32_t)cfg.rate_burst);
  sg_router *router = build_router(extras);
  const uint8_t *set =
      extras && extras->descriptor_set ? extras->descriptor_set : sg_descriptor_set;
  size_t set_len =
      extras && extras->descriptor_set ? extras->descriptor_set_len : sg_descriptor_set_len;
  if (sg_reflection_init(set, set_len, router) != 0)
    sg_fatal("the embedded descriptor set does not parse");

  size_t msg = (size_t)cfg.max_message_bytes;
  /* Room for a few full-size messages per connection, not for a hundred streams' worth. */
  size_t conn_budget = 4 * msg > (16u << 20) ? 4 * msg : (16u << 20);
  srv.h2 = (sg_h2_options){
      .router = router,
      .max_message_bytes = msg,
      .max_concurrent_streams = (uint32_t)cfg.max_concurrent_streams,
      .max_header_list_bytes = (uint32_t)cfg.max_header_list_bytes,
      .max_queued_bytes = conn_budget,
      .max_buffered_bytes = conn_budget,
      .reset_burst = 500,
      .reset_rate = 100,
  };
  srv.plain = (sg_conn_options){&srv.h2, NULL, cfg.idle_timeout * 1000,
                                cfg.handshake_timeout * 1000, cfg.write_timeout * 1000};
  srv.tls = srv.plain;
  if (cfg.grpc_tls_listen != NULL) {
    srv.tls.tls = sg_tls_source_new(cfg.tls_cert, cfg.tls_key, cfg.tls_client_ca, err, sizeof(err));
    if (srv.tls.tls == NULL) {
      fprintf(stderr, "sealgate: %s\n", err);
      return 1;
    }
  }

  srv.main = sg_loop_new(0);
  struct event_base *base = sg_loop_base(srv.main);
  /* Signal handlers go in before the first "listening" line: whoever reads that line may
   * send SIGTERM at once. */
  srv.sigterm = evsignal_new(base, SIGTERM, on_signal, NULL);
  srv.sigint = evsignal_new(base, SIGINT, on_signal, NULL);
  srv.sighup = evsignal_new(base, SIGHUP, on_reload, NULL);
  srv.grace = evtimer_new(base, force_close, NULL);
  srv.accept_pause = evtimer_new(base, resume_accepting, NULL);
  event_add(srv.sigterm, NULL);
  event_add(srv.sigint, NULL);
  event_add(srv.sighup, NULL);
  if (strcmp(cfg.grpc_listen, "off") != 0 &&
      add_listener(cfg.grpc_listen, &srv.plain, "grpc-listen") != 0)
    return 1;
  if (cfg.grpc_tls_listen != NULL &&
      add_listener(cfg.grpc_tls_listen, &srv.tls, "grpc-tls-listen") != 0)
    return 1;
  if (cfg.proxy_listen != NULL && add_listener(cfg.proxy_listen, NULL, "proxy-listen") != 0)
    return 1;
  if (start_metrics(router) != 0) {
    stop_metrics();
    return 1;
  }
  static char advertise[96]; /* sandbox.c keeps the pointer */
  proxy_advertised(advertise, sizeof(advertise));
  sg_sandbox_config sandboxes = {advertise, sg_ca_cert_pem(ca), cfg.sandbox_ca_file};
  sg_sandbox_configure(&sandboxes);

  long cores = sysconf(_SC_NPROCESSORS_ONLN);
  srv.n_workers = cfg.threads > 0 ? (size_t)cfg.threads : (size_t)(cores > 0 ? cores : 1);
  srv.workers = sg_calloc(srv.n_workers, sizeof(*srv.workers));
  int per_loop = cfg.db_pool_size > 0 ? (int)(cfg.db_pool_size / (long long)srv.n_workers) : 2;
  srv.db = (sg_db_options){
      .conninfo = cfg.db,
      .connections = per_loop > 0 ? per_loop : 1,
      .stmts = sg_queries,
      .n_stmts = Q_COUNT,
      .max_queued = 4096,
  };
  for (size_t i = 0; i < srv.n_workers; i++) {
    srv.workers[i] = sg_loop_new((unsigned)i + 1);
    if (sg_loop_start(srv.workers[i]) != 0)
      sg_fatal("cannot start an event-loop thread");
    sg_loop_post(srv.workers[i], worker_start_db, NULL); /* before any connection arrives */
  }
  sg_loop_post(srv.workers[0], worker_start_sweep, NULL);
  sg_logf(SG_LOG_INFO, "started", "sealgate serving with %zu event-loop threads", srv.n_workers);

  sg_loop_run(srv.main);

  /* Freeing the signal events restores the default action, which would turn a late second
   * SIGTERM into a kill during the last clean-up. We are leaving anyway. */
  signal(SIGTERM, SIG_IGN);
  signal(SIGINT, SIG_IGN);
  signal(SIGHUP, SIG_IGN);
  for (size_t i = 0; i < srv.n_workers; i++)
    sg_loop_join(srv.workers[i]);
  stop_metrics();
  /* Blocking jobs (commands, copies, snapshot builds) end before the loops they report to are
   * freed; their reports to the stopped loops are dropped. Commands are killed, not awaited. */
  sg_proc_kill_all();
  sg_work_shutdown();
  for (size_t i = 0; i < srv.n_workers; i++)
    sg_loop_free(srv.workers[i]);
  for (size_t i = 0; i < srv.n_listeners; i++)
    event_free(srv.listeners[i].ev);
  event_free(srv.sigterm);
  event_free(srv.sigint);
  event_free(srv.sighup);
  event_free(srv.grace);
  event_free(srv.accept_pause);
  sg_loop_free(srv.main);
  free(srv.workers);
  sg_tls_source_free(srv.tls.tls);
  sg_proxy_free(srv.proxy);
  srv.proxy = NULL;
  sg_reflection_cleanup();
  sg_auth_rate_limit(0, 0);
  sg_health_reset();
  sg_router_free(router);
  sg_logf(SG_LOG_INFO, "stopped", "all connections closed");
  return 0;
}
