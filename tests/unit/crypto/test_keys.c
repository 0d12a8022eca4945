/* The root key file (what is accepted, what is refused and what an error may say), the key id,
 * key generation, and wrapping organization data keys under the root key. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "crypto/keys.h"

#define KEY_A "bef9fe44f493de0790ce0189d2733c204a9f2016cd735db9cbba6dc6292519f2"
#define KEY_B "68500e899d294e24562b18e66057b81e584198cdb6e344f3223b5240cf6923ec"
/* python3: hashlib.sha256(b"sealgate root key id v1" + bytes.fromhex(KEY_A)).hexdigest()[:16] */
#define KEY_A_ID "aa556c970315e4d3"

static char dir[64];
static char path_buf[8][128];
static int n_paths;
static char err[512];

static int remove_entry(const char *p, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st;
  (void)flag;
  (void)ftw;
  return remove(p);
}

static void setup(void) {
  snprintf(dir, sizeof(dir), "/tmp/sg_test_keys_XXXXXX");
  cr_assert_not_null(mkdtemp(dir));
  n_paths = 0;
  err[0] = '\0';
}

static void teardown(void) {
  nftw(dir, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
}

TestSuite(root_key, .init = setup, .fini = teardown);
TestSuite(dek, .init = setup, .fini = teardown);

/* A path in the test's directory (not created). */
static const char *path_of(const char *name) {
  cr_assert_lt(n_paths, 8);
  char *p = path_buf[n_paths++];
  snprintf(p, sizeof(path_buf[0]), "%s/%s", dir, name);
  return p;
}

/* Writes |content| to a new file with exactly |mode| (whatever the umask). */
static const char *write_file(const char *name, const char *content, mode_t mode) {
  const char *p = path_of(name);
  int fd = open(p, O_WRONLY | O_CREAT | O_EXCL, 0600);
  cr_assert_geq(fd, 0, "create %s", p);
  size_t len = strlen(content);
  cr_assert_eq(write(fd, content, len), (ssize_t)len);
  cr_assert_eq(fchmod(fd, mode), 0);
  close(fd);
  return p;
}

static void hex_to_bytes(const char *hex, uint8_t *out, size_t n) {
  for (size_t i = 0; i < n; i++)
    cr_assert_eq(sscanf(hex + 2 * i, "%2hhx", &out[i]), 1);
}

static void upper(char *s) {
  for (; *s; s++)
    if (*s >= 'a' && *s <= 'z')
      *s = (char)(*s - 'a' + 'A');
}

static void assert_loads_key_a(const char *content) {
  const char *p = write_file("key", content, 0600);
  sg_root_key key;
  int rc = sg_root_key_load(p, &key, err, sizeof(err));
  cr_assert_eq(rc, 0, "load: %s", err);
  uint8_t want[SG_KEY_LEN];
  hex_to_bytes(KEY_A, want, sizeof(want));
  cr_assert_arr_eq(key.key, want, SG_KEY_LEN);
}

/* Loads a file holding |content| with |mode| and expects a refusal naming the file. */
static void assert_refused(const char *content, mode_t mode) {
  const char *p = write_file("key", content, mode);
  sg_root_key key;
  cr_assert_eq(sg_root_key_load(p, &key, err, sizeof(err)), -1);
  cr_assert_not_null(strstr(err, p), "error does not name the file: %s", err);
}

Test(root_key, loads_a_lower_case_key_followed_by_a_newline) {
  assert_loads_key_a(KEY_A "\n");
}

Test(root_key, loads_a_lower_case_key_without_a_newline) {
  assert_loads_key_a(KEY_A);
}

Test(root_key, loads_an_upper_case_key_followed_by_a_newline) {
  char content[] = KEY_A "\n";
  upper(content);
  assert_loads_key_a(content);
}

Test(root_key, loads_an_upper_case_key_without_a_newline) {
  char content[] = KEY_A;
  upper(content);
  assert_loads_key_a(content);
}

Test(root_key, loads_a_key_followed_by_crlf) {
  assert_loads_key_a(KEY_A "\r\n");
}

Test(root_key, refuses_a_group_readable_file_0640) {
  assert_refused(KEY_A "\n", 0640);
  cr_assert_not_null(strstr(err, "readable by others; chmod 600 it"), "%s", err);
}

Test(root_key, refuses_an_others_readable_file_0604) {
  assert_refused(KEY_A "\n", 0604);
  cr_assert_not_null(strstr(err, "chmod 600"), "%s", err);
}

Test(root_key, refuses_a_world_readable_file_0644) {
  assert_refused(KEY_A "\n", 0644);
  cr_assert_not_null(strstr(err, "chmod 600"), "%s", err);
}

Test(root_key, refuses_a_group_writable_file_0620) {
  assert_refused(KEY_A "\n", 0620);
  cr_assert_not_null(strstr(err, "chmod 600"), "%s", err);
}

Test(root_key, refuses_a_directory) {
  const char *p = path_of("key.d");
  cr_assert_eq(mkdir(p, 0700), 0);
  sg_root_key key;
  cr_assert_eq(sg_root_key_load(p, &key, err, sizeof(err)), -1);
  cr_assert_not_null(strstr(err, "not a regular file"), "%s", err);
}

Test(root_key, refuses_a_symlink_to_a_good_key_file) {
  const char *target = write_file("key", KEY_A "\n", 0600);
  const char *link = path_of("link");
  cr_assert_eq(symlink(target, link), 0);
  sg_root_key key;
  cr_assert_eq(sg_root_key_load(link, &key, err, sizeof(err)), -1);
  cr_assert_not_null(strstr(err, "symbolic link"), "%s", err);
}

Test(root_key, refuses_a_fifo_without_blocking, .timeout = 10) {
  const char *p = path_of("fifo");
  cr_assert_eq(mkfifo(p, 0600), 0);
  sg_root_key key;
  cr_assert_eq(sg_root_key_load(p, &key, err, sizeof(err)), -1);
  cr_assert_not_null(strstr(err, "not a regular file"), "%s", err);
}

Test(root_key, refuses_a_missing_file) {
  const char *p = path_of("absent");
  sg_root_key key;
  cr_assert_eq(sg_root_key_load(p, &key, err, sizeof(err)), -1);
  cr_assert_not_null(strstr(err, p), "%s", err);
}

Test(root_key, refuses_63_hex_characters) {
  char content[] = KEY_A;
  content[63] = '\0';
  assert_refused(content, 0600);
}

Test(root_key, refuses_65_hex_characters) {
  assert_refused(KEY_A "0", 0600);
}

Test(root_key, refuses_a_non_hex_character) {
  char content[] = KEY_A "\n";
  content[17] = 'g';
  assert_refused(content, 0600);
}

Test(root_key, refuses_an_empty_file) {
  assert_refused("", 0600);
}

Test(root_key, refuses_a_file_of_two_newlines) {
  assert_refused("\n\n", 0600);
}

Test(root_key, refuses_a_key_followed_by_two_newlines) {
  assert_refused(KEY_A "\n\n", 0600);
}

Test(root_key, refuses_a_key_followed_by_a_bare_carriage_return) {
  assert_refused(KEY_A "\r", 0600);
}

Test(root_key, refuses_a_key_with_a_leading_space) {
  assert_refused(" " KEY_A, 0600);
}

Test(root_key, refuses_a_key_with_a_trailing_space) {
  assert_refused(KEY_A " \n", 0600);
}

Test(root_key, refuses_a_key_written_as_0x_prefixed_hex) {
  char content[67] = "0x" KEY_A;
  content[64] = '\0'; /* 64 characters, but not all hex */
  assert_refused(content, 0600);
}

/* True if |s| contains any 8 consecutive characters of |hex|, in either case. */
static int leaks(const char *s, const char *hex) {
  for (size_t i = 0; i + 8 <= strlen(hex); i++) {
    char window[9];
    memcpy(window, hex + i, 8);
    window[8] = '\0';
    if (strcasestr(s, window) != NULL)
      return 1;
  }
  return 0;
}

Test(root_key, error_messages_never_contain_the_key) {
  static const struct {
    const char *content;
    mode_t mode;
  } cases[] = {{KEY_A "\n", 0644},  {KEY_A "\n", 0640}, {KEY_A "0", 0600},     {KEY_A "\n\n", 0600},
               {KEY_A " ", 0600},   {"x" KEY_A, 0600},  {KEY_A "\r", 0600},    {KEY_A KEY_A, 0600},
               {KEY_A "\ng", 0600}, {KEY_A "\n", 0606}, {KEY_A "\r\n\n", 0600}};
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    char name[16];
    snprintf(name, sizeof(name), "key%zu", i);
    n_paths = 0;
    const char *p = write_file(name, cases[i].content, cases[i].mode);
    sg_root_key key;
    err[0] = '\0';
    cr_assert_eq(sg_root_key_load(p, &key, err, sizeof(err)), -1, "case %zu", i);
    cr_assert_neq(err[0], '\0', "case %zu: no message", i);
    cr_assert_not(leaks(err, KEY_A), "case %zu: key in message: %s", i, err);
  }
}

