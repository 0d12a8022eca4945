/* Authentication of API calls (SPEC §2): "authorization: Bearer osk_..." names the caller's
 * organization. Keys are checked for format and checksum first (no database work for garbage),
 * then looked up by SHA-256 digest. Results are cached per event-loop thread. A key that works
 * is kept SG_AUTH_NOTIFIED_TTL_MS while this process listens for changes (db/notify.h): a
 * revocation drops it on every node as soon as the notification arrives; otherwise
 * SG_AUTH_TTL_MS, so a revoked key stops working within that, inside the 5 seconds SPEC
 * allows. Unknown keys are remembered SG_AUTH_NEG_TTL_MS (a new key is an insert, announced
 * too, but the negative entry must not outlive a missed notification). */
#ifndef SG_SERVICE_AUTH_H
#define SG_SERVICE_AUTH_H

#include "rpc/call.h"

#define SG_AUTH_TTL_MS          2000
#define SG_AUTH_NEG_TTL_MS      1000
#define SG_AUTH_NOTIFIED_TTL_MS 30000

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
