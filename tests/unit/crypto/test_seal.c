/* Sealing secret values: round trips, fresh nonces, and a ciphertext that opens only under its
 * own key, organization, store, name and version, with every byte intact. */
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "crypto/keys.h"
#include "crypto/seal.h"

#define TAG SG_SEAL_TAG_LEN

static uint8_t dek[SG_KEY_LEN];
static const sg_seal_context base = {"org_1", "store_1", "DB_PASSWORD", 7};
static const char value[] = "postgres://app:correct-horse-battery-staple@db.internal:5432/app";

static void setup(void) {
  cr_assert_eq(sg_dek_generate(dek), 0);
}

TestSuite(seal, .init = setup);

static int all_zero(const uint8_t *p, size_t n) {
  uint8_t acc = 0;
  for (size_t i = 0; i < n; i++)
    acc |= p[i];
  return acc == 0;
}

static void round_trip(size_t len) {
  uint8_t *plain = calloc(1, len + 1), *sealed = malloc(len + TAG), *back = malloc(len + 1);
  for (size_t i = 0; i < len; i++)
    plain[i] = (uint8_t)(i * 131 + 7);
  uint8_t nonce[SG_SEAL_NONCE_LEN];
  cr_assert_eq(sg_seal(dek, &base, plain, len, nonce, sealed), 0);
  memset(back, 0xAA, len + 1);
  cr_assert_eq(sg_unseal(dek, &base, nonce, sealed, len + TAG, back), 0);
  cr_assert_arr_eq(back, plain, len);
  cr_assert_eq(back[len], 0xAA, "unseal wrote past the plaintext");
  free(plain);
  free(sealed);
  free(back);
}

Test(seal, round_trips_0_bytes) {
  round_trip(0);
}

Test(seal, round_trips_1_byte) {
  round_trip(1);
}

Test(seal, round_trips_100_bytes) {
  round_trip(100);
}

Test(seal, round_trips_65536_bytes) {
  round_trip(65536);
}

Test(seal, zero_bytes_seal_to_just_the_tag) {
  uint8_t nonce[SG_SEAL_NONCE_LEN], out[TAG + 1];
  memset(out, 0xAA, sizeof(out));
  cr_assert_eq(sg_seal(dek, &base, NULL, 0, nonce, out), 0);
  cr_assert_eq(out[TAG], 0xAA, "more than the tag written");
  cr_assert_eq(sg_unseal(dek, &base, nonce, out, TAG, NULL), 0);
}

Test(seal, writes_exactly_the_ciphertext_and_the_tag) {
  size_t len = strlen(value);
  uint8_t nonce[SG_SEAL_NONCE_LEN], out[256];
  memset(out, 0xAA, sizeof(out));
  cr_assert_eq(sg_seal(dek, &base, (const uint8_t *)value, len, nonce, out), 0);
  for (size_t i = len + TAG; i < sizeof(out); i++)
    cr_assert_eq(out[i], 0xAA, "byte %zu written", i);
}

Test(seal, the_same_plaintext_twice_gets_a_new_nonce_and_ciphertext) {
  size_t len = strlen(value);
  uint8_t n1[SG_SEAL_NONCE_LEN], n2[SG_SEAL_NONCE_LEN], c1[128], c2[128];
  cr_assert_eq(sg_seal(dek, &base, (const uint8_t *)value, len, n1, c1), 0);
  cr_assert_eq(sg_seal(dek, &base, (const uint8_t *)value, len, n2, c2), 0);
  cr_assert_arr_neq(n1, n2, SG_SEAL_NONCE_LEN);
  cr_assert_arr_neq(c1, c2, len + TAG);
}

Test(seal, the_ciphertext_does_not_contain_the_plaintext) {
  size_t len = strlen(value);
  uint8_t nonce[SG_SEAL_NONCE_LEN], out[128];
  cr_assert_eq(sg_seal(dek, &base, (const uint8_t *)value, len, nonce, out), 0);
  for (size_t i = 0; i + 4 <= len; i++)
    cr_assert_null(memmem(out, len + TAG, value + i, 4), "plaintext at %zu visible", i);
}

