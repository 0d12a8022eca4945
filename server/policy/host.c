/* Host names and patterns. The egress proxy decides with sg_host_match where a real secret may
 * go, so every rule here errs on the side of rejecting: nothing is trimmed, decoded or guessed,
 * and only ASCII helpers are used (tolower and isalnum depend on the locale). */
#include "policy/host.h"

#include <string.h>

#define SG_LABEL_MAX 63

static char ascii_lower(char c) {
  return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

static int is_digit(char c) {
  return c >= '0' && c <= '9';
}

static int is_hex(char c) {
  return is_digit(c) || (c >= 'a' && c <= 'f');
}

/* |c| is lower-case already. */
static int is_label_char(char c) {
  return (c >= 'a' && c <= 'z') || is_digit(c) || c == '-' || c == '_';
}

static int ends_authority(char c) {
  return c == '/' || c == '\\' || c == '?' || c == '#';
}

static int is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

/* The WHATWG URL standard's "ends in a number" test, which is what decides whether resolvers
 * (inet_aton) and browsers read a name as IPv4: the last label is all digits ("127.1",
 * "2130706433", "1.2.3.04") or "0x" and hex digits ("0x7f000001"). Such a name is never a
 * host name here. |label| is lower-case. */
static int is_numeric_label(const char *label, size_t len) {
  size_t i = 0;
  if (len >= 2 && label[0] == '0' && label[1] == 'x') {
    for (i = 2; i < len && is_hex(label[i]); i++)
      ;
    return i == len;
  }
  for (; i < len && is_digit(label[i]); i++)
    ;
  return i == len;
}

static const char *check_label(const char *label, size_t len) {
  if (len == 0)
    return "has an empty label";
  if (len > SG_LABEL_MAX)
    return "has a label longer than 63 characters";
  if (label[0] == '-' || label[len - 1] == '-')
    return "has a label starting or ending with '-'";
  return NULL;
}

/* Lower-cases the host name |in| into |out| (room for |max| characters and a NUL), dropping
 * one trailing dot. Returns NULL, or the reason it is not a host name. */
static const char *normalize_name(const char *in, size_t len, char *out, size_t max) {
  if (len > 0 && in[len - 1] == '.')
    len--;
  if (len > max)
    return "is longer than 253 characters";
  size_t start = 0; /* of the current label */
  const char *why;
  for (size_t i = 0; i < len; i++) {
    if (in[i] == '.') {
      if ((why = check_label(out + start, i - start)) != NULL)
        return why;
      out[i] = '.';
      start = i + 1;
      continue;
    }
    char c = ascii_lower(in[i]);
    if ((unsigned char)c >= 0x80)
      return "is not ASCII (write an IDN in its xn-- form)";
    if (!is_label_char(c))
      return "has a character other than letters, digits, '-', '_' and '.'";
    out[i] = c;
  }
  out[len] = '\0';
  if ((why = check_label(out + start, len - start)) != NULL)
    return why;
  if (is_numeric_label(out + start, len - start))
    return "is an IP literal";
  return NULL;
}

int sg_host_normalize(const char *in, size_t len, char out[SG_HOST_MAX + 1]) {
  if (normalize_name(in, len, out, SG_HOST_MAX) != NULL) {
    out[0] = '\0';
    return -1;
  }
  return 0;
}

static int contains(const char *in, size_t len, const char *needle) {
  size_t n = strlen(needle);
  for (size_t i = 0; i + n <= len; i++)
    if (memcmp(in + i, needle, n) == 0)
      return 1;
  return 0;
}

static size_t count(const char *in, size_t len, char c) {
  size_t n = 0;
  for (size_t i = 0; i < len; i++)
    n += in[i] == c;
  return n;
}

/* Recognizes what users paste instead of a host (URLs, host:port, bracketed IPv6) so that the
 * message says what is wrong rather than just "a bad character". The authority of a URL ends at
 * the first '/', '\', '?' or '#'; an '@' before that is userinfo. Returns NULL if none. */
static const char *url_parts(const char *in, size_t len) {
  if (contains(in, len, "://"))
    return "has a scheme";
  for (size_t i = 0; i < len; i++)
    if (is_space(in[i]))
      return "contains whitespace";
  size_t end = 0;
  while (end < len && !ends_authority(in[end]))
    end++;
  if (memchr(in, '@', end))
    return "has userinfo";
  if (end < len)
    return in[end] == '?' ? "has a query" : in[end] == '#' ? "has a fragment" : "has a path";
  if (in[0] == '[')
    return "is an IP literal";
  size_t colons = count(in, len, ':');
  if (colons > 1)
    return "is an IP literal"; /* IPv6, including the IPv4-mapped ::ffff:a.b.c.d */
  if (colons == 1)
    return "has a port";
  return NULL;
}

static const char *normalize_pattern(const char *in, size_t len, char *out) {
  if (len == 0)
    return "is empty";
  const char *why = url_parts(in, len);
  if (why)
    return why;
  if (len == 1 && in[0] == '*') {
    memcpy(out, "*", 2);
    return NULL;
  }
  size_t off = len >= 2 && in[0] == '*' && in[1] == '.' ? 2 : 0;
  if (memchr(in + off, '*', len - off))
    return "has '*' outside a leading '*.' label";
  /* "*." is rejected rather than read as "*": a truncated "*.example.com" must not widen to
   * every host. */
  if (off && (len == 2 || (len == 3 && in[2] == '.')))
    return "has nothing after '*.'";
  memcpy(out, "*.", off);
  return normalize_name(in + off, len - off, out + off, SG_HOST_MAX - off);
}

int sg_host_pattern_normalize(const char *in, size_t len, char out[SG_HOST_MAX + 1],
                              const char **why) {
  const char *reason = normalize_pattern(in, len, out);
  if (why)
    *why = reason;
  if (reason) {
    out[0] = '\0';
    return -1;
  }
  return 0;
}

int sg_host_match(const char *pattern, const char *host) {
  if (!pattern || !host || !host[0])
    return 0;
  if (strcmp(pattern, "*") == 0)
    return 1;
  if (pattern[0] != '*')
    return strcmp(pattern, host) == 0;
  /* "*.suffix": the host must be longer than ".suffix" and end with it, so that at least one
   * whole label precedes the dot; the apex and "evilsuffix" fail. */
  const char *dot_suffix = pattern + 1;
  size_t ns = strlen(dot_suffix), nh = strlen(host);
  return dot_suffix[0] == '.' && nh > ns && memcmp(host + nh - ns, dot_suffix, ns) == 0;
}

/* Nonzero if |outer| matches every host |inner| matches. */
static int covers(const char *outer, const char *inner) {
  if (strcmp(outer, "*") == 0 || strcmp(outer, inner) == 0)
    return 1;
  if (strncmp(outer, "*.", 2) != 0 || strcmp(inner, "*") == 0)
    return 0;
  /* "*.d" covers a host or a wildcard "*.e" below d: ending in ".d" (for "*.e", e == d is
   * the equal case above or e ends in ".d"). */
  const char *apex = outer + 1; /* ".d" */
  size_t n = strlen(inner), m = strlen(apex);
  return n > m && strcmp(inner + n - m, apex) == 0;
}

const char *sg_host_pattern_intersect(const char *a, const char *b) {
  if (covers(a, b))
    return b;
  if (covers(b, a))
    return a;
  return NULL;
}
