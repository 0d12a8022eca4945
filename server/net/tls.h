/* TLS for the gRPC listener: TLS 1.2 and 1.3 only, ALPN "h2" required, optional verification
 * of client certificates against a CA bundle. */
#ifndef SG_NET_TLS_H
#define SG_NET_TLS_H

#include <stddef.h>

#include <openssl/ssl.h>

/* Builds a server context from PEM files. |client_ca| may be NULL; when set, clients must
 * present a certificate that chains to it. Returns NULL with a message in |err| naming the
 * file at fault. */
SSL_CTX *sg_tls_server_ctx(const char *cert_file, const char *key_file, const char *client_ca,
                           char *err, size_t errlen);

#endif
