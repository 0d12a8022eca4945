#include "rpc/rpcstats.h"

#include <stdlib.h>

#include "core/mem.h"
#include "sealgate/status.h"

#define N_CODES (SG_STATUS_UNAUTHENTICATED + 1)

typedef struct {
  sg_counter calls;
  sg_histogram latency;
} cell;

struct sg_rpc_stats {
  size_t n_routes; /* row n_routes is "unknown" */
  cell *cells;     /* [n_routes + 1][N_CODES] */
};

static void register_row(sg_metrics *m, cell *row, const char *method) {
  for (int code = 0; code < N_CODES; code++) {
    sg_histogram_init(&row[code].latency, &sg_latency_buckets);
    const char *const *labels = SG_LABELS("method", method, "code", sg_status_code_name(code));
    sg_metrics_counter(m, "sealgate_rpc_requests_total",
                       "gRPC calls finished, by method and status code.", labels, &row[code].calls);
    sg_metrics_histogram(m, "sealgate_rpc_duration_seconds",
                         "gRPC call duration from request headers to the stream's end, by "
                         "method and status code.",
                         labels, &row[code].latency);
  }
}

sg_rpc_stats *sg_rpc_stats_new(const sg_router *router, sg_metrics *m) {
  sg_rpc_stats *s = sg_calloc(1, sizeof(*s));
  s->n_routes = sg_router_count(router);
  s->cells = sg_calloc((s->n_routes + 1) * N_CODES, sizeof(*s->cells));
  for (size_t i = 0; i < s->n_routes; i++)
    register_row(m, &s->cells[i * N_CODES], sg_router_route(router, i)->path);
  register_row(m, &s->cells[s->n_routes * N_CODES], "unknown");
  sg_metrics_hide_zero(m, "sealgate_rpc_requests_total");
  sg_metrics_hide_zero(m, "sealgate_rpc_duration_seconds");
  return s;
}

void sg_rpc_stats_free(sg_rpc_stats *s) {
  if (s == NULL)
    return;
  free(s->cells);
  free(s);
}

void sg_rpc_stats_observe(sg_rpc_stats *s, const sg_route *route, int code, int64_t duration_ns) {
  size_t row = route != NULL && route->index < s->n_routes ? route->index : s->n_routes;
  if (code < 0 || code >= N_CODES)
    code = SG_STATUS_UNKNOWN;
  cell *c = &s->cells[row * N_CODES + (size_t)code];
  sg_counter_inc(&c->calls);
  sg_histogram_observe(&c->latency, duration_ns > 0 ? (uint64_t)duration_ns : 0);
}
