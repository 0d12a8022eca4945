/* sealgate.v1.SandboxService (SPEC §2, §5): sandboxes bound to layered secret stores, holding
 * sealed tokens in place of values; their checkpoints, forks and snapshots; and, with the local
 * process runtime, the commands run in them. */
#ifndef SG_SERVICE_SANDBOX_H
#define SG_SERVICE_SANDBOX_H

#include "rpc/call.h"

#define SG_SANDBOX_DEFAULT_TIMEOUT 300
#define SG_SANDBOX_MAX_TIMEOUT     (7 * 24 * 3600)

typedef struct {
  const char *proxy_address; /* "host:port" put in every sandbox's proxy.url */
  const char *ca_cert_pem;   /* the proxy CA, returned as proxy.ca_cert_pem */
  /* Where SSL_CERT_FILE & co. point when the local runtime is off: the path at which
   * orchestrators place ca_cert_pem inside their sandboxes. */
  const char *ca_file;
} sg_sandbox_config;

/* Sets what every sandbox's env and proxy config are made of; before the loops start. */
void sg_sandbox_configure(const sg_sandbox_config *config);

/* On the calling loop (one loop per process): every few seconds, kills the commands of
 * sandboxes that have ended (deleted, or expired) and removes their directories. Needs the
 * local runtime; stopped with sg_sandbox_sweep_stop on the same loop. */
void sg_sandbox_sweep_start(void);
void sg_sandbox_sweep_stop(void);

extern const sg_service sg_sandbox_service;

#endif
