/* The proxy CA: its two files (created once, atomically, then only loaded) and the leaf
 * certificates it mints for TLS interception. */
#include "proxy/ca.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "core/file.h"
#include "core/mem.h"
#include "policy/host.h"

#define CA_DAYS       3652 /* ten years */
#define BACKDATE_SECS 3600 /* certificates start an hour ago, for clocks behind ours */
#define SERIAL_BITS   159  /* RFC 5280 §4.1.2.2: positive and at most 20 octets */
#define CN_MAX        64   /* ub-common-name */
#define PEM_FILE_MAX  (64 * 1024)

struct sg_ca {
  X509 *cert;
  EVP_PKEY *key;
  char *cert_pem;
  char *cert_path;
};

/* The absolute data directory and the two paths in it, each sg_malloc'd. */
typedef struct {
  char *dir;
  char *key;
  char *cert;
} ca_files;

/* What a leaf certifies: a normalized host name, or an IP address and its canonical text. */
typedef struct {
  char text[SG_HOST_MAX + 1];
  unsigned char ip[16];
  int ip_len; /* 4, 16, or 0 for a host name */
} leaf_host;

/* OpenSSL constructors fail only when out of memory, which the allocation policy (core/mem.h)
 * makes fatal rather than an error path of every caller. */
static void *must(void *p) {
  if (p == NULL)
    sg_fatal("out of memory (OpenSSL)");
  return p;
}

static void must_ok(int ok) {
  if (ok <= 0)
    sg_fatal("out of memory (OpenSSL)");
}

/* Writes the formatted message and OpenSSL's latest reason into |err|, and empties this
 * thread's OpenSSL error queue: a TLS call later on the same thread would otherwise take the
 * stale entries for its own failure. */
