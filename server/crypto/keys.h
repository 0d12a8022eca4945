/* Key material of the envelope encryption (SPEC §4): the root key read from a file, and the
 * per-organization data keys (DEKs) it wraps.
 *
 *   root key (file, never in the database)
 *     └─ wraps each organization's data key (org_keys rows, one per root key id)
 *          └─ seals each secret value (crypto/seal.h)
 *
 * Every function here that holds key bytes in a local buffer clears it (OPENSSL_cleanse)
 * before returning. */
#ifndef SG_CRYPTO_KEYS_H
#define SG_CRYPTO_KEYS_H

#include <stddef.h>
#include <stdint.h>

#define SG_KEY_LEN         32 /* AES-256 */
#define SG_KEY_ID_LEN      16 /* hex characters */
#define SG_WRAPPED_DEK_LEN 60 /* nonce 12 || ciphertext 32 || tag 16 */

typedef struct {
  uint8_t key[SG_KEY_LEN];
  /* First 8 bytes of SHA-256("sealgate root key id v1" || key), in lower-case hex: names the
   * key in the database without revealing it. */
  char id[SG_KEY_ID_LEN + 1];
} sg_root_key;

/* Reads a root key file: 64 hexadecimal characters (32 bytes, as `openssl rand -hex 32`
 * writes them), optionally followed by a newline. Refuses a file that group or others may read
 * or write (mode & 077), a file that is not a regular file, and any other content. Returns 0,
 * or -1 with a message naming the file in |err| (never the key). */
int sg_root_key_load(const char *path, sg_root_key *out, char *err, size_t errlen);

/* Creates |path| (O_EXCL, mode 0600) holding a fresh random key in that format. Returns 0, or
 * -1 with a message in |err| (the file exists, the directory is not writable, ...). */
int sg_root_key_generate(const char *path, char *err, size_t errlen);

/* Zeroes the key. */
void sg_root_key_clear(sg_root_key *key);

/* Fills |dek| with a fresh data key from the OS CSPRNG (RAND_bytes). Returns 0 or -1. */
int sg_dek_generate(uint8_t dek[SG_KEY_LEN]);

/* Wraps |dek| for |org_id| under |root| with AES-256-GCM: a fresh 96-bit nonce, AAD binding
 * the organization id and the root key id, so a wrapped key copied to another organization or
 * presented to another root key fails to unwrap. Writes SG_WRAPPED_DEK_LEN bytes. Returns 0
 * or -1. */
int sg_dek_wrap(const sg_root_key *root, const char *org_id, const uint8_t dek[SG_KEY_LEN],
                uint8_t out[SG_WRAPPED_DEK_LEN]);

/* Unwraps what sg_dek_wrap wrote. Returns 0, or -1 if |len| is wrong or authentication fails
 * (wrong root key, wrong organization, any flipped byte); |dek| is then zeroed. */
int sg_dek_unwrap(const sg_root_key *root, const char *org_id, const uint8_t *wrapped, size_t len,
                  uint8_t dek[SG_KEY_LEN]);

#endif
