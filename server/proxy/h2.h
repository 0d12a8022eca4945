/* HTTP/2 through an intercepted tunnel (SPEC §5: "HTTP/1.1 and HTTP/2 (gRPC included) on both
 * sides of the proxy"). When the upstream chose "h2" and the sandbox offers it too, the tunnel
 * runs two nghttp2 sessions, a server toward the sandbox and a client toward upstream, and
 * maps each sandbox stream to an upstream stream: header values and the query are substituted
 * (gRPC metadata included), request bodies too except gRPC's (substitution would change the
 * length its messages are framed with), and values echoed in response headers, trailers and
 * identity-coded non-gRPC bodies are put back as tokens. Each stream is one request to the
 * substitution rules (proxy/subst.h) and to the audit trail. */
#ifndef SG_PROXY_H2_H
#define SG_PROXY_H2_H

#include <stdint.h>

#include <event2/bufferevent.h>

#include "proxy/view.h"

/* The details of this structure are intentionally hidden. */
typedef struct sg_h2_tunnel sg_h2_tunnel;

typedef struct {
  struct bufferevent *cli; /* the sandbox's TLS, handshake done, ALPN h2; ownership passes */
  struct bufferevent *up;  /* upstream's TLS, connected, ALPN h2; ownership passes */
  sg_view *view;           /* a reference, passed to the tunnel */
  const char *host;        /* the CONNECT host (normalized) and port */
  uint16_t port;
  const char *withhold; /* set when the SNI did not match: nothing is substituted */
  const char *peer;
  int64_t idle_timeout_ms;
  void (*closed)(void *arg); /* the tunnel ended by itself (not through sg_h2_tunnel_free) */
  void *arg;
} sg_h2_tunnel_options;

/* Starts serving the tunnel on the calling loop. Copies what it needs from |opts|. Returns the
 * tunnel, or NULL (nothing was taken over) if nghttp2 could not be set up. */
sg_h2_tunnel *sg_h2_tunnel_start(const sg_h2_tunnel_options *opts);

/* Closes the tunnel now: both connections, every stream. The |closed| callback is not called. */
void sg_h2_tunnel_free(sg_h2_tunnel *t);

#endif