/* Seals |value| under |base| and expects it not to open under |ctx|, with |plain| zeroed. */
static void assert_context_refused(const sg_seal_context *sealed_ctx, const sg_seal_context *ctx) {
  size_t len = strlen(value);
  uint8_t nonce[SG_SEAL_NONCE_LEN], out[128], plain[128];
  cr_assert_eq(sg_seal(dek, sealed_ctx, (const uint8_t *)value, len, nonce, out), 0);
  memset(plain, 0xAA, sizeof(plain));
  cr_assert_eq(sg_unseal(dek, ctx, nonce, out, len + TAG, plain), -1);
  cr_assert(all_zero(plain, len), "plaintext buffer not zeroed");
  /* and the same ciphertext does open under its own context */
  cr_assert_eq(sg_unseal(dek, sealed_ctx, nonce, out, len + TAG, plain), 0);
}

Test(seal, unseal_fails_for_another_org) {
  sg_seal_context ctx = base;
  ctx.org_id = "org_2";
  assert_context_refused(&base, &ctx);
}

Test(seal, unseal_fails_for_another_store) {
  sg_seal_context ctx = base;
  ctx.store_id = "store_2";
  assert_context_refused(&base, &ctx);
}

Test(seal, unseal_fails_for_another_name) {
  sg_seal_context ctx = base;
  ctx.name = "DB_PASSWORd";
  assert_context_refused(&base, &ctx);
}

Test(seal, unseal_fails_for_another_version) {
  sg_seal_context ctx = base;
  ctx.version = 8;
  assert_context_refused(&base, &ctx);
}

Test(seal, unseal_fails_for_a_version_differing_only_above_32_bits) {
  sg_seal_context ctx = base;
  ctx.version = base.version + ((uint64_t)1 << 32);
  assert_context_refused(&base, &ctx);
}

Test(seal, unseal_fails_when_a_field_boundary_shifts_between_org_and_store) {
  sg_seal_context sealed = {"ab", "c", "NAME", 1}, ctx = {"a", "bc", "NAME", 1};
  assert_context_refused(&sealed, &ctx);
}

Test(seal, unseal_fails_when_a_field_boundary_shifts_between_store_and_name) {
  sg_seal_context sealed = {"org", "s1", "N", 1}, ctx = {"org", "s", "1N", 1};
  assert_context_refused(&sealed, &ctx);
}

Test(seal, unseal_fails_when_fields_are_swapped) {
  sg_seal_context sealed = {"x", "y", "z", 1}, ctx = {"y", "x", "z", 1};
  assert_context_refused(&sealed, &ctx);
}

Test(seal, a_null_context_field_is_refused) {
  sg_seal_context ctx = base;
  ctx.name = NULL;
  uint8_t nonce[SG_SEAL_NONCE_LEN], out[TAG + 1];
  cr_assert_eq(sg_seal(dek, &ctx, (const uint8_t *)"x", 1, nonce, out), -1);
}

Test(seal, unseal_fails_with_another_key) {
  size_t len = strlen(value);
  uint8_t nonce[SG_SEAL_NONCE_LEN], out[128], plain[128], other[SG_KEY_LEN];
  cr_assert_eq(sg_dek_generate(other), 0);
  cr_assert_eq(sg_seal(dek, &base, (const uint8_t *)value, len, nonce, out), 0);
  memset(plain, 0xAA, sizeof(plain));
  cr_assert_eq(sg_unseal(other, &base, nonce, out, len + TAG, plain), -1);
  cr_assert(all_zero(plain, len));
}

/* Flips each bit of the nonce (|in_nonce|) or of the ciphertext and tag in [from, to), one at a
 * time, and expects every unseal to fail and zero the plaintext buffer. */
static void assert_flips_refused(int in_nonce, size_t from, size_t to) {
  size_t len = strlen(value);
  uint8_t nonce[SG_SEAL_NONCE_LEN], out[128];
  cr_assert_eq(sg_seal(dek, &base, (const uint8_t *)value, len, nonce, out), 0);
  for (size_t i = from; i < to; i++) {
    for (unsigned bit = 0; bit < 8; bit++) {
      uint8_t n[SG_SEAL_NONCE_LEN], c[128], plain[128];
      memcpy(n, nonce, sizeof(n));
      memcpy(c, out, sizeof(c));
      (in_nonce ? n : c)[i] ^= (uint8_t)(1u << bit);
      memset(plain, 0xAA, sizeof(plain));
      cr_assert_eq(sg_unseal(dek, &base, n, c, len + TAG, plain), -1, "byte %zu bit %u", i, bit);
      cr_assert(all_zero(plain, len), "byte %zu bit %u: plaintext buffer not zeroed", i, bit);
    }
  }
}

