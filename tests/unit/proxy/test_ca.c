/* The proxy CA: its files (created once with the right modes, loaded after, refused when
 * unsafe, corrupt or mismatched, never regenerated), the CA certificate, and the leaves it
 * mints — checked field by field, by X509_verify_cert, in a TLS handshake with OpenSSL and with
 * Python's ssl module, from several threads and from several processes starting at once. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "proxy/ca.h"

static char tmp[64];
static char data_dir[128];
static char err[1024];

static int remove_entry(const char *p, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st;
  (void)flag;
  (void)ftw;
  return remove(p);
}

static void setup(void) {
  snprintf(tmp, sizeof(tmp), "/tmp/sg_test_ca_XXXXXX");
  cr_assert_not_null(mkdtemp(tmp));
  /* Not created: the CA makes it, and its parent "state" too. */
  snprintf(data_dir, sizeof(data_dir), "%s/state/data", tmp);
  err[0] = '\0';
}

static void teardown(void) {
  nftw(tmp, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
}

TestSuite(ca_files, .init = setup, .fini = teardown);
TestSuite(ca_cert, .init = setup, .fini = teardown);
TestSuite(leaf, .init = setup, .fini = teardown, .timeout = 120);

/* ---- Helpers ---------------------------------------------------------------------------- */

static const char *in_dir(const char *dir, const char *name) {
  static char paths[4][PATH_MAX];
  static int next;
  char *p = paths[next++ % 4];
  snprintf(p, PATH_MAX, "%s/%s", dir, name);
  return p;
}

static const char *key_path(const char *dir) {
  return in_dir(dir, SG_CA_KEY_FILE);
}

static const char *cert_path(const char *dir) {
  return in_dir(dir, SG_CA_CERT_FILE);
}

static sg_ca *start(const char *dir) {
  sg_ca *ca = sg_ca_load_or_create(dir, err, sizeof(err));
  cr_assert_not_null(ca, "sg_ca_load_or_create(%s): %s", dir, err);
  return ca;
}

/* Asserts that starting over |dir| fails with a message that names |file|. */
static void assert_refused(const char *dir, const char *file) {
  err[0] = '\0';
  sg_ca *ca = sg_ca_load_or_create(dir, err, sizeof(err));
  cr_assert_null(ca, "a start over %s should have failed", dir);
  cr_assert(strstr(err, file) != NULL, "the message should name %s: %s", file, err);
  cr_assert_eq(ERR_peek_error(), 0, "the OpenSSL error queue is left empty");
}

static mode_t mode_of(const char *path) {
  struct stat st;
  cr_assert_eq(stat(path, &st), 0, "stat %s", path);
  return st.st_mode & 07777;
}

static char *slurp(const char *path) {
  FILE *f = fopen(path, "rb");
  cr_assert_not_null(f, "open %s", path);
  static char buf[65536];
  size_t n = fread(buf, 1, sizeof(buf) - 1, f);
  fclose(f);
  buf[n] = '\0';
  return strdup(buf);
}

/* Replaces the content of |path| (or creates it), leaving it with exactly |mode|. */
static void write_file(const char *path, const char *content, mode_t mode) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  cr_assert_geq(fd, 0, "open %s", path);
  size_t len = strlen(content);
  cr_assert_eq(write(fd, content, len), (ssize_t)len);
  cr_assert_eq(fchmod(fd, mode), 0);
  close(fd);
}

static X509 *parse_cert(const char *pem) {
  BIO *bio = BIO_new_mem_buf(pem, -1);
  X509 *cert = PEM_read_bio_X509(bio, NULL, NULL, NULL);
  BIO_free(bio);
  cr_assert_not_null(cert, "a PEM certificate");
  return cert;
}

static X509 *ca_cert_of(const sg_ca *ca) {
  return parse_cert(sg_ca_cert_pem(ca));
}

/* A memory BIO's bytes as a string. Not strndup: its bytes end without a NUL, and strndup may
 * look one byte past them (ASan's does). */
static char *bio_string(BIO *bio) {
  char *data;
  long n = BIO_get_mem_data(bio, &data);
  char *s = malloc((size_t)n + 1);
  cr_assert_not_null(s);
  memcpy(s, data, (size_t)n);
  s[n] = '\0';
  return s;
}

static char *cert_to_pem(X509 *cert) {
  BIO *bio = BIO_new(BIO_s_mem());
  cr_assert_eq(PEM_write_bio_X509(bio, cert), 1);
  char *pem = bio_string(bio);
  BIO_free(bio);
  return pem;
}

static char *key_to_pem(EVP_PKEY *key) {
  BIO *bio = BIO_new(BIO_s_mem());
  cr_assert_eq(PEM_write_bio_PKCS8PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL), 1);
  char *pem = bio_string(bio);
  BIO_free(bio);
  return pem;
}

static X509 *mint(sg_ca *ca, const char *host, EVP_PKEY **key) {
  *key = NULL;
  X509 *leaf = sg_ca_mint_leaf(ca, host, key, err, sizeof(err));
  cr_assert_not_null(leaf, "mint %s: %s", host, err);
  cr_assert_not_null(*key);
  return leaf;
}

static int is_ip_literal(const char *host) {
  return strchr(host, ':') != NULL || strspn(host, "0123456789.") == strlen(host);
}

