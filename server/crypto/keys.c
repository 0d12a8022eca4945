#include "crypto/keys.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "core/file.h"
#include "core/mem.h"
#include "crypto/gcm.h"

#define HEX_LEN (2 * SG_KEY_LEN)

_Static_assert(SG_KEY_LEN == SG_GCM_KEY_LEN, "the root key and DEKs are AES-256 keys");
_Static_assert(SG_WRAPPED_DEK_LEN == SG_GCM_NONCE_LEN + SG_KEY_LEN + SG_GCM_TAG_LEN,
               "a wrapped DEK is nonce || ciphertext || tag");

static void hex_encode(const uint8_t *in, size_t n, char *out) {
  static const char digits[] = "0123456789abcdef";
  for (size_t i = 0; i < n; i++) {
    out[2 * i] = digits[in[i] >> 4];
    out[2 * i + 1] = digits[in[i] & 15];
  }
}

/* Returns the value of a hex digit of either case, or sets |*bad|. */
static uint8_t hex_nibble(char c, int *bad) {
  if (c >= '0' && c <= '9')
    return (uint8_t)(c - '0');
  if (c >= 'a' && c <= 'f')
    return (uint8_t)(c - 'a' + 10);
  if (c >= 'A' && c <= 'F')
    return (uint8_t)(c - 'A' + 10);
  *bad = 1;
  return 0;
}

/* The id names a root key in the database (which DEK rows it wrapped) without revealing it: a
 * truncated hash under a label of its own, so it is no hash of the key used anywhere else. */
static void key_id(const uint8_t key[SG_KEY_LEN], char id[SG_KEY_ID_LEN + 1]) {
  static const char label[] = "sealgate root key id v1";
  uint8_t md[EVP_MAX_MD_SIZE];
  EVP_MD_CTX *ctx = EVP_MD_CTX_new();
  if (ctx == NULL)
    sg_fatal("out of memory (EVP_MD_CTX_new)");
  if (EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1 ||
      EVP_DigestUpdate(ctx, label, sizeof(label) - 1) != 1 ||
      EVP_DigestUpdate(ctx, key, SG_KEY_LEN) != 1 || EVP_DigestFinal_ex(ctx, md, NULL) != 1)
    sg_fatal("SHA-256 failed");
  EVP_MD_CTX_free(ctx);
  hex_encode(md, SG_KEY_ID_LEN / 2, id);
  id[SG_KEY_ID_LEN] = '\0';
  OPENSSL_cleanse(md, sizeof(md));
}

/* Checks the file behind |fd| and decodes its key into |out|. Every message names the file and
 * never the content. */
static int load_fd(int fd, const char *path, sg_root_key *out, char *err, size_t errlen) {
  struct stat st;
  if (fstat(fd, &st) != 0) {
    snprintf(err, errlen, "cannot stat root key file %s: %s", path, strerror(errno));
    return -1;
  }
  if (!S_ISREG(st.st_mode)) {
    snprintf(err, errlen, "root key file %s is not a regular file", path);
    return -1;
  }
  if ((st.st_mode & 077) != 0) {
    snprintf(err, errlen, "root key file %s (mode %03o) is readable by others; chmod 600 it", path,
             (unsigned)(st.st_mode & 0777));
    return -1;
  }
  char buf[HEX_LEN + 3]; /* the key, "\r\n", and one byte to notice a longer file */
  ssize_t n = sg_read_all(fd, buf, sizeof(buf));
  if (n < 0) {
    snprintf(err, errlen, "cannot read root key file %s: %s", path, strerror(errno));
    return -1;
  }
  size_t body = (size_t)n;
  if (body > 0 && buf[body - 1] == '\n') {
    body--;
    if (body > 0 && buf[body - 1] == '\r')
      body--;
  }
  int bad = body != HEX_LEN;
  for (size_t i = 0; !bad && i < SG_KEY_LEN; i++)
    out->key[i] = (uint8_t)(hex_nibble(buf[2 * i], &bad) << 4 | hex_nibble(buf[2 * i + 1], &bad));
  OPENSSL_cleanse(buf, sizeof(buf));
  if (bad) {
    snprintf(err, errlen,
             "root key file %s must hold 64 hexadecimal characters (openssl rand -hex 32) and "
             "at most a newline",
             path);
    return -1;
  }
  key_id(out->key, out->id);
  return 0;
}

