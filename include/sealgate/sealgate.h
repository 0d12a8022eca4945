/* The sealgate C client library: a channel to a sealgate server (sealgate/channel.h), typed
 * functions for every method of the API (sealgate/v1/<file>.sg.h, generated from proto/), the
 * API's protobuf-c message types (sealgate/v1/<file>.pb-c.h) and the gRPC status codes
 * (sealgate/status.h). Link with `pkg-config --cflags --libs sealgate`. */
#ifndef SEALGATE_SEALGATE_H
#define SEALGATE_SEALGATE_H

#include "sealgate/channel.h"
#include "sealgate/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The library's version, "MAJOR.MINOR.PATCH". */
const char *sealgate_version(void);

#ifdef __cplusplus
}
#endif

#endif
