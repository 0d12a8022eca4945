#include "crypto/gcm.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "core/mem.h"

/* EVP lengths are ints: longer inputs go through in chunks of this size. */
#define CHUNK (1 << 30)

static void aad_append(sg_gcm_aad *aad, const void *p, size_t n) {
  if (aad->len + n > aad->cap) {
    aad->cap = (aad->len + n) * 2;
    aad->data = sg_realloc(aad->data, aad->cap);
  }
  memcpy(aad->data + aad->len, p, n);
  aad->len += n;
}

void sg_gcm_aad_init(sg_gcm_aad *aad, const char *label) {
  *aad = (sg_gcm_aad){0};
  aad_append(aad, label, strlen(label));
}

void sg_gcm_aad_add_str(sg_gcm_aad *aad, const char *s) {
  size_t n = s ? strlen(s) : 0;
  if (s == NULL || n > UINT32_MAX) {
    aad->invalid = 1;
    return;
  }
  uint8_t be[4] = {(uint8_t)(n >> 24), (uint8_t)(n >> 16), (uint8_t)(n >> 8), (uint8_t)n};
  aad_append(aad, be, sizeof(be));
  aad_append(aad, s, n);
}

void sg_gcm_aad_add_u64(sg_gcm_aad *aad, uint64_t v) {
  uint8_t be[8];
  for (int i = 7; i >= 0; i--, v >>= 8)
    be[i] = (uint8_t)v;
  aad_append(aad, be, sizeof(be));
}

void sg_gcm_aad_free(sg_gcm_aad *aad) {
  free(aad->data);
  *aad = (sg_gcm_aad){0};
}

static EVP_CIPHER_CTX *ctx_new(void) {
  EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
  if (ctx == NULL)
    sg_fatal("out of memory (EVP_CIPHER_CTX_new)");
  return ctx;
}

/* Feeds |len| bytes through EncryptUpdate or DecryptUpdate; |out| NULL feeds AAD. */
static int update(EVP_CIPHER_CTX *ctx, int enc, uint8_t *out, const uint8_t *in, size_t len) {
  while (len > 0) {
    int n = len > CHUNK ? CHUNK : (int)len, outl;
    int ok =
        enc ? EVP_EncryptUpdate(ctx, out, &outl, in, n) : EVP_DecryptUpdate(ctx, out, &outl, in, n);
    if (!ok || (out != NULL && outl != n))
      return -1;
    in += n;
    if (out != NULL)
      out += n;
    len -= (size_t)n;
  }
  return 0;
}

int sg_gcm_seal(const uint8_t key[SG_GCM_KEY_LEN], const sg_gcm_aad *aad, const uint8_t *plain,
                size_t len, uint8_t nonce[SG_GCM_NONCE_LEN], uint8_t *out) {
  if (aad->invalid || RAND_bytes(nonce, SG_GCM_NONCE_LEN) != 1) {
    OPENSSL_cleanse(out, len + SG_GCM_TAG_LEN);
    return -1;
  }
  EVP_CIPHER_CTX *ctx = ctx_new();
  int outl;
  int ok = EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, key, nonce) == 1 &&
           update(ctx, 1, NULL, aad->data, aad->len) == 0 && update(ctx, 1, out, plain, len) == 0 &&
           EVP_EncryptFinal_ex(ctx, out + len, &outl) == 1 && outl == 0 &&
           EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, SG_GCM_TAG_LEN, out + len) == 1;
  EVP_CIPHER_CTX_free(ctx);
  if (!ok)
    OPENSSL_cleanse(out, len + SG_GCM_TAG_LEN);
  return ok ? 0 : -1;
}

int sg_gcm_open(const uint8_t key[SG_GCM_KEY_LEN], const sg_gcm_aad *aad,
                const uint8_t nonce[SG_GCM_NONCE_LEN], const uint8_t *in, size_t in_len,
                uint8_t *plain) {
  if (in_len < SG_GCM_TAG_LEN)
    return -1;
  size_t len = in_len - SG_GCM_TAG_LEN;
  uint8_t tag[SG_GCM_TAG_LEN], fin[SG_GCM_TAG_LEN]; /* GCM's final step writes nothing */
  memcpy(tag, in + len, sizeof(tag)); /* before |plain|, which may be |in|, is written */
  EVP_CIPHER_CTX *ctx = ctx_new();
  int outl;
  int ok = !aad->invalid && EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, key, nonce) == 1 &&
           update(ctx, 0, NULL, aad->data, aad->len) == 0 && update(ctx, 0, plain, in, len) == 0 &&
           EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, SG_GCM_TAG_LEN, tag) == 1 &&
           EVP_DecryptFinal_ex(ctx, fin, &outl) == 1 && outl == 0;
  EVP_CIPHER_CTX_free(ctx);
  if (!ok && len > 0)
    OPENSSL_cleanse(plain, len);
  return ok ? 0 : -1;
}
