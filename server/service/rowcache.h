/* A per-thread cache of rows an API call reads, kept exact across nodes by generations
 * (db/notify.h): an entry is served only while its table's generation is the one it was read
 * under, and never longer than a TTL (the fallback should a notification be lost anyway).
 * Direct-mapped: a key goes in one slot; a newer entry evicts an older one there. Entries are
 * opaque bytes (a packed message) with the organization that owns them, so a hit for another
 * organization is a miss. Every function is for the owning thread only. */
#ifndef SG_SERVICE_ROWCACHE_H
#define SG_SERVICE_ROWCACHE_H

#include <stddef.h>
#include <stdint.h>

#include "core/stats.h"
#include "db/notify.h"

typedef struct sg_rowcache sg_rowcache;

sg_rowcache *sg_rowcache_new(size_t slots, sg_gen_kind kind, int ttl_ms);
void sg_rowcache_free(sg_rowcache *c);

/* The bytes cached for |key| and |org|, or NULL. Valid until the next put on this cache. */
const uint8_t *sg_rowcache_get(sg_rowcache *c, const char *key, const char *org, size_t *len);

/* Caches |len| bytes for |key| and |org|, read under generation |gen| (taken with sg_gen before
 * the query was sent; 0: not cached). */
void sg_rowcache_put(sg_rowcache *c, const char *key, const char *org, uint64_t gen,
                     const uint8_t *data, size_t len);

/* Counts this cache's hits and misses, besides its own, into the process-wide
 * sealgate_cache_{hits,misses}_total{cache=...} series of |kind|. */
void sg_rowcache_count_as(sg_rowcache *c, sg_cache_kind kind);

/* Hits and misses so far (tests). */
void sg_rowcache_stats(const sg_rowcache *c, uint64_t *hits, uint64_t *misses);

#endif