__attribute__((format(printf, 3, 4))) static void ossl_fail(char *err, size_t errlen,
                                                            const char *fmt, ...) {
  char what[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(what, sizeof(what), fmt, ap);
  va_end(ap);
  unsigned long e = ERR_peek_last_error();
  if (e == 0) {
    snprintf(err, errlen, "%s", what);
  } else {
    char detail[256];
    ERR_error_string_n(e, detail, sizeof(detail));
    snprintf(err, errlen, "%s (%s)", what, detail);
  }
  ERR_clear_error();
}

static char *join_path(const char *dir, const char *name) {
  size_t n = strlen(dir) + strlen(name) + 2;
  char *p = sg_malloc(n);
  snprintf(p, n, "%s/%s", dir, name);
  return p;
}

static BIO *mem_bio(const char *data, size_t len) {
  return must(BIO_new_mem_buf(data, (int)len));
}

/* The PEM text of |cert|, sg_malloc'd and NUL-terminated. */
static char *cert_to_pem(X509 *cert) {
  BIO *bio = must(BIO_new(BIO_s_mem()));
  must_ok(PEM_write_bio_X509(bio, cert));
  char *data;
  long n = BIO_get_mem_data(bio, &data);
  char *pem = sg_strndup(data, (size_t)n);
  BIO_free(bio);
  return pem;
}

/* ---- Files ---------------------------------------------------------------------------- */

/* Creates |path| and its missing parents, each mode 0700 (as `mkdir -p -m 700`). Returns its
 * absolute path (malloc'd) or NULL with a message. */
static char *make_data_dir(const char *path, char *err, size_t errlen) {
  if (path[0] == '\0') {
    snprintf(err, errlen, "no data directory given for the proxy CA");
    return NULL;
  }
  char *p = sg_strdup(path);
  for (char *s = p + 1;; s++) {
    if (*s != '/' && *s != '\0')
      continue;
    char c = *s;
    *s = '\0';
    if (mkdir(p, 0700) != 0 && errno != EEXIST) {
      snprintf(err, errlen, "cannot create data directory %s: %s", p, strerror(errno));
      free(p);
      return NULL;
    }
    *s = c;
    if (c == '\0')
      break;
  }
  free(p);
  struct stat st;
  char *abs = realpath(path, NULL);
  if (abs == NULL || stat(abs, &st) != 0 || !S_ISDIR(st.st_mode)) {
    snprintf(err, errlen, "data directory %s is not a usable directory: %s", path,
             abs == NULL ? strerror(errno) : "not a directory");
    free(abs);
    return NULL;
  }
  return abs;
}

static int missing(const char *path) {
  struct stat st;
  return lstat(path, &st) != 0 && errno == ENOENT;
}

/* Reads the PEM file |path| (|what| names it in messages) into |*out|, sg_malloc'd and
 * NUL-terminated, |*len| bytes. A |secret| file must not be a symbolic link (the mode checked
 * is then the file's own) nor accessible to group or others. The checks run on the descriptor
 * that is read, so the file cannot be swapped in between. Returns 0, or -ENOENT or -1 with a
 * message naming the file. The caller clears a secret buffer before freeing it. */
static int read_pem_file(const char *path, const char *what, int secret, char **out, size_t *len,
                         char *err, size_t errlen) {
  /* O_NONBLOCK: a FIFO at the path must not hang startup (fstat refuses it). */
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | (secret ? O_NOFOLLOW : 0));
  if (fd < 0) {
    int e = errno;
    if (e == ELOOP && secret)
      snprintf(err, errlen, "%s %s is a symbolic link; put the file itself there", what, path);
    else
      snprintf(err, errlen, "cannot open %s %s: %s", what, path, strerror(e));
    return e == ENOENT ? -ENOENT : -1;
  }
  struct stat st;
  int rc = -1;
  if (fstat(fd, &st) != 0)
    snprintf(err, errlen, "cannot stat %s %s: %s", what, path, strerror(errno));
  else if (!S_ISREG(st.st_mode))
    snprintf(err, errlen, "%s %s is not a regular file", what, path);
  else if (secret && (st.st_mode & 077) != 0)
    snprintf(err, errlen,
             "%s %s is accessible by group or others (mode %03o): this private key must be "
             "readable only by its owner; chmod 600 it",
             what, path, (unsigned)(st.st_mode & 0777));
  else if (st.st_size > PEM_FILE_MAX)
    snprintf(err, errlen, "%s %s is larger than %d bytes", what, path, PEM_FILE_MAX);
  else
    rc = 0;
  if (rc == 0) {
    char *buf = sg_malloc(PEM_FILE_MAX + 1);
    ssize_t n = sg_read_all(fd, buf, PEM_FILE_MAX);
    if (n < 0) {
      snprintf(err, errlen, "cannot read %s %s: %s", what, path, strerror(errno));
      free(buf);
      rc = -1;
    } else {
      buf[n] = '\0';
      *out = buf;
      *len = (size_t)n;
    }
  }
  close(fd);
  return rc;
}

/* rename(2) that fails with EEXIST rather than replace |to|; link(2) where the file system has
 * no RENAME_NOREPLACE. */
static int rename_noreplace(const char *from, const char *to) {
  if (renameat2(AT_FDCWD, from, AT_FDCWD, to, RENAME_NOREPLACE) == 0)
    return 0;
  if (errno != EINVAL && errno != ENOSYS)
    return -1;
  if (link(from, to) != 0)
    return -1;
  unlink(from);
  return 0;
}

/* Puts |data| at |dir|/|name| with |mode| all at once and without replacing anything: written
 * to a temporary file (O_EXCL, mode 0600 until then), fsync'd, and renamed into place only if
 * nothing is there. A reader thus sees no file or the whole file, and of two processes creating
 * the same file, exactly one succeeds. Returns 0, 1 if the file existed already (ours is
 * discarded), or -1 with a message. */
