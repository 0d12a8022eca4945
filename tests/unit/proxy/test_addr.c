/* Where the egress proxy may connect (notes §2.5/2.6): authorities parsed strictly, with every
 * spelling of an IPv4 address read as that address; non-public addresses refused, IPv6 forms
 * that carry an IPv4 address judged as it; the operator's allow list; fixed DNS answers; and
 * resolution through a real loop and the work pool, with no network (the resolve map, IP
 * literals, "localhost", and the machine's own name from /etc/hosts). */
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#include "core/mem.h"
#include "net/loop.h"
#include "proxy/addr.h"
#include "runtime/work.h"

/* An address from its inet_pton text, port 0. */
static struct sockaddr_storage ip(const char *text) {
  struct sockaddr_storage ss;
  memset(&ss, 0, sizeof(ss));
  struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
  struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
  if (inet_pton(AF_INET, text, &sin->sin_addr) == 1) {
    sin->sin_family = AF_INET;
  } else {
    cr_assert_eq(inet_pton(AF_INET6, text, &sin6->sin6_addr), 1, "bad test address %s", text);
    sin6->sin6_family = AF_INET6;
  }
  return ss;
}

/* "addr port" of |ss|, for comparisons. */
static const char *show(const struct sockaddr_storage *ss, char *buf, size_t cap) {
  char text[INET6_ADDRSTRLEN] = "?";
  unsigned port = 0;
  if (ss->ss_family == AF_INET) {
    const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;
    inet_ntop(AF_INET, &sin->sin_addr, text, sizeof(text));
    port = ntohs(sin->sin_port);
  } else if (ss->ss_family == AF_INET6) {
    const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;
    inet_ntop(AF_INET6, &sin6->sin6_addr, text, sizeof(text));
    port = ntohs(sin6->sin6_port);
  }
  snprintf(buf, cap, "%s %u", text, port);
  return buf;
}

/* Authorities */

typedef struct {
  const char *in;
  uint16_t default_port;
  const char *host;
  uint16_t port;
} authority_vector;

static void expect_authorities(const authority_vector *v, size_t n, int is_ip) {
  for (size_t i = 0; i < n; i++) {
    sg_authority a;
    int rc = sg_authority_parse(v[i].in, strlen(v[i].in), v[i].default_port, &a);
    cr_expect_eq(rc, 0, "\"%s\" was refused", v[i].in);
    if (rc != 0)
      continue;
    cr_expect_str_eq(a.host, v[i].host, "\"%s\" gave host \"%s\", want \"%s\"", v[i].in, a.host,
                     v[i].host);
    cr_expect_eq(a.port, v[i].port, "\"%s\" gave port %u, want %u", v[i].in, a.port, v[i].port);
    cr_expect_eq(a.is_ip, is_ip, "\"%s\": is_ip %d", v[i].in, a.is_ip);
    if (is_ip) {
      char got[80], want[80];
      struct sockaddr_storage w = ip(v[i].host);
      ((struct sockaddr_in *)&w)->sin_port = htons(v[i].port); /* same offset in sockaddr_in6 */
      cr_expect_str_eq(show(&a.addr, got, sizeof(got)), show(&w, want, sizeof(want)), "\"%s\"",
                       v[i].in);
    } else {
      cr_expect_eq(a.addr.ss_family, AF_UNSPEC, "\"%s\": a name has no address", v[i].in);
    }
  }
}

static void expect_refused_len(const char *in, size_t len, uint16_t default_port) {
  sg_authority a;
  int rc = sg_authority_parse(in, len, default_port, &a);
  cr_expect_eq(rc, -1, "\"%.*s\" was accepted as \"%s\" port %u", (int)len, in, a.host, a.port);
}

static void expect_refused(const char *const *in, size_t n) {
  for (size_t i = 0; i < n; i++)
    expect_refused_len(in[i], strlen(in[i]), 443);
}

Test(authority, a_name_is_normalized_and_takes_the_default_port_when_it_has_none) {
  static const authority_vector v[] = {
      {"API.Anthropic.COM", 443, "api.anthropic.com", 443},
      {"api.openai.com.", 443, "api.openai.com", 443},
      {"example.com", 80, "example.com", 80},
      {"example.com:8443", 443, "example.com", 8443},
      {"Example.COM.:443", 80, "example.com", 443},
      {"_dmarc.example.org:1", 443, "_dmarc.example.org", 1},
      {"a:65535", 443, "a", 65535},
      {"localhost:3128", 443, "localhost", 3128},
      {"123.example.com", 443, "123.example.com", 443},
      {"0x1g.example", 443, "0x1g.example", 443},
      {"xn--bcher-kva.example", 443, "xn--bcher-kva.example", 443},
  };
  expect_authorities(v, SG_ARRAY_LEN(v), 0);
}

Test(authority, a_port_is_1_to_65535_in_digits_without_a_leading_zero) {
  static const char *const bad[] = {
      "example.com:0",
      "example.com:00",
      "example.com:080",
      "example.com:65536",
      "example.com:99999",
      "example.com:123456",
      "example.com:",
      "example.com:+80",
      "example.com:-1",
      "example.com:8a",
      "example.com:0x50",
      "example.com:1e3",
      "example.com:80:80",
      "example.com::80",
      "[::1]:0",
      "[::1]:080",
      "[::1]:",
      "[::1]:65536",
  };
  expect_refused(bad, SG_ARRAY_LEN(bad));
}

Test(authority, a_missing_port_is_refused_when_there_is_no_default) {
  expect_refused_len("example.com", 11, 0);
  expect_refused_len("[::1]", 5, 0);
  expect_refused_len("127.0.0.1", 9, 0);
  static const authority_vector v[] = {{"example.com:443", 0, "example.com", 443}};
  expect_authorities(v, SG_ARRAY_LEN(v), 0);
}

