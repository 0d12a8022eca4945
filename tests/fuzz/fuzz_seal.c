/* The ciphertext envelopes (crypto/seal.h, crypto/keys.h) as they come out of the database:
 * a sealed value and its nonce as bytea hex text (db/pgtext.h), opened the way
 * service/sandbox.c opens a row, and a wrapped data key.
 *
 * Garbage: whatever the fields hold, decoding and opening must not crash, a refused open must
 * leave the plaintext buffer zeroed, and anything that does open (a seed may hold a real
 * envelope) must stop opening when any one byte of it changes.
 * Round trip: the input's bytes, sealed under the input's context, open to themselves; the
 * envelope does not open under a context that differs in any field, nor with a bit flipped in
 * its nonce, ciphertext or tag. The same for wrapping a data key.
 *
 * Input: org, store, name and nonce text as length-prefixed fields, a version byte, then the
 * sealed text (the rest), which is also the plaintext of the round trip. */
#include "crypto/keys.h"
#include "crypto/seal.h"
#include "db/pgtext.h"
#include "fuzz.h"

static const uint8_t dek[SG_KEY_LEN] = {
    0x6b, 0x1f, 0x22, 0x90, 0x3c, 0x01, 0xaa, 0x5e, 0x77, 0x10, 0x42, 0xd3, 0x0e, 0x99, 0x31, 0x0c,
    0xfe, 0x18, 0x2a, 0x4b, 0x6d, 0x80, 0x13, 0x57, 0x9b, 0xdf, 0x24, 0x68, 0xac, 0xe0, 0x35, 0x79};

static int all_zero(const uint8_t *p, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (p[i] != 0)
      return 0;
  return 1;
}

/* Opens |sealed| as sandbox.c does; on success checks that every one-byte change is refused. */
static void open_garbage(const sg_seal_context *ctx, const uint8_t *nonce, const uint8_t *sealed,
                         size_t sealed_len) {
  size_t plain_len = sealed_len - SG_SEAL_TAG_LEN;
  uint8_t *plain = malloc(plain_len + 1);
  memset(plain, 0xa5, plain_len + 1);
  if (sg_unseal(dek, ctx, nonce, sealed, sealed_len, plain) != 0) {
    FUZZ_CHECK(all_zero(plain, plain_len));
    free(plain);
    return;
  }
  uint8_t *copy = malloc(sealed_len);
  for (size_t i = 0; i < sealed_len; i++) {
    memcpy(copy, sealed, sealed_len);
    copy[i] ^= 0x01;
    FUZZ_CHECK(sg_unseal(dek, ctx, nonce, copy, sealed_len, plain) != 0);
    FUZZ_CHECK(all_zero(plain, plain_len));
  }
  free(copy);
  free(plain);
}

static void fuzz_garbage(const sg_seal_context *ctx, const char *nonce_text,
                         const char *sealed_text) {
  sg_arena *a = sg_arena_new();
  uint8_t *nonce, *sealed;
  size_t nonce_len, sealed_len;
  if (sg_pg_bytea_parse(a, nonce_text, &nonce, &nonce_len) == 0 &&
      sg_pg_bytea_parse(a, sealed_text, &sealed, &sealed_len) == 0) {
    FUZZ_CHECK(2 + 2 * nonce_len == strlen(nonce_text));
    FUZZ_CHECK(2 + 2 * sealed_len == strlen(sealed_text));
    if (nonce_len == SG_SEAL_NONCE_LEN && sealed_len >= SG_SEAL_TAG_LEN)
      open_garbage(ctx, nonce, sealed, sealed_len);
  }
  /* The sealed bytes, if any, as a wrapped data key too. */
  sg_root_key root;
  memcpy(root.key, dek, SG_KEY_LEN);
  memcpy(root.id, "00112233aabbccdd", SG_KEY_ID_LEN + 1);
  uint8_t key[SG_KEY_LEN];
  size_t n = strlen(sealed_text);
  if (sg_dek_unwrap(&root, ctx->org_id, (const uint8_t *)sealed_text, n, key) != 0)
    FUZZ_CHECK(all_zero(key, SG_KEY_LEN));
  else
    FUZZ_CHECK(n == SG_WRAPPED_DEK_LEN);
  sg_arena_free(a);
}

