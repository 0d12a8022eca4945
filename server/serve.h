/* `sealgate serve`: the gateway process. Parses its flags, opens the listeners, runs one event
 * loop per worker thread, and shuts down gracefully on SIGTERM. */
#ifndef SG_SERVE_H
#define SG_SERVE_H

#include <stddef.h>
#include <stdint.h>

#include "rpc/call.h"

/* Services compiled into a particular binary besides sealgate's own (the test server adds a
 * test service); the descriptor set then covers them for reflection. */
typedef struct {
  const sg_service *const *services;
  size_t n_services;
  const uint8_t *descriptor_set;
  size_t descriptor_set_len;
} sg_serve_extras;

/* Runs `serve` with |argv| holding the flags after the command word. Returns the process exit
 * status: 0 after a graceful shutdown, 2 for bad flags, 1 when start-up fails. |extras| may be
 * NULL. */
int sg_serve_main(int argc, char **argv, const sg_serve_extras *extras);

#endif
