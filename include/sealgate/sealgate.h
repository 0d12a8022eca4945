/* The sealgate C client library. This release carries the API's message types (the
 * protobuf-c code generated from proto/, under sealgate/v1/) and the gRPC status codes; the
 * channel and the typed stubs come with the client issue. */
#ifndef SEALGATE_SEALGATE_H
#define SEALGATE_SEALGATE_H

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