Test(authority, an_ipv6_literal_in_brackets_is_canonicalized_without_them) {
  static const authority_vector v[] = {
      {"[::1]", 443, "::1", 443},
      {"[0:0:0:0:0:0:0:1]:8443", 443, "::1", 8443},
      {"[2001:DB8::A]", 80, "2001:db8::a", 80},
      {"[2001:0db8:0000:0000:0000:0000:0000:0001]:1", 80, "2001:db8::1", 1},
      {"[::FFFF:127.0.0.1]:443", 443, "::ffff:127.0.0.1", 443},
      {"[::ffff:7f00:1]", 443, "::ffff:127.0.0.1", 443},
      {"[fe80::1]", 443, "fe80::1", 443},
  };
  expect_authorities(v, SG_ARRAY_LEN(v), 1);
}

Test(authority, ipv6_without_brackets_or_brackets_around_anything_else_are_refused) {
  static const char *const bad[] = {
      "::1",
      "::1:443",
      "2001:db8::1",
      "fe80::1",
      "[::1",
      "::1]",
      "[::1]x",
      "[::1]]:80",
      "[[::1]]",
      "[]",
      "[]:443",
      "[127.0.0.1]",
      "[example.com]",
      "[v1.fe80::1]",
      "[::1]:443:443",
      "x[::1]",
      "[fe80::1%25eth0]:443",
      "[fe80::1%eth0]",
      "[::1 ]",
      "[ ::1]",
  };
  expect_refused(bad, SG_ARRAY_LEN(bad));
}

Test(authority, an_ipv4_address_is_kept_in_dotted_decimal) {
  static const authority_vector v[] = {
      {"1.2.3.4", 443, "1.2.3.4", 443},
      {"8.8.8.8:53", 443, "8.8.8.8", 53},
      {"127.0.0.1:3128", 443, "127.0.0.1", 3128},
      {"255.255.255.255", 443, "255.255.255.255", 443},
  };
  expect_authorities(v, SG_ARRAY_LEN(v), 1);
}

Test(authority, every_spelling_resolvers_read_as_ipv4_becomes_that_address) {
  static const authority_vector v[] = {
      {"127.1", 443, "127.0.0.1", 443},
      {"127.0.1", 443, "127.0.0.1", 443},
      {"2130706433", 443, "127.0.0.1", 443},
      {"2130706433:80", 443, "127.0.0.1", 80},
      {"0x7f.1", 443, "127.0.0.1", 443},
      {"0x7F.0.0.1", 443, "127.0.0.1", 443},
      {"0177.0.0.1", 443, "127.0.0.1", 443},
      {"0x7f000001", 443, "127.0.0.1", 443},
      {"0X7F000001", 443, "127.0.0.1", 443},
      {"017700000001", 443, "127.0.0.1", 443},
      {"0x7f.0x0.0x0.0x1", 443, "127.0.0.1", 443},
      {"127.0.0.1.", 443, "127.0.0.1", 443},
      {"127.0.0.01", 443, "127.0.0.1", 443},
      {"169.254.43518", 443, "169.254.169.254", 443},
      {"0251.0376.0251.0376", 443, "169.254.169.254", 443},
      {"4294967295", 443, "255.255.255.255", 443},
      {"0", 443, "0.0.0.0", 443},
      {"0x", 443, "0.0.0.0", 443},
      {"1.0x", 443, "1.0.0.0", 443},
  };
  expect_authorities(v, SG_ARRAY_LEN(v), 1);
}

Test(authority, a_name_ending_in_a_number_that_is_not_ipv4_is_refused) {
  static const char *const bad[] = {
      "1.2.3.09",   "08",          "256.0.0.1",    "1.2.3.256",
      "1.2.3.4.5",  "4294967296",  "0x100000000",  "1.2.3.0x100",
      "1.16777216", "example.123", "example.0x7f", "a.b.1",
      "1..2",       "127.0.0.1..", ".1",           "99999999999999999999",
  };
  expect_refused(bad, SG_ARRAY_LEN(bad));
}

Test(authority, an_ipv4_address_may_end_in_one_dot_like_a_name) {
  static const authority_vector v[] = {{"1.2.3.4.", 443, "1.2.3.4", 443},
                                       {"0x7f.1.:80", 443, "127.0.0.1", 80}};
  expect_authorities(v, SG_ARRAY_LEN(v), 1);
}

Test(authority, userinfo_zone_ids_paths_spaces_and_control_bytes_are_refused) {
  static const char *const bad[] = {
      "",
      ":443",
      "user@example.com",
      "user:pass@example.com:443",
      "example.com@evil.com",
      "example.com%00",
      "example.com%2e",
      "example.com/path",
      "example.com:443/",
      "example.com\\evil.com",
      "exa mple.com",
      " example.com",
      "example.com ",
      "example.com\t",
      "example.com\r\n",
      "example.com\x7f",
      "example.com\x01",
      "b\xc3\xbc"
      "cher.de",
      "a..b",
      "-a.com",
      "a-.com",
      "example.com?x",
      "example.com#x",
      "*.example.com",
      "example.com..",
      ".",
      "..",
  };
  expect_refused(bad, SG_ARRAY_LEN(bad));
  expect_refused_len("example.com\0.evil.com", 21, 443);
  expect_refused_len("127.0.0.1\0", 10, 443);
}

Test(authority, a_name_longer_than_253_characters_is_refused) {
  char name[300];
  for (size_t i = 0; i < 254; i++)
    name[i] = i % 64 == 63 ? '.' : 'a';
  expect_refused_len(name, 254, 443);
  expect_refused_len(name, 253, 0);
  sg_authority a;
  cr_assert_eq(sg_authority_parse(name, 253, 443, &a), 0);
  cr_assert_eq(strlen(a.host), 253);
}

/* Addresses */

typedef struct {
  const char *addr;
  const char *why; /* NULL: public */
} judge_vector;

