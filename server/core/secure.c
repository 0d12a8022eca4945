#include "core/secure.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>

#include <openssl/crypto.h>

sg_secure_state sg_secure_process(char *why, size_t whylen) {
  if (whylen > 0)
    why[0] = '\0';
  (void)prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
  struct rlimit none = {0, 0};
  (void)setrlimit(RLIMIT_CORE, &none);
  if (CRYPTO_secure_malloc_initialized())
    return SG_SECURE_OK;
  switch (CRYPTO_secure_malloc_init(SG_SECURE_HEAP_BYTES, 32)) {
  case 1:
    return SG_SECURE_OK;
  case 2: {
    struct rlimit lim;
    if (getrlimit(RLIMIT_MEMLOCK, &lim) == 0 && lim.rlim_cur != RLIM_INFINITY)
      snprintf(why, whylen,
               "key memory could not be locked (RLIMIT_MEMLOCK is %llu bytes, %d needed): "
               "keys may reach swap",
               (unsigned long long)lim.rlim_cur, SG_SECURE_HEAP_BYTES);
    else
      snprintf(why, whylen, "key memory could not be locked (%s): keys may reach swap",
               strerror(errno));
    return SG_SECURE_UNLOCKED;
  }
  default:
    snprintf(why, whylen, "no secure heap for keys (out of memory?): keys in ordinary memory");
    return SG_SECURE_NO_HEAP;
  }
}
