#include "proxy/leaf.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/log.h"
#include "core/mem.h"
#include "core/stats.h"
#include "policy/host.h"

#define LEAF_REMINT_NS (24LL * 3600 * 1000000000)

typedef struct entry {
  char host[SG_HOST_MAX + 1];
  X509 *cert;
  EVP_PKEY *key;
  int64_t minted_ns;
  struct entry *hnext;         /* hash chain */
  struct entry *newer, *older; /* LRU order */
} entry;

struct sg_leaf_cache {
  sg_ca *ca;
  pthread_mutex_t lock;
  size_t capacity, count, n_buckets;
  entry **buckets;
  entry *newest, *oldest;
  _Atomic uint64_t minted;
};

static size_t host_hash(const char *s) {
  size_t h = 1469598103934665603ULL;
  for (; *s; s++)
    h = (h ^ (unsigned char)*s) * 1099511628211ULL;
  return h;
}

sg_leaf_cache *sg_leaf_cache_new(sg_ca *ca, size_t capacity) {
  sg_leaf_cache *c = sg_calloc(1, sizeof(*c));
  c->ca = ca;
  c->capacity = capacity > 0 ? capacity : 1;
  c->n_buckets = 2 * c->capacity;
  c->buckets = sg_calloc(c->n_buckets, sizeof(*c->buckets));
  pthread_mutex_init(&c->lock, NULL);
  return c;
}

static void entry_free(entry *e) {
  X509_free(e->cert);
  EVP_PKEY_free(e->key);
  free(e);
}

void sg_leaf_cache_free(sg_leaf_cache *c) {
  if (c == NULL)
    return;
  for (entry *e = c->newest, *next; e; e = next) {
    next = e->older;
    entry_free(e);
  }
  free(c->buckets);
  pthread_mutex_destroy(&c->lock);
  free(c);
}

static void lru_unlink(sg_leaf_cache *c, entry *e) {
  if (e->newer)
    e->newer->older = e->older;
  else
    c->newest = e->older;
  if (e->older)
    e->older->newer = e->newer;
  else
    c->oldest = e->newer;
  e->newer = e->older = NULL;
}

static void lru_push(sg_leaf_cache *c, entry *e) {
  e->older = c->newest;
  e->newer = NULL;
  if (c->newest)
    c->newest->newer = e;
  c->newest = e;
  if (c->oldest == NULL)
    c->oldest = e;
}

static void remove_entry(sg_leaf_cache *c, entry *e) {
  entry **p = &c->buckets[host_hash(e->host) % c->n_buckets];
  while (*p != e)
    p = &(*p)->hnext;
  *p = e->hnext;
  lru_unlink(c, e);
  c->count--;
  entry_free(e);
}

/* Under the lock: the fresh entry for |host|, moved to the front, or NULL. */
static entry *lookup(sg_leaf_cache *c, const char *host) {
  for (entry *e = c->buckets[host_hash(host) % c->n_buckets]; e; e = e->hnext) {
    if (strcmp(e->host, host) != 0)
      continue;
    if (sg_now_ns() - e->minted_ns > LEAF_REMINT_NS) {
      remove_entry(c, e);
      return NULL;
    }
    lru_unlink(c, e);
    lru_push(c, e);
    return e;
  }
  return NULL;
}

static int use_entry(const entry *e, SSL *ssl, char *err, size_t errlen) {
  /* Both calls take references of their own: the entry may be evicted right after. */
  if (SSL_use_certificate(ssl, e->cert) != 1 || SSL_use_PrivateKey(ssl, e->key) != 1) {
    snprintf(err, errlen, "cannot install the interception certificate");
    return -1;
  }
  return 0;
}

int sg_leaf_cache_use(sg_leaf_cache *c, const char *host, SSL *ssl, char *err, size_t errlen) {
  if (strlen(host) > SG_HOST_MAX) {
    snprintf(err, errlen, "host name too long");
    return -1;
  }
  pthread_mutex_lock(&c->lock);
  entry *e = lookup(c, host);
  int rv = e != NULL ? use_entry(e, ssl, err, errlen) : 1;
  pthread_mutex_unlock(&c->lock);
  sg_stats_cache(SG_CACHE_LEAF_CERT, e != NULL);
  if (rv != 1)
    return rv;

  EVP_PKEY *key = NULL;
  X509 *cert = sg_ca_mint_leaf(c->ca, host, &key, err, errlen);
  if (cert == NULL)
    return -1;
  uint64_t minted = atomic_fetch_add(&c->minted, 1) + 1;
  sg_counter_inc(&sg_stats.proxy_leaves_minted);
  sg_log_begin(SG_LOG_INFO, "proxy_leaf_minted");
  sg_log_cstr("host", host);
  sg_log_int("minted", (int64_t)minted);
  sg_log_end();
  e = sg_calloc(1, sizeof(*e));
  snprintf(e->host, sizeof(e->host), "%s", host);
  e->cert = cert;
  e->key = key;
  e->minted_ns = sg_now_ns();

  pthread_mutex_lock(&c->lock);
  entry *raced = lookup(c, host); /* another loop minted it meanwhile: keep one */
  if (raced != NULL) {
    entry_free(e);
    e = raced;
  } else {
    size_t b = host_hash(host) % c->n_buckets;
    e->hnext = c->buckets[b];
    c->buckets[b] = e;
    lru_push(c, e);
    if (++c->count > c->capacity)
      remove_entry(c, c->oldest);
  }
  rv = use_entry(e, ssl, err, errlen);
  pthread_mutex_unlock(&c->lock);
  return rv;
}

uint64_t sg_leaf_cache_minted(const sg_leaf_cache *c) {
  return atomic_load(&((sg_leaf_cache *)c)->minted);
}
