#include "core/flags.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/mem.h"

static void env_name(const char *flag, char *out, size_t cap) {
  size_t j = 0;
  const char *prefix = "SEALGATE_";
  while (*prefix && j + 1 < cap)
    out[j++] = *prefix++;
  for (const char *p = flag; *p && j + 1 < cap; p++)
    out[j++] = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
  out[j] = '\0';
}

int sg_flags_parse_bytes(const char *s, long long *out) {
  errno = 0;
  char *end;
  long long v = strtoll(s, &end, 10);
  if (end == s || errno != 0 || v < 0)
    return -1;
  long long mul = 1;
  if (*end != '\0') {
    static const struct {
      const char *suffix;
      long long mul;
    } units[] = {{"B", 1}, {"KiB", 1LL << 10}, {"MiB", 1LL << 20}, {"GiB", 1LL << 30}};
    size_t i;
    for (i = 0; i < SG_ARRAY_LEN(units); i++)
      if (strcmp(end, units[i].suffix) == 0)
        break;
    if (i == SG_ARRAY_LEN(units))
      return -1;
    mul = units[i].mul;
  }
  if (v > (1LL << 62) / mul)
    return -1;
  *out = v * mul;
  return 0;
}

static int parse_bool(const char *s, int *out) {
  if (strcmp(s, "true") == 0 || strcmp(s, "1") == 0 || strcmp(s, "yes") == 0)
    *out = 1;
  else if (strcmp(s, "false") == 0 || strcmp(s, "0") == 0 || strcmp(s, "no") == 0)
    *out = 0;
  else
    return -1;
  return 0;
}

static void list_add(sg_strlist *l, const char *item) {
  l->items = sg_realloc(l->items, (l->n + 1) * sizeof(*l->items));
  l->items[l->n++] = item;
}

/* Stores |value| for |f|. |from_env| only changes how a list is read (comma-separated). */
static int assign(const sg_flag *f, const char *value, int from_env, const char *origin, char *err,
                  size_t errlen) {
  long long v;
  switch (f->type) {
  case SG_FLAG_STR:
    *(const char **)f->dst = value;
    return 0;
  case SG_FLAG_BOOL:
    if (parse_bool(value, f->dst) != 0) {
      snprintf(err, errlen, "%s: expected true or false, got \"%.64s\"", origin, value);
      return -1;
    }
    return 0;
  case SG_FLAG_INT:
  case SG_FLAG_BYTES: {
    int bad;
    if (f->type == SG_FLAG_BYTES) {
      bad = sg_flags_parse_bytes(value, &v) != 0;
    } else {
      char *end;
      errno = 0;
      v = strtoll(value, &end, 10);
      bad = end == value || *end != '\0' || errno != 0;
    }
    if (bad || v < f->min || v > f->max) {
      snprintf(err, errlen, "%s: expected %s from %lld to %lld, got \"%.64s\"", origin,
               f->type == SG_FLAG_BYTES ? "a size in bytes (or KiB, MiB)" : "an integer", f->min,
               f->max, value);
      return -1;
    }
    *(long long *)f->dst = v;
    return 0;
  }
  case SG_FLAG_LIST: {
    sg_strlist *l = f->dst;
    if (!from_env) {
      list_add(l, value);
      return 0;
    }
    /* Each item is its own copy, so that a command-line list replacing this one can free
     * them (see list_reset) and an empty value allocates nothing. */
    for (const char *p = value; *p != '\0';) {
      size_t len = strcspn(p, ",");
      if (len > 0)
        list_add(l, sg_strndup(p, len));
      p += len + (p[len] == ',');
    }
    return 0;
  }
  }
  return -1;
}

static const sg_flag *find(const sg_flag *flags, size_t n, const char *name, size_t len) {
  for (size_t i = 0; i < n; i++)
    if (strlen(flags[i].name) == len && memcmp(flags[i].name, name, len) == 0)
      return &flags[i];
  return NULL;
}

/* Empties a list before its first item from the environment or the command line. |owned| says
 * the list was filled from the environment (its array and items are ours to free); otherwise
 * it holds the caller's default, whose array must not be grown or freed, only let go of. */