static int publish_file(const char *dir, const char *name, mode_t mode, const char *data,
                        size_t len, const char *what, char *err, size_t errlen) {
  size_t n = strlen(dir) + strlen(name) + 10;
  char *tmp = sg_malloc(n);
  snprintf(tmp, n, "%s/.%s.XXXXXX", dir, name);
  char *path = join_path(dir, name);
  int rc = -1, saved = 0;
  int fd = mkostemp(tmp, O_CLOEXEC);
  if (fd < 0) {
    saved = errno;
  } else {
    /* fchmod: the umask must not decide who may read the certificate. */
    rc = fchmod(fd, mode) == 0 && sg_write_all(fd, data, len) == 0 && fsync(fd) == 0 ? 0 : -1;
    saved = errno;
    if (close(fd) != 0 && rc == 0) {
      rc = -1;
      saved = errno;
    }
    if (rc == 0 && rename_noreplace(tmp, path) != 0) {
      saved = errno;
      rc = saved == EEXIST ? 1 : -1;
    }
    if (rc != 0)
      unlink(tmp);
  }
  if (rc < 0)
    snprintf(err, errlen, "cannot write %s %s: %s", what, path, strerror(saved));
  if (rc == 0)
    sg_sync_dir(dir);
  free(path);
  free(tmp);
  return rc;
}

/* ---- Certificates ---------------------------------------------------------------------- */

static int set_random_serial(X509 *cert) {
  BIGNUM *bn = must(BN_new());
  /* The top bit set: every serial is 159 bits long, so positive and encoded in 20 octets. */
  int ok = BN_rand(bn, SERIAL_BITS, BN_RAND_TOP_ONE, BN_RAND_BOTTOM_ANY) == 1 &&
           BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert)) != NULL;
  BN_free(bn);
  return ok ? 0 : -1;
}

/* A version 3 certificate for |key|'s public key with a random serial, valid from an hour ago
 * for |days| days; no extensions, unsigned. Returns NULL if OpenSSL fails. */
static X509 *new_cert(const X509_NAME *subject, const X509_NAME *issuer, EVP_PKEY *key, int days) {
  X509 *cert = must(X509_new());
  if (X509_set_version(cert, X509_VERSION_3) != 1 || set_random_serial(cert) != 0 ||
      X509_set_subject_name(cert, subject) != 1 || X509_set_issuer_name(cert, issuer) != 1 ||
      X509_time_adj_ex(X509_getm_notBefore(cert), 0, -BACKDATE_SECS, NULL) == NULL ||
      X509_time_adj_ex(X509_getm_notAfter(cert), days, 0, NULL) == NULL ||
      X509_set_pubkey(cert, key) != 1) {
    X509_free(cert);
    return NULL;
  }
  return cert;
}

/* Adds extension |nid| written as in openssl.cnf ("critical,CA:TRUE,pathlen:0"); "keyid:always"
 * copies |issuer|'s subject key identifier (a read of |issuer| only, so concurrent mints may
 * share it). Only fixed strings come here: a host name would be parsed as a list
 * ("a.test,IP:10.0.0.1"), so add_san builds that extension from structures. */
static int add_ext(X509 *cert, X509 *issuer, int nid, const char *value) {
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, issuer, cert, NULL, NULL, 0);
  X509_EXTENSION *ext = X509V3_EXT_nconf_nid(NULL, &ctx, nid, value);
  int ok = ext != NULL && X509_add_ext(cert, ext, -1) == 1;
  X509_EXTENSION_free(ext);
  return ok ? 0 : -1;
}

/* RFC 5280 §4.2.1.6: with an empty subject, subjectAltName is critical. */
static int add_san(X509 *leaf, const leaf_host *host, int critical) {
  ASN1_STRING *value;
  GENERAL_NAME *name = must(GENERAL_NAME_new());
  if (host->ip_len != 0) {
    value = must(ASN1_OCTET_STRING_new());
    must_ok(ASN1_OCTET_STRING_set(value, host->ip, host->ip_len));
    GENERAL_NAME_set0_value(name, GEN_IPADD, value);
  } else {
    value = must(ASN1_IA5STRING_new());
    must_ok(ASN1_STRING_set(value, host->text, -1));
    GENERAL_NAME_set0_value(name, GEN_DNS, value);
  }
  GENERAL_NAMES *names = must(sk_GENERAL_NAME_new_null());
  must_ok(sk_GENERAL_NAME_push(names, name));
  int ok = X509_add1_ext_i2d(leaf, NID_subject_alt_name, names, critical, X509V3_ADD_DEFAULT) == 1;
  GENERAL_NAMES_free(names);
  return ok ? 0 : -1;
}

