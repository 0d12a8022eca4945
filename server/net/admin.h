/* The admin HTTP endpoint (--admin-listen): Prometheus metrics and health probes over plain
 * HTTP/1.1, on a loop thread of its own so that a scrape never waits behind a busy worker and
 * a stalled scraper never slows one.
 *
 *   GET /metrics          the registry in Prometheus text format 0.0.4
 *   GET /healthz, /livez  200 "ok" while the process runs (liveness)
 *   GET /readyz           200 "ready", or 503 with the readiness callback's reason
 *
 * HEAD is answered like GET; another method on these paths gets 405, any other path 404. The
 * endpoint serves only what the registry and the callback give it: no request is logged, and
 * nothing a client sends is echoed. */
#ifndef SG_NET_ADMIN_H
#define SG_NET_ADMIN_H

#include <stddef.h>

#include "core/metrics.h"

typedef struct {
  sg_metrics *metrics; /* must outlive the endpoint */
  /* NULL when the process should get traffic, else a short reason ("draining"). Runs on the
   * admin thread for every /readyz: it must be thread-safe and quick. */
  const char *(*not_ready)(void *arg);
  void *arg;
} sg_admin_options;

/* The details of this structure are intentionally hidden. */
typedef struct sg_admin sg_admin;

/* Listens on |addr| ("HOST:PORT"; port 0 picks one) and starts serving on a new thread.
 * |opts| is copied. Returns NULL with a message in |err| if the address cannot be bound or the
 * thread cannot start. */
sg_admin *sg_admin_start(const char *addr, const sg_admin_options *opts, char *err, size_t errlen);

/* The bound address, "ip:port". */
const char *sg_admin_address(const sg_admin *admin);

/* Stops the thread, closes the listener and every admin connection, and frees |admin|. Any
 * thread but the admin's own; NULL is ignored. */
void sg_admin_stop(sg_admin *admin);

#endif
