/* sealgate.v1.SecretStoreService: create, list (keyset-paginated), read, rename or re-scope,
 * and delete secret stores, always within the caller's organization. */
#ifndef SG_SERVICE_SECRET_STORE_H
#define SG_SERVICE_SECRET_STORE_H

#include "rpc/call.h"

extern const sg_service sg_secret_store_service;

/* Frees the calling loop thread's cache of stores (when the loop ends). */
void sg_secret_store_cache_drop(void);

#endif
