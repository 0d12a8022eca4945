/* The C side of tests/bench/client.sh: a load generator that uses libsealgate's public API
 * only (sealgate/sealgate.h and the generated typed functions). N threads share ONE
 * sg_channel, each making one blocking unary call after another, so N calls are outstanding
 * at any time, multiplexed as streams on the channel's one HTTP/2 connection.
 *
 *   client_bench --target HOST:PORT --method get-store --store-id ID [--threads N]
 *                [--seconds S] [--warmup S] [--timeout-ms MS] [--watch-pid SERVER_PID]
 *   client_bench --target HOST:PORT --method health [...]
 *
 * The API key comes from $SEALGATE_API_KEY (the channel reads it), never from argv.
 *
 * Every response is checked: status OK and, for get-store, the store asked for; for health,
 * SERVING. Anything else counts as an error (the first one is printed). The threads run
 * --warmup seconds untimed, then --seconds timed; a call counts in the window in which it
 * completed, so calls straddling the window's start or end do not skew the rate. Every call
 * has a deadline (--timeout-ms), so the run ends at most that long after the window.
 *
 * Prints one line of key=value pairs: calls_per_s, errors, and CPU time over the timed window
 * of this process (the channel's I/O thread included), of --watch-pid (the server) and of
 * the whole machine (busy time of all cores, from /proc/stat). client_py.py prints the same
 * line, so client.sh reads both alike. Exits 0 once it has measured, errors or not; 1 when it
 * could not (no channel, the first call failed, a thread did not start); 2 on a usage
 * error. */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include "sealgate/sealgate.h"
#include "sealgate/v1/secret_store.sg.h"
#include "grpc/health/v1/health.sg.h"

#define MAX_THREADS 1024
#define MAX_SECONDS 600 /* the run is bounded whatever the caller asks for */

typedef enum { METHOD_NONE, METHOD_GET_STORE, METHOD_HEALTH } method;

typedef struct {
  const char *target;
  method method;
  const char *store_id;
  int threads;
  double seconds;
  double warmup;
  int64_t timeout_ms;
  long watch_pid; /* 0: none; else the server, whose CPU time over the window is reported */
} config;

/* What the threads share: read-only once they run, except the counters each owns. */
typedef struct {
  const config *cfg;
  sg_channel *channel;
  int64_t window_start_ns; /* calls completing in [start, end) are counted */
  int64_t window_end_ns;
} run;

typedef struct {
  const run *run;
  pthread_t thread;
  uint64_t calls;  /* OK and checked, completed inside the window */
  uint64_t errors; /* completed inside the window, not OK or not what was asked for */
  uint64_t total;  /* every call made, warm-up included */
  char first_error[600];
} worker;

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void sleep_until(int64_t t_ns) {
  struct timespec ts = {.tv_sec = t_ns / 1000000000, .tv_nsec = t_ns % 1000000000};
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
  }
}

static double cpu_seconds(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

/* CPU time in seconds that process |pid| has used (user + system, from /proc/PID/stat), or -1
 * if it cannot be read. */
static double proc_cpu_seconds(long pid) {
  char path[64], buf[1024];
  unsigned long long utime, stime;
  const char *p;
  FILE *f;
  size_t n;
  snprintf(path, sizeof path, "/proc/%ld/stat", pid);
  if ((f = fopen(path, "r")) == NULL)
    return -1;
  n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  /* The command name (field 2) may hold spaces and parentheses: count fields after its end.
   * utime and stime are fields 14 and 15, the 12th and 13th after the ')'. */
  if ((p = strrchr(buf, ')')) == NULL ||
      sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime, &stime) != 2)
    return -1;
  return (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
}

/* CPU time in seconds all cores together have spent busy (anything but idle and iowait, from
 * /proc/stat), or -1 if it cannot be read. */
static double machine_busy_seconds(void) {
  unsigned long long v[8] = {0}, busy = 0;
  FILE *f = fopen("/proc/stat", "r");
  int n, i;
  if (f == NULL)
    return -1;
  n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4],
             &v[5], &v[6], &v[7]);
  fclose(f);
  if (n < 5)
    return -1;
  for (i = 0; i < 8; i++)
    busy += (i == 3 || i == 4) ? 0 : v[i];
  return (double)busy / (double)sysconf(_SC_CLK_TCK);
}

/* One GetSecretStore call. Returns 0 if it answered OK with the store asked for; otherwise
 * -1 with the reason in |err|. */
