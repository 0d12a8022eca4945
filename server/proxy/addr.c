/* Where the egress proxy may connect: authorities, address judgement, the allow list, fixed DNS
 * answers and resolution off the loop. Like policy/host.c, every rule errs on the side of
 * refusing, and only ASCII helpers are used (the <ctype.h> ones depend on the locale). */
#include "proxy/addr.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/mem.h"
#include "runtime/work.h"

#define V4(a, b, c, d)                                                                             \
  ((uint32_t)(a) << 24 | (uint32_t)(b) << 16 | (uint32_t)(c) << 8 | (uint32_t)(d))

/* An IP address without a port: IPv4 in b[0..3], in network order like IPv6. */
typedef struct {
  int family;
  uint8_t b[16];
} ip_addr;

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t errlen, const char *fmt, ...) {
  if (err == NULL || errlen == 0)
    return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}

static int is_digit(char c) {
  return c >= '0' && c <= '9';
}

static char ascii_lower(char c) {
  return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

/* The value of |c| as a digit in |base| (8, 10 or 16, lower-case), or -1. */
static int digit_value(char c, unsigned base) {
  int v = is_digit(c) ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
  return v >= 0 && (unsigned)v < base ? v : -1;
}

static uint32_t load_be32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void store_be32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24);
  p[1] = (uint8_t)(v >> 16);
  p[2] = (uint8_t)(v >> 8);
  p[3] = (uint8_t)v;
}

/* Nonzero if the first |bits| bits of |a| and |b| are equal. */
static int prefix_equal(const uint8_t *a, const uint8_t *b, unsigned bits) {
  unsigned whole = bits / 8, rest = bits % 8;
  if (memcmp(a, b, whole) != 0)
    return 0;
  if (rest == 0)
    return 1;
  uint8_t mask = (uint8_t)(0xff << (8 - rest));
  return ((a[whole] ^ b[whole]) & mask) == 0;
}

/* Clears the bits of |b| (|n| bytes) past the first |bits|. */
static void clear_host_bits(uint8_t *b, size_t n, unsigned bits) {
  for (size_t i = 0; i < n; i++) {
    unsigned keep = bits >= 8 * (i + 1) ? 8 : bits > 8 * i ? bits - 8 * i : 0;
    b[i] &= (uint8_t)(0xff00 >> keep);
  }
}

