/* API keys: the format of a generated key, the checksum that refuses typos before the
 * database, the stored digest and its comparison. */
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <zlib.h>

#include "crypto/apikey.h"

static const char alphabet[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/* python3: body = alphabet[:43]; zlib.crc32(body) = 0xaa866f5c, in base62 "37cCQ0". */
static const char known_key[] = "osk_0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefg37cCQ0";

static void generate(char key[SG_API_KEY_LEN + 1]) {
  cr_assert_eq(sg_api_key_generate(key), 0);
}

static int check(const char *key) {
  return sg_api_key_check(key, strlen(key));
}

/* Builds "osk_" + |body| + its checksum, computed here (zlib, then division by 62), so a key
 * with any body, even one outside the alphabet, has a correct checksum. */
static void with_checksum(const char body[43], char key[SG_API_KEY_LEN + 1]) {
  memcpy(key, "osk_", 4);
  memcpy(key + 4, body, 43);
  uint32_t crc = (uint32_t)crc32(0, (const Bytef *)body, 43);
  for (int i = 5; i >= 0; i--, crc /= 62)
    key[47 + i] = alphabet[crc % 62];
  key[SG_API_KEY_LEN] = '\0';
}

Test(apikey, generated_keys_are_53_characters) {
  char key[SG_API_KEY_LEN + 1];
  generate(key);
  cr_assert_eq(strlen(key), 53);
}

Test(apikey, generated_keys_start_with_osk_) {
  char key[SG_API_KEY_LEN + 1];
  generate(key);
  cr_assert_eq(strncmp(key, "osk_", 4), 0, "%s", key);
}

Test(apikey, generated_keys_use_only_base62_after_the_prefix) {
  for (int n = 0; n < 100; n++) {
    char key[SG_API_KEY_LEN + 1];
    generate(key);
    for (size_t i = 4; i < SG_API_KEY_LEN; i++)
      cr_assert_not_null(strchr(alphabet, key[i]), "%s: character %zu", key, i);
  }
}

Test(apikey, generated_keys_pass_the_check) {
  for (int n = 0; n < 100; n++) {
    char key[SG_API_KEY_LEN + 1];
    generate(key);
    cr_assert_eq(check(key), 0, "%s", key);
  }
}

static int cmp_keys(const void *a, const void *b) {
  return strcmp(a, b);
}

Test(apikey, generated_keys_are_unique_over_1000_generations) {
  enum { N = 1000 };
  static char keys[N][SG_API_KEY_LEN + 1];
  for (int i = 0; i < N; i++)
    generate(keys[i]);
  qsort(keys, N, sizeof(keys[0]), cmp_keys);
  for (int i = 1; i < N; i++)
    cr_assert_str_neq(keys[i - 1], keys[i]);
}

/* The 43 characters are the 32 random bytes as one fixed-width base62 number: decoded, it fits
 * in 256 bits (a wider or misaligned encoding would not). */
Test(apikey, the_body_is_a_base62_number_of_at_most_256_bits) {
  BIGNUM *bn = BN_new();
  int widest = 0;
  for (int n = 0; n < 1000; n++) {
    char key[SG_API_KEY_LEN + 1];
    generate(key);
    BN_zero(bn);
    for (size_t i = 4; i < 47; i++) {
      cr_assert_eq(BN_mul_word(bn, 62), 1);
      cr_assert_eq(BN_add_word(bn, (BN_ULONG)(strchr(alphabet, key[i]) - alphabet)), 1);
    }
    cr_assert_leq(BN_num_bits(bn), 256, "%s", key);
    if (BN_num_bits(bn) > widest)
      widest = BN_num_bits(bn);
  }
  BN_free(bn);
  cr_assert_geq(widest, 250, "the random bytes do not fill the body");
}

Test(apikey, the_checksum_is_the_base62_crc32_of_the_body) {
  cr_assert_eq(check(known_key), 0);
  char key[SG_API_KEY_LEN + 1];
  with_checksum("zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz", key);
  cr_assert_eq(check(key), 0, "%s", key);
}

Test(apikey, the_checksum_catches_every_single_character_substitution) {
  char key[SG_API_KEY_LEN + 1];
  generate(key);
  for (size_t i = 4; i < SG_API_KEY_LEN; i++) {
    for (const char *c = alphabet; *c; c++) {
      if (*c == key[i])
        continue;
      char bad[SG_API_KEY_LEN + 1];
      memcpy(bad, key, sizeof(bad));
      bad[i] = *c;
      cr_assert_eq(check(bad), -1, "position %zu: '%c' for '%c' passed", i, *c, key[i]);
    }
  }
}

Test(apikey, the_checksum_catches_a_swap_of_adjacent_characters) {
  for (int n = 0; n < 20; n++) {
    char key[SG_API_KEY_LEN + 1];
    generate(key);
    for (size_t i = 4; i + 1 < SG_API_KEY_LEN; i++) {
      if (key[i] == key[i + 1])
        continue;
      char bad[SG_API_KEY_LEN + 1];
      memcpy(bad, key, sizeof(bad));
      bad[i] = key[i + 1];
      bad[i + 1] = key[i];
      cr_assert_eq(check(bad), -1, "%s: swap at %zu passed", key, i);
    }
  }
}

Test(apikey, check_rejects_a_wrong_length) {
  char key[SG_API_KEY_LEN + 2];
  generate(key);
  cr_assert_eq(sg_api_key_check(key, 52), -1);
  cr_assert_eq(sg_api_key_check(key, 0), -1);
  key[53] = '0';
  key[54] = '\0';
  cr_assert_eq(sg_api_key_check(key, 54), -1);
  cr_assert_eq(sg_api_key_check(key, 53), 0, "the first 53 bytes are the key");
}

Test(apikey, check_rejects_a_wrong_prefix) {
  static const char *prefixes[] = {"osk-", "OSK_", "osb_", "sk__", "osk0", "\0sk_"};
  for (size_t i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++) {
    char key[SG_API_KEY_LEN + 1];
    memcpy(key, known_key, sizeof(key));
    memcpy(key, prefixes[i], 4);
    cr_assert_eq(sg_api_key_check(key, SG_API_KEY_LEN), -1, "prefix %zu", i);
  }
}

Test(apikey, check_rejects_characters_outside_the_alphabet_even_with_a_right_checksum) {
  /* the neighbours of each range of the alphabet, then others */
  static const char bad_chars[] = {'/', ':', '@', '[',  '`',  '{',    '-',    '_',   '+',
                                   '=', ' ', '.', '\0', '\n', '\x7f', '\x80', '\xff'};
  for (size_t c = 0; c < sizeof(bad_chars); c++) {
    for (size_t pos = 0; pos < 43; pos += 6) {
      char body[43], key[SG_API_KEY_LEN + 1];
      memcpy(body, known_key + 4, 43);
      body[pos] = bad_chars[c];
      with_checksum(body, key);
      cr_assert_eq(sg_api_key_check(key, SG_API_KEY_LEN), -1, "char 0x%02x at %zu",
                   (unsigned char)bad_chars[c], pos);
    }
  }
}

Test(apikey, check_rejects_characters_outside_the_alphabet_in_the_checksum) {
  char key[SG_API_KEY_LEN + 1];
  memcpy(key, known_key, sizeof(key));
  key[50] = '-';
  cr_assert_eq(check(key), -1);
}

Test(apikey, check_rejects_a_null_key) {
  cr_assert_eq(sg_api_key_check(NULL, SG_API_KEY_LEN), -1);
}

Test(apikey, the_digest_is_sha256_of_the_key) {
  /* printf 'osk_sealgate-digest-vector' | sha256sum */
  static const char want_hex[] = "8b53173307ee12655930142aa6c89c2bb881d51a5fc81ca73716ea51b46dbdc5";
  uint8_t want[SG_API_DIGEST_LEN], got[SG_API_DIGEST_LEN];
  for (size_t i = 0; i < SG_API_DIGEST_LEN; i++)
    cr_assert_eq(sscanf(want_hex + 2 * i, "%2hhx", &want[i]), 1);
  const char *key = "osk_sealgate-digest-vector";
  sg_api_key_digest(key, strlen(key), got);
  cr_assert_arr_eq(got, want, SG_API_DIGEST_LEN);
}

Test(apikey, the_digest_covers_only_the_given_length) {
  uint8_t a[SG_API_DIGEST_LEN], b[SG_API_DIGEST_LEN];
  sg_api_key_digest(known_key, SG_API_KEY_LEN, a);
  sg_api_key_digest(known_key, SG_API_KEY_LEN - 1, b);
  cr_assert_arr_neq(a, b, SG_API_DIGEST_LEN);
}

Test(apikey, digest_equal_is_true_for_the_same_key) {
  uint8_t a[SG_API_DIGEST_LEN], b[SG_API_DIGEST_LEN];
  sg_api_key_digest(known_key, SG_API_KEY_LEN, a);
  sg_api_key_digest(known_key, SG_API_KEY_LEN, b);
  cr_assert(sg_api_digest_equal(a, b));
}

Test(apikey, digest_equal_is_false_when_any_byte_differs) {
  uint8_t a[SG_API_DIGEST_LEN];
  sg_api_key_digest(known_key, SG_API_KEY_LEN, a);
  for (size_t i = 0; i < SG_API_DIGEST_LEN; i++) {
    uint8_t b[SG_API_DIGEST_LEN];
    memcpy(b, a, sizeof(b));
    b[i] ^= 0x80;
    cr_assert_not(sg_api_digest_equal(a, b), "byte %zu", i);
  }
}
