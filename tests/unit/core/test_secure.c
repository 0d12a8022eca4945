/* Process hardening for key holders: no core dumps, and key bytes in OpenSSL's secure heap,
 * which the kernel must report as locked ("lo") and excluded from dumps ("dd") in
 * /proc/self/smaps. */
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "core/secure.h"
#include "crypto/keys.h"
#include "service/keyring.h"

/* The VmFlags line of the mapping that holds |p|, or "" when none does. */
static void vm_flags_of(const void *p, char *out, size_t outlen) {
  FILE *f = fopen("/proc/self/smaps", "r");
  cr_assert_not_null(f);
  char line[512];
  int inside = 0;
  out[0] = '\0';
  uintptr_t a = (uintptr_t)p;
  while (fgets(line, sizeof(line), f) != NULL) {
    unsigned long lo, hi;
    if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && strchr(line, '-') < strchr(line, ' ')) {
      inside = a >= lo && a < hi;
      continue;
    }
    if (inside && strncmp(line, "VmFlags:", 8) == 0) {
      snprintf(out, outlen, "%s", line + 8);
      break;
    }
  }
  fclose(f);
}

static int has_flag(const char *flags, const char *flag) {
  char padded[512];
  snprintf(padded, sizeof(padded), " %s ", flags);
  for (char *q = padded; *q; q++)
    if (*q == '\n')
      *q = ' ';
  char want[8];
  snprintf(want, sizeof(want), " %s ", flag);
  return strstr(padded, want) != NULL;
}

Test(secure, process_is_not_dumpable_and_writes_no_core) {
  char why[256];
  sg_secure_state st = sg_secure_process(why, sizeof(why));
  cr_assert_neq(st, SG_SECURE_NO_HEAP, "%s", why);
  cr_assert_eq(prctl(PR_GET_DUMPABLE, 0, 0, 0, 0), 0);
  struct rlimit lim;
  cr_assert_eq(getrlimit(RLIMIT_CORE, &lim), 0);
  cr_assert_eq(lim.rlim_cur, 0);
  cr_assert_eq(lim.rlim_max, 0);
  cr_assert(CRYPTO_secure_malloc_initialized());
  cr_assert_eq(sg_secure_process(why, sizeof(why)), SG_SECURE_OK, "idempotent");
}

Test(secure, key_bytes_live_in_locked_memory_left_out_of_dumps) {
  char why[256];
  sg_secure_state st = sg_secure_process(why, sizeof(why));
  uint8_t *k = OPENSSL_secure_zalloc(SG_KEY_LEN);
  cr_assert_not_null(k);
  cr_assert(CRYPTO_secure_allocated(k));
  char flags[512];
  vm_flags_of(k, flags, sizeof(flags));
  cr_assert(has_flag(flags, "dd"), "not excluded from core dumps: %s", flags);
  if (st == SG_SECURE_OK)
    cr_assert(has_flag(flags, "lo"), "not locked: %s", flags);
  else
    cr_log_warn("heap not locked here (%s); lock check skipped", why);
  uint8_t *plain = malloc(SG_KEY_LEN);
  vm_flags_of(plain, flags, sizeof(flags));
  cr_assert_not(has_flag(flags, "dd"), "the check can tell ordinary memory apart: %s", flags);
  free(plain);
  OPENSSL_secure_clear_free(k, SG_KEY_LEN);
}

Test(secure, keyring_holds_the_root_key_in_the_secure_heap_and_zeroes_it) {
  char why[256];
  sg_secure_process(why, sizeof(why));
  char path[] = "/tmp/sealgate-secure-XXXXXX";
  int fd = mkstemp(path);
  cr_assert_geq(fd, 0);
  const char *hex = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n";
  cr_assert_eq(write(fd, hex, strlen(hex)), (ssize_t)strlen(hex));
  close(fd);
  char err[256];
  cr_assert_eq(sg_keyring_init(path, err, sizeof(err)), 0, "%s", err);
  unlink(path);
  const sg_root_key *root = sg_keyring_root();
  cr_assert_not_null(root);
  cr_assert(CRYPTO_secure_allocated(root));
  cr_assert_eq(root->key[1], 0x11);
  sg_keyring_cleanup();
  cr_assert_null(sg_keyring_root());
}
