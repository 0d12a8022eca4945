/* Authentication of API calls (SPEC §2): "authorization: Bearer osk_..." names the caller's
 * organization. Keys are checked for format and checksum first (no database work for garbage),
 * then looked up by SHA-256 digest. Results are cached per event-loop thread for
 * SG_AUTH_TTL_MS (unknown keys for a shorter time), so a revoked key stops working on every
 * node within that, well inside the 5 seconds SPEC allows. */
#ifndef SG_SERVICE_AUTH_H
#define SG_SERVICE_AUTH_H

#include "rpc/call.h"

#define SG_AUTH_TTL_MS     2000
#define SG_AUTH_NEG_TTL_MS 1000

/* Continues an authenticated call; |org_id| lives in the call's arena. */
typedef void (*sg_auth_next)(sg_call *call, void *arg, const char *org_id);

/* Authenticates |call|. On success runs |next| (at once on a cache hit, later otherwise) and
 * records the organization for the log line; on failure finishes the call itself with
 * UNAUTHENTICATED (no key, malformed key, unknown or revoked key) or UNAVAILABLE (database
 * down). The handler must hold the call (it does, until it finishes it). */
void sg_auth(sg_call *call, sg_auth_next next, void *arg);

/* Forgets this thread's cached results (tests; a reconnect to the database). */
void sg_auth_cache_clear(void);

#endif
