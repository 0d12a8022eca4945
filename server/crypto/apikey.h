/* API keys (SPEC §4): "osk_" + 32 random bytes in base62 (43 characters, fixed width) + a
 * 6-character base62 checksum (CRC-32 of the 43 characters). The checksum lets a malformed or
 * mistyped key be refused without touching the database. Only the SHA-256 digest of a key is
 * ever stored; the key itself is shown once. */
#ifndef SG_CRYPTO_APIKEY_H
#define SG_CRYPTO_APIKEY_H

#include <stddef.h>
#include <stdint.h>

#define SG_API_KEY_LEN    53 /* "osk_" + 43 + 6 */
#define SG_API_KEY_SHOWN  12 /* "osk_" + 8: the prefix operators see and revoke by */
#define SG_API_DIGEST_LEN 32

/* Writes a new key and its NUL into |out|. Returns 0 or -1 (no randomness). */
int sg_api_key_generate(char out[SG_API_KEY_LEN + 1]);

/* Returns 0 if |key| has the format and a correct checksum, -1 otherwise. Runs in time that
 * does not depend on where a wrong character is. */
int sg_api_key_check(const char *key, size_t len);

/* SHA-256 of the key's bytes. */
void sg_api_key_digest(const char *key, size_t len, uint8_t digest[SG_API_DIGEST_LEN]);

/* Compares two digests in constant time (CRYPTO_memcmp). Returns nonzero if equal. */
int sg_api_digest_equal(const uint8_t a[SG_API_DIGEST_LEN], const uint8_t b[SG_API_DIGEST_LEN]);

#endif
