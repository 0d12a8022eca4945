/* The egress proxy's certificate authority (SPEC §5): the key pair the proxy signs its TLS
 * interception certificates with, and the certificate sandboxes trust (SSL_CERT_FILE,
 * REQUESTS_CA_BUNDLE, NODE_EXTRA_CA_CERTS, the API's ProxyConfig.ca_cert_pem).
 *
 *   DATA_DIR/proxy-ca.key  ECDSA P-256, PEM PKCS#8, mode 0600; refused if group or others may
 *                          access it, like an ssh private key
 *   DATA_DIR/proxy-ca.pem  self-signed X509v3 CA (CA:TRUE pathlen:0, keyCertSign + cRLSign),
 *                          10 years, mode 0644
 *
 * Both are created at first start and only ever loaded afterwards: a corrupt file or a key that
 * does not match the certificate stops the server with a message naming the file, because a
 * silently regenerated CA would break every sandbox that trusts the old one. */
#ifndef SG_PROXY_CA_H
#define SG_PROXY_CA_H

#include <stddef.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#define SG_CA_KEY_FILE  "proxy-ca.key"
#define SG_CA_CERT_FILE "proxy-ca.pem"

/* The longest a minted leaf certificate is valid (its notBefore is one hour in the past, for
 * clocks behind ours). Short-lived, so a leaf key that leaks is soon worthless. */
#define SG_CA_LEAF_DAYS 7

/* The loaded CA. The details of this structure are intentionally hidden. */
typedef struct sg_ca sg_ca;

/* Loads the CA from |data_dir|, or creates it there on first start (the directory too, mode
 * 0700, with any missing parents). Creation is safe against a second process starting at the
 * same time over the same directory: each file appears atomically and never replaces one that
 * is there, so both processes end up with the same pair. A certificate missing beside its key
 * (a first start interrupted between the two files) is issued again for that key.
 *
 * Refuses, with a message naming the file in |err|: a key file group or others may access, a
 * file that is not a regular file or does not parse, a certificate that is not a self-signed
 * CA certificate or has expired, a key that does not match the certificate, and a certificate
 * whose key file is missing. Returns the CA, which the caller frees with sg_ca_free, or NULL. */
sg_ca *sg_ca_load_or_create(const char *data_dir, char *err, size_t errlen);

/* The CA certificate in PEM, NUL-terminated, owned by |ca|: the same text on every start. */
const char *sg_ca_cert_pem(const sg_ca *ca);

/* The absolute path of DATA_DIR/proxy-ca.pem, owned by |ca|. */
const char *sg_ca_cert_path(const sg_ca *ca);

/* Mints a certificate for |host| — a host name, or an IPv4 or IPv6 literal without brackets —
 * signed by the CA with a fresh ECDSA P-256 key: subjectAltName DNS:host (normalized: lower
 * case, no trailing dot) or IP:addr, CN=host when it fits in 64 characters (otherwise an empty
 * subject and a critical subjectAltName), CA:FALSE, digitalSignature, serverAuth, valid from one
 * hour ago for SG_CA_LEAF_DAYS days (never past the CA's own expiry).
 *
 * Returns the certificate and its private key in |*key_out|, both owned by the caller
 * (X509_free, EVP_PKEY_free); or NULL with a message in |err| and |*key_out| untouched, if
 * |host| is neither a host name nor an IP literal (the message does not echo it) or OpenSSL
 * fails.
 * Safe to call from several threads at once on the same |ca|. */
X509 *sg_ca_mint_leaf(sg_ca *ca, const char *host, EVP_PKEY **key_out, char *err, size_t errlen);

/* Frees the CA and its key (OpenSSL clears the key material). NULL is a no-op. */
void sg_ca_free(sg_ca *ca);

#endif