Test(seal, unseal_fails_when_any_nonce_byte_is_flipped) {
  assert_flips_refused(1, 0, SG_SEAL_NONCE_LEN);
}

Test(seal, unseal_fails_when_any_ciphertext_byte_is_flipped) {
  assert_flips_refused(0, 0, strlen(value));
}

Test(seal, unseal_fails_when_any_tag_byte_is_flipped) {
  assert_flips_refused(0, strlen(value), strlen(value) + TAG);
}

Test(seal, unseal_fails_on_a_truncated_ciphertext) {
  size_t len = strlen(value);
  uint8_t nonce[SG_SEAL_NONCE_LEN], out[128], plain[128];
  cr_assert_eq(sg_seal(dek, &base, (const uint8_t *)value, len, nonce, out), 0);
  memset(plain, 0xAA, sizeof(plain));
  cr_assert_eq(sg_unseal(dek, &base, nonce, out, len + TAG - 1, plain), -1);
  cr_assert(all_zero(plain, len - 1));
}

Test(seal, unseal_fails_on_input_shorter_than_a_tag) {
  uint8_t nonce[SG_SEAL_NONCE_LEN], out[TAG], plain[1] = {0xAA};
  cr_assert_eq(sg_seal(dek, &base, NULL, 0, nonce, out), 0);
  cr_assert_eq(sg_unseal(dek, &base, nonce, out, TAG - 1, plain), -1);
  cr_assert_eq(sg_unseal(dek, &base, nonce, out, 0, plain), -1);
}

Test(seal, a_failed_unseal_leaves_the_plaintext_zeroed) {
  size_t len = 65536;
  uint8_t *plain = calloc(1, len), *out = malloc(len + TAG), *back = malloc(len);
  uint8_t nonce[SG_SEAL_NONCE_LEN];
  memset(plain, 'v', len);
  cr_assert_eq(sg_seal(dek, &base, plain, len, nonce, out), 0);
  out[len + TAG - 1] ^= 1; /* the tag: every ciphertext byte decrypts before the check fails */
  memset(back, 0xAA, len);
  cr_assert_eq(sg_unseal(dek, &base, nonce, out, len + TAG, back), -1);
  cr_assert(all_zero(back, len));
  free(plain);
  free(out);
  free(back);
}

/* The format is stored in the database, so it is pinned here by decrypting with plain EVP calls
 * and the AAD of seal.h built by hand. */
Test(seal, the_aad_is_the_documented_layout) {
  sg_seal_context ctx = {"o", "st", "NAME", 0x0102030405060708ULL};
  uint8_t nonce[SG_SEAL_NONCE_LEN], out[TAG + 5], back[5];
  cr_assert_eq(sg_seal(dek, &ctx, (const uint8_t *)"hello", 5, nonce, out), 0);

  static const uint8_t aad[] = "sealgate/secret/v1"
                               "\0\0\0\1o"
                               "\0\0\0\2st"
                               "\0\0\0\4NAME"
                               "\1\2\3\4\5\6\7\x08";
  uint8_t tag[TAG];
  memcpy(tag, out + 5, TAG);
  EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
  int len, fin;
  cr_assert_eq(EVP_DecryptInit_ex(c, EVP_aes_256_gcm(), NULL, dek, nonce), 1);
  cr_assert_eq(EVP_DecryptUpdate(c, NULL, &len, aad, (int)sizeof(aad) - 1), 1);
  cr_assert_eq(EVP_DecryptUpdate(c, back, &len, out, 5), 1);
  cr_assert_eq(EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, TAG, tag), 1);
  int ok = EVP_DecryptFinal_ex(c, back + len, &fin);
  EVP_CIPHER_CTX_free(c);
  cr_assert_eq(ok, 1, "the AAD is not the documented one");
  cr_assert_arr_eq(back, "hello", 5);
}