static void expect_judged(const judge_vector *v, size_t n) {
  for (size_t i = 0; i < n; i++) {
    struct sockaddr_storage ss = ip(v[i].addr);
    const char *why = sg_addr_forbidden((const struct sockaddr *)&ss);
    if (v[i].why == NULL)
      cr_expect_null(why, "%s was refused as %s", v[i].addr, why);
    else
      cr_expect(why != NULL && strcmp(why, v[i].why) == 0, "%s: %s, want %s", v[i].addr,
                why ? why : "public", v[i].why);
  }
}

Test(addr, ipv4_ranges_that_are_not_public_are_refused_with_their_reason) {
  static const judge_vector v[] = {
      {"0.0.0.0", "unspecified"},
      {"0.255.255.255", "unspecified"},
      {"10.0.0.0", "private"},
      {"10.255.255.255", "private"},
      {"100.64.0.0", "cgnat"},
      {"100.127.255.255", "cgnat"},
      {"127.0.0.1", "loopback"},
      {"127.255.255.254", "loopback"},
      {"169.254.0.1", "link-local"},
      {"169.254.255.255", "link-local"},
      {"172.16.0.0", "private"},
      {"172.31.255.255", "private"},
      {"192.0.0.1", "reserved"},
      {"192.0.0.255", "reserved"},
      {"192.0.2.1", "documentation"},
      {"198.18.0.1", "benchmarking"},
      {"198.19.255.255", "benchmarking"},
      {"198.51.100.7", "documentation"},
      {"203.0.113.9", "documentation"},
      {"192.168.0.1", "private"},
      {"192.168.255.255", "private"},
      {"224.0.0.1", "multicast"},
      {"239.255.255.255", "multicast"},
      {"240.0.0.1", "reserved"},
      {"255.255.255.254", "reserved"},
      {"255.255.255.255", "broadcast"},
  };
  expect_judged(v, SG_ARRAY_LEN(v));
}

Test(addr, cloud_metadata_addresses_are_refused_as_metadata) {
  static const judge_vector v[] = {
      {"169.254.169.254", "metadata"}, {"100.100.100.200", "metadata"},
      {"168.63.129.16", "metadata"},   {"192.0.0.192", "metadata"},
      {"fd00:ec2::254", "metadata"},   {"fd20:ce::254", "metadata"},
  };
  expect_judged(v, SG_ARRAY_LEN(v));
}

Test(addr, ipv6_ranges_that_are_not_public_are_refused_with_their_reason) {
  static const judge_vector v[] = {
      {"::", "unspecified"},
      {"::1", "loopback"},
      {"fc00::1", "private"},
      {"fd00::1", "private"},
      {"fdff:ffff::1", "private"},
      {"fe80::1", "link-local"},
      {"febf:ffff::1", "link-local"},
      {"fec0::1", "site-local"},
      {"feff::1", "site-local"},
      {"ff02::1", "multicast"},
      {"ff0e::1", "multicast"},
      {"2001:db8::1", "documentation"},
      {"2001:db8:ffff::1", "documentation"},
      {"3fff::1", "documentation"},
      {"3fff:fff::1", "documentation"},
      {"2001:2::1", "benchmarking"},
      {"100::1", "reserved"},
      {"100::ffff:ffff:ffff:ffff", "reserved"},
      /* Outside 2000::/3, where no public unicast address has been allocated. */
      {"1::", "reserved"},
      {"4000::1", "reserved"},
      {"e000::1", "reserved"},
      {"::2:3:4:5", "reserved"},
      {"64:ff9b:2::1", "reserved"},
  };
  expect_judged(v, SG_ARRAY_LEN(v));
}

/* 127.0.0.1 and 169.254.169.254 in every IPv6 form that carries an IPv4 address. */
Test(addr, ipv6_forms_that_carry_an_ipv4_address_are_judged_as_it) {
  static const judge_vector v[] = {
      {"::ffff:127.0.0.1", "loopback"}, /* IPv4-mapped */
      {"::ffff:7f00:1", "loopback"},
      {"::127.0.0.1", "loopback"},          /* IPv4-compatible */
      {"::ffff:0:127.0.0.1", "loopback"},   /* IPv4-translated */
      {"64:ff9b::127.0.0.1", "loopback"},   /* NAT64 */
      {"64:ff9b:1::127.0.0.1", "loopback"}, /* local-use NAT64 */
      {"2002:7f00:1::", "loopback"},        /* 6to4 */
      {"2002:7f00:1:ffff::1", "loopback"},
      {"2001:0:4136:e378:8000:63bf:80ff:fffe", "loopback"}, /* Teredo */
      {"::ffff:169.254.169.254", "metadata"},
      {"::169.254.169.254", "metadata"},
      {"::ffff:0:169.254.169.254", "metadata"},
      {"64:ff9b::a9fe:a9fe", "metadata"},
      {"64:ff9b:1::a9fe:a9fe", "metadata"},
      {"2002:a9fe:a9fe::1", "metadata"},
      {"2001:0:4136:e378:8000:63bf:5601:5601", "metadata"},
      /* Other IPv4 ranges, to show the whole IPv4 judgement applies. */
      {"::ffff:10.0.0.1", "private"},
      {"::ffff:0.0.0.0", "unspecified"},
      {"::0.0.0.2", "unspecified"},
      {"::ffff:255.255.255.255", "broadcast"},
      {"64:ff9b::192.168.1.1", "private"},
      {"2002:c0a8:101::1", "private"},
      {"2002:6440:1::1", "cgnat"},
      {"2001:0:4136:e378:8000:63bf:1fff:fffe", "multicast"}, /* client 224.0.0.1 */
  };
  expect_judged(v, SG_ARRAY_LEN(v));
}