static void assert_refusal_zeroes(const char *content, mode_t mode) {
  const char *p = write_file("key", content, mode);
  sg_root_key key, zero = {0};
  memset(&key, 0xAA, sizeof(key));
  cr_assert_eq(sg_root_key_load(p, &key, err, sizeof(err)), -1);
  cr_assert_arr_eq(&key, &zero, sizeof(key));
}

Test(root_key, a_refused_mode_leaves_the_key_zeroed) {
  assert_refusal_zeroes(KEY_A "\n", 0644);
}

Test(root_key, a_refused_content_leaves_no_decoded_byte) {
  char content[] = KEY_A;
  content[63] = 'x'; /* the first 31 bytes decode before the last digit is refused */
  assert_refusal_zeroes(content, 0600);
}

static void load_key(const char *name, const char *hex, sg_root_key *key) {
  const char *p = write_file(name, hex, 0600);
  cr_assert_eq(sg_root_key_load(p, key, err, sizeof(err)), 0, "load: %s", err);
}

Test(root_key, the_id_is_16_lower_case_hex_characters) {
  sg_root_key key;
  load_key("key", KEY_A, &key);
  cr_assert_eq(strlen(key.id), SG_KEY_ID_LEN);
  for (size_t i = 0; i < SG_KEY_ID_LEN; i++)
    cr_assert(strchr("0123456789abcdef", key.id[i]) != NULL, "id %s", key.id);
}

