#include "crypto/token.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

static const char hex[] = "0123456789abcdef";

static void to_hex(const uint8_t *in, size_t n, char *out) {
  for (size_t i = 0; i < n; i++) {
    out[2 * i] = hex[in[i] >> 4];
    out[2 * i + 1] = hex[in[i] & 15];
  }
  out[2 * n] = '\0';
}

static int random_hex(char *out, size_t digits) {
  uint8_t raw[32];
  if (digits / 2 > sizeof(raw) || RAND_bytes(raw, (int)(digits / 2)) != 1)
    return -1;
  to_hex(raw, digits / 2, out);
  OPENSSL_cleanse(raw, sizeof(raw));
  return 0;
}

int sg_token_generate(char out[SG_TOKEN_LEN + 1]) {
  memcpy(out, SG_TOKEN_PREFIX, SG_TOKEN_PREFIX_LEN);
  return random_hex(out + SG_TOKEN_PREFIX_LEN, SG_TOKEN_LEN - SG_TOKEN_PREFIX_LEN);
}

int sg_proxy_secret_generate(char out[SG_PROXY_SECRET_LEN + 1]) {
  return random_hex(out, SG_PROXY_SECRET_LEN);
}

int sg_uuid_generate(char out[SG_UUID_LEN + 1]) {
  uint8_t b[16];
  if (RAND_bytes(b, sizeof(b)) != 1)
    return -1;
  b[6] = (uint8_t)((b[6] & 0x0f) | 0x40); /* version 4 */
  b[8] = (uint8_t)((b[8] & 0x3f) | 0x80); /* RFC 4122 variant */
  snprintf(out, SG_UUID_LEN + 1,
           "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1], b[2],
           b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
  return 0;
}

int sg_token_is_sealed(const char *s, size_t len) {
  if (len != SG_TOKEN_LEN || memcmp(s, SG_TOKEN_PREFIX, SG_TOKEN_PREFIX_LEN) != 0)
    return 0;
  for (size_t i = SG_TOKEN_PREFIX_LEN; i < len; i++)
    if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
      return 0;
  return 1;
}

void sg_token_digest(const char *s, size_t len, uint8_t out[SG_TOKEN_DIGEST_LEN]) {
  unsigned int n = 0;
  EVP_Digest(s, len, out, &n, EVP_sha256(), NULL);
}

void sg_token_digest_hex(const char *s, size_t len, char out[2 * SG_TOKEN_DIGEST_LEN + 1]) {
  uint8_t digest[SG_TOKEN_DIGEST_LEN];
  sg_token_digest(s, len, digest);
  to_hex(digest, sizeof(digest), out);
}

int sg_uuid_is_canonical(const char *s) {
  if (strlen(s) != SG_UUID_LEN)
    return 0;
  for (int i = 0; i < SG_UUID_LEN; i++) {
    int dash = i == 8 || i == 13 || i == 18 || i == 23;
    if (dash ? s[i] != '-' : !isxdigit((unsigned char)s[i]))
      return 0;
  }
  return 1;
}