/* The self-signed CA certificate for |key|. pathlen:0: the CA signs leaves only. */
static X509 *make_ca_cert(EVP_PKEY *key, char *err, size_t errlen) {
  X509_NAME *name = must(X509_NAME_new());
  must_ok(X509_NAME_add_entry_by_NID(name, NID_organizationName, MBSTRING_ASC,
                                     (const unsigned char *)"sealgate", -1, -1, 0));
  must_ok(X509_NAME_add_entry_by_NID(name, NID_commonName, MBSTRING_ASC,
                                     (const unsigned char *)"sealgate proxy CA", -1, -1, 0));
  X509 *cert = new_cert(name, name, key, CA_DAYS);
  X509_NAME_free(name);
  /* The subject key identifier first: "keyid:always" copies it from the issuer, itself. */
  if (cert == NULL ||
      add_ext(cert, cert, NID_basic_constraints, "critical,CA:TRUE,pathlen:0") != 0 ||
      add_ext(cert, cert, NID_key_usage, "critical,keyCertSign,cRLSign") != 0 ||
      add_ext(cert, cert, NID_subject_key_identifier, "hash") != 0 ||
      add_ext(cert, cert, NID_authority_key_identifier, "keyid:always") != 0 ||
      X509_sign(cert, key, EVP_sha256()) <= 0) {
    ossl_fail(err, errlen, "cannot create the proxy CA certificate");
    X509_free(cert);
    return NULL;
  }
  return cert;
}

/* ---- Loading and creating the CA -------------------------------------------------------- */

static int no_passphrase(char *buf, int size, int rwflag, void *u) {
  (void)buf;
  (void)size;
  (void)rwflag;
  (void)u;
  return -1; /* an encrypted key is refused, never prompted for on a terminal */
}

/* Creates the key file, unless another process does so first. */
static int create_key(const ca_files *files, char *err, size_t errlen) {
  EVP_PKEY *key = EVP_EC_gen("P-256");
  if (key == NULL) {
    ossl_fail(err, errlen, "cannot generate the proxy CA key");
    return -1;
  }
  /* Secure memory: the PEM text is cleared when the BIO is freed. */
  BIO *bio = must(BIO_new(BIO_s_secmem()));
  must_ok(PEM_write_bio_PKCS8PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL));
  char *data;
  long n = BIO_get_mem_data(bio, &data);
  int rc = publish_file(files->dir, SG_CA_KEY_FILE, 0600, data, (size_t)n, "proxy CA key file", err,
                        errlen);
  BIO_free(bio);
  EVP_PKEY_free(key);
  return rc < 0 ? -1 : 0;
}

/* Makes sure the key file exists. A process creates the key before the certificate, so a
 * certificate seen before its key was looked for means the key was there too: if it is
 * missing now, it was removed, and a new key would not match the certificate sandboxes trust. */
static int ensure_key(const ca_files *files, char *err, size_t errlen) {
  int cert_missing = missing(files->cert);
  if (!missing(files->key))
    return 0;
  if (!cert_missing) {
    snprintf(err, errlen,
             "proxy CA key file %s is missing but its certificate %s exists: restore the key, "
             "or remove the certificate to create a new CA (which sandboxes must then trust)",
             files->key, files->cert);
    return -1;
  }
  return create_key(files, err, errlen);
}

static int load_key(sg_ca *ca, const ca_files *files, char *err, size_t errlen) {
  char *pem;
  size_t len;
  if (read_pem_file(files->key, "proxy CA key file", 1, &pem, &len, err, errlen) != 0)
    return -1;
  BIO *bio = mem_bio(pem, len);
  ca->key = PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, NULL);
  BIO_free(bio);
  OPENSSL_cleanse(pem, len);
  free(pem);
  if (ca->key == NULL) {
    ossl_fail(err, errlen, "proxy CA key file %s does not hold an unencrypted PEM private key",
              files->key);
    return -1;
  }
  return 0;
}