static int from_sockaddr(const struct sockaddr *sa, ip_addr *out) {
  if (sa == NULL)
    return -1;
  if (sa->sa_family == AF_INET) {
    out->family = AF_INET;
    memcpy(out->b, &((const struct sockaddr_in *)sa)->sin_addr, 4);
    return 0;
  }
  if (sa->sa_family == AF_INET6) {
    out->family = AF_INET6;
    memcpy(out->b, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
    return 0;
  }
  return -1;
}

static void set_port(struct sockaddr_storage *ss, uint16_t port) {
  if (ss->ss_family == AF_INET)
    ((struct sockaddr_in *)ss)->sin_port = htons(port);
  else if (ss->ss_family == AF_INET6)
    ((struct sockaddr_in6 *)ss)->sin6_port = htons(port);
}

/* Fills |ss| with the address |b| of |family| (4 or 16 bytes) and |port|. */
static void to_sockaddr(struct sockaddr_storage *ss, int family, const void *b, uint16_t port) {
  memset(ss, 0, sizeof(*ss));
  if (family == AF_INET) {
    struct sockaddr_in *sin = (struct sockaddr_in *)ss;
    sin->sin_family = AF_INET;
    memcpy(&sin->sin_addr, b, 4);
  } else {
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
    sin6->sin6_family = AF_INET6;
    memcpy(&sin6->sin6_addr, b, 16);
  }
  set_port(ss, port);
}

/* Strict IP text (inet_pton: no "127.1", no zone id) of |len| bytes. Returns 0 or -1. */
static int parse_ip_text(const char *s, size_t len, ip_addr *out) {
  char buf[INET6_ADDRSTRLEN];
  if (len == 0 || len >= sizeof(buf))
    return -1;
  memcpy(buf, s, len);
  buf[len] = '\0';
  if (inet_pton(AF_INET, buf, out->b) == 1) {
    out->family = AF_INET;
    return 0;
  }
  if (inet_pton(AF_INET6, buf, out->b) == 1) {
    out->family = AF_INET6;
    return 0;
  }
  return -1;
}

/* Authorities */

/* Bytes that never belong in an authority the proxy acts on: control bytes and spaces, and the
 * characters that make parsers disagree about where the host is (userinfo, zone ids, paths). */
static int is_refused_byte(char c) {
  unsigned char u = (unsigned char)c;
  return u <= 0x20 || u == 0x7f || c == '@' || c == '%' || c == '/' || c == '\\';
}

/* 1 to 5 digits, no leading zero, 1..65535. */
static int parse_port(const char *s, size_t len, uint16_t *out) {
  if (len == 0 || len > 5 || s[0] == '0')
    return -1;
  uint32_t v = 0;
  for (size_t i = 0; i < len; i++) {
    if (!is_digit(s[i]))
      return -1;
    v = v * 10 + (uint32_t)(s[i] - '0');
  }
  if (v > 65535)
    return -1;
  *out = (uint16_t)v;
  return 0;
}

/* The WHATWG URL "IPv4 number parser": "0x" and hex digits (nothing after "0x" is 0), "0" and
 * octal digits, or decimal. |s| is lower-case. Returns 0, or -1 (also past 32 bits). */
static int parse_v4_number(const char *s, size_t len, uint32_t *out) {
  if (len == 0)
    return -1;
  unsigned base = 10;
  if (len >= 2 && s[0] == '0' && s[1] == 'x') {
    base = 16;
    s += 2;
    len -= 2;
  } else if (len >= 2 && s[0] == '0') {
    base = 8;
    s++;
    len--;
  }
  uint64_t v = 0;
  for (size_t i = 0; i < len; i++) {
    int d = digit_value(s[i], base);
    if (d < 0)
      return -1;
    v = v * base + (unsigned)d;
    if (v > UINT32_MAX)
      return -1;
  }
  *out = (uint32_t)v;
  return 0;
}

/* The WHATWG URL "ends in a number" test, which decides whether a host is read as IPv4: its
 * last label (a trailing dot aside) is all digits, or parses as an IPv4 number. Mirrors
 * policy/host.c, which refuses such names for the same reason. */
static int ends_in_number(const char *s, size_t len) {
  if (len > 1 && s[len - 1] == '.')
    len--;
  size_t start = len;
  while (start > 0 && s[start - 1] != '.')
    start--;
  const char *last = s + start;
  size_t n = len - start;
  if (n == 0)
    return 0;
  size_t i = 0;
  while (i < n && is_digit(last[i]))
    i++;
  uint32_t ignored;
  return i == n || parse_v4_number(last, n, &ignored) == 0;
}

/* The WHATWG URL "IPv4 parser" (what inet_aton also accepts): one to four parts, one trailing
 * dot allowed, every part but the last below 256, the last filling the remaining bytes. */
static int parse_ipv4_loose(const char *s, size_t len, uint32_t *out) {
  if (len > 0 && s[len - 1] == '.')
    len--;
  uint32_t parts[4];
  size_t n = 0, start = 0;
  for (size_t i = 0; i <= len; i++) {
    if (i < len && s[i] != '.')
      continue;
    if (n == 4 || parse_v4_number(s + start, i - start, &parts[n]) < 0)
      return -1;
    n++;
    start = i + 1;
  }
  for (size_t i = 0; i + 1 < n; i++)
    if (parts[i] > 255)
      return -1;
  uint32_t last = parts[n - 1];
  if (n > 1 && last >> (8 * (5 - n)) != 0)
    return -1;
  uint32_t v = last;
  for (size_t i = 0; i + 1 < n; i++)
    v |= parts[i] << (8 * (3 - i));
  *out = v;
  return 0;
}

/* Fills |out|'s host, is_ip and addr for the address |b| of |family|. */
static void set_ip_host(sg_authority *out, int family, const void *b) {
  out->is_ip = 1;
  to_sockaddr(&out->addr, family, b, out->port);
  inet_ntop(family, b, out->host, sizeof(out->host));
}

/* The inside of "[...]": an IPv6 address and nothing else. */
static int parse_bracketed(const char *s, size_t len, sg_authority *out) {
  char buf[INET6_ADDRSTRLEN];
  struct in6_addr a;
  if (len == 0 || len >= sizeof(buf))
    return -1;
  memcpy(buf, s, len);
  buf[len] = '\0';
  if (inet_pton(AF_INET6, buf, &a) != 1)
    return -1;
  set_ip_host(out, AF_INET6, &a);
  return 0;
}

/* A host without brackets: a number-ending one read as IPv4, anything else a host name. */
static int parse_unbracketed(const char *s, size_t len, sg_authority *out) {
  char lower[SG_HOST_MAX + 2]; /* a full-length name and its trailing dot */
  if (len == 0 || len > sizeof(lower))
    return -1;
  for (size_t i = 0; i < len; i++)
    lower[i] = ascii_lower(s[i]);
  if (!ends_in_number(lower, len))
    return sg_host_normalize(s, len, out->host);
  uint32_t v;
  if (parse_ipv4_loose(lower, len, &v) < 0)
    return -1;
  uint8_t b[4];
  store_be32(b, v);
  set_ip_host(out, AF_INET, b);
  return 0;
}

int sg_authority_parse(const char *s, size_t len, uint16_t default_port, sg_authority *out) {
  memset(out, 0, sizeof(*out));
  for (size_t i = 0; i < len; i++)
    if (is_refused_byte(s[i]))
      return -1;
  const char *host = s, *port = NULL;
  size_t host_len = len, port_len = 0;
  int bracketed = len > 0 && s[0] == '[';
  const char *end = s + len;
  const char *colon;
  if (bracketed) {
    const char *close = memchr(s, ']', len);
    if (close == NULL || (close + 1 < end && close[1] != ':'))
      return -1;
    host = s + 1;
    host_len = (size_t)(close - host);
    colon = close + 1 < end ? close + 1 : NULL;
  } else {
    colon = memchr(s, ':', len);
    if (colon != NULL) {
      host_len = (size_t)(colon - s);
      if (memchr(colon + 1, ':', (size_t)(end - colon - 1)))
        return -1; /* an IPv6 address without brackets */
    }
  }
  if (colon != NULL) {
    port = colon + 1;
    port_len = (size_t)(end - port);
    if (parse_port(port, port_len, &out->port) < 0)
      return -1;
  } else if (default_port == 0) {
    return -1;
  } else {
    out->port = default_port;
  }
  int rc =
      bracketed ? parse_bracketed(host, host_len, out) : parse_unbracketed(host, host_len, out);
  if (rc < 0)
    memset(out, 0, sizeof(*out));
  return rc;
}

/* Addresses */

typedef struct {
  uint32_t net;
  unsigned bits;
  const char *why;
} v4_range;

/* The first match wins, so single addresses come before the ranges that hold them. */
static const v4_range v4_refused[] = {
    {V4(169, 254, 169, 254), 32, "metadata"},   /* AWS, GCP, Azure, OpenStack, ... */
    {V4(100, 100, 100, 200), 32, "metadata"},   /* Alibaba Cloud */
    {V4(168, 63, 129, 16), 32, "metadata"},     /* Azure WireServer */
    {V4(192, 0, 0, 192), 32, "metadata"},       /* Oracle Cloud */
    {V4(255, 255, 255, 255), 32, "broadcast"},  /* RFC 919 limited broadcast */
    {V4(0, 0, 0, 0), 8, "unspecified"},         /* "this network": Linux connects 0.0.0.0 locally */
    {V4(10, 0, 0, 0), 8, "private"},            /* RFC 1918 */
    {V4(100, 64, 0, 0), 10, "cgnat"},           /* RFC 6598 shared address space */
    {V4(127, 0, 0, 0), 8, "loopback"},          /* RFC 1122 */
    {V4(169, 254, 0, 0), 16, "link-local"},     /* RFC 3927 */
    {V4(172, 16, 0, 0), 12, "private"},         /* RFC 1918 */
    {V4(192, 0, 0, 0), 24, "reserved"},         /* RFC 6890 IETF protocol assignments */
    {V4(192, 0, 2, 0), 24, "documentation"},    /* RFC 5737 TEST-NET-1 */
    {V4(192, 168, 0, 0), 16, "private"},        /* RFC 1918 */
    {V4(198, 18, 0, 0), 15, "benchmarking"},    /* RFC 2544 */
    {V4(198, 51, 100, 0), 24, "documentation"}, /* RFC 5737 TEST-NET-2 */
    {V4(203, 0, 113, 0), 24, "documentation"},  /* RFC 5737 TEST-NET-3 */
    {V4(224, 0, 0, 0), 4, "multicast"},         /* RFC 5771 */
    {V4(240, 0, 0, 0), 4, "reserved"},          /* RFC 1112 class E */
};

typedef struct {
  uint8_t net[16];
  unsigned bits;
  const char *why;
} v6_range;

static const v6_range v6_refused[] = {
    {{0xfd, 0x00, 0x0e, 0xc2, [14] = 0x02, 0x54}, 128, "metadata"}, /* AWS fd00:ec2::254 */
    {{0xfd, 0x20, 0x00, 0xce, [14] = 0x02, 0x54}, 128, "metadata"}, /* GCP fd20:ce::254 */
    {{0xfc}, 7, "private"},
    {{0xfe, 0x80}, 10, "link-local"},
    {{0xfe, 0xc0}, 10, "site-local"},
    {{0xff}, 8, "multicast"},
    {{0x20, 0x01, 0x0d, 0xb8}, 32, "documentation"},
    {{0x3f, 0xff}, 20, "documentation"},
    {{0x20, 0x01, 0x00, 0x02, 0x00, 0x00}, 48, "benchmarking"},
    {{0x01, 0x00}, 64, "reserved"}, /* discard-only */
};

static const uint8_t v6_global_unicast[16] = {0x20}; /* 2000::/3 */

static const char *judge_v4(uint32_t a) {
  for (size_t i = 0; i < SG_ARRAY_LEN(v4_refused); i++) {
    const v4_range *r = &v4_refused[i];
    uint32_t mask = r->bits == 0 ? 0 : UINT32_MAX << (32 - r->bits);
    if ((a & mask) == r->net)
      return r->why;
  }
  return NULL;
}

static int all_zero(const uint8_t *b, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (b[i] != 0)
      return 0;
  return 1;
}

/* Nonzero if |b| is IPv4-mapped (::ffff:0:0/96), with the IPv4 address in |*v4|. */
static int mapped_v4(const uint8_t b[16], uint32_t *v4) {
  if (!all_zero(b, 10) || b[10] != 0xff || b[11] != 0xff)
    return 0;
  *v4 = load_be32(b + 12);
  return 1;
}

/* Nonzero if |b| is one of the IPv6 forms that carry an IPv4 address, which a packet sent to
 * it may reach through the host's own stack, a translator or a tunnel; sets |*v4| to that
 * address. :: and ::1 are not IPv4-compatible addresses: the caller has judged them already. */
static int embedded_v4(const uint8_t b[16], uint32_t *v4) {
  static const uint8_t nat64[12] = {0x00, 0x64, 0xff, 0x9b};                  /* 64:ff9b::/96 */
  static const uint8_t nat64_local[6] = {0x00, 0x64, 0xff, 0x9b, 0x00, 0x01}; /* 64:ff9b:1::/48 */
  static const uint8_t translated[12] = {[8] = 0xff, 0xff};                   /* ::ffff:0:0:0/96 */
  if (mapped_v4(b, v4))
    return 1;
  if (all_zero(b, 12) /* IPv4-compatible */ || memcmp(b, translated, 12) == 0 ||
      memcmp(b, nat64, sizeof(nat64)) == 0 || memcmp(b, nat64_local, sizeof(nat64_local)) == 0) {
    *v4 = load_be32(b + 12);
    return 1;
  }
  if (b[0] == 0x20 && b[1] == 0x02) { /* 6to4: 2002:aabb:ccdd::/48 */
    *v4 = load_be32(b + 2);
    return 1;
  }
  if (b[0] == 0x20 && b[1] == 0x01 && b[2] == 0 && b[3] == 0) { /* Teredo: the client inverted */
    *v4 = ~load_be32(b + 12);
    return 1;
  }
  return 0;
}

static const char *judge_v6(const uint8_t b[16]) {
  if (all_zero(b, 16))
    return "unspecified";
  if (all_zero(b, 15) && b[15] == 1)
    return "loopback";
  uint32_t v4;
  if (embedded_v4(b, &v4))
    return judge_v4(v4);
  for (size_t i = 0; i < SG_ARRAY_LEN(v6_refused); i++)
    if (prefix_equal(b, v6_refused[i].net, v6_refused[i].bits))
      return v6_refused[i].why;
  return prefix_equal(b, v6_global_unicast, 3) ? NULL : "reserved";
}

const char *sg_addr_forbidden(const struct sockaddr *sa) {
  ip_addr a;
  if (from_sockaddr(sa, &a) < 0)
    return "not an IP address";
  return a.family == AF_INET ? judge_v4(load_be32(a.b)) : judge_v6(a.b);
}

/* The allow list */

typedef struct {
  ip_addr net; /* host bits cleared */
  unsigned bits;
} cidr;

struct sg_cidr_list {
  cidr *v;
  size_t n, cap;
};

sg_cidr_list *sg_cidr_list_new(void) {
  return sg_calloc(1, sizeof(sg_cidr_list));
}

void sg_cidr_list_free(sg_cidr_list *l) {
  if (l == NULL)
    return;
  free(l->v);
  free(l);
}

/* A prefix length: decimal, no leading zero, at most |max|. */
static int parse_prefix_len(const char *s, unsigned max, unsigned *out) {
  size_t len = strlen(s);
  if (len == 0 || len > 3 || (s[0] == '0' && len > 1))
    return -1;
  unsigned v = 0;
  for (size_t i = 0; i < len; i++) {
    if (!is_digit(s[i]))
      return -1;
    v = v * 10 + (unsigned)(s[i] - '0');
  }
  if (v > max)
    return -1;
  *out = v;
  return 0;
}

int sg_cidr_list_add(sg_cidr_list *l, const char *text, char *err, size_t errlen) {
  const char *slash = strchr(text, '/');
  size_t addr_len = slash ? (size_t)(slash - text) : strlen(text);
  cidr c;
  if (parse_ip_text(text, addr_len, &c.net) < 0) {
    set_err(err, errlen, "\"%s\" is not an IP address or CIDR range", text);
    return -1;
  }
  unsigned max = c.net.family == AF_INET ? 32 : 128;
  c.bits = max;
  if (slash != NULL && parse_prefix_len(slash + 1, max, &c.bits) < 0) {
    set_err(err, errlen, "\"%s\": the prefix length must be 0 to %u", text, max);
    return -1;
  }
  uint32_t v4;
  if (c.net.family == AF_INET6 && c.bits >= 96 && mapped_v4(c.net.b, &v4)) {
    set_err(err, errlen, "\"%s\": write IPv4-mapped ranges in IPv4 form", text);
    return -1;
  }
  clear_host_bits(c.net.b, max / 8, c.bits);
  if (l->n == l->cap) {
    l->cap = l->cap ? 2 * l->cap : 4;
    l->v = sg_realloc(l->v, l->cap * sizeof(*l->v));
  }
  l->v[l->n++] = c;
  return 0;
}

int sg_cidr_list_contains(const sg_cidr_list *l, const struct sockaddr *sa) {
  ip_addr a;
  if (l == NULL || from_sockaddr(sa, &a) < 0)
    return 0;
  uint32_t v4;
  if (a.family == AF_INET6 && mapped_v4(a.b, &v4)) {
    a.family = AF_INET;
    store_be32(a.b, v4);
  }
  for (size_t i = 0; i < l->n; i++)
    if (l->v[i].net.family == a.family && prefix_equal(a.b, l->v[i].net.b, l->v[i].bits))
      return 1;
  return 0;
}

/* Fixed DNS answers */

typedef struct {
  char host[SG_HOST_MAX + 1];
  struct sockaddr_storage *addrs;
  size_t n;
} resolve_entry;

struct sg_resolve_map {
  resolve_entry *v;
  size_t n;
};

sg_resolve_map *sg_resolve_map_new(void) {
  return sg_calloc(1, sizeof(sg_resolve_map));
}

void sg_resolve_map_free(sg_resolve_map *m) {
  if (m == NULL)
    return;
  for (size_t i = 0; i < m->n; i++)
    free(m->v[i].addrs);
  free(m->v);
  free(m);
}

/* One ADDR of a spec: strict IP text, IPv6 optionally in brackets. */
static int parse_map_addr(const char *s, size_t len, struct sockaddr_storage *out) {
  ip_addr a;
  if (len >= 2 && s[0] == '[' && s[len - 1] == ']') {
    if (parse_ip_text(s + 1, len - 2, &a) < 0 || a.family != AF_INET6)
      return -1;
  } else if (parse_ip_text(s, len, &a) < 0) {
    return -1;
  }
  to_sockaddr(out, a.family, a.b, 0);
  return 0;
}

static resolve_entry *find_entry(const sg_resolve_map *m, const char *host) {
  for (size_t i = 0; i < m->n; i++)
    if (strcmp(m->v[i].host, host) == 0)
      return &m->v[i];
  return NULL;
}

int sg_resolve_map_add(sg_resolve_map *m, const char *spec, char *err, size_t errlen) {
  const char *colon = strchr(spec, ':');
  char host[SG_HOST_MAX + 1];
  if (colon == NULL || colon[1] == '\0') {
    set_err(err, errlen, "\"%s\" is not HOST:ADDR", spec);
    return -1;
  }
  if (sg_host_normalize(spec, (size_t)(colon - spec), host) < 0) {
    set_err(err, errlen, "\"%s\": \"%.*s\" is not a host name", spec, (int)(colon - spec), spec);
    return -1;
  }
  size_t n = 1;
  for (const char *p = colon + 1; *p; p++)
    n += *p == ',';
  struct sockaddr_storage *addrs = sg_malloc(n * sizeof(*addrs));
  const char *p = colon + 1;
  for (size_t i = 0; i < n; i++) {
    size_t len = strcspn(p, ",");
    if (parse_map_addr(p, len, &addrs[i]) < 0) {
      set_err(err, errlen, "\"%s\": \"%.*s\" is not an IP address", spec, (int)len, p);
      free(addrs);
      return -1;
    }
    p += len + 1;
  }
  resolve_entry *e = find_entry(m, host);
  if (e == NULL) {
    m->v = sg_realloc(m->v, (m->n + 1) * sizeof(*m->v));
    e = &m->v[m->n++];
    memcpy(e->host, host, sizeof(host));
    e->addrs = NULL;
    e->n = 0;
  }
  e->addrs = sg_realloc(e->addrs, (e->n + n) * sizeof(*e->addrs));
  memcpy(e->addrs + e->n, addrs, n * sizeof(*addrs));
  e->n += n;
  free(addrs);
  return 0;
}

size_t sg_resolve_map_find(const sg_resolve_map *m, const char *host,
                           const struct sockaddr_storage **addrs) {
  const resolve_entry *e = m ? find_entry(m, host) : NULL;
  if (e == NULL)
    return 0;
  *addrs = e->addrs;
  return e->n;
}

/* Resolution */

typedef struct {
  sg_resolve_config cfg;
  char host[SG_HOST_MAX + 1];
  uint16_t port;
  sg_resolve_cb cb;
  void *arg;
  /* The verdict so far; |addr| is delivered when its family is set. */
  sg_resolve_status status;
  const char *reason;
  struct sockaddr_storage addr;
} resolve_req;

static void set_verdict(resolve_req *req, sg_resolve_status status, const char *reason) {
  req->status = status;
  req->reason = reason;
}

/* Judges one address of the answer. Returns 0 to go on, or -1 once it is refused: the verdict
 * is then final, and |req| holds the refused address. */
static int judge_candidate(resolve_req *req, const struct sockaddr *sa) {
  if (sa->sa_family != AF_INET && sa->sa_family != AF_INET6)
    return 0;
  size_t len = sa->sa_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
  const char *why = sg_cidr_list_contains(req->cfg.allow, sa) ? NULL : sg_addr_forbidden(sa);
  if (why == NULL && req->status == SG_RESOLVE_OK)
    return 0; /* the first allowed address stays the one delivered */
  memset(&req->addr, 0, sizeof(req->addr));
  memcpy(&req->addr, sa, len);
  set_port(&req->addr, req->port);
  set_verdict(req, why ? SG_RESOLVE_FORBIDDEN : SG_RESOLVE_OK, why);
  return why ? -1 : 0;
}

static void judge_fixed(resolve_req *req, const struct sockaddr_storage *addrs, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (judge_candidate(req, (const struct sockaddr *)&addrs[i]) < 0)
      return;
}

/* On the work pool: the lookup, and the verdict on its answer. */
static void lookup_work(void *arg) {
  resolve_req *req = arg;
  /* No AI_ADDRCONFIG: the verdict is on the whole answer, whatever this host can reach. */
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
  struct addrinfo *res = NULL;
  int rc = getaddrinfo(req->host, NULL, &hints, &res);
  if (rc == EAI_NONAME || rc == EAI_NODATA || rc == EAI_ADDRFAMILY) {
    set_verdict(req, SG_RESOLVE_NOT_FOUND, "no such host");
    return;
  }
  if (rc != 0) {
    set_verdict(req, SG_RESOLVE_FAILED, rc == EAI_AGAIN ? "temporary DNS failure" : "DNS failed");
    return;
  }
  for (struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next)
    if (judge_candidate(req, ai->ai_addr) < 0)
      break;
  freeaddrinfo(res);
}

/* On the loop: the one call of the callback. */
static void deliver(void *arg) {
  resolve_req *req = arg;
  int has_addr = req->addr.ss_family != AF_UNSPEC;
  req->cb(req->arg, req->status, has_addr ? &req->addr : NULL, req->reason);
  free(req);
}

static int is_localhost(const char *host) {
  static const char suffix[] = ".localhost";
  size_t n = strlen(host), m = sizeof(suffix) - 1;
  return strcmp(host, "localhost") == 0 || (n > m && strcmp(host + n - m, suffix) == 0);
}

/* Decides |req| without a lookup if it can. Returns 0 when decided, or -1 if DNS must answer. */
static int decide_at_once(resolve_req *req, const char *host) {
  ip_addr ip;
  if (parse_ip_text(host, strlen(host), &ip) == 0) {
    struct sockaddr_storage ss;
    to_sockaddr(&ss, ip.family, ip.b, 0);
    judge_fixed(req, &ss, 1);
    return 0;
  }
  if (sg_host_normalize(host, strlen(host), req->host) < 0) {
    set_verdict(req, SG_RESOLVE_NOT_FOUND, "not a host name");
    return 0;
  }
  const struct sockaddr_storage *fixed;
  size_t n = sg_resolve_map_find(req->cfg.map, req->host, &fixed);
  if (n > 0) {
    judge_fixed(req, fixed, n);
    return 0;
  }
  if (is_localhost(req->host)) {
    set_verdict(req, SG_RESOLVE_FORBIDDEN, "localhost");
    return 0;
  }
  return -1;
}

void sg_resolve_async(sg_loop *loop, const sg_resolve_config *cfg, const char *host, uint16_t port,
                      sg_resolve_cb cb, void *arg) {
  resolve_req *req = sg_calloc(1, sizeof(*req));
  if (cfg != NULL)
    req->cfg = *cfg;
  req->port = port;
  req->cb = cb;
  req->arg = arg;
  set_verdict(req, SG_RESOLVE_NOT_FOUND, "no address");
  if (decide_at_once(req, host) == 0)
    sg_loop_post(loop, deliver, req);
  else
    sg_work_submit(loop, lookup_work, deliver, req);
}
