/* gRPC status codes (grpc/include/grpc/status.h), shared by the sealgate server and the C
 * client library. */
#ifndef SEALGATE_STATUS_H
#define SEALGATE_STATUS_H

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
  SG_STATUS_OK = 0,
  SG_STATUS_CANCELLED = 1,
  SG_STATUS_UNKNOWN = 2,
  SG_STATUS_INVALID_ARGUMENT = 3,
  SG_STATUS_DEADLINE_EXCEEDED = 4,
  SG_STATUS_NOT_FOUND = 5,
  SG_STATUS_ALREADY_EXISTS = 6,
  SG_STATUS_PERMISSION_DENIED = 7,
  SG_STATUS_RESOURCE_EXHAUSTED = 8,
  SG_STATUS_FAILED_PRECONDITION = 9,
  SG_STATUS_ABORTED = 10,
  SG_STATUS_OUT_OF_RANGE = 11,
  SG_STATUS_UNIMPLEMENTED = 12,
  SG_STATUS_INTERNAL = 13,
  SG_STATUS_UNAVAILABLE = 14,
  SG_STATUS_DATA_LOSS = 15,
  SG_STATUS_UNAUTHENTICATED = 16,
} sg_status_code;

/* Returns the canonical upper-case name ("NOT_FOUND"), or "UNKNOWN" for a code outside 0..16. */
const char *sg_status_code_name(int code);

#ifdef __cplusplus
}
#endif

#endif