Test(addr, public_addresses_pass) {
  static const judge_vector v[] = {
      {"8.8.8.8", NULL},
      {"1.1.1.1", NULL},
      {"93.184.216.34", NULL},
      {"9.255.255.255", NULL},
      {"11.0.0.0", NULL},
      {"100.63.255.255", NULL},
      {"100.128.0.0", NULL},
      {"126.255.255.255", NULL},
      {"128.0.0.0", NULL},
      {"169.253.255.255", NULL},
      {"169.255.0.0", NULL},
      {"172.15.255.255", NULL},
      {"172.32.0.0", NULL},
      {"192.0.1.0", NULL},
      {"192.167.255.255", NULL},
      {"192.169.0.0", NULL},
      {"198.17.255.255", NULL},
      {"198.20.0.0", NULL},
      {"223.255.255.255", NULL},
      {"2606:4700::1111", NULL},
      {"2001:4860:4860::8888", NULL},
      {"2a00:1450:4001::200e", NULL},
      {"::ffff:8.8.8.8", NULL},
      {"64:ff9b::8.8.8.8", NULL},
      {"2002:808:808::1", NULL},
      {"2001:0:4136:e378:8000:63bf:f7f7:f7f7", NULL}, /* Teredo, client 8.8.8.8 */
      {"2001:db7:ffff::1", NULL},
      {"2001:db9::1", NULL},
  };
  expect_judged(v, SG_ARRAY_LEN(v));
}

Test(addr, an_address_that_is_not_ip_is_refused) {
  struct sockaddr_un un = {.sun_family = AF_UNIX};
  const char *why = sg_addr_forbidden((const struct sockaddr *)&un);
  cr_assert(why != NULL && strcmp(why, "not an IP address") == 0);
  cr_assert_str_eq(sg_addr_forbidden(NULL), "not an IP address");
}

Test(addr, the_port_does_not_matter) {
  struct sockaddr_storage ss = ip("127.0.0.1");
  ((struct sockaddr_in *)&ss)->sin_port = htons(443);
  cr_assert_str_eq(sg_addr_forbidden((const struct sockaddr *)&ss), "loopback");
  ss = ip("8.8.8.8");
  ((struct sockaddr_in *)&ss)->sin_port = htons(22);
  cr_assert_null(sg_addr_forbidden((const struct sockaddr *)&ss));
}

/* The allow list */

static int contains(const sg_cidr_list *l, const char *addr) {
  struct sockaddr_storage ss = ip(addr);
  return sg_cidr_list_contains(l, (const struct sockaddr *)&ss);
}

static sg_cidr_list *list_of(const char *const *ranges, size_t n) {
  sg_cidr_list *l = sg_cidr_list_new();
  for (size_t i = 0; i < n; i++) {
    char err[160] = "";
    cr_assert_eq(sg_cidr_list_add(l, ranges[i], err, sizeof(err)), 0, "%s: %s", ranges[i], err);
  }
  return l;
}

Test(cidr, ranges_and_single_addresses_are_accepted) {
  static const char *const ok[] = {
      "127.0.0.0/8", "::1/128",  "10.1.2.3",   "::1",           "0.0.0.0/0",
      "::/0",        "fd00::/8", "1.2.3.4/32", "2001:db8::/32", "10.0.0.0/9",
  };
  sg_cidr_list *l = list_of(ok, SG_ARRAY_LEN(ok));
  sg_cidr_list_free(l);
}

Test(cidr, malformed_ranges_and_bad_prefix_lengths_are_refused_with_a_message) {
  static const char *const bad[] = {
      "",
      "/8",
      "10.0.0.0/",
      "10.0.0.0/33",
      "::/129",
      "10.0.0.0/08",
      "10.0.0.0/-1",
      "10.0.0.0/+8",
      "10.0.0.0/8/8",
      "10.0.0.0/ 8",
      "10.0.0.0 /8",
      "10.0.0.0/0x8",
      "10.0.0.0/1000",
      "10.1/8",
      "127.1",
      "2130706433",
      "[::1]/128",
      "[::1]",
      "fe80::1%eth0/64",
      "localhost",
      "10.0.0.0/8,11.0.0.0/8",
      "::ffff:127.0.0.0/104",
      "::ffff:0:0/96",
      "::ffff:1.2.3.4",
  };
  sg_cidr_list *l = sg_cidr_list_new();
  for (size_t i = 0; i < SG_ARRAY_LEN(bad); i++) {
    char err[160] = "";
    cr_expect_eq(sg_cidr_list_add(l, bad[i], err, sizeof(err)), -1, "\"%s\" was accepted", bad[i]);
    cr_expect_neq(err[0], '\0', "\"%s\": no message", bad[i]);
  }
  cr_assert_eq(sg_cidr_list_add(l, "nope", NULL, 0), -1);
  cr_assert_eq(contains(l, "0.0.0.0"), 0);
  cr_assert_eq(contains(l, "::"), 0);
  sg_cidr_list_free(l);
}

Test(cidr, an_address_is_contained_in_its_ranges_only) {
  static const char *const ranges[] = {"127.0.0.0/8", "::1/128", "192.168.1.7", "10.0.0.0/9",
                                       "2001:db8:8000::/33"};
  sg_cidr_list *l = list_of(ranges, SG_ARRAY_LEN(ranges));
  static const char *const in[] = {"127.0.0.1",
                                   "127.255.255.255",
                                   "::1",
                                   "192.168.1.7",
                                   "10.0.0.0",
                                   "10.127.255.255",
                                   "2001:db8:8000::1",
                                   "2001:db8:ffff:ffff::1"};
  static const char *const out[] = {"126.255.255.255", "128.0.0.0",        "::2",        "::",
                                    "192.168.1.8",     "192.168.1.6",      "10.128.0.0", "11.0.0.0",
                                    "2001:db8::1",     "2001:db8:7fff::1", "0.0.0.0",    "8.8.8.8"};
  for (size_t i = 0; i < SG_ARRAY_LEN(in); i++)
    cr_expect(contains(l, in[i]), "%s is not contained", in[i]);
  for (size_t i = 0; i < SG_ARRAY_LEN(out); i++)
    cr_expect(!contains(l, out[i]), "%s is contained", out[i]);
  sg_cidr_list_free(l);
}