static int call_get_store(const run *r, char *err, size_t errlen) {
  Sealgate__V1__GetSecretStoreRequest req = SEALGATE__V1__GET_SECRET_STORE_REQUEST__INIT;
  Sealgate__V1__SecretStore *resp = NULL;
  sg_call_options opts = {.timeout_ms = r->cfg->timeout_ms};
  sg_status st;
  int rc = 0;
  req.store_id = (char *)r->cfg->store_id;
  if (sealgate_v1_secret_store_service_get_secret_store(r->channel, &req, &resp, &opts, &st) !=
      SG_STATUS_OK) {
    snprintf(err, errlen, "GetSecretStore: status %d: %s", st.code, st.message);
    return -1;
  }
  if (resp->id == NULL || strcmp(resp->id, r->cfg->store_id) != 0) {
    snprintf(err, errlen, "GetSecretStore returned store '%s', asked for '%s'",
             resp->id ? resp->id : "", r->cfg->store_id);
    rc = -1;
  }
  protobuf_c_message_free_unpacked(&resp->base, NULL);
  return rc;
}

/* One Health/Check call for the server as a whole (service ""). Returns 0 if it answered OK
 * with SERVING; otherwise -1 with the reason in |err|. */
static int call_health(const run *r, char *err, size_t errlen) {
  Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
  Grpc__Health__V1__HealthCheckResponse *resp = NULL;
  sg_call_options opts = {.timeout_ms = r->cfg->timeout_ms};
  sg_status st;
  int rc = 0;
  if (grpc_health_v1_health_check(r->channel, &req, &resp, &opts, &st) != SG_STATUS_OK) {
    snprintf(err, errlen, "Health/Check: status %d: %s", st.code, st.message);
    return -1;
  }
  if (resp->status != GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING) {
    snprintf(err, errlen, "Health/Check answered serving status %d", (int)resp->status);
    rc = -1;
  }
  protobuf_c_message_free_unpacked(&resp->base, NULL);
  return rc;
}

static int call_once(const run *r, char *err, size_t errlen) {
  if (r->cfg->method == METHOD_HEALTH)
    return call_health(r, err, errlen);
  return call_get_store(r, err, errlen);
}

static void *worker_main(void *arg) {
  worker *w = arg;
  const run *r = w->run;
  char err[sizeof w->first_error];
  for (;;) {
    int64_t t;
    int rc = call_once(r, err, sizeof err);
    t = now_ns();
    w->total++;
    if (t >= r->window_end_ns)
      break;
    if (t < r->window_start_ns)
      continue;
    if (rc == 0) {
      w->calls++;
    } else if (w->errors++ == 0) {
      memcpy(w->first_error, err, sizeof err);
    }
  }
  return NULL;
}

static void usage(FILE *f) {
  fprintf(f, "usage: client_bench --target HOST:PORT --method get-store|health [--store-id ID]\n"
             "                    [--threads N] [--seconds S] [--warmup S] [--timeout-ms MS]\n"
             "                    [--watch-pid SERVER_PID]\n"
             "The API key comes from $SEALGATE_API_KEY.\n");
}

static int arg_error(const char *what) {
  fprintf(stderr, "client_bench: %s\n", what);
  return -1;
}

static int parse_number(const char *s, double lo, double hi, double *out) {
  char *end;
  double v;
  errno = 0;
  v = strtod(s, &end);
  if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi)
    return -1;
  *out = v;
  return 0;
}

/* Fills |cfg| from argv. Returns 0, or -1 after printing what is wrong. */
static int parse_args(int argc, char **argv, config *cfg) {
  static const struct option longopts[] = {{"target", required_argument, NULL, 't'},
                                           {"method", required_argument, NULL, 'm'},
                                           {"store-id", required_argument, NULL, 's'},
                                           {"threads", required_argument, NULL, 'n'},
                                           {"seconds", required_argument, NULL, 'd'},
                                           {"warmup", required_argument, NULL, 'w'},
                                           {"timeout-ms", required_argument, NULL, 'o'},
                                           {"watch-pid", required_argument, NULL, 'p'},
                                           {"help", no_argument, NULL, 'h'},
                                           {NULL, 0, NULL, 0}};
  double v;
  int opt;
  *cfg =
      (config){.method = METHOD_NONE, .threads = 16, .seconds = 5, .warmup = 1, .timeout_ms = 5000};
  while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
    switch (opt) {
    case 't':
      cfg->target = optarg;
      break;
    case 'm':
      if (strcmp(optarg, "get-store") == 0)
        cfg->method = METHOD_GET_STORE;
      else if (strcmp(optarg, "health") == 0)
        cfg->method = METHOD_HEALTH;
      else
        return arg_error("--method must be get-store or health");
      break;
    case 's':
      cfg->store_id = optarg;
      break;
    case 'n':
      if (parse_number(optarg, 1, MAX_THREADS, &v) != 0 || v != (int)v)
        return arg_error("--threads must be 1..1024");
      cfg->threads = (int)v;
      break;
    case 'd':
      if (parse_number(optarg, 0.1, MAX_SECONDS, &cfg->seconds) != 0)
        return arg_error("--seconds must be 0.1..600");
      break;
    case 'w':
      if (parse_number(optarg, 0, MAX_SECONDS, &cfg->warmup) != 0)
        return arg_error("--warmup must be 0..600");
      break;
    case 'o':
      if (parse_number(optarg, 1, 600000, &v) != 0)
        return arg_error("--timeout-ms must be 1..600000");
      cfg->timeout_ms = (int64_t)v;
      break;
    case 'p':
      if (parse_number(optarg, 1, 1 << 30, &v) != 0 || v != (long)v)
        return arg_error("--watch-pid must be a process id");
      cfg->watch_pid = (long)v;
      break;
    case 'h':
      usage(stdout);
      exit(0);
    default:
      return -1;
    }
  }
  if (optind != argc || cfg->target == NULL || cfg->method == METHOD_NONE ||
      (cfg->method == METHOD_GET_STORE && cfg->store_id == NULL)) {
    usage(stderr);
    return -1;
  }
  return 0;
}

