/* Sealed tokens and sandbox credentials (SPEC §2, §5).
 *
 * A sealed token is "osb_sealed_" + 32 lower-case hex digits: 128 bits from the OS CSPRNG
 * (OpenSSL's RAND_bytes), fresh for every (sandbox, secret). It stands in a sandbox's env for
 * a real value; the egress proxy finds it by its SHA-256 digest. A proxy credential (the
 * password in a sandbox's proxy.url) is 32 hex digits of the same kind. */
#ifndef SG_CRYPTO_TOKEN_H
#define SG_CRYPTO_TOKEN_H

#include <stddef.h>
#include <stdint.h>

#define SG_TOKEN_PREFIX     "osb_sealed_"
#define SG_TOKEN_PREFIX_LEN 11
#define SG_TOKEN_LEN        (SG_TOKEN_PREFIX_LEN + 32)
#define SG_PROXY_SECRET_LEN 32
#define SG_TOKEN_DIGEST_LEN 32
#define SG_UUID_LEN         36

/* Writes a new sealed token and its NUL. Returns 0, or -1 if the CSPRNG failed. */
int sg_token_generate(char out[SG_TOKEN_LEN + 1]);

/* Writes 32 random lower-case hex digits and a NUL. Returns 0 or -1. */
int sg_proxy_secret_generate(char out[SG_PROXY_SECRET_LEN + 1]);

/* Writes a random (version 4) UUID in its canonical text form and a NUL. Returns 0 or -1. */
int sg_uuid_generate(char out[SG_UUID_LEN + 1]);

/* Nonzero if |s| (|len| bytes) has the shape of a sealed token. */
int sg_token_is_sealed(const char *s, size_t len);

/* SHA-256 of |len| bytes of |s|: how tokens and proxy credentials are stored and looked up. */
void sg_token_digest(const char *s, size_t len, uint8_t out[SG_TOKEN_DIGEST_LEN]);

/* The same digest in lower-case hex, and a NUL (as SQL's decode(..., 'hex') reads it). */
void sg_token_digest_hex(const char *s, size_t len, char out[2 * SG_TOKEN_DIGEST_LEN + 1]);

/* Nonzero if |s| is a UUID in text form: 8-4-4-4-12 hexadecimal digits, as PostgreSQL prints
 * one (and as ids become path components and page-token keys). */
int sg_uuid_is_canonical(const char *s);

#endif
