/* The interception certificates the egress proxy presents to sandboxes: one per host, minted by
 * the proxy CA (proxy/ca.h) on first use and kept in a bounded LRU cache shared by every loop,
 * so a host seen before costs no key generation and no signature. An entry is minted again
 * once it is a day old, well inside the leaf's validity of SG_CA_LEAF_DAYS. */
#ifndef SG_PROXY_LEAF_H
#define SG_PROXY_LEAF_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>

#include "proxy/ca.h"

/* The details of this structure are intentionally hidden. */
typedef struct sg_leaf_cache sg_leaf_cache;

/* A cache of at most |capacity| hosts' certificates signed by |ca| (which must outlive it). */
sg_leaf_cache *sg_leaf_cache_new(sg_ca *ca, size_t capacity);

/* Frees the cache and every certificate and key in it. NULL is a no-op. */
void sg_leaf_cache_free(sg_leaf_cache *c);

/* Makes |ssl| present the certificate for |host| (normalized: a host name or an IP literal
 * without brackets), minting it on a miss. Thread-safe; a miss signs outside the lock, so
 * other loops are not held up. Returns 0, or -1 with a message in |err|. */
int sg_leaf_cache_use(sg_leaf_cache *c, const char *host, SSL *ssl, char *err, size_t errlen);

/* Certificates minted so far (tests and metrics: a repeated host mints nothing). */
uint64_t sg_leaf_cache_minted(const sg_leaf_cache *c);

#endif
