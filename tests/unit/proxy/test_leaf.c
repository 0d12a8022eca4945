/* The cache of interception certificates: a host's first use mints a certificate for it and
 * installs it on the SSL object, later uses mint nothing, a full cache evicts the least
 * recently used host, IP literals get IP names, certificates outlive their eviction, names too
 * long are refused, and several threads share one cache. */
#include <criterion/criterion.h>
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "proxy/leaf.h"

static char tmp[64];
static char err[256];
static sg_ca *ca;
static X509 *ca_cert;
static SSL_CTX *ctx;

static int remove_entry(const char *p, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st;
  (void)flag;
  (void)ftw;
  return remove(p);
}

static void setup(void) {
  snprintf(tmp, sizeof(tmp), "/tmp/sg_test_leaf_XXXXXX");
  cr_assert_not_null(mkdtemp(tmp));
  char dir[128];
  snprintf(dir, sizeof(dir), "%s/data", tmp);
  ca = sg_ca_load_or_create(dir, err, sizeof(err));
  cr_assert_not_null(ca, "sg_ca_load_or_create: %s", err);
  BIO *bio = BIO_new_mem_buf(sg_ca_cert_pem(ca), -1);
  ca_cert = PEM_read_bio_X509(bio, NULL, NULL, NULL);
  BIO_free(bio);
  cr_assert_not_null(ca_cert);
  ctx = SSL_CTX_new(TLS_server_method());
  cr_assert_not_null(ctx);
}