/* Verifies |leaf| as a TLS server certificate for |host| with |ca_cert| the only trust anchor,
 * under OpenSSL's strict RFC 5280 checks. Returns X509_V_OK or the verification error. */
static int verify_leaf(X509 *ca_cert, X509 *leaf, const char *host) {
  X509_STORE *store = X509_STORE_new();
  cr_assert_eq(X509_STORE_add_cert(store, ca_cert), 1);
  X509_STORE_CTX *ctx = X509_STORE_CTX_new();
  cr_assert_eq(X509_STORE_CTX_init(ctx, store, leaf, NULL), 1);
  X509_VERIFY_PARAM *param = X509_STORE_CTX_get0_param(ctx);
  if (is_ip_literal(host))
    cr_assert_eq(X509_VERIFY_PARAM_set1_ip_asc(param, host), 1);
  else
    cr_assert_eq(X509_VERIFY_PARAM_set1_host(param, host, 0), 1);
  X509_VERIFY_PARAM_set_flags(param, X509_V_FLAG_X509_STRICT);
  cr_assert_eq(X509_STORE_CTX_set_purpose(ctx, X509_PURPOSE_SSL_SERVER), 1);
  int rc = X509_verify_cert(ctx) == 1 ? X509_V_OK : X509_STORE_CTX_get_error(ctx);
  X509_STORE_CTX_free(ctx);
  X509_STORE_free(store);
  ERR_clear_error();
  return rc;
}

static int ext_critical(X509 *cert, int nid) {
  int i = X509_get_ext_by_NID(cert, nid, -1);
  cr_assert_geq(i, 0, "extension %s present", OBJ_nid2sn(nid));
  return X509_EXTENSION_get_critical(X509_get_ext(cert, i));
}

/* Seconds from now to |t| (negative if past). */
static long secs_from_now(const ASN1_TIME *t) {
  int days, secs;
  cr_assert_eq(ASN1_TIME_diff(&days, &secs, NULL, t), 1);
  return days * 86400L + secs;
}

/* ---- Files ------------------------------------------------------------------------------- */

Test(ca_files, first_start_creates_key_0600_cert_0644_in_a_0700_directory) {
  sg_ca *ca = start(data_dir);
  cr_assert_eq(mode_of(data_dir), 0700);
  cr_assert_eq(mode_of(key_path(data_dir)), 0600);
  cr_assert_eq(mode_of(cert_path(data_dir)), 0644);

  char *key = slurp(key_path(data_dir));
  cr_assert(strncmp(key, "-----BEGIN PRIVATE KEY-----\n", 28) == 0, "PKCS#8 PEM: %.40s", key);
  free(key);
  char *cert = slurp(cert_path(data_dir));
  cr_assert_str_eq(cert, sg_ca_cert_pem(ca));
  free(cert);

  char *abs = realpath(data_dir, NULL);
  cr_assert_str_eq(sg_ca_cert_path(ca), cert_path(abs));
  free(abs);

  /* Nothing else: the temporary files were renamed into place. */
  int entries = 0;
  DIR *d = opendir(data_dir);
  for (struct dirent *e; (e = readdir(d)) != NULL;)
    entries += e->d_name[0] != '.';
  closedir(d);
  cr_assert_eq(entries, 2);
  sg_ca_free(ca);
}

Test(ca_files, modes_do_not_depend_on_the_umask) {
  umask(0077);
  sg_ca *ca = start(data_dir);
  cr_assert_eq(mode_of(cert_path(data_dir)), 0644, "sandboxes must be able to read it");
  sg_ca_free(ca);

  umask(0);
  snprintf(data_dir, sizeof(data_dir), "%s/open", tmp);
  ca = start(data_dir);
  cr_assert_eq(mode_of(data_dir), 0700);
  cr_assert_eq(mode_of(key_path(data_dir)), 0600);
  sg_ca_free(ca);
}

Test(ca_files, second_start_loads_the_same_certificate_and_key) {
  sg_ca *first = start(data_dir);
  sg_ca *second = start(data_dir);
  cr_assert_str_eq(sg_ca_cert_pem(second), sg_ca_cert_pem(first));
  cr_assert_str_eq(sg_ca_cert_path(second), sg_ca_cert_path(first));

  /* Same key: a leaf minted after the restart verifies against the certificate from before. */
  EVP_PKEY *key;
  X509 *leaf = mint(second, "api.anthropic.test", &key);
  X509 *before = ca_cert_of(first);
  cr_assert_eq(verify_leaf(before, leaf, "api.anthropic.test"), X509_V_OK);
  X509_free(before);
  X509_free(leaf);
  EVP_PKEY_free(key);
  sg_ca_free(first);
  sg_ca_free(second);
}

Test(ca_files, key_readable_by_others_is_refused_naming_the_file) {
  sg_ca_free(start(data_dir));
  cr_assert_eq(chmod(key_path(data_dir), 0644), 0);
  assert_refused(data_dir, key_path(data_dir));
  cr_assert(strstr(err, "chmod 600") != NULL, "%s", err);
}

Test(ca_files, key_readable_by_group_is_refused) {
  sg_ca_free(start(data_dir));
  cr_assert_eq(chmod(key_path(data_dir), 0640), 0);
  assert_refused(data_dir, key_path(data_dir));
}