Test(root_key, the_id_is_the_first_8_bytes_of_sha256_of_the_label_and_the_key) {
  sg_root_key key;
  load_key("key", KEY_A, &key);
  cr_assert_str_eq(key.id, KEY_A_ID);
}

Test(root_key, the_id_is_stable_for_the_same_key) {
  char upper_hex[] = KEY_A "\n";
  upper(upper_hex);
  sg_root_key a, b, c;
  load_key("a", KEY_A "\n", &a);
  load_key("b", upper_hex, &b);
  cr_assert_eq(sg_root_key_load(path_buf[0], &c, err, sizeof(err)), 0);
  cr_assert_str_eq(a.id, b.id);
  cr_assert_str_eq(a.id, c.id);
}

Test(root_key, the_id_differs_for_another_key) {
  sg_root_key a, b;
  load_key("a", KEY_A, &a);
  load_key("b", KEY_B, &b);
  cr_assert_str_neq(a.id, b.id);
}

Test(root_key, the_id_does_not_contain_the_key) {
  sg_root_key key;
  load_key("key", KEY_A, &key);
  cr_assert_not(leaks(key.id, KEY_A));
}

Test(root_key, clear_zeroes_the_key_and_its_id) {
  sg_root_key key, zero = {0};
  load_key("key", KEY_A, &key);
  sg_root_key_clear(&key);
  cr_assert_arr_eq(&key, &zero, sizeof(key));
}