Test(cidr, bits_past_the_prefix_are_cleared) {
  static const char *const ranges[] = {"10.1.2.3/8", "2001:db8::1/32"};
  sg_cidr_list *l = list_of(ranges, SG_ARRAY_LEN(ranges));
  cr_expect(contains(l, "10.200.0.1"));
  cr_expect(contains(l, "2001:db8:ffff::9"));
  cr_expect(!contains(l, "11.1.2.3"));
  sg_cidr_list_free(l);
}

Test(cidr, an_ipv4_mapped_address_is_matched_as_its_ipv4_address) {
  static const char *const ranges[] = {"127.0.0.0/8", "192.168.1.7"};
  sg_cidr_list *l = list_of(ranges, SG_ARRAY_LEN(ranges));
  cr_expect(contains(l, "::ffff:127.0.0.1"));
  cr_expect(contains(l, "::ffff:192.168.1.7"));
  cr_expect(!contains(l, "::ffff:8.8.8.8"));
  cr_expect(!contains(l, "::127.0.0.1")); /* only the mapped form is unwrapped */
  sg_cidr_list_free(l);
}

Test(cidr, ipv6_ranges_never_hold_ipv4_mapped_addresses) {
  static const char *const v6[] = {"::/0"};
  sg_cidr_list *l = list_of(v6, SG_ARRAY_LEN(v6));
  cr_expect(contains(l, "2606:4700::1111"));
  cr_expect(!contains(l, "::ffff:127.0.0.1"));
  cr_expect(!contains(l, "127.0.0.1"));
  sg_cidr_list_free(l);
  static const char *const v4[] = {"0.0.0.0/0"};
  l = list_of(v4, SG_ARRAY_LEN(v4));
  cr_expect(contains(l, "::ffff:127.0.0.1"));
  cr_expect(!contains(l, "::1"));
  sg_cidr_list_free(l);
}

Test(cidr, an_empty_or_missing_list_holds_nothing) {
  sg_cidr_list *l = sg_cidr_list_new();
  cr_expect(!contains(l, "127.0.0.1"));
  cr_expect(!contains(NULL, "127.0.0.1"));
  struct sockaddr_un un = {.sun_family = AF_UNIX};
  cr_expect(!sg_cidr_list_contains(l, (const struct sockaddr *)&un));
  sg_cidr_list_free(l);
  sg_cidr_list_free(NULL);
}

/* Fixed DNS answers */

static size_t find(const sg_resolve_map *m, const char *host, const char **want, size_t n_want) {
  const struct sockaddr_storage *addrs = NULL;
  size_t n = sg_resolve_map_find(m, host, &addrs);
  cr_expect_eq(n, n_want, "%s: %zu answers, want %zu", host, n, n_want);
  for (size_t i = 0; i < n && i < n_want; i++) {
    char got[80], exp[80];
    struct sockaddr_storage w = ip(want[i]);
    cr_expect_str_eq(show(&addrs[i], got, sizeof(got)), show(&w, exp, sizeof(exp)), "%s #%zu", host,
                     i);
  }
  return n;
}

static sg_resolve_map *map_of(const char *const *specs, size_t n) {
  sg_resolve_map *m = sg_resolve_map_new();
  for (size_t i = 0; i < n; i++) {
    char err[160] = "";
    cr_assert_eq(sg_resolve_map_add(m, specs[i], err, sizeof(err)), 0, "%s: %s", specs[i], err);
  }
  return m;
}

Test(resolve_map, host_addr_specs_give_their_answers_under_the_normalized_name) {
  static const char *const specs[] = {
      "api.anthropic.test:127.0.0.1", "V6.Test.:[::1]",   "bare.test:::1",
      "two.test:10.0.0.1,[::1]",      "two.test:8.8.8.8", "localhost:127.0.0.2",
  };
  sg_resolve_map *m = map_of(specs, SG_ARRAY_LEN(specs));
  find(m, "api.anthropic.test", (const char *[]){"127.0.0.1"}, 1);
  find(m, "v6.test", (const char *[]){"::1"}, 1);
  find(m, "bare.test", (const char *[]){"::1"}, 1);
  find(m, "two.test", (const char *[]){"10.0.0.1", "::1", "8.8.8.8"}, 3);
  find(m, "localhost", (const char *[]){"127.0.0.2"}, 1);
  find(m, "other.test", NULL, 0);
  find(m, "anthropic.test", NULL, 0);
  sg_resolve_map_free(m);
}

Test(resolve_map, malformed_specs_are_refused_with_a_message_and_change_nothing) {
  static const char *const bad[] = {
      "",
      "noaddr.test",
      "noaddr.test:",
      ":1.2.3.4",
      "127.0.0.1:127.0.0.1",
      "[::1]:::1",
      "host.test:443:127.0.0.1",
      "host.test:127.1",
      "host.test:2130706433",
      "host.test:[127.0.0.1]",
      "host.test:[::1",
      "host.test:fe80::1%eth0",
      "host.test:1.2.3.4,",
      "host.test:,1.2.3.4",
      "host.test:1.2.3.4,,5.6.7.8",
      "host.test: 1.2.3.4",
      "host.test:1.2.3.4,nope",
      "bad host:1.2.3.4",
      "*.test:1.2.3.4",
      "host.test:127.0.0.0/8",
  };
  sg_resolve_map *m = sg_resolve_map_new();
  for (size_t i = 0; i < SG_ARRAY_LEN(bad); i++) {
    char err[160] = "";
    cr_expect_eq(sg_resolve_map_add(m, bad[i], err, sizeof(err)), -1, "\"%s\" was accepted",
                 bad[i]);
    cr_expect_neq(err[0], '\0', "\"%s\": no message", bad[i]);
  }
  cr_assert_eq(sg_resolve_map_add(m, "x.test:nope", NULL, 0), -1);
  find(m, "host.test", NULL, 0);
  find(m, "noaddr.test", NULL, 0);
  const struct sockaddr_storage *addrs;
  cr_expect_eq(sg_resolve_map_find(NULL, "host.test", &addrs), 0);
  sg_resolve_map_free(m);
  sg_resolve_map_free(NULL);
}

