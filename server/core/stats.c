#include "core/stats.h"

#include <time.h>

sg_stats_t sg_stats;

static const char *const cache_names[SG_CACHE_COUNT] = {"api_key", "store", "proxy_view",
                                                        "leaf_cert"};
static const char *const db_result_names[SG_DB_RESULT_COUNT] = {"ok", "error", "unavailable"};
static const char *const proxy_result_names[SG_PROXY_RESULT_COUNT] = {"forwarded", "refused",
                                                                      "connect"};
static const char *const class_names[SG_PROXY_CLASS_COUNT] = {"none", "1xx", "2xx",
                                                              "3xx",  "4xx", "5xx"};
static const char *const decision_names[SG_PROXY_DECISION_COUNT] = {"substituted", "withheld",
                                                                    "denied", "redacted"};

void sg_stats_proxy_request(int status, sg_proxy_result result) {
  int cls = status >= 100 && status < 600 ? status / 100 : 0;
  sg_counter_inc(&sg_stats.proxy_requests[cls][result]);
}

static double start_time;

static double read_start_time(void *arg) {
  (void)arg;
  return start_time;
}

static double read_one(void *arg) {
  (void)arg;
  return 1;
}

static void register_caches(sg_metrics *m) {
  for (int i = 0; i < SG_CACHE_COUNT; i++) {
    sg_metrics_counter(m, "sealgate_cache_hits_total", "Lookups answered from a cache.",
                       SG_LABELS("cache", cache_names[i]), &sg_stats.cache_hits[i]);
  }
  for (int i = 0; i < SG_CACHE_COUNT; i++) {
    sg_metrics_counter(m, "sealgate_cache_misses_total",
                       "Lookups a cache could not answer (loaded from the database or made).",
                       SG_LABELS("cache", cache_names[i]), &sg_stats.cache_misses[i]);
  }
}

static void register_db(sg_metrics *m) {
  sg_metrics_gauge(m, "sealgate_db_connections_up",
                   "Database pool connections ready for queries, over every event loop.", NULL,
                   &sg_stats.db_connections_up);
  sg_metrics_gauge(m, "sealgate_db_queries_in_flight",
                   "Queries sent to PostgreSQL whose results have not been delivered yet.", NULL,
                   &sg_stats.db_queries_inflight);
  sg_metrics_gauge(m, "sealgate_db_queries_queued",
                   "Queries waiting in a pool for a free connection.", NULL,
                   &sg_stats.db_queries_queued);
  for (int i = 0; i < SG_DB_RESULT_COUNT; i++)
    sg_metrics_counter(m, "sealgate_db_queries_total",
                       "Pool queries by outcome: ok, error (PostgreSQL refused the statement) or "
                       "unavailable (no connection: the caller answered UNAVAILABLE).",
                       SG_LABELS("result", db_result_names[i]), &sg_stats.db_queries[i]);
}

static void register_proxy(sg_metrics *m) {
  for (int c = 0; c < SG_PROXY_CLASS_COUNT; c++)
    for (int r = 0; r < SG_PROXY_RESULT_COUNT; r++)
      sg_metrics_counter(m, "sealgate_proxy_requests_total",
                         "Egress proxy requests by HTTP status class and result: forwarded "
                         "(upstream answered), refused (the proxy answered), connect (a CONNECT "
                         "tunnel was established).",
                         SG_LABELS("code_class", class_names[c], "result", proxy_result_names[r]),
                         &sg_stats.proxy_requests[c][r]);
  sg_metrics_hide_zero(m, "sealgate_proxy_requests_total"); /* most pairs never happen */
  for (int i = 0; i < SG_PROXY_DECISION_COUNT; i++)
    sg_metrics_counter(m, "sealgate_proxy_decisions_total",
                       "Substitution decisions, as audited: substituted, withheld, denied, "
                       "redacted.",
                       SG_LABELS("decision", decision_names[i]), &sg_stats.proxy_decisions[i]);
  sg_metrics_gauge(m, "sealgate_proxy_tunnels_open", "CONNECT tunnels open now.", NULL,
                   &sg_stats.proxy_tunnels_open);
  sg_metrics_counter(m, "sealgate_proxy_leaf_certificates_minted_total",
                     "Interception leaf certificates minted by the proxy CA.", NULL,
                     &sg_stats.proxy_leaves_minted);
}

void sg_stats_register(sg_metrics *m, const char *version) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  start_time = (double)ts.tv_sec + (double)(ts.tv_nsec / 1000000) / 1e3;
  sg_metrics_gauge_fn(m, "sealgate_build_info", "The running build; the value is always 1.",
                      SG_LABELS("version", version), read_one, NULL);
  sg_metrics_gauge_fn(m, "sealgate_process_start_time_seconds",
                      "When the process started, in seconds since the Unix epoch.", NULL,
                      read_start_time, NULL);
  register_caches(m);
  register_db(m);
  register_proxy(m);
  sg_metrics_counter(m, "sealgate_rate_limited_total",
                     "Calls refused with RESOURCE_EXHAUSTED over their API key's rate limit "
                     "(--rate-limit, --rate-burst).",
                     NULL, &sg_stats.rate_limited);
}