Test(root_key, generate_creates_a_0600_file_whatever_the_umask) {
  umask(0277); /* would leave 0400 */
  const char *p = path_of("new");
  cr_assert_eq(sg_root_key_generate(p, err, sizeof(err)), 0, "%s", err);
  struct stat st;
  cr_assert_eq(lstat(p, &st), 0);
  cr_assert(S_ISREG(st.st_mode));
  cr_assert_eq(st.st_mode & 07777, 0600, "mode %o", (unsigned)(st.st_mode & 07777));
}

Test(root_key, generate_writes_64_lower_case_hex_characters_and_a_newline) {
  const char *p = path_of("new");
  cr_assert_eq(sg_root_key_generate(p, err, sizeof(err)), 0, "%s", err);
  char buf[128];
  FILE *f = fopen(p, "r");
  cr_assert_not_null(f);
  size_t n = fread(buf, 1, sizeof(buf), f);
  fclose(f);
  cr_assert_eq(n, 65);
  cr_assert_eq(buf[64], '\n');
  for (size_t i = 0; i < 64; i++)
    cr_assert(strchr("0123456789abcdef", buf[i]) != NULL, "byte %zu is '%c'", i, buf[i]);
}

Test(root_key, generate_refuses_an_existing_file_and_leaves_it_alone) {
  const char *p = write_file("key", KEY_B "\n", 0600);
  cr_assert_eq(sg_root_key_generate(p, err, sizeof(err)), -1);
  cr_assert_not_null(strstr(err, p), "%s", err);
  sg_root_key key;
  cr_assert_eq(sg_root_key_load(p, &key, err, sizeof(err)), 0, "%s", err);
  uint8_t want[SG_KEY_LEN];
  hex_to_bytes(KEY_B, want, sizeof(want));
  cr_assert_arr_eq(key.key, want, SG_KEY_LEN);
}

Test(root_key, generate_refuses_a_dangling_symlink) {
  const char *target = path_of("elsewhere");
  const char *link = path_of("key");
  cr_assert_eq(symlink(target, link), 0);
  cr_assert_eq(sg_root_key_generate(link, err, sizeof(err)), -1);
  cr_assert_eq(access(target, F_OK), -1, "the symlink's target was created");
}

Test(root_key, a_generated_file_loads) {
  const char *p = path_of("new");
  cr_assert_eq(sg_root_key_generate(p, err, sizeof(err)), 0, "%s", err);
  sg_root_key key;
  cr_assert_eq(sg_root_key_load(p, &key, err, sizeof(err)), 0, "%s", err);
}

Test(root_key, two_generated_keys_differ) {
  const char *p1 = path_of("one"), *p2 = path_of("two");
  sg_root_key a, b;
  cr_assert_eq(sg_root_key_generate(p1, err, sizeof(err)), 0, "%s", err);
  cr_assert_eq(sg_root_key_generate(p2, err, sizeof(err)), 0, "%s", err);
  cr_assert_eq(sg_root_key_load(p1, &a, err, sizeof(err)), 0, "%s", err);
  cr_assert_eq(sg_root_key_load(p2, &b, err, sizeof(err)), 0, "%s", err);
  cr_assert_arr_neq(a.key, b.key, SG_KEY_LEN);
  cr_assert_str_neq(a.id, b.id);
}

/* DEKs. */

static sg_root_key root_a, root_b;
static uint8_t dek[SG_KEY_LEN];

static void dek_setup(void) {
  setup();
  load_key("a", KEY_A, &root_a);
  load_key("b", KEY_B, &root_b);
  cr_assert_eq(sg_dek_generate(dek), 0);
}

TestSuite(dek_wrap, .init = dek_setup, .fini = teardown);

static int all_zero(const uint8_t *p, size_t n) {
  uint8_t acc = 0;
  for (size_t i = 0; i < n; i++)
    acc |= p[i];
  return acc == 0;
}