int sg_root_key_load(const char *path, sg_root_key *out, char *err, size_t errlen) {
  sg_root_key_clear(out);
  /* The checks run on the descriptor that is read, so the file cannot be swapped between them.
   * O_NOFOLLOW refuses a symlink (its target's mode is not what a reviewer of this path sees);
   * O_NONBLOCK keeps a FIFO at the path from hanging startup (fstat refuses it). */
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
  if (fd < 0) {
    if (errno == ELOOP)
      snprintf(err, errlen, "root key file %s is a symbolic link; name the file itself", path);
    else
      snprintf(err, errlen, "cannot open root key file %s: %s", path, strerror(errno));
    return -1;
  }
  int rc = load_fd(fd, path, out, err, errlen);
  close(fd);
  if (rc != 0)
    sg_root_key_clear(out);
  return rc;
}

/* A new file survives a crash only once its directory entry does too. Best effort: a
 * directory that cannot be opened for reading still holds a file fsync'd by the caller. */
static void sync_parent_dir(const char *path) {
  char *copy = sg_strdup(path);
  sg_sync_dir(dirname(copy));
  free(copy);
}

int sg_root_key_generate(const char *path, char *err, size_t errlen) {
  uint8_t key[SG_KEY_LEN];
  char text[HEX_LEN + 1];
  if (RAND_bytes(key, sizeof(key)) != 1) {
    snprintf(err, errlen, "cannot generate a root key: the random generator failed");
    return -1;
  }
  hex_encode(key, sizeof(key), text);
  text[HEX_LEN] = '\n';
  OPENSSL_cleanse(key, sizeof(key));

  int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) {
    OPENSSL_cleanse(text, sizeof(text));
    snprintf(err, errlen, "cannot create root key file %s: %s", path, strerror(errno));
    return -1;
  }
  /* fchmod: a umask such as 0277 would otherwise leave the owner unable to write it back. */
  int rc =
      fchmod(fd, 0600) == 0 && sg_write_all(fd, text, sizeof(text)) == 0 && fsync(fd) == 0 ? 0 : -1;
  int saved = errno;
  OPENSSL_cleanse(text, sizeof(text));
  if (close(fd) != 0 && rc == 0) {
    rc = -1;
    saved = errno;
  }
  if (rc != 0) {
    unlink(path); /* created above with O_EXCL: ours, and holding a partial key at most */
    snprintf(err, errlen, "cannot write root key file %s: %s", path, strerror(saved));
    return -1;
  }
  sync_parent_dir(path);
  return 0;
}

void sg_root_key_clear(sg_root_key *key) {
  OPENSSL_cleanse(key, sizeof(*key));
}

int sg_dek_generate(uint8_t dek[SG_KEY_LEN]) {
  if (RAND_bytes(dek, SG_KEY_LEN) != 1) {
    OPENSSL_cleanse(dek, SG_KEY_LEN);
    return -1;
  }
  return 0;
}

/* "sealgate/dek/v1" || len32(org_id) || org_id || len32(root id) || root id. */
static void dek_aad(sg_gcm_aad *aad, const sg_root_key *root, const char *org_id) {
  sg_gcm_aad_init(aad, "sealgate/dek/v1");
  sg_gcm_aad_add_str(aad, org_id);
  sg_gcm_aad_add_str(aad, root->id);
}

int sg_dek_wrap(const sg_root_key *root, const char *org_id, const uint8_t dek[SG_KEY_LEN],
                uint8_t out[SG_WRAPPED_DEK_LEN]) {
  sg_gcm_aad aad;
  dek_aad(&aad, root, org_id);
  int rc = sg_gcm_seal(root->key, &aad, dek, SG_KEY_LEN, out, out + SG_GCM_NONCE_LEN);
  sg_gcm_aad_free(&aad);
  return rc;
}

int sg_dek_unwrap(const sg_root_key *root, const char *org_id, const uint8_t *wrapped, size_t len,
                  uint8_t dek[SG_KEY_LEN]) {
  if (len != SG_WRAPPED_DEK_LEN) {
    OPENSSL_cleanse(dek, SG_KEY_LEN);
    return -1;
  }
  sg_gcm_aad aad;
  dek_aad(&aad, root, org_id);
  int rc = sg_gcm_open(root->key, &aad, wrapped, wrapped + SG_GCM_NONCE_LEN,
                       SG_KEY_LEN + SG_GCM_TAG_LEN, dek);
  sg_gcm_aad_free(&aad);
  return rc;
}
