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

/* Keys the rate limiter has room for on a node at once (core/ratelimit.h); a key idle for
 * longer than a burst takes to refill gives its place up. */
#define SG_AUTH_RATE_KEYS 16384

/* Continues an authenticated call; |org_id| lives in the call's arena. */
typedef void (*sg_auth_next)(sg_call *call, void *arg, const char *org_id);

/* Authenticates |call|. On success records the organization for the log line and the key
 * (id and shown prefix, sg_call_set_key) for the audit trail, charges the call to the key's
 * rate limit, and runs |next| (at once on a cache hit, later otherwise). Otherwise finishes
 * the call itself with UNAUTHENTICATED (no key, malformed key, unknown or revoked key),
 * UNAVAILABLE (database down) or RESOURCE_EXHAUSTED (over the key's rate limit, with
 * "retry-after-ms" and "grpc-retry-pushback-ms" in the trailers). Calls that fail to
 * authenticate are charged to no key. The handler must hold the call (it does, until it
 * finishes it). */
void sg_auth(sg_call *call, sg_auth_next next, void *arg);

/* Limits every API key to |rate| calls a second in the long run and |burst| at once, on this
 * node (each node of a cluster keeps its own buckets: N nodes admit up to N times the rate);
 * |rate| 0 turns the limit off. Keys are told apart by their digest; the key itself is never
 * kept. Call before the event loops start or after they end, not while they run. */
void sg_auth_rate_limit(uint32_t rate, uint32_t burst);

/* Forgets this thread's cached results (tests; a reconnect to the database). */
void sg_auth_cache_clear(void);

#endif