/* Issues the certificate for the loaded key, unless another process does so first. */
static int create_cert(const sg_ca *ca, const ca_files *files, char *err, size_t errlen) {
  X509 *cert = make_ca_cert(ca->key, err, errlen);
  if (cert == NULL)
    return -1;
  char *pem = cert_to_pem(cert);
  int rc = publish_file(files->dir, SG_CA_CERT_FILE, 0644, pem, strlen(pem), "proxy CA certificate",
                        err, errlen);
  free(pem);
  X509_free(cert);
  return rc < 0 ? -1 : 0;
}

/* Only a self-signed CA: the file is what sandboxes trust, so it must be the root itself (a
 * minted leaf is sent without intermediates). The signature check also catches a corrupted
 * certificate that still parses. */
static int check_cert(const sg_ca *ca, const ca_files *files, char *err, size_t errlen) {
  if (X509_check_ca(ca->cert) != 1)
    snprintf(err, errlen,
             "proxy CA certificate %s is not a CA certificate (no basicConstraints CA:TRUE "
             "with keyCertSign)",
             files->cert);
  else if (X509_self_signed(ca->cert, 1) != 1)
    snprintf(err, errlen,
             "proxy CA certificate %s is not self-signed, or its signature does not verify",
             files->cert);
  else if (X509_check_private_key(ca->cert, ca->key) != 1)
    snprintf(err, errlen,
             "proxy CA key file %s does not match the certificate %s: restore the pair (or "
             "remove both to create a new CA, which sandboxes must then trust)",
             files->key, files->cert);
  else if (X509_cmp_current_time(X509_get0_notAfter(ca->cert)) <= 0)
    snprintf(err, errlen,
             "proxy CA certificate %s has expired: remove it and %s to create a new CA",
             files->cert, files->key);
  else
    return 0;
  ERR_clear_error();
  return -1;
}

/* Loads the certificate; when it is missing beside its key (a first start stopped between the
 * two files, or another process is between them right now), issues it. */
static int load_cert(sg_ca *ca, const ca_files *files, char *err, size_t errlen) {
  char *pem;
  size_t len;
  int rc = read_pem_file(files->cert, "proxy CA certificate", 0, &pem, &len, err, errlen);
  if (rc == -ENOENT && create_cert(ca, files, err, errlen) == 0)
    rc = read_pem_file(files->cert, "proxy CA certificate", 0, &pem, &len, err, errlen);
  if (rc != 0)
    return -1;
  BIO *bio = mem_bio(pem, len);
  ca->cert = PEM_read_bio_X509(bio, NULL, NULL, NULL);
  BIO_free(bio);
  free(pem);
  if (ca->cert == NULL) {
    ossl_fail(err, errlen, "proxy CA certificate %s does not hold a PEM certificate", files->cert);
    return -1;
  }
  return check_cert(ca, files, err, errlen);
}

sg_ca *sg_ca_load_or_create(const char *data_dir, char *err, size_t errlen) {
  ca_files files = {.dir = make_data_dir(data_dir, err, errlen)};
  if (files.dir == NULL)
    return NULL;
  files.key = join_path(files.dir, SG_CA_KEY_FILE);
  files.cert = join_path(files.dir, SG_CA_CERT_FILE);
  sg_ca *ca = sg_calloc(1, sizeof(*ca));
  /* Every start, the first included, reads both files back: what is used is what is on disk. */
  int rc = ensure_key(&files, err, errlen) == 0 && load_key(ca, &files, err, errlen) == 0 &&
                   load_cert(ca, &files, err, errlen) == 0
               ? 0
               : -1;
  ca->cert_path = files.cert;
  free(files.key);
  free(files.dir);
  if (rc != 0) {
    sg_ca_free(ca);
    return NULL;
  }
  ca->cert_pem = cert_to_pem(ca->cert);
  return ca;
}

const char *sg_ca_cert_pem(const sg_ca *ca) {
  return ca->cert_pem;
}

const char *sg_ca_cert_path(const sg_ca *ca) {
  return ca->cert_path;
}

/* ---- Leaves ------------------------------------------------------------------------------ */