Test(dek, generate_fills_a_fresh_random_key_each_time) {
  uint8_t a[SG_KEY_LEN], b[SG_KEY_LEN];
  cr_assert_eq(sg_dek_generate(a), 0);
  cr_assert_eq(sg_dek_generate(b), 0);
  cr_assert_not(all_zero(a, sizeof(a)));
  cr_assert_arr_neq(a, b, SG_KEY_LEN);
}

Test(dek_wrap, wrap_then_unwrap_returns_the_dek) {
  uint8_t wrapped[SG_WRAPPED_DEK_LEN], out[SG_KEY_LEN];
  cr_assert_eq(sg_dek_wrap(&root_a, "org_1", dek, wrapped), 0);
  cr_assert_eq(sg_dek_unwrap(&root_a, "org_1", wrapped, sizeof(wrapped), out), 0);
  cr_assert_arr_eq(out, dek, SG_KEY_LEN);
}

Test(dek_wrap, two_wraps_of_the_same_dek_use_fresh_nonces) {
  uint8_t w1[SG_WRAPPED_DEK_LEN], w2[SG_WRAPPED_DEK_LEN];
  cr_assert_eq(sg_dek_wrap(&root_a, "org_1", dek, w1), 0);
  cr_assert_eq(sg_dek_wrap(&root_a, "org_1", dek, w2), 0);
  cr_assert_arr_neq(w1, w2, 12, "same nonce twice");
  cr_assert_arr_neq(w1 + 12, w2 + 12, SG_WRAPPED_DEK_LEN - 12);
}

Test(dek_wrap, the_wrapped_dek_does_not_contain_the_dek) {
  uint8_t wrapped[SG_WRAPPED_DEK_LEN];
  cr_assert_eq(sg_dek_wrap(&root_a, "org_1", dek, wrapped), 0);
  for (size_t i = 0; i + 8 <= SG_KEY_LEN; i++)
    cr_assert_null(memmem(wrapped, sizeof(wrapped), dek + i, 8), "DEK bytes %zu.. visible", i);
}

/* Unwraps |wrapped| (len bytes) into a buffer full of 0xAA and expects failure and zeros. */
static void assert_unwrap_fails(const sg_root_key *root, const char *org, const uint8_t *wrapped,
                                size_t len) {
  uint8_t out[SG_KEY_LEN];
  memset(out, 0xAA, sizeof(out));
  cr_assert_eq(sg_dek_unwrap(root, org, wrapped, len, out), -1);
  cr_assert(all_zero(out, sizeof(out)), "DEK buffer not zeroed");
}

Test(dek_wrap, unwrap_fails_with_another_root_key) {
  uint8_t wrapped[SG_WRAPPED_DEK_LEN];
  cr_assert_eq(sg_dek_wrap(&root_a, "org_1", dek, wrapped), 0);
  assert_unwrap_fails(&root_b, "org_1", wrapped, sizeof(wrapped));
}

Test(dek_wrap, unwrap_fails_when_only_the_root_key_id_differs) {
  uint8_t wrapped[SG_WRAPPED_DEK_LEN];
  cr_assert_eq(sg_dek_wrap(&root_a, "org_1", dek, wrapped), 0);
  sg_root_key renamed = root_a;
  memcpy(renamed.id, root_b.id, sizeof(renamed.id));
  assert_unwrap_fails(&renamed, "org_1", wrapped, sizeof(wrapped));
}

Test(dek_wrap, unwrap_fails_for_another_org) {
  uint8_t wrapped[SG_WRAPPED_DEK_LEN];
  cr_assert_eq(sg_dek_wrap(&root_a, "org_1", dek, wrapped), 0);
  assert_unwrap_fails(&root_a, "org_2", wrapped, sizeof(wrapped));
  assert_unwrap_fails(&root_a, "org_1 ", wrapped, sizeof(wrapped));
  assert_unwrap_fails(&root_a, "", wrapped, sizeof(wrapped));
}