/* Resolution, through a real loop running on the test's thread. The resolutions are started
 * from a task on the loop, as the proxy starts them, so a callback run inside the call would
 * be seen. */

typedef struct {
  /* The question. */
  const sg_resolve_config *cfg;
  const char *host;
  uint16_t port;
  /* The answer. */
  int returned; /* sg_resolve_async has returned */
  int calls;
  int early;        /* a call came before sg_resolve_async returned */
  int wrong_thread; /* a call came off the loop's thread */
  sg_resolve_status status;
  const char *reason;
  struct sockaddr_storage addr;
  int has_addr;
} query;

static sg_loop *loop;
static query *queries;
static size_t n_queries, n_answered;

static void setup(void) {
  loop = sg_loop_new(0);
}

static void teardown(void) {
  sg_work_shutdown();
  sg_loop_free(loop);
}

TestSuite(resolve, .init = setup, .fini = teardown, .timeout = 60);

static void on_resolved(void *arg, sg_resolve_status status, const struct sockaddr_storage *addr,
                        const char *reason) {
  query *q = arg;
  q->early |= !q->returned;
  q->wrong_thread |= sg_loop_current() != loop;
  q->calls++;
  q->status = status;
  q->reason = reason;
  q->has_addr = addr != NULL;
  if (addr != NULL)
    q->addr = *addr;
  if (++n_answered == n_queries)
    sg_loop_stop(loop);
}

static void start_all(void *arg) {
  (void)arg;
  for (size_t i = 0; i < n_queries; i++) {
    query *q = &queries[i];
    sg_resolve_async(loop, q->cfg, q->host, q->port, on_resolved, q);
    q->returned = 1;
  }
}

/* Runs every query to its answer; each is answered once, on the loop, after its call. */
static void run_queries(query *q, size_t n) {
  queries = q;
  n_queries = n;
  n_answered = 0;
  sg_loop_post(loop, start_all, NULL);
  sg_loop_run(loop);
  for (size_t i = 0; i < n; i++) {
    cr_assert_eq(q[i].calls, 1, "%s: %d calls", q[i].host, q[i].calls);
    cr_assert_eq(q[i].early, 0, "%s: called before sg_resolve_async returned", q[i].host);
    cr_assert_eq(q[i].wrong_thread, 0, "%s: called off the loop", q[i].host);
  }
}

static void expect_ok(const query *q, const char *addr, uint16_t port) {
  char got[80], want[80];
  struct sockaddr_storage w = ip(addr);
  ((struct sockaddr_in *)&w)->sin_port = htons(port); /* same offset in sockaddr_in6 */
  cr_expect_eq(q->status, SG_RESOLVE_OK, "%s: status %d (%s)", q->host, q->status,
               q->reason ? q->reason : "");
  cr_expect(q->has_addr, "%s: no address", q->host);
  cr_expect_null(q->reason, "%s", q->host);
  if (q->has_addr)
    cr_expect_str_eq(show(&q->addr, got, sizeof(got)), show(&w, want, sizeof(want)), "%s", q->host);
}

/* Refused for |reason|; |addr| is the refused address, or NULL when there is none. */
static void expect_forbidden(const query *q, const char *reason, const char *addr) {
  cr_expect_eq(q->status, SG_RESOLVE_FORBIDDEN, "%s: status %d", q->host, q->status);
  cr_expect(q->reason != NULL && strcmp(q->reason, reason) == 0, "%s: reason %s, want %s", q->host,
            q->reason ? q->reason : "(null)", reason);
  cr_expect_eq(q->has_addr, addr != NULL, "%s", q->host);
  if (addr != NULL && q->has_addr) {
    char got[80], want[80];
    struct sockaddr_storage w = ip(addr);
    ((struct sockaddr_in *)&w)->sin_port = htons(q->port);
    cr_expect_str_eq(show(&q->addr, got, sizeof(got)), show(&w, want, sizeof(want)), "%s", q->host);
  }
}

Test(resolve, an_ip_literal_is_judged_as_it_is) {
  sg_resolve_config none = {0};
  query q[] = {
      {.cfg = &none, .host = "8.8.8.8", .port = 443},
      {.cfg = &none, .host = "2606:4700::1111", .port = 8443},
      {.cfg = &none, .host = "127.0.0.1", .port = 443},
      {.cfg = &none, .host = "::1", .port = 443},
      {.cfg = &none, .host = "169.254.169.254", .port = 80},
      {.cfg = &none, .host = "::ffff:169.254.169.254", .port = 80},
      {.cfg = NULL, .host = "1.1.1.1", .port = 443},
  };
  run_queries(q, SG_ARRAY_LEN(q));
  expect_ok(&q[0], "8.8.8.8", 443);
  expect_ok(&q[1], "2606:4700::1111", 8443);
  expect_forbidden(&q[2], "loopback", "127.0.0.1");
  expect_forbidden(&q[3], "loopback", "::1");
  expect_forbidden(&q[4], "metadata", "169.254.169.254");
  expect_forbidden(&q[5], "metadata", "::ffff:169.254.169.254");
  expect_ok(&q[6], "1.1.1.1", 443);
}

Test(resolve, the_allow_list_admits_the_internal_addresses_it_holds) {
  static const char *const ranges[] = {"127.0.0.0/8", "::1/128"};
  sg_cidr_list *allow = list_of(ranges, SG_ARRAY_LEN(ranges));
  sg_resolve_config cfg = {.allow = allow};
  query q[] = {
      {.cfg = &cfg, .host = "127.0.0.1", .port = 8080},
      {.cfg = &cfg, .host = "::1", .port = 8080},
      {.cfg = &cfg, .host = "::ffff:127.0.0.1", .port = 8080},
      {.cfg = &cfg, .host = "10.0.0.1", .port = 443},
      {.cfg = &cfg, .host = "64:ff9b::127.0.0.1", .port = 443},
  };
  run_queries(q, SG_ARRAY_LEN(q));
  expect_ok(&q[0], "127.0.0.1", 8080);
  expect_ok(&q[1], "::1", 8080);
  expect_ok(&q[2], "::ffff:127.0.0.1", 8080);
  expect_forbidden(&q[3], "private", "10.0.0.1");
  expect_forbidden(&q[4], "loopback", "64:ff9b::127.0.0.1");
  sg_cidr_list_free(allow);
}

