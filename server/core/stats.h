/* sealgate's own metrics: the counters and gauges every layer bumps, declared once here so
 * that each is named, documented and labelled in one place (sg_stats_register) and costs its
 * caller one atomic add. Series whose labels come from run-time data live with that data:
 * RPCs by method in rpc/rpcstats.h; counts another module keeps already are read at scrape
 * time (sg_notify_metrics, sg_audit_metrics). */
#ifndef SG_CORE_STATS_H
#define SG_CORE_STATS_H

#include "core/metrics.h"

typedef enum {
  SG_CACHE_API_KEY,    /* service/auth.c: API key -> organization */
  SG_CACHE_STORE,      /* service/secret_store.c via rowcache: store rows */
  SG_CACHE_PROXY_VIEW, /* proxy/view.c: a sandbox's view of its secrets */
  SG_CACHE_LEAF_CERT,  /* proxy/leaf.c: interception certificates */
  SG_CACHE_COUNT
} sg_cache_kind;

typedef enum {
  SG_DB_RESULT_OK,          /* the statement's result arrived */
  SG_DB_RESULT_ERROR,       /* PostgreSQL answered with an error */
  SG_DB_RESULT_UNAVAILABLE, /* refused or lost: the caller answers UNAVAILABLE */
  SG_DB_RESULT_COUNT
} sg_db_result;

typedef enum {
  SG_PROXY_FORWARDED, /* upstream's response was relayed */
  SG_PROXY_REFUSED,   /* the proxy answered itself (denied, bad request, upstream failure) */
  SG_PROXY_CONNECT,   /* a CONNECT tunnel was established */
  SG_PROXY_RESULT_COUNT
} sg_proxy_result;

/* Status classes: 1xx..5xx, and "none" for a stream reset before any status. */
#define SG_PROXY_CLASS_COUNT 6

/* Indexed by sg_audit_decision (substituted, withheld, denied, redacted). */
#define SG_PROXY_DECISION_COUNT 4

typedef struct {
  sg_counter cache_hits[SG_CACHE_COUNT], cache_misses[SG_CACHE_COUNT];
  sg_gauge db_connections_up;   /* pool connections READY, all loops */
  sg_gauge db_queries_inflight; /* sent, result not yet delivered */
  sg_gauge db_queries_queued;   /* waiting for a connection */
  sg_counter db_queries[SG_DB_RESULT_COUNT];
  sg_counter proxy_requests[SG_PROXY_CLASS_COUNT][SG_PROXY_RESULT_COUNT];
  sg_counter proxy_decisions[SG_PROXY_DECISION_COUNT];
  sg_gauge proxy_tunnels_open;
  sg_counter proxy_leaves_minted;
  sg_counter rate_limited; /* calls refused over their API key's rate limit (service/auth.c) */
} sg_stats_t;

extern sg_stats_t sg_stats;

static inline void sg_stats_cache(sg_cache_kind kind, int hit) {
  sg_counter_inc(hit ? &sg_stats.cache_hits[kind] : &sg_stats.cache_misses[kind]);
}

/* One request the proxy answered with HTTP |status| (0: none, the stream was reset). */
void sg_stats_proxy_request(int status, sg_proxy_result result);

/* Registers every series above, and the process's build and start-time series, on |m|.
 * |version| is the build's version string (copied). */
void sg_stats_register(sg_metrics *m, const char *version);

#endif
