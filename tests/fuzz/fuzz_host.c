/* Host names, host patterns and authorities (policy/host.h, proxy/addr.h): what decides where
 * a real secret may go and which addresses the proxy may reach.
 *
 * Input: a mode byte, then two length-prefixed fields (pattern candidates) and the rest (a host
 * or an authority). Checked:
 *   - a normalized name is lower-case, at most 253 bytes, of valid labels, and normalizing it
 *     again changes nothing; the same for patterns;
 *   - sg_host_match agrees with a reference written here from the contract;
 *   - sg_host_pattern_intersect is symmetric, returns one of its arguments, and what it returns
 *     matches a host only if both patterns do;
 *   - sg_authority_parse: a name comes out normalized, an IP literal in canonical text that
 *     inet_pton reads back to the same address, a port in range; printing the authority and
 *     parsing it again gives the same result;
 *   - sg_addr_forbidden judges an IPv4-mapped or NAT64 address as its IPv4 address, and an
 *     address is in a CIDR list made of its own prefix;
 *   - sg_cidr_list_add and sg_resolve_map_add take any text without crashing. */
#include <arpa/inet.h>
#include <netinet/in.h>

#include "fuzz.h"
#include "policy/host.h"
#include "proxy/addr.h"

static int label_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
}

/* A normalized name: labels of [a-z0-9-_], 1..63 each, not starting or ending with '-'. */
static void check_name(const char *s) {
  size_t len = strlen(s);
  FUZZ_CHECK(len > 0 && len <= SG_HOST_MAX);
  size_t label = 0;
  for (size_t i = 0; i <= len; i++) {
    if (i == len || s[i] == '.') {
      FUZZ_CHECK(label >= 1 && label <= 63);
      FUZZ_CHECK(s[i - label] != '-' && s[i - 1] != '-');
      label = 0;
    } else {
      FUZZ_CHECK(label_char(s[i]));
      label++;
    }
  }
}

static void check_pattern(const char *p) {
  if (strcmp(p, "*") == 0)
    return;
  check_name(strncmp(p, "*.", 2) == 0 ? p + 2 : p);
}

/* sg_host_match from its contract. */
static int ref_match(const char *pattern, const char *host) {
  if (strcmp(pattern, "*") == 0)
    return 1;
  if (strncmp(pattern, "*.", 2) == 0) {
    size_t d = strlen(pattern + 1), h = strlen(host); /* d counts the dot */
    return h > d && strcmp(host + h - d, pattern + 1) == 0;
  }
  return strcmp(pattern, host) == 0;
}

static void fuzz_patterns(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen,
                          const uint8_t *h, size_t hlen) {
  char pa[SG_HOST_MAX + 1], pb[SG_HOST_MAX + 1], nh[SG_HOST_MAX + 1], again[SG_HOST_MAX + 1];
  const char *why = NULL;
  int ok_a = sg_host_pattern_normalize((const char *)a, alen, pa, &why) == 0;
  if (ok_a) {
    check_pattern(pa);
    FUZZ_CHECK(sg_host_pattern_normalize(pa, strlen(pa), again, &why) == 0);
    FUZZ_CHECK(strcmp(pa, again) == 0);
  } else {
    FUZZ_CHECK(why != NULL);
  }
  int ok_b = sg_host_pattern_normalize((const char *)b, blen, pb, &why) == 0;
  if (ok_b)
    check_pattern(pb);
  int ok_h = sg_host_normalize((const char *)h, hlen, nh) == 0;
  if (ok_h) {
    check_name(nh);
    FUZZ_CHECK(sg_host_normalize(nh, strlen(nh), again) == 0 && strcmp(nh, again) == 0);
    /* A name is a pattern too, and matches itself. */
    FUZZ_CHECK(sg_host_pattern_normalize(nh, strlen(nh), again, &why) == 0 || why != NULL);
  }
  if (ok_a && ok_h)
    FUZZ_CHECK(!!sg_host_match(pa, nh) == ref_match(pa, nh));
  if (ok_a && ok_b) {
    const char *ab = sg_host_pattern_intersect(pa, pb);
    const char *ba = sg_host_pattern_intersect(pb, pa);
    FUZZ_CHECK((ab == NULL) == (ba == NULL));
    if (ab != NULL) {
      FUZZ_CHECK(ab == pa || ab == pb);
      FUZZ_CHECK(strcmp(ab, ba) == 0);
      /* Both patterns match the intersection's hosts: test it on the input's host, and on
       * the intersection itself when it is a name. */
      if (ok_h && sg_host_match(ab, nh))
        FUZZ_CHECK(sg_host_match(pa, nh) && sg_host_match(pb, nh));
      if (ab[0] != '*')
        FUZZ_CHECK(sg_host_match(pa, ab) && sg_host_match(pb, ab));
    } else if (ok_h) {
      FUZZ_CHECK(!(sg_host_match(pa, nh) && sg_host_match(pb, nh)));
    }
  }
}

/* Writes |a| as an authority "host:port" or "[v6]:port". */
static size_t print_authority(const sg_authority *a, char *out, size_t cap) {
  int v6 = a->is_ip && a->addr.ss_family == AF_INET6;
  return (size_t)snprintf(out, cap, v6 ? "[%s]:%u" : "%s:%u", a->host, a->port);
}