Test(resolve, a_name_in_the_resolve_map_takes_its_fixed_answer) {
  static const char *const specs[] = {"api.anthropic.test:127.0.0.1", "v6.test:[::1]",
                                      "public.test:8.8.8.8,1.1.1.1"};
  static const char *const ranges[] = {"127.0.0.0/8", "::1/128"};
  sg_resolve_map *map = map_of(specs, SG_ARRAY_LEN(specs));
  sg_cidr_list *allow = list_of(ranges, SG_ARRAY_LEN(ranges));
  sg_resolve_config cfg = {.map = map, .allow = allow};
  query q[] = {
      {.cfg = &cfg, .host = "api.anthropic.test", .port = 443},
      {.cfg = &cfg, .host = "API.Anthropic.Test.", .port = 8443},
      {.cfg = &cfg, .host = "v6.test", .port = 443},
      {.cfg = &cfg, .host = "public.test", .port = 443},
  };
  run_queries(q, SG_ARRAY_LEN(q));
  expect_ok(&q[0], "127.0.0.1", 443);
  expect_ok(&q[1], "127.0.0.1", 8443);
  expect_ok(&q[2], "::1", 443);
  expect_ok(&q[3], "8.8.8.8", 443); /* the first answer */
  sg_resolve_map_free(map);
  sg_cidr_list_free(allow);
}

Test(resolve, a_fixed_answer_is_judged_like_a_dns_answer) {
  static const char *const specs[] = {"api.anthropic.test:127.0.0.1", "meta.test:169.254.169.254"};
  sg_resolve_map *map = map_of(specs, SG_ARRAY_LEN(specs));
  sg_resolve_config cfg = {.map = map};
  query q[] = {
      {.cfg = &cfg, .host = "api.anthropic.test", .port = 443},
      {.cfg = &cfg, .host = "meta.test", .port = 80},
  };
  run_queries(q, SG_ARRAY_LEN(q));
  expect_forbidden(&q[0], "loopback", "127.0.0.1");
  expect_forbidden(&q[1], "metadata", "169.254.169.254");
  sg_resolve_map_free(map);
}

Test(resolve, a_name_with_any_forbidden_address_is_refused_whole) {
  static const char *const specs[] = {"mixed.test:8.8.8.8,10.0.0.1,127.0.0.1",
                                      "mixed6.test:2606:4700::1111,fe80::1",
                                      "allowed-mix.test:8.8.8.8,127.0.0.1,192.168.0.1"};
  static const char *const ranges[] = {"127.0.0.0/8"};
  sg_resolve_map *map = map_of(specs, SG_ARRAY_LEN(specs));
  sg_cidr_list *allow = list_of(ranges, SG_ARRAY_LEN(ranges));
  sg_resolve_config cfg = {.map = map, .allow = allow};
  query q[] = {
      {.cfg = &cfg, .host = "mixed.test", .port = 443},
      {.cfg = &cfg, .host = "mixed6.test", .port = 443},
      {.cfg = &cfg, .host = "allowed-mix.test", .port = 443},
  };
  run_queries(q, SG_ARRAY_LEN(q));
  expect_forbidden(&q[0], "private", "10.0.0.1"); /* the first refused address */
  expect_forbidden(&q[1], "link-local", "fe80::1");
  expect_forbidden(&q[2], "private", "192.168.0.1");
  sg_resolve_map_free(map);
  sg_cidr_list_free(allow);
}

Test(resolve, public_and_allowed_addresses_together_give_the_first) {
  static const char *const specs[] = {"both.test:127.0.0.1,8.8.8.8"};
  static const char *const ranges[] = {"127.0.0.0/8"};
  sg_resolve_map *map = map_of(specs, SG_ARRAY_LEN(specs));
  sg_cidr_list *allow = list_of(ranges, SG_ARRAY_LEN(ranges));
  sg_resolve_config cfg = {.map = map, .allow = allow};
  query q[] = {{.cfg = &cfg, .host = "both.test", .port = 443}};
  run_queries(q, SG_ARRAY_LEN(q));
  expect_ok(&q[0], "127.0.0.1", 443);
  sg_resolve_map_free(map);
  sg_cidr_list_free(allow);
}

Test(resolve, localhost_names_are_refused_without_a_lookup_even_when_loopback_is_allowed) {
  static const char *const ranges[] = {"127.0.0.0/8", "::1/128"};
  sg_cidr_list *allow = list_of(ranges, SG_ARRAY_LEN(ranges));
  sg_resolve_config cfg = {.allow = allow};
  query q[] = {
      {.cfg = &cfg, .host = "localhost", .port = 443},
      {.cfg = &cfg, .host = "localhost.", .port = 443},
      {.cfg = &cfg, .host = "LocalHost", .port = 443},
      {.cfg = &cfg, .host = "api.localhost", .port = 443},
      {.cfg = &cfg, .host = "a.b.localhost", .port = 443},
  };
  run_queries(q, SG_ARRAY_LEN(q));
  for (size_t i = 0; i < SG_ARRAY_LEN(q); i++)
    expect_forbidden(&q[i], "localhost", NULL);
  sg_cidr_list_free(allow);
}