Test(ca_files, key_behind_a_symbolic_link_is_refused) {
  sg_ca_free(start(data_dir));
  const char *elsewhere = in_dir(tmp, "key-elsewhere");
  cr_assert_eq(rename(key_path(data_dir), elsewhere), 0);
  cr_assert_eq(symlink(elsewhere, key_path(data_dir)), 0);
  assert_refused(data_dir, key_path(data_dir));
}

Test(ca_files, corrupt_certificate_is_refused_and_left_alone) {
  sg_ca_free(start(data_dir));
  write_file(cert_path(data_dir), "-----BEGIN CERTIFICATE-----\nnot base64\n", 0644);
  assert_refused(data_dir, cert_path(data_dir));
  char *after = slurp(cert_path(data_dir));
  cr_assert_str_eq(after, "-----BEGIN CERTIFICATE-----\nnot base64\n", "never regenerated");
  free(after);
}

Test(ca_files, certificate_with_a_bad_signature_is_refused) {
  sg_ca *ca = start(data_dir);
  X509 *cert = ca_cert_of(ca);
  sg_ca_free(ca);
  unsigned char *der = NULL;
  int len = i2d_X509(cert, &der);
  X509_free(cert);
  der[len - 1] ^= 0x01; /* the last byte of the ECDSA signature's s: still parses */
  const unsigned char *p = der;
  X509 *flipped = d2i_X509(NULL, &p, len);
  cr_assert_not_null(flipped);
  OPENSSL_free(der);
  char *pem = cert_to_pem(flipped);
  X509_free(flipped);
  write_file(cert_path(data_dir), pem, 0644);
  free(pem);
  assert_refused(data_dir, cert_path(data_dir));
}

Test(ca_files, corrupt_key_is_refused) {
  sg_ca_free(start(data_dir));
  write_file(key_path(data_dir), "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
             0600);
  assert_refused(data_dir, key_path(data_dir));
}

Test(ca_files, key_of_another_ca_is_refused_naming_both_files) {
  char other[160];
  snprintf(other, sizeof(other), "%s/other", tmp);
  sg_ca_free(start(data_dir));
  sg_ca_free(start(other));
  char *foreign = slurp(key_path(other));
  write_file(key_path(data_dir), foreign, 0600);
  char *cert_before = slurp(cert_path(data_dir));

  assert_refused(data_dir, key_path(data_dir));
  cr_assert(strstr(err, cert_path(data_dir)) != NULL, "%s", err);
  cr_assert(strstr(err, "does not match") != NULL, "%s", err);

  char *key_after = slurp(key_path(data_dir));
  char *cert_after = slurp(cert_path(data_dir));
  cr_assert_str_eq(key_after, foreign, "never regenerated");
  cr_assert_str_eq(cert_after, cert_before, "never regenerated");
  free(foreign);
  free(cert_before);
  free(key_after);
  free(cert_after);
}

Test(ca_files, certificate_that_is_not_a_ca_is_refused) {
  sg_ca *ca = start(data_dir);
  EVP_PKEY *key;
  X509 *leaf = mint(ca, "api.anthropic.test", &key);
  sg_ca_free(ca);
  char *cert_pem = cert_to_pem(leaf);
  char *key_pem = key_to_pem(key);
  write_file(cert_path(data_dir), cert_pem, 0644);
  write_file(key_path(data_dir), key_pem, 0600);
  assert_refused(data_dir, cert_path(data_dir));
  cr_assert(strstr(err, "not a CA") != NULL, "%s", err);
  free(cert_pem);
  free(key_pem);
  X509_free(leaf);
  EVP_PKEY_free(key);
}

Test(ca_files, missing_key_beside_its_certificate_is_refused_not_regenerated) {
  sg_ca_free(start(data_dir));
  cr_assert_eq(unlink(key_path(data_dir)), 0);
  assert_refused(data_dir, key_path(data_dir));
  cr_assert_eq(access(key_path(data_dir), F_OK), -1, "no new key was written");
}

Test(ca_files, missing_certificate_beside_its_key_is_issued_again_for_that_key) {
  sg_ca *before = start(data_dir);
  cr_assert_eq(unlink(cert_path(data_dir)), 0);
  sg_ca *after = start(data_dir);
  cr_assert_eq(mode_of(cert_path(data_dir)), 0644);
  /* A new certificate (new serial) for the same key and name: earlier leaves still verify. */
  cr_assert_str_neq(sg_ca_cert_pem(after), sg_ca_cert_pem(before));
  EVP_PKEY *key;
  X509 *leaf = mint(before, "api.anthropic.test", &key);
  X509 *reissued = ca_cert_of(after);
  cr_assert_eq(verify_leaf(reissued, leaf, "api.anthropic.test"), X509_V_OK);
  X509_free(reissued);
  X509_free(leaf);
  EVP_PKEY_free(key);
  sg_ca_free(before);
  sg_ca_free(after);
}

Test(ca_files, data_dir_that_is_a_file_is_refused) {
  snprintf(data_dir, sizeof(data_dir), "%s/file", tmp);
  write_file(data_dir, "x", 0600);
  assert_refused(data_dir, data_dir);
}

