#include "net/tls.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include <nghttp2/nghttp2.h>
#include <openssl/err.h>

#include "core/mem.h"

/* Selects "h2" or refuses the handshake: sealgate speaks nothing else over TLS. */
static int select_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned int inlen, void *arg) {
  (void)ssl;
  (void)arg;
  if (nghttp2_select_next_protocol((unsigned char **)out, outlen, in, inlen) != 1)
    return SSL_TLSEXT_ERR_ALERT_FATAL;
  return SSL_TLSEXT_ERR_OK;
}

static SSL_CTX *fail(SSL_CTX *ctx, char *err, size_t errlen, const char *what, const char *file) {
  char detail[256];
  ERR_error_string_n(ERR_get_error(), detail, sizeof(detail));
  snprintf(err, errlen, "%s %s: %s", what, file, detail);
  ERR_clear_error();
  SSL_CTX_free(ctx);
  return NULL;
}

SSL_CTX *sg_tls_server_ctx(const char *cert_file, const char *key_file, const char *client_ca,
                           char *err, size_t errlen) {
  SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
  if (ctx == NULL)
    return fail(ctx, err, errlen, "cannot create TLS context", "");
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
                               SSL_OP_NO_COMPRESSION);
  /* RFC 9113 §9.2.2: TLS 1.2 with HTTP/2 must use AEAD suites with ephemeral keys. */
  SSL_CTX_set_cipher_list(ctx, "ECDHE+AESGCM:ECDHE+CHACHA20");
  /* Idle connections give their 2 x 17 KiB record buffers back. */
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
                            SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1)
    return fail(ctx, err, errlen, "cannot load TLS certificate", cert_file);
  if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1)
    return fail(ctx, err, errlen, "cannot load TLS key", key_file);
  if (SSL_CTX_check_private_key(ctx) != 1)
    return fail(ctx, err, errlen, "TLS key does not match the certificate", cert_file);
  if (client_ca != NULL) {
    if (SSL_CTX_load_verify_locations(ctx, client_ca, NULL) != 1)
      return fail(ctx, err, errlen, "cannot load client CA", client_ca);
    STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(client_ca);
    if (names != NULL)
      SSL_CTX_set_client_CA_list(ctx, names);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
  }
  SSL_CTX_set_alpn_select_cb(ctx, select_alpn, NULL);
  return ctx;
}

struct sg_tls_source {
  const char *cert_file, *key_file, *client_ca;
  pthread_mutex_t lock; /* guards ctx: loops take it for SSL_new, SIGHUP to swap */
  SSL_CTX *ctx;
};

sg_tls_source *sg_tls_source_new(const char *cert_file, const char *key_file, const char *client_ca,
                                 char *err, size_t errlen) {
  SSL_CTX *ctx = sg_tls_server_ctx(cert_file, key_file, client_ca, err, errlen);
  if (ctx == NULL)
    return NULL;
  sg_tls_source *src = sg_calloc(1, sizeof(*src));
  src->cert_file = cert_file;
  src->key_file = key_file;
  src->client_ca = client_ca;
  pthread_mutex_init(&src->lock, NULL);
  src->ctx = ctx;
  return src;
}

SSL *sg_tls_source_ssl(sg_tls_source *src) {
  pthread_mutex_lock(&src->lock);
  SSL *ssl = SSL_new(src->ctx); /* takes its own reference on the context */
  pthread_mutex_unlock(&src->lock);
  return ssl;
}

int sg_tls_source_reload(sg_tls_source *src, char *err, size_t errlen) {
  SSL_CTX *ctx = sg_tls_server_ctx(src->cert_file, src->key_file, src->client_ca, err, errlen);
  if (ctx == NULL)
    return -1;
  pthread_mutex_lock(&src->lock);
  SSL_CTX *old = src->ctx;
  src->ctx = ctx;
  pthread_mutex_unlock(&src->lock);
  SSL_CTX_free(old); /* freed for good once the last connection on it closes */
  return 0;
}

void sg_tls_source_free(sg_tls_source *src) {
  if (src == NULL)
    return;
  SSL_CTX_free(src->ctx);
  pthread_mutex_destroy(&src->lock);
  free(src);
}