Test(resolve, a_localhost_name_in_the_resolve_map_takes_its_fixed_answer) {
  static const char *const specs[] = {"localhost:127.0.0.1", "api.localhost:[::1]"};
  static const char *const ranges[] = {"127.0.0.0/8", "::1/128"};
  sg_resolve_map *map = map_of(specs, SG_ARRAY_LEN(specs));
  sg_cidr_list *allow = list_of(ranges, SG_ARRAY_LEN(ranges));
  sg_resolve_config cfg = {.map = map, .allow = allow};
  query q[] = {
      {.cfg = &cfg, .host = "localhost", .port = 3000},
      {.cfg = &cfg, .host = "api.localhost", .port = 3001},
      {.cfg = &cfg, .host = "other.localhost", .port = 3002},
  };
  run_queries(q, SG_ARRAY_LEN(q));
  expect_ok(&q[0], "127.0.0.1", 3000);
  expect_ok(&q[1], "::1", 3001);
  expect_forbidden(&q[2], "localhost", NULL);
  sg_resolve_map_free(map);
  sg_cidr_list_free(allow);
}

Test(resolve, a_host_that_is_neither_a_name_nor_canonical_ip_text_is_not_found) {
  sg_resolve_config none = {0};
  query q[] = {
      {.cfg = &none, .host = "", .port = 443},
      {.cfg = &none, .host = "127.1", .port = 443},
      {.cfg = &none, .host = "[::1]", .port = 443},
      {.cfg = &none, .host = "a b", .port = 443},
      {.cfg = &none, .host = "fe80::1%eth0", .port = 443},
      {.cfg = &none, .host = "example.com:443", .port = 443},
  };
  run_queries(q, SG_ARRAY_LEN(q));
  for (size_t i = 0; i < SG_ARRAY_LEN(q); i++) {
    cr_expect_eq(q[i].status, SG_RESOLVE_NOT_FOUND, "\"%s\": status %d", q[i].host, q[i].status);
    cr_expect(!q[i].has_addr);
    cr_expect_not_null(q[i].reason);
  }
}

Test(resolve, many_resolutions_each_get_one_answer) {
  enum { N = 64 };
  static const char *const specs[] = {"api.anthropic.test:127.0.0.1"};
  sg_resolve_map *map = map_of(specs, SG_ARRAY_LEN(specs));
  sg_resolve_config cfg = {.map = map};
  static const char *const hosts[] = {"api.anthropic.test", "8.8.8.8", "localhost", "10.0.0.1"};
  query q[N];
  memset(q, 0, sizeof(q));
  for (size_t i = 0; i < N; i++)
    q[i] = (query){.cfg = &cfg, .host = hosts[i % SG_ARRAY_LEN(hosts)], .port = (uint16_t)(i + 1)};
  run_queries(q, N);
  for (size_t i = 0; i < N; i += SG_ARRAY_LEN(hosts)) {
    expect_forbidden(&q[i], "loopback", "127.0.0.1");
    expect_ok(&q[i + 1], "8.8.8.8", (uint16_t)(i + 2));
    expect_forbidden(&q[i + 2], "localhost", NULL);
    expect_forbidden(&q[i + 3], "private", "10.0.0.1");
  }
  sg_resolve_map_free(map);
}

/* The machine's own name, from /etc/hosts: the only lookup a test without a network can make.
 * Returns its getaddrinfo answer (the caller frees it), or NULL if it has none. */
static struct addrinfo *own_name(char *name, size_t cap) {
  if (gethostname(name, cap) != 0)
    return NULL;
  name[cap - 1] = '\0';
  char norm[SG_HOST_MAX + 1];
  if (sg_host_normalize(name, strlen(name), norm) != 0 || strcmp(norm, "localhost") == 0)
    return NULL;
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
  struct addrinfo *res = NULL;
  if (getaddrinfo(name, NULL, &hints, &res) != 0)
    return NULL;
  return res;
}

Test(resolve, a_name_is_looked_up_on_the_work_pool_and_its_first_address_delivered) {
  char name[256];
  struct addrinfo *res = own_name(name, sizeof(name));
  if (res == NULL)
    cr_skip_test("this machine's name does not resolve");
  static const char *const everything[] = {"0.0.0.0/0", "::/0"};
  sg_cidr_list *allow = list_of(everything, SG_ARRAY_LEN(everything));
  sg_resolve_config cfg = {.allow = allow};
  query q[] = {{.cfg = &cfg, .host = name, .port = 8443}};
  run_queries(q, SG_ARRAY_LEN(q));
  char want[INET6_ADDRSTRLEN];
  const void *a = res->ai_family == AF_INET
                      ? (const void *)&((struct sockaddr_in *)res->ai_addr)->sin_addr
                      : (const void *)&((struct sockaddr_in6 *)res->ai_addr)->sin6_addr;
  inet_ntop(res->ai_family, a, want, sizeof(want));
  expect_ok(&q[0], want, 8443);
  freeaddrinfo(res);
  sg_cidr_list_free(allow);
}

Test(resolve, a_looked_up_name_is_judged_by_every_address_of_its_answer) {
  char name[256];
  struct addrinfo *res = own_name(name, sizeof(name));
  if (res == NULL)
    cr_skip_test("this machine's name does not resolve");
  const struct sockaddr *refused = NULL;
  for (struct addrinfo *ai = res; ai != NULL && refused == NULL; ai = ai->ai_next)
    if (sg_addr_forbidden(ai->ai_addr) != NULL)
      refused = ai->ai_addr;
  query q[] = {{.cfg = NULL, .host = name, .port = 443}};
  run_queries(q, SG_ARRAY_LEN(q));
  if (refused != NULL) {
    char text[INET6_ADDRSTRLEN];
    const void *a = refused->sa_family == AF_INET
                        ? (const void *)&((const struct sockaddr_in *)refused)->sin_addr
                        : (const void *)&((const struct sockaddr_in6 *)refused)->sin6_addr;
    inet_ntop(refused->sa_family, a, text, sizeof(text));
    expect_forbidden(&q[0], sg_addr_forbidden(refused), text);
  } else {
    cr_expect_eq(q[0].status, SG_RESOLVE_OK);
  }
  freeaddrinfo(res);
}
