/* The egress proxy (SPEC §5): an HTTP forward proxy that sandboxes reach through their
 * HTTPS_PROXY/HTTP_PROXY variables. It knows a sandbox by its Proxy-Authorization credential,
 * admits only the hosts the sandbox's layered allowlist admits and only public addresses (or
 * the operator's --proxy-allow-cidr ranges), terminates TLS for CONNECT tunnels with a leaf
 * certificate from the proxy CA, and forwards each request over its own verified TLS
 * connection upstream, with the sandbox's sealed tokens replaced by the real values where the
 * secret allows the host, and the real values echoed in responses replaced by the tokens.
 *
 * Connections live on the worker loops like gRPC connections; each loop keeps its own cache of
 * sandbox views (proxy/view.h). Nothing here ever blocks a loop: sandbox views come from the
 * loop's database pool, DNS answers from the blocking-work pool. */
#ifndef SG_PROXY_PROXY_H
#define SG_PROXY_PROXY_H

#include <stddef.h>
#include <stdint.h>

#include "core/flags.h"
#include "net/loop.h"
#include "proxy/ca.h"

typedef struct {
  sg_ca *ca;                   /* the interception CA; must outlive the proxy */
  const char *upstream_ca;     /* PEM bundle trusted upstream besides the system's, or NULL */
  sg_strlist allow_cidrs;      /* private ranges the proxy may connect to */
  sg_strlist allow_ports;      /* CONNECT ports besides 443 (and plain-http ports besides 80) */
  sg_strlist resolve;          /* fixed DNS answers, "HOST:ADDR" */
  size_t max_head_bytes;       /* a request head over this: 431 */
  size_t max_body_bytes;       /* a body the proxy must buffer over this: 413 */
  int64_t idle_timeout_ms;     /* a client connection with no request for this long is closed */
  int64_t head_timeout_ms;     /* a request head (or the tunnel's TLS handshake) must be complete
                                * this long after the connection opened or its first byte came;
                                * else 408 and close (0: no limit) */
  int64_t upstream_timeout_ms; /* connect + handshake, and silence while a response is due */
} sg_proxy_options;

/* The details of this structure are intentionally hidden. */
typedef struct sg_proxy sg_proxy;

/* Builds the proxy's TLS contexts, allow lists and certificate cache. |opts| must outlive the
 * proxy. Returns NULL with a message naming the flag at fault in |err|. */
sg_proxy *sg_proxy_new(const sg_proxy_options *opts, char *err, size_t errlen);

/* Frees what sg_proxy_new made, once no connection is left on any loop. */
void sg_proxy_free(sg_proxy *proxy);

/* Serves the accepted non-blocking socket |fd| (ownership passes) on the calling loop. */
void sg_proxy_conn_start(sg_proxy *proxy, int fd, const char *peer);

/* On a loop thread: closes every proxy connection of that loop now, and frees the loop's
 * sandbox views. */
void sg_proxy_close_all(void);

/* Leaf certificates minted so far (tests: a repeated host mints none). */
uint64_t sg_proxy_leaves_minted(const sg_proxy *proxy);

#endif
