#include "crypto/apikey.h"

#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <zlib.h>

#include "core/mem.h"

#define PREFIX     "osk_"
#define PREFIX_LEN 4
#define RANDOM_LEN 32
#define BODY_LEN   43 /* 62^43 > 2^256 */
#define SUM_LEN    6  /* 62^6 > 2^32 */

_Static_assert(PREFIX_LEN + BODY_LEN + SUM_LEN == SG_API_KEY_LEN, "osk_ + body + checksum");

static const char alphabet[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/* Writes the big-endian number in |num| (|len| bytes, consumed) as |width| base62 digits, most
 * significant first and zero-padded: fixed width, so every key has the same length. Schoolbook
 * division by 62, |width| times; the loop bounds do not depend on the value. */
static void base62(uint8_t *num, size_t len, char *out, size_t width) {
  for (size_t i = width; i-- > 0;) {
    unsigned rem = 0;
    for (size_t j = 0; j < len; j++) {
      unsigned cur = rem << 8 | num[j];
      num[j] = (uint8_t)(cur / 62);
      rem = cur % 62;
    }
    out[i] = alphabet[rem];
  }
}

/* zlib's CRC-32 (the IEEE polynomial, as GitHub's token checksums): it detects every error
 * confined to 32 consecutive bits, so every changed character and every swap of two adjacent
 * different characters. Not a MAC: it only refuses typos and garbage before the database. */
static void checksum(const char *body, char out[SUM_LEN]) {
  uLong crc = crc32(crc32(0L, Z_NULL, 0), (const Bytef *)body, BODY_LEN);
  uint8_t be[4] = {(uint8_t)(crc >> 24), (uint8_t)(crc >> 16), (uint8_t)(crc >> 8), (uint8_t)crc};
  base62(be, sizeof(be), out, SUM_LEN);
}

int sg_api_key_generate(char out[SG_API_KEY_LEN + 1]) {
  uint8_t rnd[RANDOM_LEN];
  if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
    OPENSSL_cleanse(rnd, sizeof(rnd));
    out[0] = '\0';
    return -1;
  }
  memcpy(out, PREFIX, PREFIX_LEN);
  base62(rnd, sizeof(rnd), out + PREFIX_LEN, BODY_LEN);
  OPENSSL_cleanse(rnd, sizeof(rnd));
  checksum(out + PREFIX_LEN, out + PREFIX_LEN + BODY_LEN);
  out[SG_API_KEY_LEN] = '\0';
  return 0;
}

/* 1 unless |c| is in [0-9A-Za-z]; bitwise, without a branch on the character. */
static unsigned not_base62(unsigned char c) {
  unsigned digit = (unsigned)(c - '0') < 10;
  unsigned upper = (unsigned)(c - 'A') < 26;
  unsigned lower = (unsigned)(c - 'a') < 26;
  return (digit | upper | lower) ^ 1u;
}

int sg_api_key_check(const char *key, size_t len) {
  if (key == NULL || len != SG_API_KEY_LEN) /* the length of a key is no secret */
    return -1;
  /* Every test runs over every character and only the sum of the failures decides, so the time
   * taken says nothing about where a key first goes wrong. */
  unsigned bad = 0;
  for (size_t i = 0; i < PREFIX_LEN; i++)
    bad |= (unsigned char)(key[i] ^ PREFIX[i]);
  for (size_t i = PREFIX_LEN; i < SG_API_KEY_LEN; i++)
    bad |= not_base62((unsigned char)key[i]);
  char sum[SUM_LEN];
  checksum(key + PREFIX_LEN, sum);
  for (size_t i = 0; i < SUM_LEN; i++)
    bad |= (unsigned char)(key[PREFIX_LEN + BODY_LEN + i] ^ sum[i]);
  return bad == 0 ? 0 : -1;
}

void sg_api_key_digest(const char *key, size_t len, uint8_t digest[SG_API_DIGEST_LEN]) {
  /* Fatal rather than an error: a caller that stored or compared an unset digest would match
   * other keys, and SHA-256 in the default provider fails only when memory does. */
  if (EVP_Digest(key, len, digest, NULL, EVP_sha256(), NULL) != 1)
    sg_fatal("SHA-256 failed");
}

int sg_api_digest_equal(const uint8_t a[SG_API_DIGEST_LEN], const uint8_t b[SG_API_DIGEST_LEN]) {
  return CRYPTO_memcmp(a, b, SG_API_DIGEST_LEN) == 0;
}
