#include "service/validate.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "crypto/token.h"
#include "policy/host.h"

#define SG_NAME_MAX  128
#define SG_ID_MAX    64
#define SG_HOSTS_MAX 256
#define SG_PAGE_DEF  50
#define SG_PAGE_MAX  1000
#define SG_QUOTE_MAX 64 /* bytes of an offending value shown in a message */

__attribute__((format(printf, 3, 4))) static int fail(char *err, size_t errlen, const char *fmt,
                                                      ...) {
  if (err && errlen > 0) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
  }
  return -1;
}

static int is_alpha(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

static int is_digit(char c) {
  return c >= '0' && c <= '9';
}

static int is_store_name_char(char c) {
  return is_alpha(c) || is_digit(c) || c == '.' || c == '_' || c == '-';
}

static int is_env_char(char c) {
  return is_alpha(c) || is_digit(c) || c == '_';
}

static int is_id_char(char c) {
  return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') || c == '-';
}

/* Nonzero if |s| is 1..|max| characters all accepted by |ok|; reads at most |max| + 1 bytes. */
static int all_of(const char *s, size_t max, int (*ok)(char)) {
  size_t i = 0;
  for (; s[i] && i <= max; i++)
    if (!ok(s[i]))
      return 0;
  return i >= 1 && i <= max;
}

int sg_validate_store_name(const char *field, const char *s, char *err, size_t errlen) {
  if (s && all_of(s, SG_NAME_MAX, is_store_name_char))
    return 0;
  return fail(err, errlen, "%s: must be 1-128 characters of A-Z a-z 0-9 . _ -", field);
}

int sg_validate_secret_name(const char *field, const char *s, char *err, size_t errlen) {
  if (s && (is_alpha(s[0]) || s[0] == '_') && all_of(s, SG_NAME_MAX, is_env_char))
    return 0;
  /* The name is not quoted back: a value pasted into the name field must not reach logs. */
  return fail(err, errlen,
              "%s: must be an environment variable name: a letter or '_', then up to 127 "
              "letters, digits or '_'",
              field);
}

int sg_validate_value(const char *field, size_t len, char *err, size_t errlen) {
  if (len == 0)
    return fail(err, errlen, "%s: must not be empty", field);
  if (len > SG_VALUE_MAX)
    return fail(err, errlen, "%s: must be at most 64 KiB (%d bytes)", field, SG_VALUE_MAX);
  return 0;
}

#define ID_RULE "%s: must be an id such as 5f0c2a9e-3b1d-4e6f-8a7c-9d0e1f2a3b4c"

int sg_validate_id(const char *field, const char *s, char *err, size_t errlen) {
  if (s && all_of(s, SG_ID_MAX, is_id_char))
    return 0;
  return fail(err, errlen, ID_RULE, field);
}

int sg_validate_uuid(const char *field, const char *s, char *err, size_t errlen) {
  if (s && sg_uuid_is_canonical(s))
    return 0;
  return fail(err, errlen, ID_RULE, field);
}

/* Copies at most SG_QUOTE_MAX bytes of |s| into |out| (SG_QUOTE_MAX + 4 bytes) for a message:
 * bytes outside printable ASCII, and '"' and '\', become '?' so that the message stays one
 * readable line that cannot be mistaken for another field; "..." marks a cut. */
static void quote_value(const char *s, size_t len, char *out) {
  size_t n = len < SG_QUOTE_MAX ? len : SG_QUOTE_MAX;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    out[i] = c >= 0x20 && c < 0x7f && c != '"' && c != '\\' ? (char)c : '?';
  }
  strcpy(out + n, len > n ? "..." : "");
}

static int seen(char **list, size_t n, const char *s) {
  for (size_t i = 0; i < n; i++)
    if (strcmp(list[i], s) == 0)
      return 1;
  return 0;
}

int sg_validate_hosts(const char *field, char *const *in, size_t n, sg_arena *arena, char ***out,
                      size_t *n_out, char *err, size_t errlen) {
  *out = NULL;
  *n_out = 0;
  if (n > SG_HOSTS_MAX)
    return fail(err, errlen, "%s: must have at most %d entries, has %zu", field, SG_HOSTS_MAX, n);
  char **list = sg_arena_alloc(arena, n * sizeof(*list));
  size_t k = 0;
  for (size_t i = 0; i < n; i++) {
    const char *s = in[i] ? in[i] : "";
    size_t len = strlen(s);
    char norm[SG_HOST_MAX + 1];
    const char *why;
    if (sg_host_pattern_normalize(s, len, norm, &why) != 0) {
      char shown[SG_QUOTE_MAX + 4];
      quote_value(s, len, shown);
      return fail(err, errlen, "%s[%zu]: \"%s\" %s", field, i, shown, why);
    }
    if (!seen(list, k, norm))
      list[k++] = sg_arena_strndup(arena, norm, strlen(norm));
  }
  *out = list;
  *n_out = k;
  return 0;
}

int sg_validate_page_size(const char *field, int32_t in, int32_t *out, char *err, size_t errlen) {
  if (in < 0 || in > SG_PAGE_MAX)
    return fail(err, errlen, "%s: must be 0 (the default, %d) to %d", field, SG_PAGE_DEF,
                SG_PAGE_MAX);
  *out = in == 0 ? SG_PAGE_DEF : in;
  return 0;
}

/* The number written in the |n| digits at |s|, or -1 if they are not all digits. */
static int number(const char *s, int n) {
  int v = 0;
  for (int i = 0; i < n; i++) {
    if (!is_digit(s[i]))
      return -1;
    v = v * 10 + (s[i] - '0');
  }
  return v;
}

static int days_in_month(int year, int month) {
  static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  int leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
  return month == 2 && leap ? 29 : days[month - 1];
}

/* Nonzero if |s| is "Z", "z" or "+HH:MM" / "-HH:MM", and nothing after it. */
static int zone_ok(const char *s) {
  if (s[0] == 'Z' || s[0] == 'z')
    return s[1] == '\0';
  if (s[0] != '+' && s[0] != '-')
    return 0;
  int hours = number(s + 1, 2);
  if (hours < 0 || hours > 23 || s[3] != ':')
    return 0;
  int minutes = number(s + 4, 2);
  return minutes >= 0 && minutes <= 59 && s[6] == '\0';
}

int sg_validate_time(const char *field, const char *s, char *err, size_t errlen) {
  static const char shape[] = "dddd-dd-ddTdd:dd:dd";
  int ok = s != NULL;
  size_t i = 0;
  /* Stops at the first byte out of shape, so nothing past a short string's NUL is read. */
  for (; ok && shape[i]; i++)
    ok = shape[i] == 'd'   ? is_digit(s[i])
         : shape[i] == 'T' ? s[i] == 'T' || s[i] == 't'
                           : s[i] == shape[i];
  if (ok) {
    int year = number(s, 4), month = number(s + 5, 2), day = number(s + 8, 2);
    ok = year >= 1 && month >= 1 && month <= 12 && day >= 1 && day <= days_in_month(year, month) &&
         number(s + 11, 2) <= 23 && number(s + 14, 2) <= 59 &&
         number(s + 17, 2) <= 60 /* a leap second */;
  }
  if (ok && s[i] == '.') {
    size_t digits = 0;
    while (is_digit(s[i + 1 + digits]))
      digits++;
    ok = digits >= 1 && digits <= 9;
    i += 1 + digits;
  }
  if (ok && zone_ok(s + i))
    return 0;
  return fail(err, errlen, "%s: must be an RFC 3339 time such as 2026-11-27T22:41:40Z", field);
}