/* CPU time at one instant: this process's (the I/O thread's included), the watched server's
 * and the whole machine's (all cores). Those that are not watched or not readable are -1. */
typedef struct {
  double self, server, machine;
} cpu_sample;

static cpu_sample sample_cpu(const config *cfg) {
  cpu_sample s = {.self = cpu_seconds(), .server = -1, .machine = machine_busy_seconds()};
  if (cfg->watch_pid != 0)
    s.server = proc_cpu_seconds(cfg->watch_pid);
  return s;
}

static double delta(double a, double b) {
  return a < 0 || b < 0 ? -1 : b - a;
}

static void print_result(const config *cfg, const worker *workers, cpu_sample c0, cpu_sample c1) {
  uint64_t calls = 0, errors = 0, total = 0;
  double cpu = c1.self - c0.self;
  int i;
  for (i = 0; i < cfg->threads; i++) {
    calls += workers[i].calls;
    total += workers[i].total;
    if (workers[i].errors > 0 && errors == 0)
      fprintf(stderr, "client_bench: first error: %s\n", workers[i].first_error);
    errors += workers[i].errors;
  }
  printf("client=c method=%s threads=%d seconds=%.3f calls=%llu errors=%llu calls_per_s=%.1f "
         "cpu_s=%.3f cpu_us_per_call=%.1f server_cpu_s=%.3f machine_busy_s=%.3f "
         "total_calls=%llu\n",
         cfg->method == METHOD_HEALTH ? "health" : "get-store", cfg->threads, cfg->seconds,
         (unsigned long long)calls, (unsigned long long)errors, (double)calls / cfg->seconds, cpu,
         calls ? cpu * 1e6 / (double)calls : 0.0, delta(c0.server, c1.server),
         delta(c0.machine, c1.machine), (unsigned long long)total);
}

/* Runs the workers over the warm-up and the timed window and prints the result line. Returns
 * 0, or -1 if a thread could not be started. */
static int measure(run *r, worker *workers) {
  const config *cfg = r->cfg;
  cpu_sample c0, c1;
  int i, started;
  r->window_start_ns = now_ns() + (int64_t)(cfg->warmup * 1e9);
  r->window_end_ns = r->window_start_ns + (int64_t)(cfg->seconds * 1e9);
  for (started = 0; started < cfg->threads; started++) {
    workers[started] = (worker){.run = r};
    if (pthread_create(&workers[started].thread, NULL, worker_main, &workers[started]) != 0) {
      fprintf(stderr, "client_bench: cannot start thread %d\n", started + 1);
      break;
    }
  }
  sleep_until(r->window_start_ns);
  c0 = sample_cpu(cfg);
  sleep_until(r->window_end_ns);
  c1 = sample_cpu(cfg);
  for (i = 0; i < started; i++)
    pthread_join(workers[i].thread, NULL);
  if (started < cfg->threads)
    return -1;
  print_result(cfg, workers, c0, c1);
  return 0;
}

int main(int argc, char **argv) {
  config cfg;
  run r = {.cfg = &cfg};
  sg_channel_options copts = {0};
  char err[600];
  worker *workers;
  int rc;
  if (parse_args(argc, argv, &cfg) != 0)
    return 2;
  copts.target = cfg.target;
  copts.tls = SG_TLS_OFF;
  r.channel = sg_channel_new(&copts, err, sizeof err);
  if (r.channel == NULL) {
    fprintf(stderr, "client_bench: %s\n", err);
    return 1;
  }
  /* One call before the threads start: it connects, and a server that cannot answer this
   * (wrong store, bad key) fails the run instead of producing a rate of errors. */
  if (call_once(&r, err, sizeof err) != 0) {
    fprintf(stderr, "client_bench: first call failed: %s\n", err);
    sg_channel_free(r.channel);
    return 1;
  }
  workers = calloc((size_t)cfg.threads, sizeof *workers);
  if (workers == NULL) {
    fprintf(stderr, "client_bench: out of memory\n");
    sg_channel_free(r.channel);
    return 1;
  }
  rc = measure(&r, workers);
  free(workers);
  sg_channel_free(r.channel);
  return rc == 0 ? 0 : 1;
}