#define RACERS 8
#define ROUNDS 12

/* Reads all of |fd| into |buf|. */
static void read_to_end(int fd, char *buf, size_t cap) {
  size_t n = 0;
  for (ssize_t r; n < cap - 1 && (r = read(fd, buf + n, cap - 1 - n)) != 0;) {
    if (r < 0 && errno == EINTR)
      continue;
    cr_assert_gt(r, 0);
    n += (size_t)r;
  }
  buf[n] = '\0';
}

/* Each child waits for the starting gun (EOF on |gun|), starts the CA, and reports its PEM (or
 * its error) on |out|. */
static void racer(const char *dir, int gun, int out) {
  char c, msg[1024];
  while (read(gun, &c, 1) < 0 && errno == EINTR)
    ;
  sg_ca *ca = sg_ca_load_or_create(dir, msg, sizeof(msg));
  const char *text = ca != NULL ? sg_ca_cert_pem(ca) : msg;
  ssize_t w = write(out, text, strlen(text));
  _exit(ca != NULL && w == (ssize_t)strlen(text) ? 0 : 1);
}

Test(ca_files, processes_starting_at_once_end_up_with_one_matching_pair, .timeout = 120) {
  static char pems[RACERS][8192];
  for (int round = 0; round < ROUNDS; round++) {
    char dir[160];
    snprintf(dir, sizeof(dir), "%s/race%d", tmp, round);
    int gun[2];
    cr_assert_eq(pipe(gun), 0);
    int outs[RACERS];
    pid_t pids[RACERS];
    for (int i = 0; i < RACERS; i++) {
      int out[2];
      cr_assert_eq(pipe(out), 0);
      pids[i] = fork();
      cr_assert_geq(pids[i], 0);
      if (pids[i] == 0) {
        close(gun[1]);
        close(out[0]);
        racer(dir, gun[0], out[1]);
      }
      close(out[1]);
      outs[i] = out[0];
    }
    close(gun[0]);
    close(gun[1]); /* go */
    for (int i = 0; i < RACERS; i++) {
      read_to_end(outs[i], pems[i], sizeof(pems[i]));
      close(outs[i]);
      int status;
      cr_assert_eq(waitpid(pids[i], &status, 0), pids[i]);
      cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "round %d racer %d: %s", round, i,
                pems[i]);
      cr_assert_str_eq(pems[i], pems[0], "round %d: racer %d got another certificate", round, i);
    }
    /* What they agreed on is what is on disk, and the key on disk matches it. */
    sg_ca *ca = start(dir);
    cr_assert_str_eq(sg_ca_cert_pem(ca), pems[0]);
    sg_ca_free(ca);
  }
}

/* ---- The CA certificate ------------------------------------------------------------------- */

Test(ca_cert, is_a_self_signed_p256_ca_that_signs_leaves_only) {
  sg_ca *ca = start(data_dir);
  X509 *cert = ca_cert_of(ca);

  cr_assert_eq(X509_get_version(cert), X509_VERSION_3);
  cr_assert_eq(X509_check_ca(cert), 1, "CA:TRUE");
  cr_assert_eq(ext_critical(cert, NID_basic_constraints), 1);
  cr_assert_eq(X509_get_pathlen(cert), 0);
  cr_assert_eq(X509_get_key_usage(cert), (uint32_t)(KU_KEY_CERT_SIGN | KU_CRL_SIGN));
  cr_assert_eq(ext_critical(cert, NID_key_usage), 1);

  cr_assert_eq(X509_self_signed(cert, 1), 1);
  cr_assert_eq(X509_NAME_cmp(X509_get_subject_name(cert), X509_get_issuer_name(cert)), 0);
  char text[128];
  X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, text, sizeof(text));
  cr_assert_str_eq(text, "sealgate proxy CA");
  X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_organizationName, text, sizeof(text));
  cr_assert_str_eq(text, "sealgate");

  const ASN1_OCTET_STRING *ski = X509_get0_subject_key_id(cert);
  const ASN1_OCTET_STRING *aki = X509_get0_authority_key_id(cert);
  cr_assert_not_null(ski);
  cr_assert_not_null(aki);
  cr_assert_eq(ASN1_OCTET_STRING_cmp(ski, aki), 0);

  cr_assert_eq(X509_get_signature_nid(cert), NID_ecdsa_with_SHA256);
  cr_assert_eq(EVP_PKEY_get_group_name(X509_get0_pubkey(cert), text, sizeof(text), NULL), 1);
  cr_assert_str_eq(text, "prime256v1");

  BIGNUM *serial = ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), NULL);
  cr_assert_eq(BN_num_bits(serial), 159);
  cr_assert_eq(BN_is_negative(serial), 0);
  BN_free(serial);

  long before = secs_from_now(X509_get0_notBefore(cert));
  long after = secs_from_now(X509_get0_notAfter(cert));
  cr_assert(before <= -3590 && before >= -3610, "notBefore an hour ago: %ld s", before);
  cr_assert(after >= 3650L * 86400 && after <= 3653L * 86400, "ten years: %ld s", after);

  /* It is a trust anchor that verifies as itself. */
  X509_STORE *store = X509_STORE_new();
  X509_STORE_add_cert(store, cert);
  X509_STORE_CTX *ctx = X509_STORE_CTX_new();
  X509_STORE_CTX_init(ctx, store, cert, NULL);
  X509_STORE_CTX_set_flags(ctx, X509_V_FLAG_X509_STRICT | X509_V_FLAG_CHECK_SS_SIGNATURE);
  cr_assert_eq(X509_verify_cert(ctx), 1, "%s",
               X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx)));
  X509_STORE_CTX_free(ctx);
  X509_STORE_free(store);
  X509_free(cert);
  sg_ca_free(ca);
}