Test(dek_wrap, unwrap_fails_when_any_byte_is_flipped) {
  uint8_t wrapped[SG_WRAPPED_DEK_LEN];
  cr_assert_eq(sg_dek_wrap(&root_a, "org_1", dek, wrapped), 0);
  for (size_t i = 0; i < SG_WRAPPED_DEK_LEN; i++) {
    for (unsigned bit = 0; bit < 8; bit++) {
      uint8_t bad[SG_WRAPPED_DEK_LEN];
      memcpy(bad, wrapped, sizeof(bad));
      bad[i] ^= (uint8_t)(1u << bit);
      uint8_t out[SG_KEY_LEN];
      memset(out, 0xAA, sizeof(out));
      cr_assert_eq(sg_dek_unwrap(&root_a, "org_1", bad, sizeof(bad), out), -1, "byte %zu bit %u", i,
                   bit);
      cr_assert(all_zero(out, sizeof(out)), "byte %zu bit %u: DEK buffer not zeroed", i, bit);
    }
  }
}

Test(dek_wrap, unwrap_fails_on_a_truncated_buffer) {
  uint8_t wrapped[SG_WRAPPED_DEK_LEN];
  cr_assert_eq(sg_dek_wrap(&root_a, "org_1", dek, wrapped), 0);
  assert_unwrap_fails(&root_a, "org_1", wrapped, SG_WRAPPED_DEK_LEN - 1);
  assert_unwrap_fails(&root_a, "org_1", wrapped, 0);
}

Test(dek_wrap, unwrap_fails_on_a_longer_buffer) {
  uint8_t wrapped[SG_WRAPPED_DEK_LEN + 1] = {0};
  cr_assert_eq(sg_dek_wrap(&root_a, "org_1", dek, wrapped), 0);
  assert_unwrap_fails(&root_a, "org_1", wrapped, sizeof(wrapped));
}

Test(dek_wrap, the_dek_is_zeroed_after_a_failed_unwrap) {
  uint8_t wrapped[SG_WRAPPED_DEK_LEN], out[SG_KEY_LEN];
  cr_assert_eq(sg_dek_wrap(&root_a, "org_1", dek, wrapped), 0);
  memcpy(out, dek, sizeof(out)); /* a buffer still holding a key from before */
  cr_assert_eq(sg_dek_unwrap(&root_b, "org_1", wrapped, sizeof(wrapped), out), -1);
  cr_assert(all_zero(out, sizeof(out)));
}

/* The format is stored in the database, so it is pinned here by decrypting with plain EVP calls
 * and an AAD built by hand: "sealgate/dek/v1", then the org id and the root key id, each as a
 * 4-byte big-endian length and its bytes. */
Test(dek_wrap, the_aad_is_the_documented_layout) {
  uint8_t wrapped[SG_WRAPPED_DEK_LEN];
  cr_assert_eq(sg_dek_wrap(&root_a, "org_1", dek, wrapped), 0);

  uint8_t aad[64];
  size_t n = 0;
  memcpy(aad, "sealgate/dek/v1", 15);
  n += 15;
  memcpy(aad + n, "\0\0\0\5org_1", 9);
  n += 9;
  memcpy(aad + n, "\0\0\0\x10" KEY_A_ID, 20);
  n += 20;

  uint8_t out[SG_KEY_LEN], tag[16];
  memcpy(tag, wrapped + 44, 16);
  EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
  int len, fin;
  cr_assert_eq(EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, root_a.key, wrapped), 1);
  cr_assert_eq(EVP_DecryptUpdate(ctx, NULL, &len, aad, (int)n), 1);
  cr_assert_eq(EVP_DecryptUpdate(ctx, out, &len, wrapped + 12, 32), 1);
  cr_assert_eq(EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, 16, tag), 1);
  int ok = EVP_DecryptFinal_ex(ctx, out + len, &fin);
  EVP_CIPHER_CTX_free(ctx);
  cr_assert_eq(ok, 1, "the AAD is not the documented one");
  cr_assert_arr_eq(out, dek, SG_KEY_LEN);
}
