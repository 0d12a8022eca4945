/* Per-RPC metrics: a call counter and a latency histogram for every method the router knows
 * and every gRPC status code, laid out as one table indexed by route (sg_route.index) so that
 * counting a finished call is a few atomic adds with no lookup. Calls to paths the router does
 * not know (or whose request was malformed before routing) count under method "unknown": a
 * client cannot grow the set of series. */
#ifndef SG_RPC_RPCSTATS_H
#define SG_RPC_RPCSTATS_H

#include <stdint.h>

#include "core/metrics.h"
#include "rpc/router.h"

/* The details of this structure are intentionally hidden. */
typedef struct sg_rpc_stats sg_rpc_stats;

/* Makes the table for every route of |router| (which must not change afterwards) and
 * registers it on |m| as sealgate_rpc_requests_total and sealgate_rpc_duration_seconds,
 * {method, code}; series still zero are left out of scrapes. Free it only after |m|. */
sg_rpc_stats *sg_rpc_stats_new(const sg_router *router, sg_metrics *m);
void sg_rpc_stats_free(sg_rpc_stats *s);

/* Counts one finished call of |route| (NULL: unknown) that ended with status |code| after
 * |duration_ns|. Any thread. */
void sg_rpc_stats_observe(sg_rpc_stats *s, const sg_route *route, int code, int64_t duration_ns);

#endif