/* ---- Leaves ------------------------------------------------------------------------------- */

Test(leaf, verifies_against_the_ca_as_a_tls_server_for_its_host_only) {
  sg_ca *ca = start(data_dir);
  X509 *cert = ca_cert_of(ca);
  EVP_PKEY *key;
  X509 *leaf = mint(ca, "api.anthropic.test", &key);
  cr_assert_eq(verify_leaf(cert, leaf, "api.anthropic.test"), X509_V_OK);
  cr_assert_eq(verify_leaf(cert, leaf, "other.test"), X509_V_ERR_HOSTNAME_MISMATCH);
  cr_assert_eq(verify_leaf(cert, leaf, "evil.api.anthropic.test"), X509_V_ERR_HOSTNAME_MISMATCH);
  X509_free(leaf);
  EVP_PKEY_free(key);
  X509_free(cert);
  sg_ca_free(ca);
}

Test(leaf, has_a_fresh_p256_key_that_is_not_the_cas) {
  sg_ca *ca = start(data_dir);
  X509 *cert = ca_cert_of(ca);
  EVP_PKEY *key1, *key2;
  X509 *leaf1 = mint(ca, "api.anthropic.test", &key1);
  X509 *leaf2 = mint(ca, "api.anthropic.test", &key2);
  cr_assert_eq(X509_check_private_key(leaf1, key1), 1);
  cr_assert_neq(EVP_PKEY_eq(key1, X509_get0_pubkey(cert)), 1);
  cr_assert_neq(EVP_PKEY_eq(key1, key2), 1, "one key per leaf");
  cr_assert_neq(ASN1_INTEGER_cmp(X509_get0_serialNumber(leaf1), X509_get0_serialNumber(leaf2)), 0);
  char group[64];
  cr_assert_eq(EVP_PKEY_get_group_name(key1, group, sizeof(group), NULL), 1);
  cr_assert_str_eq(group, "prime256v1");
  X509_free(leaf1);
  X509_free(leaf2);
  EVP_PKEY_free(key1);
  EVP_PKEY_free(key2);
  X509_free(cert);
  sg_ca_free(ca);
}

Test(leaf, is_valid_from_an_hour_ago_for_at_most_seven_days) {
  sg_ca *ca = start(data_dir);
  EVP_PKEY *key;
  X509 *leaf = mint(ca, "api.anthropic.test", &key);
  long before = secs_from_now(X509_get0_notBefore(leaf));
  long after = secs_from_now(X509_get0_notAfter(leaf));
  cr_assert(before <= -3590 && before >= -3610, "notBefore an hour ago: %ld s", before);
  cr_assert(after <= SG_CA_LEAF_DAYS * 86400L, "at most 7 days: %ld s", after);
  cr_assert(after >= SG_CA_LEAF_DAYS * 86400L - 60, "7 days: %ld s", after);
  X509_free(leaf);
  EVP_PKEY_free(key);
  sg_ca_free(ca);
}

/* The one subjectAltName entry of |leaf|: its type and value (text for DNS, raw for IP). */
static int san_of(X509 *leaf, char *value, size_t cap, int *critical) {
  GENERAL_NAMES *names = X509_get_ext_d2i(leaf, NID_subject_alt_name, critical, NULL);
  cr_assert_not_null(names);
  cr_assert_eq(sk_GENERAL_NAME_num(names), 1);
  int type;
  ASN1_STRING *s = GENERAL_NAME_get0_value(sk_GENERAL_NAME_value(names, 0), &type);
  size_t len = (size_t)ASN1_STRING_length(s);
  cr_assert_lt(len, cap);
  memcpy(value, ASN1_STRING_get0_data(s), len);
  value[len] = '\0';
  GENERAL_NAMES_free(names);
  return type;
}

static void assert_ip_leaf(const char *host, size_t ip_len) {
  sg_ca *ca = start(data_dir);
  X509 *cert = ca_cert_of(ca);
  EVP_PKEY *key;
  X509 *leaf = mint(ca, host, &key);
  char value[64];
  int critical;
  cr_assert_eq(san_of(leaf, value, sizeof(value), &critical), GEN_IPADD);
  cr_assert_eq(critical, 0);
  cr_assert_eq(X509_check_ip_asc(leaf, host, 0), 1);
  cr_assert_neq(X509_check_host(leaf, host, 0, X509_CHECK_FLAG_NEVER_CHECK_SUBJECT, NULL), 1,
                "no DNS name for an IP");
  cr_assert_eq(verify_leaf(cert, leaf, host), X509_V_OK);
  cr_assert_eq(verify_leaf(cert, leaf, ip_len == 4 ? "127.0.0.2" : "::2"),
               X509_V_ERR_IP_ADDRESS_MISMATCH);
  X509_free(leaf);
  EVP_PKEY_free(key);
  X509_free(cert);
  sg_ca_free(ca);
}

