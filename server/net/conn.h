/* A client connection on an event loop: the socket (and TLS, when the listener has it)
 * around an sg_h2 session. Reads go straight from a per-thread buffer into nghttp2 and writes
 * are batched per event, so an idle connection holds no I/O buffers at all. */
#ifndef SG_NET_CONN_H
#define SG_NET_CONN_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>

#include "net/loop.h"
#include "net/tls.h"
#include "rpc/h2.h"

typedef struct {
  const sg_h2_options *h2;
  sg_tls_source *tls;           /* NULL: cleartext h2c with prior knowledge */
  int64_t idle_timeout_ms;      /* no open stream and no frame for this long: GOAWAY (0: never) */
  int64_t handshake_timeout_ms; /* a TLS handshake must finish within this */
  int64_t write_timeout_ms;     /* bytes waiting to be sent that do not move for this long:
                                   the client is not reading, the connection is closed */
} sg_conn_options;

/* Serves the accepted, non-blocking socket |fd| (ownership passes) on the calling thread's
 * loop. |peer| names the client in logs; |opts| must outlive the connection. */
void sg_conn_start(sg_loop *loop, int fd, const char *peer, const sg_conn_options *opts);

/* On a loop thread: begins a graceful shutdown of every connection of that loop (GOAWAY,
 * in-flight calls finish). |drained| runs on this thread once the last one has closed (at once
 * if there is none). */
void sg_conn_drain_all(void (*drained)(void *arg), void *arg);

/* On a loop thread: closes every connection of that loop now. */
void sg_conn_close_all(void);

/* Connections open on the calling thread's loop. */
size_t sg_conn_count(void);

#endif
