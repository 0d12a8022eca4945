#include "db/pgtext.h"

#include <string.h>

char *sg_pg_array(sg_arena *a, char *const *items, size_t n) {
  size_t cap = 3;
  for (size_t i = 0; i < n; i++)
    cap += 2 * strlen(items[i]) + 3; /* quotes, separator, every byte possibly escaped */
  char *out = sg_arena_alloc(a, cap), *p = out;
  *p++ = '{';
  for (size_t i = 0; i < n; i++) {
    if (i > 0)
      *p++ = ',';
    *p++ = '"';
    for (const char *s = items[i]; *s; s++) {
      if (*s == '"' || *s == '\\')
        *p++ = '\\';
      *p++ = *s;
    }
    *p++ = '"';
  }
  *p++ = '}';
  *p = '\0';
  return out;
}

/* One element starting at |*pp|: quoted (with backslash escapes) or bare up to ',' or '}'.
 * Returns the element's length written to |out|, or -1. */
static long element(const char **pp, char *out, int *is_null) {
  const char *p = *pp;
  long n = 0;
  *is_null = 0;
  if (*p == '"') {
    for (p++; *p != '"'; p++) {
      if (*p == '\0')
        return -1;
      if (*p == '\\' && *++p == '\0')
        return -1;
      out[n++] = *p;
    }
    p++;
  } else {
    while (*p != ',' && *p != '}' && *p != '\0')
      out[n++] = *p++;
    if (n == 0)
      return -1;
    if (n == 4 && memcmp(out, "NULL", 4) == 0) {
      *is_null = 1;
      n = 0;
    }
  }
  *pp = p;
  return n;
}

int sg_pg_array_parse(sg_arena *a, const char *text, char ***items, size_t *n) {
  size_t len = strlen(text);
  *items = NULL;
  *n = 0;
  if (len < 2 || text[0] != '{' || text[len - 1] != '}')
    return -1;
  size_t count = 1;
  for (size_t i = 1; i + 1 < len; i++)
    count += text[i] == ','; /* an upper bound: commas inside quotes count too */
  char **out = sg_arena_alloc(a, count * sizeof(*out));
  char *scratch = sg_arena_alloc(a, len + 1);
  const char *p = text + 1;
  size_t k = 0;
  if (*p == '}') {
    *items = out;
    return 0;
  }
  for (;;) {
    int is_null;
    long m = element(&p, scratch, &is_null);
    if (m < 0 || k == count)
      return -1;
    out[k++] = sg_arena_strndup(a, scratch, (size_t)m);
    if (*p == '}' && p[1] == '\0')
      break;
    if (*p != ',')
      return -1;
    p++;
  }
  *items = out;
  *n = k;
  return 0;
}

static int hex(char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

int sg_pg_bytea_parse(sg_arena *a, const char *text, uint8_t **out, size_t *len) {
  size_t n = strlen(text);
  if (n < 2 || text[0] != '\\' || text[1] != 'x' || (n - 2) % 2 != 0)
    return -1;
  uint8_t *buf = sg_arena_alloc(a, (n - 2) / 2);
  for (size_t i = 0; i < (n - 2) / 2; i++) {
    int hi = hex(text[2 + 2 * i]), lo = hex(text[3 + 2 * i]);
    if (hi < 0 || lo < 0)
      return -1;
    buf[i] = (uint8_t)(hi << 4 | lo);
  }
  *out = buf;
  *len = (n - 2) / 2;
  return 0;
}
