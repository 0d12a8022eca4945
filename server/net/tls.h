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

/* A listener's TLS configuration that SIGHUP can replace while connections are served: the
 * files are read again into a new context, and only connections accepted afterwards use it.
 * Connections already open keep the context they started with (each SSL holds a reference
 * to its context), so a reload drops none of them. */
typedef struct sg_tls_source sg_tls_source;

/* Loads the files as sg_tls_server_ctx does and remembers their paths (which must outlive the
 * source). Returns NULL with a message in |err|. */
sg_tls_source *sg_tls_source_new(const char *cert_file, const char *key_file, const char *client_ca,
                                 char *err, size_t errlen);

/* A new server-side SSL on the current context, for a connection just accepted. Any thread. */
SSL *sg_tls_source_ssl(sg_tls_source *src);

/* Reads the files again. On success the new context serves every later connection; on
 * failure (a message naming the file in |err|) the current one stays. Returns 0 or -1. */
int sg_tls_source_reload(sg_tls_source *src, char *err, size_t errlen);

/* Frees the source (connections still open keep their context alive). */
void sg_tls_source_free(sg_tls_source *src);

#endif
