/* grpc.health.v1.Health (grpc/doc/health-checking.md): a process-wide registry of serving
 * status per service name ("" is the server as a whole). Check answers from it; Watch streams
 * the current status and every change. Watch calls live on their own loops and hear of
 * changes through the loop mailboxes, so the registry's lock is never held across I/O. */
#ifndef SG_SERVICE_HEALTH_H
#define SG_SERVICE_HEALTH_H

#include "rpc/call.h"

/* Values of grpc.health.v1.HealthCheckResponse.ServingStatus. */
enum {
  SG_HEALTH_UNKNOWN = 0,
  SG_HEALTH_SERVING = 1,
  SG_HEALTH_NOT_SERVING = 2,
  SG_HEALTH_SERVICE_UNKNOWN = 3,
};

/* Makes |service| known, SERVING. Thread-safe. */
void sg_health_register(const char *service);

/* Sets the status of a known service and tells every Watch of it. Returns 0, or -1 if the
 * service is unknown. Thread-safe. */
int sg_health_set(const char *service, int status);

/* Sets every known service to |status| (NOT_SERVING when shutting down). Thread-safe. */
void sg_health_set_all(int status);

/* Reads the status of |service|. Returns 0, or -1 if it is unknown. Thread-safe. */
int sg_health_get(const char *service, int *status);

/* On a loop thread: ends that loop's Watch calls with UNAVAILABLE (server shutting down), and
 * any Watch opened on it from now on right after its first answer. */
void sg_health_end_watches(void);

/* Forgets every service, and the calling thread's draining state (for tests). */
void sg_health_reset(void);

extern const sg_service sg_health_service;

#endif
