/* Sealing secret values (SPEC §4): AES-256-GCM under the organization's data key, a fresh
 * 96-bit nonce per write, and AAD binding the ciphertext to its organization, store, secret
 * name and version, so a ciphertext copied to another row (another secret, store, org or
 * version) fails to open.
 *
 * The AAD is "sealgate/secret/v1" followed by each field as a 4-byte big-endian length and its
 * bytes, and the version as 8 bytes big-endian: unambiguous for any field contents. */
#ifndef SG_CRYPTO_SEAL_H
#define SG_CRYPTO_SEAL_H

#include <stddef.h>
#include <stdint.h>

#include "crypto/keys.h"

#define SG_SEAL_NONCE_LEN 12
#define SG_SEAL_TAG_LEN   16

typedef struct {
  const char *org_id;
  const char *store_id;
  const char *name;
  uint64_t version;
} sg_seal_context;

/* Encrypts |len| bytes of |plain|: writes a fresh nonce to |nonce| and len + SG_SEAL_TAG_LEN
 * bytes (ciphertext then tag) to |out|. Returns 0 or -1. */
int sg_seal(const uint8_t dek[SG_KEY_LEN], const sg_seal_context *ctx, const uint8_t *plain,
            size_t len, uint8_t nonce[SG_SEAL_NONCE_LEN], uint8_t *out);

/* Decrypts what sg_seal wrote (|in_len| >= SG_SEAL_TAG_LEN) into |plain| (in_len - 16 bytes).
 * Returns 0, or -1 if authentication fails for any reason (wrong key, context, nonce, or a
 * changed byte); |plain| is then zeroed. Fails closed: no partial plaintext is ever left. */
int sg_unseal(const uint8_t dek[SG_KEY_LEN], const sg_seal_context *ctx,
              const uint8_t nonce[SG_SEAL_NONCE_LEN], const uint8_t *in, size_t in_len,
              uint8_t *plain);

#endif