static void fuzz_roundtrip(const sg_seal_context *ctx, const uint8_t *plain, size_t len,
                           uint8_t flip) {
  uint8_t nonce[SG_SEAL_NONCE_LEN];
  uint8_t *sealed = malloc(len + SG_SEAL_TAG_LEN);
  uint8_t *back = malloc(len + 1);
  FUZZ_CHECK(sg_seal(dek, ctx, len ? plain : NULL, len, nonce, sealed) == 0);
  FUZZ_CHECK(sg_unseal(dek, ctx, nonce, sealed, len + SG_SEAL_TAG_LEN, back) == 0);
  FUZZ_CHECK(len == 0 || memcmp(back, plain, len) == 0);

  /* Another context: each field changed in turn. */
  sg_seal_context other = *ctx;
  other.version++;
  FUZZ_CHECK(sg_unseal(dek, &other, nonce, sealed, len + SG_SEAL_TAG_LEN, back) != 0);
  FUZZ_CHECK(all_zero(back, len));
  other = *ctx;
  size_t nl = strlen(ctx->name);
  char *name = malloc(nl + 2);
  memcpy(name, ctx->name, nl);
  name[nl] = 'x';
  name[nl + 1] = '\0';
  other.name = name;
  FUZZ_CHECK(sg_unseal(dek, &other, nonce, sealed, len + SG_SEAL_TAG_LEN, back) != 0);
  /* Moving a byte between adjacent fields ("ab","c" vs "a","bc") must change the AAD. */
  if (nl > 0) {
    size_t sl = strlen(ctx->store_id);
    char *store = malloc(sl + 2);
    memcpy(store, ctx->store_id, sl);
    store[sl] = ctx->name[0];
    store[sl + 1] = '\0';
    other.store_id = store;
    other.name = ctx->name + 1;
    FUZZ_CHECK(sg_unseal(dek, &other, nonce, sealed, len + SG_SEAL_TAG_LEN, back) != 0);
    free(store);
  }
  free(name);

  /* One flipped bit anywhere in the envelope. */
  size_t at = flip % (SG_SEAL_NONCE_LEN + len + SG_SEAL_TAG_LEN);
  if (at < SG_SEAL_NONCE_LEN)
    nonce[at] ^= (uint8_t)(1u << (flip % 8));
  else
    sealed[at - SG_SEAL_NONCE_LEN] ^= (uint8_t)(1u << (flip % 8));
  FUZZ_CHECK(sg_unseal(dek, ctx, nonce, sealed, len + SG_SEAL_TAG_LEN, back) != 0);
  FUZZ_CHECK(all_zero(back, len));
  free(sealed);
  free(back);

  /* A data key wrapped for the org opens for it, and not for another org. */
  sg_root_key root;
  memcpy(root.key, dek, SG_KEY_LEN);
  memcpy(root.id, "00112233aabbccdd", SG_KEY_ID_LEN + 1);
  uint8_t key[SG_KEY_LEN], wrapped[SG_WRAPPED_DEK_LEN], out[SG_KEY_LEN];
  memset(key, flip, sizeof(key));
  FUZZ_CHECK(sg_dek_wrap(&root, ctx->org_id, key, wrapped) == 0);
  FUZZ_CHECK(sg_dek_unwrap(&root, ctx->org_id, wrapped, sizeof(wrapped), out) == 0);
  FUZZ_CHECK(memcmp(out, key, SG_KEY_LEN) == 0);
  FUZZ_CHECK(sg_dek_unwrap(&root, ctx->store_id, wrapped, sizeof(wrapped), out) != 0 ||
             strcmp(ctx->store_id, ctx->org_id) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fuzz_in in = {data, size};
  size_t n;
  const uint8_t *p;
  p = fuzz_field(&in, &n);
  char *org = fuzz_strndup(p, n);
  p = fuzz_field(&in, &n);
  char *store = fuzz_strndup(p, n);
  p = fuzz_field(&in, &n);
  char *name = fuzz_strndup(p, n);
  p = fuzz_field(&in, &n);
  char *nonce_text = fuzz_strndup(p, n);
  uint8_t version = fuzz_u8(&in);
  char *sealed_text = fuzz_strndup(in.p, in.len);
  sg_seal_context ctx = {org, store, name, version};

  fuzz_garbage(&ctx, nonce_text, sealed_text);
  fuzz_roundtrip(&ctx, in.p, in.len, version);

  free(org);
  free(store);
  free(name);
  free(nonce_text);
  free(sealed_text);
  return 0;
}
