/* Allocation policy: allocation failure is fatal, as in h2o and Redis. A secrets gateway that
 * cannot allocate cannot serve safely, and aborting here means no caller ever checks for NULL
 * or carries an error path that is never tested. */
#ifndef SG_CORE_MEM_H
#define SG_CORE_MEM_H

#include <stddef.h>

/* Each returns valid memory or aborts the process with a message on stderr. */
void *sg_malloc(size_t size);
void *sg_calloc(size_t n, size_t size);
void *sg_realloc(void *ptr, size_t size);
char *sg_strdup(const char *s);
char *sg_strndup(const char *s, size_t n);

/* Reports an unrecoverable condition and aborts. */
_Noreturn void sg_fatal(const char *what);

#define SG_CONTAINER_OF(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))
#define SG_ARRAY_LEN(a)                    (sizeof(a) / sizeof((a)[0]))

#endif
