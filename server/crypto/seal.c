#include "crypto/seal.h"

#include "crypto/gcm.h"

_Static_assert(SG_SEAL_NONCE_LEN == SG_GCM_NONCE_LEN, "a seal nonce is a GCM nonce");
_Static_assert(SG_SEAL_TAG_LEN == SG_GCM_TAG_LEN, "a seal tag is a GCM tag");

/* "sealgate/secret/v1" || len32(org_id) || org_id || len32(store_id) || store_id
 *   || len32(name) || name || version as 8 bytes, all big-endian. */
static void seal_aad(sg_gcm_aad *aad, const sg_seal_context *ctx) {
  sg_gcm_aad_init(aad, "sealgate/secret/v1");
  sg_gcm_aad_add_str(aad, ctx->org_id);
  sg_gcm_aad_add_str(aad, ctx->store_id);
  sg_gcm_aad_add_str(aad, ctx->name);
  sg_gcm_aad_add_u64(aad, ctx->version);
}

int sg_seal(const uint8_t dek[SG_KEY_LEN], const sg_seal_context *ctx, const uint8_t *plain,
            size_t len, uint8_t nonce[SG_SEAL_NONCE_LEN], uint8_t *out) {
  sg_gcm_aad aad;
  seal_aad(&aad, ctx);
  int rc = sg_gcm_seal(dek, &aad, plain, len, nonce, out);
  sg_gcm_aad_free(&aad);
  return rc;
}

int sg_unseal(const uint8_t dek[SG_KEY_LEN], const sg_seal_context *ctx,
              const uint8_t nonce[SG_SEAL_NONCE_LEN], const uint8_t *in, size_t in_len,
              uint8_t *plain) {
  sg_gcm_aad aad;
  seal_aad(&aad, ctx);
  int rc = sg_gcm_open(dek, &aad, nonce, in, in_len, plain);
  sg_gcm_aad_free(&aad);
  return rc;
}