Test(leaf, ipv4_literal_gets_an_ip_subject_alt_name) {
  assert_ip_leaf("127.0.0.1", 4);
}

Test(leaf, ipv6_literal_gets_an_ip_subject_alt_name) {
  assert_ip_leaf("::1", 16);
}

Test(leaf, host_name_gets_a_normalized_dns_subject_alt_name_and_cn) {
  sg_ca *ca = start(data_dir);
  EVP_PKEY *key;
  X509 *leaf = mint(ca, "API.Anthropic.TEST.", &key);
  char value[300];
  int critical;
  cr_assert_eq(san_of(leaf, value, sizeof(value), &critical), GEN_DNS);
  cr_assert_str_eq(value, "api.anthropic.test");
  cr_assert_eq(critical, 0);
  X509_NAME_get_text_by_NID(X509_get_subject_name(leaf), NID_commonName, value, sizeof(value));
  cr_assert_str_eq(value, "api.anthropic.test");
  cr_assert_eq(X509_check_host(leaf, "api.anthropic.test", 0, 0, NULL), 1);
  cr_assert_neq(X509_check_ip_asc(leaf, "127.0.0.1", 0), 1);
  X509_free(leaf);
  EVP_PKEY_free(key);
  sg_ca_free(ca);
}

Test(leaf, is_an_end_entity_for_server_auth_issued_by_the_ca) {
  sg_ca *ca = start(data_dir);
  X509 *cert = ca_cert_of(ca);
  EVP_PKEY *key;
  X509 *leaf = mint(ca, "api.anthropic.test", &key);

  cr_assert_eq(X509_get_version(leaf), X509_VERSION_3);
  cr_assert_eq(X509_check_ca(leaf), 0, "CA:FALSE");
  cr_assert_eq(ext_critical(leaf, NID_basic_constraints), 1);
  cr_assert_eq(X509_get_key_usage(leaf), (uint32_t)KU_DIGITAL_SIGNATURE);
  cr_assert_eq(ext_critical(leaf, NID_key_usage), 1);
  cr_assert_eq(X509_get_extended_key_usage(leaf), (uint32_t)XKU_SSL_SERVER);
  cr_assert_eq(X509_check_purpose(leaf, X509_PURPOSE_SSL_SERVER, 0), 1);

  cr_assert_eq(X509_NAME_cmp(X509_get_issuer_name(leaf), X509_get_subject_name(cert)), 0);
  cr_assert_not_null(X509_get0_subject_key_id(leaf));
  cr_assert_not_null(X509_get0_authority_key_id(leaf));
  cr_assert_eq(
      ASN1_OCTET_STRING_cmp(X509_get0_authority_key_id(leaf), X509_get0_subject_key_id(cert)), 0);
  cr_assert_eq(X509_get_signature_nid(leaf), NID_ecdsa_with_SHA256);
  cr_assert_eq(X509_verify(leaf, X509_get0_pubkey(cert)), 1);
  BIGNUM *serial = ASN1_INTEGER_to_BN(X509_get0_serialNumber(leaf), NULL);
  cr_assert_eq(BN_num_bits(serial), 159);
  BN_free(serial);

  X509_free(leaf);
  EVP_PKEY_free(key);
  X509_free(cert);
  sg_ca_free(ca);
}

Test(leaf, name_too_long_for_a_cn_gets_an_empty_subject_and_a_critical_san) {
  const char *host = "a-rather-long-label-for-a-host-name.and-another-label.example.test";
  cr_assert_gt(strlen(host), 64);
  sg_ca *ca = start(data_dir);
  X509 *cert = ca_cert_of(ca);
  EVP_PKEY *key;
  X509 *leaf = mint(ca, host, &key);
  cr_assert_eq(X509_NAME_entry_count(X509_get_subject_name(leaf)), 0);
  char value[300];
  int critical;
  cr_assert_eq(san_of(leaf, value, sizeof(value), &critical), GEN_DNS);
  cr_assert_str_eq(value, host);
  cr_assert_eq(critical, 1);
  cr_assert_eq(verify_leaf(cert, leaf, host), X509_V_OK);
  X509_free(leaf);
  EVP_PKEY_free(key);
  X509_free(cert);
  sg_ca_free(ca);
}

Test(leaf, refuses_what_is_neither_a_host_name_nor_an_ip_literal) {
  static const char *const bad[] = {
      "",
      "*.example.com",
      "a b.test",
      "api.test,IP:10.0.0.1", /* would be two names if it reached the config parser */
      "api.test\nIP:10.0.0.1",
      "[::1]",
      "fe80::1%eth0",
      "1.2.3.4.5",
      "127.1",
      "-leading.test",
  };
  sg_ca *ca = start(data_dir);
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    EVP_PKEY *sentinel = (EVP_PKEY *)&ca;
    EVP_PKEY *key = sentinel;
    err[0] = '\0';
    cr_assert_null(sg_ca_mint_leaf(ca, bad[i], &key, err, sizeof(err)), "'%s' accepted", bad[i]);
    cr_assert_eq(key, sentinel, "key_out untouched");
    cr_assert_neq(err[0], '\0');
    cr_assert(bad[i][0] == '\0' || strstr(err, bad[i]) == NULL, "not echoed: %s", err);
  }
  sg_ca_free(ca);
}

