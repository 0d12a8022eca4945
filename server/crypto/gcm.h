/* AES-256-GCM with a fresh random 96-bit nonce and a structured AAD: the one cipher routine
 * under both DEK wrapping (crypto/keys.h) and secret sealing (crypto/seal.h), so the EVP calls,
 * the tag check and the fail-closed clearing are written once. Internal to crypto/. */
#ifndef SG_CRYPTO_GCM_H
#define SG_CRYPTO_GCM_H

#include <stddef.h>
#include <stdint.h>

#define SG_GCM_KEY_LEN   32
#define SG_GCM_NONCE_LEN 12
#define SG_GCM_TAG_LEN   16

/* Additional authenticated data: a label naming the format, then fields each written as a
 * 4-byte big-endian length and its bytes (or 8 bytes big-endian for integers), so no two
 * different field lists encode alike ("ab","c" differs from "a","bc"). A NULL field or one of
 * 4 GiB or more marks the AAD invalid, and sealing or opening with it fails. */
typedef struct {
  uint8_t *data; /* sg_realloc'd; owned until sg_gcm_aad_free */
  size_t len;
  size_t cap;
  int invalid;
} sg_gcm_aad;

/* Starts |aad| with the bytes of |label| (no length prefix, no NUL). */
void sg_gcm_aad_init(sg_gcm_aad *aad, const char *label);
void sg_gcm_aad_add_str(sg_gcm_aad *aad, const char *s);
void sg_gcm_aad_add_u64(sg_gcm_aad *aad, uint64_t v);
void sg_gcm_aad_free(sg_gcm_aad *aad);

/* Encrypts |len| bytes of |plain| (may be NULL if |len| is 0) under |key|: writes a fresh
 * random nonce to |nonce| and len + SG_GCM_TAG_LEN bytes (ciphertext then tag) to |out|.
 * Returns 0, or -1 (no randomness, invalid AAD, OpenSSL failure) with |out| zeroed. */
int sg_gcm_seal(const uint8_t key[SG_GCM_KEY_LEN], const sg_gcm_aad *aad, const uint8_t *plain,
                size_t len, uint8_t nonce[SG_GCM_NONCE_LEN], uint8_t *out);

/* Decrypts and authenticates |in_len| bytes (ciphertext then tag, |in_len| >=
 * SG_GCM_TAG_LEN) into |plain| (in_len - SG_GCM_TAG_LEN bytes; may be |in| itself). Returns 0,
 * or -1 if anything fails, with |plain| zeroed: no unauthenticated byte is ever left there. */
int sg_gcm_open(const uint8_t key[SG_GCM_KEY_LEN], const sg_gcm_aad *aad,
                const uint8_t nonce[SG_GCM_NONCE_LEN], const uint8_t *in, size_t in_len,
                uint8_t *plain);

#endif
