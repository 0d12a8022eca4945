/* Keeping key material out of core dumps, swap and other processes (SPEC §4): a process that
 * holds the root key or data keys calls sg_secure_process first thing. It
 *
 *   - marks the process non-dumpable (prctl PR_SET_DUMPABLE 0): no core file, and no ptrace
 *     or /proc/PID/mem access by other processes of the same user;
 *   - sets the core-file size limit to 0, for the children it starts too;
 *   - sets up OpenSSL's secure heap (CRYPTO_secure_malloc_init): pages locked in memory
 *     (mlock), excluded from core dumps (MADV_DONTDUMP), with guard pages around them, where
 *     OPENSSL_secure_zalloc puts the root key and the cached data keys. */
#ifndef SG_CORE_SECURE_H
#define SG_CORE_SECURE_H

#include <stddef.h>

/* The secure heap's size: the data-key cache (4096 x 32 bytes) and the root keys, with room. */
#define SG_SECURE_HEAP_BYTES (256 * 1024)

typedef enum {
  SG_SECURE_OK,       /* all of the above */
  SG_SECURE_UNLOCKED, /* the heap is there but could not be locked (RLIMIT_MEMLOCK too low,
                         as in many containers): keys could reach swap */
  SG_SECURE_NO_HEAP,  /* no secure heap: keys live in ordinary memory */
} sg_secure_state;

/* Idempotent. Describes what could not be done in |why| (for a warning) unless SG_SECURE_OK.
 * Never fails the process: dumps are off whatever the heap's state. */
sg_secure_state sg_secure_process(char *why, size_t whylen);

#endif