static void list_reset(sg_strlist *l, int owned) {
  if (owned) {
    for (size_t i = 0; i < l->n; i++)
      free((char *)l->items[i]);
    free(l->items);
  }
  l->items = NULL;
  l->n = 0;
}

/* Applies the SEALGATE_* variables; sets from_env[i] for each list it fills. */
static int apply_env(const sg_flag *flags, size_t n, unsigned char *from_env, char *err,
                     size_t errlen) {
  for (size_t i = 0; i < n; i++) {
    char name[96];
    env_name(flags[i].name, name, sizeof(name));
    const char *v = flags[i].no_env ? NULL : getenv(name);
    if (v == NULL)
      continue;
    if (flags[i].type == SG_FLAG_LIST) {
      list_reset(flags[i].dst, 0); /* the default belongs to the caller */
      from_env[i] = 1;
    }
    if (assign(&flags[i], v, 1, name, err, errlen) != 0)
      return -1;
  }
  return 0;
}

int sg_flags_parse(const sg_flag *flags, size_t n, int argc, char **argv, sg_positionals *pos,
                   char *err, size_t errlen) {
  unsigned char *from_env = sg_calloc(n, 1);
  if (apply_env(flags, n, from_env, err, errlen) != 0) {
    free(from_env);
    return SG_FLAGS_ERROR;
  }
  /* A list given on the command line replaces the one from the environment. */
  unsigned char *seen = sg_calloc(n, 1);
  int rc = SG_FLAGS_OK;
  for (int i = 0; i < argc && rc == SG_FLAGS_OK; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      rc = SG_FLAGS_HELP;
      break;
    }
    if (strncmp(a, "--", 2) != 0 || a[2] == '\0') {
      if (pos == NULL) {
        snprintf(err, errlen, "unexpected argument \"%.64s\"", a);
        rc = SG_FLAGS_ERROR;
        break;
      }
      pos->args = sg_realloc(pos->args, (pos->n + 1) * sizeof(char *));
      pos->args[pos->n++] = argv[i];
      continue;
    }
    const char *name = a + 2, *eq = strchr(name, '=');
    size_t len = eq ? (size_t)(eq - name) : strlen(name);
    const sg_flag *f = find(flags, n, name, len);
    if (f == NULL) {
      snprintf(err, errlen, "unknown flag --%.*s (see --help)", (int)(len > 64 ? 64 : len), name);
      rc = SG_FLAGS_ERROR;
      break;
    }
    const char *value = eq ? eq + 1 : NULL;
    if (value == NULL && f->type == SG_FLAG_BOOL)
      value = "true";
    if (value == NULL) {
      if (i + 1 >= argc) {
        snprintf(err, errlen, "--%s needs a value (%s)", f->name, f->metavar ? f->metavar : "");
        rc = SG_FLAGS_ERROR;
        break;
      }
      value = argv[++i];
    }
    size_t idx = (size_t)(f - flags);
    if (f->type == SG_FLAG_LIST && !seen[idx])
      list_reset(f->dst, from_env[idx]);
    seen[idx] = 1;
    char origin[80];
    snprintf(origin, sizeof(origin), "--%s", f->name);
    if (assign(f, value, 0, origin, err, errlen) != 0)
      rc = SG_FLAGS_ERROR;
  }
  free(seen);
  free(from_env);
  return rc;
}

void sg_flags_usage(FILE *out, const sg_flag *flags, size_t n) {
  for (size_t i = 0; i < n; i++) {
    char left[96], env[96];
    snprintf(left, sizeof(left), "--%s%s%s", flags[i].name, flags[i].metavar ? " " : "",
             flags[i].metavar ? flags[i].metavar : "");
    env_name(flags[i].name, env, sizeof(env));
    if (flags[i].no_env)
      fprintf(out, "  %-36s %s\n", left, flags[i].help);
    else
      fprintf(out, "  %-36s %s [%s]\n", left, flags[i].help, env);
  }
}
