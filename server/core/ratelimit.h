/* Rate limits per key: one token bucket per key (an API key's digest, service/auth.c), in a
 * table of fixed size shared by every thread of the process.
 *
 * Each bucket holds up to |burst| calls and refills at |rate| calls per second. It is kept as
 * the generic cell rate algorithm keeps it — one "theoretical arrival time" per key, the
 * instant at which the bucket will be full again — which is exactly a token bucket with
 * tokens = burst - (tat - now) * rate, in integer nanoseconds and one word per key.
 *
 * The table is split into SG_RATELIMIT_SHARDS shards, each behind its own mutex (a key's
 * shard comes from its first bytes, so threads charging different keys rarely meet), and each
 * shard into sets of SG_RATELIMIT_WAYS places: a key lives in one set, found with at most
 * that many comparisons. Memory is fixed at creation. A full bucket is idle — forgetting it
 * loses nothing, since a new key starts full — so an idle place is taken over by the next new
 * key of its set. A new key that finds every place of its set busy with a key that is not
 * idle is charged to its shard's overflow bucket, shared with the other keys in that plight:
 * stricter than its own bucket would be, never looser, and no allocation. */
#ifndef SG_CORE_RATELIMIT_H
#define SG_CORE_RATELIMIT_H

#include <stddef.h>
#include <stdint.h>

#define SG_RATELIMIT_KEY_LEN 32
#define SG_RATELIMIT_SHARDS  64
#define SG_RATELIMIT_WAYS    8

typedef struct sg_ratelimit sg_ratelimit;

/* A table admitting |rate| calls per second per key in the long run and |burst| at once
 * (both at least 1), with places for at least |capacity| keys (rounded up to whole sets in
 * every shard). Aborts if memory runs out; never returns NULL. */
sg_ratelimit *sg_ratelimit_new(uint32_t rate, uint32_t burst, size_t capacity);

/* Frees |rl| (NULL: nothing). No other thread may be using it. */
void sg_ratelimit_free(sg_ratelimit *rl);

/* Charges one call to |key| at |now_ns| (a monotonic clock: sg_now_ns, or a test's). Returns
 * 0 if the call is admitted, or the nanoseconds until the key would next be admitted (at
 * least 1) if it is refused; a refused call costs nothing. Any thread. */
int64_t sg_ratelimit_take(sg_ratelimit *rl, const uint8_t key[SG_RATELIMIT_KEY_LEN],
                          int64_t now_ns);

/* The number of keys that have a place (tests). */
size_t sg_ratelimit_keys(sg_ratelimit *rl);

/* The number of places (tests): |capacity| rounded up. */
size_t sg_ratelimit_capacity(const sg_ratelimit *rl);

#endif