/* Reads |in| as an IPv4 or IPv6 literal (inet_pton: strict, unlike a2i_IPADDRESS, which takes
 * "1.2.3.4.evil.test" for 1.2.3.4) or else as a host name. Returns 0 or -1. */
static int parse_host(const char *in, leaf_host *out) {
  if (inet_pton(AF_INET, in, out->ip) == 1)
    out->ip_len = 4;
  else if (inet_pton(AF_INET6, in, out->ip) == 1)
    out->ip_len = 16;
  else
    out->ip_len = 0;
  if (out->ip_len == 0)
    return sg_host_normalize(in, strlen(in), out->text);
  inet_ntop(out->ip_len == 4 ? AF_INET : AF_INET6, out->ip, out->text, sizeof(out->text));
  return 0;
}

/* Never past the CA's own expiry: a leaf outliving its issuer would not verify anyway. */
static int cap_not_after(X509 *leaf, const X509 *ca_cert) {
  const ASN1_TIME *limit = X509_get0_notAfter(ca_cert);
  if (ASN1_TIME_compare(X509_get0_notAfter(leaf), limit) <= 0)
    return 0;
  return X509_set1_notAfter(leaf, limit) == 1 ? 0 : -1;
}

/* digitalSignature only: an ECDSA key signs the (EC)DHE handshake, it encrypts nothing. */
static int add_leaf_exts(X509 *leaf, X509 *ca_cert, const leaf_host *host, int san_critical) {
  return add_ext(leaf, ca_cert, NID_basic_constraints, "critical,CA:FALSE") != 0 ||
                 add_ext(leaf, ca_cert, NID_key_usage, "critical,digitalSignature") != 0 ||
                 add_ext(leaf, ca_cert, NID_ext_key_usage, "serverAuth") != 0 ||
                 add_ext(leaf, ca_cert, NID_subject_key_identifier, "hash") != 0 ||
                 add_ext(leaf, ca_cert, NID_authority_key_identifier, "keyid:always") != 0 ||
                 add_san(leaf, host, san_critical) != 0
             ? -1
             : 0;
}

/* Thread safety: |ca| is only read here (the certificate's fields and extensions, and the key
 * for signing, which OpenSSL 3 allows from several threads at once); everything written is the
 * new leaf's own. */
X509 *sg_ca_mint_leaf(sg_ca *ca, const char *host, EVP_PKEY **key_out, char *err, size_t errlen) {
  leaf_host h;
  if (parse_host(host, &h) != 0) {
    snprintf(err, errlen, "cannot mint a certificate: not a host name or an IP literal");
    return NULL;
  }
  if (X509_cmp_current_time(X509_get0_notAfter(ca->cert)) <= 0) {
    snprintf(err, errlen,
             "cannot mint a certificate for %s: the proxy CA certificate %s has "
             "expired",
             h.text, ca->cert_path);
    return NULL;
  }
  X509_NAME *subject = must(X509_NAME_new());
  int has_cn = strlen(h.text) <= CN_MAX;
  if (has_cn)
    must_ok(X509_NAME_add_entry_by_NID(subject, NID_commonName, MBSTRING_ASC,
                                       (const unsigned char *)h.text, -1, -1, 0));
  EVP_PKEY *key = EVP_EC_gen("P-256");
  X509 *leaf =
      key == NULL ? NULL : new_cert(subject, X509_get_subject_name(ca->cert), key, SG_CA_LEAF_DAYS);
  X509_NAME_free(subject);
  if (leaf == NULL || cap_not_after(leaf, ca->cert) != 0 ||
      add_leaf_exts(leaf, ca->cert, &h, !has_cn) != 0 ||
      X509_sign(leaf, ca->key, EVP_sha256()) <= 0) {
    ossl_fail(err, errlen, "cannot mint a certificate for %s", h.text);
    X509_free(leaf);
    EVP_PKEY_free(key);
    return NULL;
  }
  *key_out = key;
  return leaf;
}

void sg_ca_free(sg_ca *ca) {
  if (ca == NULL)
    return;
  EVP_PKEY_free(ca->key);
  X509_free(ca->cert);
  free(ca->cert_pem);
  free(ca->cert_path);
  free(ca);
}
