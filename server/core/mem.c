#include "core/mem.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

_Noreturn void sg_fatal(const char *what) {
  fprintf(stderr, "sealgate: fatal: %s\n", what);
  abort();
}

void *sg_malloc(size_t size) {
  void *p = malloc(size ? size : 1);
  if (p == NULL)
    sg_fatal("out of memory");
  return p;
}

void *sg_calloc(size_t n, size_t size) {
  void *p = calloc(n ? n : 1, size ? size : 1);
  if (p == NULL)
    sg_fatal("out of memory");
  return p;
}

void *sg_realloc(void *ptr, size_t size) {
  void *p = realloc(ptr, size ? size : 1);
  if (p == NULL)
    sg_fatal("out of memory");
  return p;
}

char *sg_strndup(const char *s, size_t n) {
  char *p = sg_malloc(n + 1);
  memcpy(p, s, n);
  p[n] = '\0';
  return p;
}

char *sg_strdup(const char *s) {
  return sg_strndup(s, strlen(s));
}
