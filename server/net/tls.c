#include "net/tls.h"

#include <stdio.h>

#include <nghttp2/nghttp2.h>
#include <openssl/err.h>

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