static void teardown(void) {
  SSL_CTX_free(ctx);
  X509_free(ca_cert);
  sg_ca_free(ca);
  nftw(tmp, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
}

TestSuite(leaf_cache, .init = setup, .fini = teardown, .timeout = 120);

/* ---- Helpers ---------------------------------------------------------------------------- */

/* Nonzero if |ssl| presents a certificate for |host| (a name or an IP literal), signed by the
 * CA, whose private key is installed beside it. */
static int presents(SSL *ssl, const char *host) {
  X509 *cert = SSL_get_certificate(ssl);
  if (cert == NULL || X509_verify(cert, X509_get0_pubkey(ca_cert)) != 1 ||
      SSL_check_private_key(ssl) != 1)
    return 0;
  if (X509_check_ip_asc(cert, host, 0) == 1)
    return 1;
  return strchr(host, ':') == NULL && X509_check_host(cert, host, 0, 0, NULL) == 1;
}

/* A new SSL object presenting |host|'s certificate from |c|; asserts that it does. */
static SSL *use(sg_leaf_cache *c, const char *host) {
  SSL *ssl = SSL_new(ctx);
  cr_assert_not_null(ssl);
  err[0] = '\0';
  cr_assert_eq(sg_leaf_cache_use(c, host, ssl, err, sizeof(err)), 0, "%s: %s", host, err);
  cr_assert(presents(ssl, host), "the certificate installed is not %s's", host);
  return ssl;
}

/* Uses |host| once and asserts how many certificates the cache has minted afterwards. */
static void use_expect(sg_leaf_cache *c, const char *host, uint64_t minted) {
  SSL_free(use(c, host));
  cr_assert_eq(sg_leaf_cache_minted(c), minted, "after %s: %llu minted, want %llu", host,
               (unsigned long long)sg_leaf_cache_minted(c), (unsigned long long)minted);
}

/* ---- One host, several hosts ------------------------------------------------------------ */

Test(leaf_cache, first_use_of_a_host_mints_one_certificate_for_it) {
  sg_leaf_cache *c = sg_leaf_cache_new(ca, 8);
  cr_assert_eq(sg_leaf_cache_minted(c), 0);
  SSL *ssl = use(c, "api.openai.com");
  cr_assert_eq(sg_leaf_cache_minted(c), 1);
  X509 *cert = SSL_get_certificate(ssl);
  cr_assert_eq(X509_check_host(cert, "api.openai.com", 0, 0, NULL), 1);
  cr_assert_neq(X509_check_host(cert, "openai.com", 0, 0, NULL), 1);
  cr_assert_neq(X509_check_host(cert, "evil.api.openai.com", 0, 0, NULL), 1);
  SSL_free(ssl);
  sg_leaf_cache_free(c);
}

Test(leaf_cache, same_host_again_mints_nothing_and_presents_the_same_certificate) {
  sg_leaf_cache *c = sg_leaf_cache_new(ca, 8);
  SSL *first = use(c, "api.openai.com");
  SSL *again = use(c, "api.openai.com");
  cr_assert_eq(sg_leaf_cache_minted(c), 1);
  cr_assert_eq(X509_cmp(SSL_get_certificate(first), SSL_get_certificate(again)), 0);
  SSL_free(first);
  SSL_free(again);
  for (int i = 0; i < 20; i++)
    use_expect(c, "api.openai.com", 1);
  sg_leaf_cache_free(c);
}

Test(leaf_cache, different_host_mints_a_certificate_of_its_own) {
  sg_leaf_cache *c = sg_leaf_cache_new(ca, 8);
  SSL *a = use(c, "api.openai.com");
  SSL *b = use(c, "api.anthropic.com");
  cr_assert_eq(sg_leaf_cache_minted(c), 2);
  cr_assert_neq(X509_cmp(SSL_get_certificate(a), SSL_get_certificate(b)), 0);
  cr_assert_neq(X509_check_host(SSL_get_certificate(b), "api.openai.com", 0, 0, NULL), 1);
  SSL_free(a);
  SSL_free(b);
  use_expect(c, "api.openai.com", 2);
  use_expect(c, "api.anthropic.com", 2);
  sg_leaf_cache_free(c);
}

Test(leaf_cache, ip_literal_host_gets_an_ip_subject_alt_name) {
  sg_leaf_cache *c = sg_leaf_cache_new(ca, 8);
  const char *ips[] = {"127.0.0.1", "::1", "2001:db8::7"};
  for (size_t i = 0; i < sizeof(ips) / sizeof(ips[0]); i++) {
    SSL *ssl = use(c, ips[i]);
    cr_assert_eq(X509_check_ip_asc(SSL_get_certificate(ssl), ips[i], 0), 1, "%s", ips[i]);
    cr_assert_neq(X509_check_ip_asc(SSL_get_certificate(ssl), "10.0.0.1", 0), 1);
    SSL_free(ssl);
  }
  cr_assert_eq(sg_leaf_cache_minted(c), 3);
  use_expect(c, "::1", 3);
  sg_leaf_cache_free(c);
}

/* ---- Capacity ----------------------------------------------------------------------------- */

Test(leaf_cache, beyond_capacity_the_oldest_host_is_evicted_and_minted_again) {
  sg_leaf_cache *c = sg_leaf_cache_new(ca, 2);
  use_expect(c, "a.test", 1);
  use_expect(c, "b.test", 2);
  use_expect(c, "c.test", 3); /* evicts a.test */
  use_expect(c, "a.test", 4); /* evicts b.test */
  use_expect(c, "c.test", 4);
  use_expect(c, "a.test", 4);
  sg_leaf_cache_free(c);
}

Test(leaf_cache, host_used_recently_survives_eviction) {
  sg_leaf_cache *c = sg_leaf_cache_new(ca, 2);
  use_expect(c, "a.test", 1);
  use_expect(c, "b.test", 2);
  use_expect(c, "a.test", 2); /* a.test is now the newest: b.test the oldest */
  use_expect(c, "c.test", 3); /* evicts b.test */
  use_expect(c, "a.test", 3);
  use_expect(c, "c.test", 3);
  use_expect(c, "b.test", 4);
  sg_leaf_cache_free(c);
}

Test(leaf_cache, capacity_zero_keeps_one_host) {
  sg_leaf_cache *c = sg_leaf_cache_new(ca, 0);
  use_expect(c, "a.test", 1);
  use_expect(c, "a.test", 1);
  use_expect(c, "b.test", 2);
  use_expect(c, "a.test", 3);
  sg_leaf_cache_free(c);
}

Test(leaf_cache, certificate_stays_with_its_ssl_after_eviction_and_after_the_cache) {
  sg_leaf_cache *c = sg_leaf_cache_new(ca, 1);
  SSL *a = use(c, "a.test");
  SSL *b = use(c, "b.test"); /* evicts a.test: its entry is freed */
  cr_assert(presents(a, "a.test"));
  sg_leaf_cache_free(c);
  cr_assert(presents(a, "a.test"));
  cr_assert(presents(b, "b.test"));
  SSL_free(a);
  SSL_free(b);
}

/* ---- Refusals ----------------------------------------------------------------------------- */

/* A valid name of |len| characters: labels of 50 letters and dots. */
static void long_name(char *out, size_t len) {
  for (size_t i = 0; i < len; i++)
    out[i] = i % 51 == 50 ? '.' : 'a' + (char)(i % 26);
  out[len] = '\0';
}

Test(leaf_cache, host_of_253_characters_is_accepted) {
  char name[254];
  long_name(name, 253);
  sg_leaf_cache *c = sg_leaf_cache_new(ca, 8);
  use_expect(c, name, 1);
  use_expect(c, name, 1);
  sg_leaf_cache_free(c);
}

Test(leaf_cache, host_longer_than_253_characters_is_refused) {
  char name[300];
  sg_leaf_cache *c = sg_leaf_cache_new(ca, 8);
  for (size_t len = 254; len < sizeof(name); len += 45) {
    long_name(name, len);
    SSL *ssl = SSL_new(ctx);
    err[0] = '\0';
    cr_assert_eq(sg_leaf_cache_use(c, name, ssl, err, sizeof(err)), -1, "%zu characters", len);
    cr_assert_neq(err[0], '\0', "a message says why");
    cr_assert_null(SSL_get_certificate(ssl));
    SSL_free(ssl);
  }
  cr_assert_eq(sg_leaf_cache_minted(c), 0);
  sg_leaf_cache_free(c);
}

Test(leaf_cache, host_that_is_no_host_name_is_refused_and_not_cached) {
  sg_leaf_cache *c = sg_leaf_cache_new(ca, 8);
  for (int i = 0; i < 2; i++) {
    SSL *ssl = SSL_new(ctx);
    err[0] = '\0';
    cr_assert_eq(sg_leaf_cache_use(c, "not a host!", ssl, err, sizeof(err)), -1);
    cr_assert_neq(err[0], '\0');
    SSL_free(ssl);
  }
  cr_assert_eq(sg_leaf_cache_minted(c), 0);
  use_expect(c, "a.test", 1);
  sg_leaf_cache_free(c);
}

/* ---- Threads ------------------------------------------------------------------------------ */

#define THREADS  8
#define USES     40
#define N_HOSTS  6
#define SAME_ALL 0 /* the host every thread uses first */

static const char *const hosts[N_HOSTS] = {"shared.test", "api.openai.com", "127.0.0.1",
                                           "::1",         "a.b.example",    "z.test"};

typedef struct {
  sg_leaf_cache *cache;
  int index;
  int failures;
} worker;

static void *use_many(void *arg) {
  worker *w = arg;
  for (int i = 0; i < USES; i++) {
    /* Every thread starts on the same host at once, then walks the others from its own. */
    const char *host = hosts[i == 0 ? SAME_ALL : (w->index + i) % N_HOSTS];
    SSL *ssl = SSL_new(ctx);
    char msg[256];
    if (ssl == NULL || sg_leaf_cache_use(w->cache, host, ssl, msg, sizeof(msg)) != 0 ||
        !presents(ssl, host))
      w->failures++;
    SSL_free(ssl);
  }
  return NULL;
}

/* Runs THREADS workers over |c| and asserts none failed. */
static void run_workers(sg_leaf_cache *c) {
  static worker workers[THREADS];
  pthread_t threads[THREADS];
  for (int t = 0; t < THREADS; t++) {
    workers[t] = (worker){.cache = c, .index = t};
    cr_assert_eq(pthread_create(&threads[t], NULL, use_many, &workers[t]), 0);
  }
  for (int t = 0; t < THREADS; t++)
    cr_assert_eq(pthread_join(threads[t], NULL), 0);
  for (int t = 0; t < THREADS; t++)
    cr_assert_eq(workers[t].failures, 0, "thread %d", t);
}

Test(leaf_cache, threads_sharing_the_cache_end_with_every_host_minted_and_cached) {
  sg_leaf_cache *c = sg_leaf_cache_new(ca, 16);
  run_workers(c);
  /* A host is minted once, or once more per thread that missed it while it was being minted. */
  uint64_t minted = sg_leaf_cache_minted(c);
  cr_assert_geq(minted, N_HOSTS);
  cr_assert_leq(minted, N_HOSTS * THREADS);
  for (int i = 0; i < N_HOSTS; i++)
    use_expect(c, hosts[i], minted);
  sg_leaf_cache_free(c);
}

Test(leaf_cache, threads_evicting_each_other_present_the_right_certificates) {
  sg_leaf_cache *c = sg_leaf_cache_new(ca, 2);
  run_workers(c);
  uint64_t minted = sg_leaf_cache_minted(c);
  cr_assert_geq(minted, N_HOSTS);
  cr_assert_leq(minted, THREADS * USES);
  /* Two hosts are cached after all: the last two used twice in a row mint nothing more. */
  use_expect(c, "a.test", minted + 1);
  use_expect(c, "b.test", minted + 2);
  use_expect(c, "a.test", minted + 2);
  use_expect(c, "b.test", minted + 2);
  sg_leaf_cache_free(c);
}