/* ---- TLS ---------------------------------------------------------------------------------- */

/* Writes |leaf| and |key| as PEM files in the test's directory. */
static void write_leaf_files(X509 *leaf, EVP_PKEY *key, const char **cert_file,
                             const char **key_file) {
  *cert_file = in_dir(tmp, "leaf.pem");
  *key_file = in_dir(tmp, "leaf.key");
  char *pem = cert_to_pem(leaf);
  write_file(*cert_file, pem, 0644);
  free(pem);
  pem = key_to_pem(key);
  write_file(*key_file, pem, 0600);
  free(pem);
}

/* A handshake over an in-memory BIO pair between a server using the leaf files and a client
 * whose only trust anchor is |ca_cert|, checking |host|. Returns the client's verification
 * result, or -1 if the handshake failed for another reason. */
static long tls_handshake(X509 *ca_cert, const char *cert_file, const char *key_file,
                          const char *host) {
  SSL_CTX *sctx = SSL_CTX_new(TLS_server_method());
  cr_assert_eq(SSL_CTX_use_certificate_file(sctx, cert_file, SSL_FILETYPE_PEM), 1);
  cr_assert_eq(SSL_CTX_use_PrivateKey_file(sctx, key_file, SSL_FILETYPE_PEM), 1);
  SSL_CTX *cctx = SSL_CTX_new(TLS_client_method());
  cr_assert_eq(X509_STORE_add_cert(SSL_CTX_get_cert_store(cctx), ca_cert), 1);
  SSL_CTX_set_verify(cctx, SSL_VERIFY_PEER, NULL);

  SSL *client = SSL_new(cctx), *server = SSL_new(sctx);
  if (is_ip_literal(host)) {
    cr_assert_eq(X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(client), host), 1);
  } else {
    cr_assert_eq(SSL_set1_host(client, host), 1);
    cr_assert_eq(SSL_set_tlsext_host_name(client, host), 1);
  }
  BIO *client_bio, *server_bio;
  cr_assert_eq(BIO_new_bio_pair(&client_bio, 0, &server_bio, 0), 1);
  SSL_set_bio(client, client_bio, client_bio);
  SSL_set_bio(server, server_bio, server_bio);
  SSL_set_connect_state(client);
  SSL_set_accept_state(server);

  SSL *ends[2] = {client, server};
  int done[2] = {0, 0}, failed = 0;
  for (int round = 0; round < 20 && !failed && !(done[0] && done[1]); round++) {
    for (int i = 0; i < 2; i++) {
      if (done[i])
        continue;
      int r = SSL_do_handshake(ends[i]);
      if (r == 1)
        done[i] = 1;
      else if (SSL_get_error(ends[i], r) != SSL_ERROR_WANT_READ)
        failed = 1;
    }
  }
  long verify = SSL_get_verify_result(client);
  SSL_free(client);
  SSL_free(server);
  SSL_CTX_free(cctx);
  SSL_CTX_free(sctx);
  ERR_clear_error();
  if (verify != X509_V_OK)
    return verify;
  return done[0] && done[1] ? X509_V_OK : -1;
}

static void assert_tls_accepts(const char *host) {
  sg_ca *ca = start(data_dir);
  X509 *cert = ca_cert_of(ca);
  EVP_PKEY *key;
  X509 *leaf = mint(ca, host, &key);
  const char *cert_file, *key_file;
  write_leaf_files(leaf, key, &cert_file, &key_file);
  cr_assert_eq(tls_handshake(cert, cert_file, key_file, host), X509_V_OK, "%s", host);
  long wrong =
      tls_handshake(cert, cert_file, key_file, is_ip_literal(host) ? "192.0.2.1" : "other.test");
  cr_assert(wrong == X509_V_ERR_HOSTNAME_MISMATCH || wrong == X509_V_ERR_IP_ADDRESS_MISMATCH,
            "another host is refused: %ld", wrong);
  X509_free(leaf);
  EVP_PKEY_free(key);
  X509_free(cert);
  sg_ca_free(ca);
}

Test(leaf, openssl_client_trusting_only_the_ca_accepts_it_for_a_name) {
  assert_tls_accepts("api.anthropic.test");
}

Test(leaf, openssl_client_trusting_only_the_ca_accepts_it_for_ipv4) {
  assert_tls_accepts("127.0.0.1");
}

Test(leaf, openssl_client_trusting_only_the_ca_accepts_it_for_ipv6) {
  assert_tls_accepts("::1");
}

/* Python's ssl module with the CA file as its only trust anchor, hostname checking, and
 * VERIFY_X509_STRICT (the default from Python 3.13), handshaking over memory BIOs. */