static const char *judge_v4_as_v6(const struct sockaddr_in *v4, const uint8_t prefix[12]) {
  struct sockaddr_in6 v6;
  memset(&v6, 0, sizeof(v6));
  v6.sin6_family = AF_INET6;
  memcpy(v6.sin6_addr.s6_addr, prefix, 12);
  memcpy(v6.sin6_addr.s6_addr + 12, &v4->sin_addr, 4);
  return sg_addr_forbidden((const struct sockaddr *)&v6);
}

static void check_same_reason(const char *a, const char *b) {
  FUZZ_CHECK((a == NULL) == (b == NULL));
  if (a != NULL)
    FUZZ_CHECK(strcmp(a, b) == 0);
}

static void fuzz_authority(const uint8_t *s, size_t len, uint16_t default_port, uint8_t plen) {
  sg_authority a, b;
  if (sg_authority_parse((const char *)s, len, default_port, &a) != 0)
    return;
  FUZZ_CHECK(a.port > 0);
  if (default_port == 0)
    FUZZ_CHECK(memchr(s, ':', len) != NULL);
  FUZZ_CHECK(memchr(s, '@', len) == NULL && memchr(s, '%', len) == NULL);
  if (a.is_ip) {
    uint8_t bin[16];
    int fam = a.addr.ss_family;
    FUZZ_CHECK(fam == AF_INET || fam == AF_INET6);
    FUZZ_CHECK(inet_pton(fam, a.host, bin) == 1);
    const void *ad = fam == AF_INET ? (const void *)&((struct sockaddr_in *)&a.addr)->sin_addr
                                    : (const void *)&((struct sockaddr_in6 *)&a.addr)->sin6_addr;
    FUZZ_CHECK(memcmp(bin, ad, fam == AF_INET ? 4 : 16) == 0);
    char canon[INET6_ADDRSTRLEN];
    FUZZ_CHECK(inet_ntop(fam, bin, canon, sizeof(canon)) != NULL && strcmp(canon, a.host) == 0);
    const char *reason = sg_addr_forbidden((const struct sockaddr *)&a.addr);
    if (fam == AF_INET) {
      static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
      static const uint8_t nat64[12] = {0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0};
      const struct sockaddr_in *v4 = (const struct sockaddr_in *)&a.addr;
      check_same_reason(reason, judge_v4_as_v6(v4, mapped));
      check_same_reason(reason, judge_v4_as_v6(v4, nat64));
    }
    /* The address lies in every prefix of itself (an IPv4-mapped range is refused, and a
     * mapped address is matched against IPv4 ranges only: both by design). */
    int mapped =
        fam == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&((const struct sockaddr_in6 *)&a.addr)->sin6_addr);
    sg_cidr_list *l = sg_cidr_list_new();
    char range[INET6_ADDRSTRLEN + 8], err[128];
    snprintf(range, sizeof(range), "%s/%u", a.host, plen % (fam == AF_INET ? 33 : 129));
    if (sg_cidr_list_add(l, range, err, sizeof(err)) == 0)
      FUZZ_CHECK(mapped || sg_cidr_list_contains(l, (const struct sockaddr *)&a.addr));
    else
      FUZZ_CHECK(fam == AF_INET6 && err[0] != '\0');
    sg_cidr_list_free(l);
  } else {
    char nh[SG_HOST_MAX + 1];
    check_name(a.host);
    FUZZ_CHECK(sg_host_normalize(a.host, strlen(a.host), nh) == 0 && strcmp(nh, a.host) == 0);
    FUZZ_CHECK(a.addr.ss_family == AF_UNSPEC);
  }
  char text[SG_HOST_MAX + 16];
  size_t n = print_authority(&a, text, sizeof(text));
  FUZZ_CHECK(n < sizeof(text));
  FUZZ_CHECK(sg_authority_parse(text, n, 0, &b) == 0);
  FUZZ_CHECK(strcmp(a.host, b.host) == 0 && a.port == b.port && a.is_ip == b.is_ip);
  FUZZ_CHECK(memcmp(&a.addr, &b.addr, sizeof(a.addr)) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fuzz_in in = {data, size};
  uint8_t mode = fuzz_u8(&in);
  size_t alen, blen;
  const uint8_t *a = fuzz_field(&in, &alen);
  const uint8_t *b = fuzz_field(&in, &blen);
  /* The rest, copied to exactly its size so ASan sees reads past it. */
  uint8_t *rest = fuzz_copy(in.p, in.len);
  fuzz_patterns(a, alen, b, blen, rest, in.len);
  fuzz_authority(rest, in.len, mode & 1 ? 443 : 0, mode);

  char *text = fuzz_strndup(rest, in.len);
  char err[128];
  sg_cidr_list *l = sg_cidr_list_new();
  if (sg_cidr_list_add(l, text, err, sizeof(err)) != 0)
    FUZZ_CHECK(err[0] != '\0');
  sg_cidr_list_free(l);
  sg_resolve_map *m = sg_resolve_map_new();
  if (sg_resolve_map_add(m, text, err, sizeof(err)) == 0) {
    const char *colon = strchr(text, ':');
    char host[SG_HOST_MAX + 1];
    const struct sockaddr_storage *addrs;
    FUZZ_CHECK(colon != NULL);
    if (sg_host_normalize(text, (size_t)(colon - text), host) == 0)
      FUZZ_CHECK(sg_resolve_map_find(m, host, &addrs) > 0);
  }
  sg_resolve_map_free(m);
  free(text);
  free(rest);
  return 0;
}
