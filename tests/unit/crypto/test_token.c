/* Sealed tokens, proxy credentials and ids: their shapes, and that they are random (no two
 * alike over many draws, every hex digit used in every position's neighbourhood). */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "crypto/token.h"

#define DRAWS 2000

static int cmp(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

Test(token, a_sealed_token_is_osb_sealed_and_32_lowercase_hex) {
  char t[SG_TOKEN_LEN + 1];
  cr_assert_eq(sg_token_generate(t), 0);
  cr_expect_eq(strlen(t), 43);
  cr_expect_eq(strncmp(t, "osb_sealed_", 11), 0);
  for (int i = 11; i < 43; i++)
    cr_expect((t[i] >= '0' && t[i] <= '9') || (t[i] >= 'a' && t[i] <= 'f'), "%s", t);
  cr_expect(sg_token_is_sealed(t, strlen(t)));
}

Test(token, no_two_tokens_alike_and_every_digit_used) {
  char **all = calloc(DRAWS, sizeof(char *));
  int seen[16] = {0};
  for (int i = 0; i < DRAWS; i++) {
    all[i] = malloc(SG_TOKEN_LEN + 1);
    cr_assert_eq(sg_token_generate(all[i]), 0);
    for (int k = 11; k < 43; k++)
      seen[all[i][k] <= '9' ? all[i][k] - '0' : all[i][k] - 'a' + 10]++;
  }
  qsort(all, DRAWS, sizeof(char *), cmp);
  for (int i = 1; i < DRAWS; i++)
    cr_expect_neq(strcmp(all[i - 1], all[i]), 0, "a token came twice: %s", all[i]);
  /* 64,000 digits: each of 16 values expected 4,000 times; 3,000 is > 15 sigma away. */
  for (int d = 0; d < 16; d++)
    cr_expect_gt(seen[d], 3000, "digit %x seen %d times", d, seen[d]);
  for (int i = 0; i < DRAWS; i++)
    free(all[i]);
  free(all);
}

Test(token, shapes_that_are_not_tokens) {
  static const char *const bad[] = {
      "osb_sealed_0123456789abcdef0123456789abcde",   /* 31 digits */
      "osb_sealed_0123456789abcdef0123456789abcdef0", /* 33 */
      "osb_sealed_0123456789ABCDEF0123456789abcdef",  /* upper case */
      "osb_sealeD_0123456789abcdef0123456789abcdef",
      "osb_sealed_0123456789abcdef0123456789abcdeg",
      "",
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
    cr_expect_not(sg_token_is_sealed(bad[i], strlen(bad[i])), "%s", bad[i]);
}

Test(token, proxy_secrets_are_32_hex_and_distinct) {
  char a[SG_PROXY_SECRET_LEN + 1], b[SG_PROXY_SECRET_LEN + 1];
  cr_assert_eq(sg_proxy_secret_generate(a), 0);
  cr_assert_eq(sg_proxy_secret_generate(b), 0);
  cr_expect_eq(strlen(a), 32);
  cr_expect_eq(strspn(a, "0123456789abcdef"), 32);
  cr_expect_neq(strcmp(a, b), 0);
}

Test(token, uuids_are_version_4_canonical_text) {
  char u[SG_UUID_LEN + 1];
  cr_assert_eq(sg_uuid_generate(u), 0);
  cr_expect_eq(strlen(u), 36);
  for (int i = 0; i < 36; i++) {
    if (i == 8 || i == 13 || i == 18 || i == 23)
      cr_expect_eq(u[i], '-', "%s", u);
    else
      cr_expect(strchr("0123456789abcdef", u[i]) != NULL, "%s", u);
  }
  cr_expect_eq(u[14], '4', "%s", u);
  cr_expect(strchr("89ab", u[19]) != NULL, "%s", u);
}

Test(token, the_digest_is_sha256_of_the_text) {
  const char *t = "osb_sealed_0123456789abcdef0123456789abcdef";
  uint8_t d[SG_TOKEN_DIGEST_LEN], want[32];
  unsigned n = 0;
  sg_token_digest(t, strlen(t), d);
  EVP_Digest(t, strlen(t), want, &n, EVP_sha256(), NULL);
  cr_expect_eq(memcmp(d, want, 32), 0);
}