static const char python_handshake[] =
    "import ssl, sys\n"
    "cafile, certfile, keyfile, host = sys.argv[1:]\n"
    "cctx = ssl.create_default_context(cafile=cafile)\n"
    "cctx.verify_flags |= ssl.VERIFY_X509_STRICT\n"
    "sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)\n"
    "sctx.load_cert_chain(certfile, keyfile)\n"
    "c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))\n"
    "client = cctx.wrap_bio(c_in, c_out, server_hostname=host)\n"
    "server = sctx.wrap_bio(s_in, s_out, server_side=True)\n"
    "pending = {client: (c_out, s_in), server: (s_out, c_in)}\n"
    "for _ in range(20):\n"
    "    for conn, (out, peer) in list(pending.items()):\n"
    "        try:\n"
    "            conn.do_handshake()\n"
    "            del pending[conn]\n"
    "        except ssl.SSLWantReadError:\n"
    "            pass\n"
    "        except ssl.SSLError as e:\n"
    "            sys.exit(f'python ssl refused the handshake with {host}: {e}')\n"
    "        peer.write(out.read())\n"
    "    if not pending:\n"
    "        break\n"
    "sys.exit(1 if pending or not client.getpeercert() else 0)\n";

/* Runs the handshake script; returns its exit status. */
static int python_accepts(const char *cafile, const char *cert_file, const char *key_file,
                          const char *host) {
  const char *python = getenv("SG_PYTHON3") != NULL ? getenv("SG_PYTHON3") : "python3";
  pid_t pid = fork();
  cr_assert_geq(pid, 0);
  if (pid == 0) {
    execlp(python, python, "-c", python_handshake, cafile, cert_file, key_file, host, (char *)NULL);
    _exit(127);
  }
  int status;
  cr_assert_eq(waitpid(pid, &status, 0), pid);
  cr_assert(WIFEXITED(status));
  cr_assert_neq(WEXITSTATUS(status), 127, "cannot run %s", python);
  return WEXITSTATUS(status);
}

Test(leaf, python_ssl_trusting_only_the_ca_file_accepts_it) {
  static const char *const hosts[] = {"api.anthropic.test", "127.0.0.1", "::1"};
  sg_ca *ca = start(data_dir);
  for (size_t i = 0; i < sizeof(hosts) / sizeof(hosts[0]); i++) {
    EVP_PKEY *key;
    X509 *leaf = mint(ca, hosts[i], &key);
    const char *cert_file, *key_file;
    write_leaf_files(leaf, key, &cert_file, &key_file);
    cr_assert_eq(python_accepts(sg_ca_cert_path(ca), cert_file, key_file, hosts[i]), 0, "%s",
                 hosts[i]);
    if (i == 0)
      cr_assert_neq(python_accepts(sg_ca_cert_path(ca), cert_file, key_file, "other.test"), 0);
    X509_free(leaf);
    EVP_PKEY_free(key);
  }
  sg_ca_free(ca);
}

/* ---- Threads ------------------------------------------------------------------------------ */

#define THREADS     4
#define LEAVES_EACH 100

typedef struct {
  sg_ca *ca;
  EVP_PKEY *ca_pub;
  int index;
  int failures;
  char serials[LEAVES_EACH][64];
} minter;

static void *mint_many(void *arg) {
  minter *m = arg;
  static const char *const hosts[] = {"api.anthropic.test", "127.0.0.1", "::1", "a.b.test"};
  for (int i = 0; i < LEAVES_EACH; i++) {
    EVP_PKEY *key = NULL;
    char msg[256];
    X509 *leaf = sg_ca_mint_leaf(m->ca, hosts[(m->index + i) % 4], &key, msg, sizeof(msg));
    if (leaf == NULL || X509_verify(leaf, m->ca_pub) != 1 ||
        X509_check_private_key(leaf, key) != 1) {
      m->failures++;
    } else {
      BIGNUM *serial = ASN1_INTEGER_to_BN(X509_get0_serialNumber(leaf), NULL);
      char *hex = BN_bn2hex(serial);
      snprintf(m->serials[i], sizeof(m->serials[i]), "%s", hex);
      OPENSSL_free(hex);
      BN_free(serial);
    }
    X509_free(leaf);
    EVP_PKEY_free(key);
  }
  return NULL;
}

static int compare_strings(const void *a, const void *b) {
  return strcmp(a, b);
}

Test(leaf, four_threads_mint_a_hundred_leaves_each) {
  sg_ca *ca = start(data_dir);
  X509 *cert = ca_cert_of(ca);
  static minter minters[THREADS];
  pthread_t threads[THREADS];
  for (int t = 0; t < THREADS; t++) {
    minters[t] = (minter){.ca = ca, .ca_pub = X509_get0_pubkey(cert), .index = t};
    cr_assert_eq(pthread_create(&threads[t], NULL, mint_many, &minters[t]), 0);
  }
  for (int t = 0; t < THREADS; t++)
    cr_assert_eq(pthread_join(threads[t], NULL), 0);

  static char serials[THREADS * LEAVES_EACH][64];
  for (int t = 0; t < THREADS; t++) {
    cr_assert_eq(minters[t].failures, 0, "thread %d", t);
    memcpy(serials[t * LEAVES_EACH], minters[t].serials, sizeof(minters[t].serials));
  }
  qsort(serials, THREADS * LEAVES_EACH, sizeof(serials[0]), compare_strings);
  for (int i = 1; i < THREADS * LEAVES_EACH; i++)
    cr_assert_str_neq(serials[i], serials[i - 1], "serials are unique");
  X509_free(cert);
  sg_ca_free(ca);
}
