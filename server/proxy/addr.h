/* Where the egress proxy may connect (SPEC §5, notes §2.5/2.6): the defence against requests
 * that use the proxy to reach the machine it runs on, its private network or a cloud metadata
 * service (SSRF).
 *
 * The rules, in the order a request meets them:
 *   - Authorities (CONNECT target, Host, absolute-URI authority) are parsed strictly and
 *     normalized once: a host name the way policy/host.h compares names, an IP literal in its
 *     canonical text. Spellings resolvers read as IPv4 ("127.1", "2130706433", "0x7f.1") are IP
 *     literals here too, so they are judged as addresses and never matched as names.
 *   - A host is resolved once, off the event loop, and every address of the answer is judged:
 *     loopback, private, link-local, metadata and other non-public ranges are refused (IPv6
 *     forms that embed an IPv4 address are judged as that address) unless the operator's allow
 *     list (--proxy-allow-cidr) holds them.
 *   - The proxy connects to exactly the address that was judged and never resolves again, so
 *     an answer that changes between the check and the connect (DNS rebinding) cannot reach an
 *     address that was not checked.
 *
 * Everything but sg_resolve_async is a pure function of its arguments, for tests and fuzzers.
 * The lists are built at start-up and only read afterwards, from any thread, without locks. */
#ifndef SG_PROXY_ADDR_H
#define SG_PROXY_ADDR_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "net/loop.h"
#include "policy/host.h"

/* Authorities */

/* A parsed authority. |host| is a normalized host name (lower-case, no trailing dot), or for
 * an IP literal its canonical text without brackets ("127.0.0.1", "::1", "::ffff:127.0.0.1"),
 * which is also what a leaf certificate is minted for (proxy/ca.h). */
typedef struct sg_authority {
  char host[SG_HOST_MAX + 1];
  uint16_t port;
  int is_ip;
  /* For an IP literal: the address, AF_INET or AF_INET6, with |port| set (network order). For
   * a name: all zero (AF_UNSPEC). */
  struct sockaddr_storage addr;
} sg_authority;

/* Parses the authority |s| (|len| bytes, no NUL needed): "host", "host:port", "[v6]" or
 * "[v6]:port". A missing port is |default_port|; with |default_port| 0 the port is required
 * (a CONNECT target).
 *
 * Strict, since what passes is what policy decides on: a port is 1 to 5 digits without a
 * leading zero, 1..65535, never empty after ':'; refused are userinfo ('@'), zone ids ('%'),
 * '/', '\', spaces and control bytes anywhere, an empty host, brackets around anything but an
 * IPv6 address, an IPv6 address without brackets, and a name that policy/host.h does not
 * accept. A host whose last label is a number (all digits, or "0x" and hex digits) is read as
 * IPv4 the way WHATWG URL and inet_aton do — one to four parts of decimal, octal (leading 0)
 * or hex (0x), the last filling the remaining bytes, one trailing dot allowed — and refused if
 * that fails ("1.2.3.09", "example.123", "256.1.1.1").
 *
 * Returns 0 with |*out| filled, or -1 with |*out| unspecified. */
int sg_authority_parse(const char *s, size_t len, uint16_t default_port, sg_authority *out);

/* Addresses */

/* Judges the address the proxy would connect to (AF_INET or AF_INET6; the port is ignored).
 * Returns NULL if it is public, else a short static reason for logs and error pages:
 *
 *   "unspecified"   0.0.0.0/8, ::
 *   "loopback"      127.0.0.0/8, ::1
 *   "private"       10/8, 172.16/12, 192.168/16, fc00::/7
 *   "cgnat"         100.64.0.0/10
 *   "link-local"    169.254.0.0/16, fe80::/10
 *   "site-local"    fec0::/10
 *   "metadata"      169.254.169.254, 100.100.100.200, 168.63.129.16, 192.0.0.192,
 *                   fd00:ec2::254, fd20:ce::254 (cloud instance metadata services)
 *   "multicast"     224.0.0.0/4, ff00::/8
 *   "broadcast"     255.255.255.255
 *   "documentation" 192.0.2/24, 198.51.100/24, 203.0.113/24, 2001:db8::/32, 3fff::/20
 *   "benchmarking"  198.18.0.0/15, 2001:2::/48
 *   "reserved"      192.0.0.0/24, 240.0.0.0/4, 100::/64, and all IPv6 outside 2000::/3
 *                   (where no public unicast address has ever been allocated)
 *   "not an IP address" for any other family.
 *
 * An IPv6 address that carries an IPv4 address is judged as that IPv4 address: IPv4-mapped
 * ::ffff:a.b.c.d, IPv4-compatible ::a.b.c.d, IPv4-translated ::ffff:0:a.b.c.d, NAT64
 * 64:ff9b::/96 and 64:ff9b:1::/48 (the last 32 bits), 6to4 2002::/16 (bits 16..47) and Teredo
 * 2001::/32 (the client, the last 32 bits inverted). */
const char *sg_addr_forbidden(const struct sockaddr *sa);

/* The operator's allow list of address ranges (--proxy-allow-cidr). The details of this
 * structure are intentionally hidden. */
typedef struct sg_cidr_list sg_cidr_list;

/* An empty list; the caller frees it with sg_cidr_list_free. */
sg_cidr_list *sg_cidr_list_new(void);

/* Frees |l|. NULL is a no-op. */
void sg_cidr_list_free(sg_cidr_list *l);

/* Adds the range |text|: "127.0.0.0/8", "::1/128", or an address alone for that one address
 * ("10.1.2.3" is 10.1.2.3/32). Addresses are strict inet_pton text (no "127.1", no brackets,
 * no zone id); the prefix length is decimal without a leading zero, at most 32 or 128. Bits
 * past the prefix are cleared ("10.1.2.3/8" is 10.0.0.0/8). A range of IPv4-mapped addresses
 * (inside ::ffff:0:0/96) is refused: write it in IPv4 form, which is what mapped addresses are
 * matched against. Returns 0, or -1 with a message in |err| (which may be NULL). */
int sg_cidr_list_add(sg_cidr_list *l, const char *text, char *err, size_t errlen);

/* Nonzero if |sa| lies in one of |l|'s ranges. An IPv4-mapped IPv6 address is matched as its
 * IPv4 address, against the IPv4 ranges only. A NULL |l| holds nothing. */
int sg_cidr_list_contains(const sg_cidr_list *l, const struct sockaddr *sa);

/* Fixed DNS answers */

/* Fixed answers for host names (--proxy-resolve HOST:ADDR, like curl's --resolve), used in
 * place of DNS. The details of this structure are intentionally hidden. */
typedef struct sg_resolve_map sg_resolve_map;

/* An empty map; the caller frees it with sg_resolve_map_free. */
sg_resolve_map *sg_resolve_map_new(void);

/* Frees |m|. NULL is a no-op. */
void sg_resolve_map_free(sg_resolve_map *m);

/* Adds |spec|, "HOST:ADDR[,ADDR...]": a host name (normalized as policy/host.h does; not an IP
 * literal), then addresses in strict inet_pton text, IPv6 with or without brackets
 * ("api.anthropic.test:127.0.0.1", "v6.test:[::1]", "v6.test:::1", "two.test:10.0.0.1,::1").
 * Adding a host again appends its addresses, as if DNS had returned them all. The answers are
 * judged like DNS answers (sg_resolve_async): a fixed answer is not an allowance. Returns 0, or
 * -1 with a message in |err| (which may be NULL) and |m| unchanged. */
int sg_resolve_map_add(sg_resolve_map *m, const char *spec, char *err, size_t errlen);

/* The fixed answers for the normalized host name |host|: sets |*addrs| to an array owned by
 * |m| (port 0, in the order added) and returns its length, or returns 0 if |host| has none. */
size_t sg_resolve_map_find(const sg_resolve_map *m, const char *host,
                           const struct sockaddr_storage **addrs);

/* Resolution */

typedef enum sg_resolve_status {
  SG_RESOLVE_OK,        /* |addr| is the address to connect to */
  SG_RESOLVE_NOT_FOUND, /* no such host, or no address: answer 502 */
  SG_RESOLVE_FORBIDDEN, /* an address is not one the proxy may reach: answer 403 */
  SG_RESOLVE_FAILED,    /* DNS failed for now (timeout, no server): answer 502 */
} sg_resolve_status;

/* Delivers a resolution on the loop's thread. With SG_RESOLVE_OK, |addr| is the address to
 * connect to, with the port set, and |reason| is NULL. With SG_RESOLVE_FORBIDDEN, |addr| is
 * the first refused address and |reason| its sg_addr_forbidden reason, or |addr| is NULL and
 * |reason| is "localhost". Otherwise |addr| is NULL and |reason| a short static text. |addr|
 * is valid only during the call: copy it. */
typedef void (*sg_resolve_cb)(void *arg, sg_resolve_status status,
                              const struct sockaddr_storage *addr, const char *reason);

/* What resolution consults. Both may be NULL (no fixed answers; nothing allowed beyond public
 * addresses); both must outlive every sg_resolve_async call that uses them, and stay unchanged
 * while any is pending: lookups read them from worker threads without locks. */
typedef struct sg_resolve_config {
  const sg_resolve_map *map;
  const sg_cidr_list *allow;
} sg_resolve_config;

/* Resolves |host| — a normalized host name or canonical IP literal text, as
 * sg_authority_parse gives — and delivers the address to connect to on |port|:
 *   - an IP literal is judged as it is, without DNS;
 *   - a name in |cfg|'s map takes its fixed answers;
 *   - "localhost" and names under ".localhost" are refused (SG_RESOLVE_FORBIDDEN, reason
 *     "localhost") without a lookup, unless the map has them: they mean this machine
 *     (RFC 6761) whatever DNS says;
 *   - any other name is looked up with getaddrinfo on the work pool (runtime/work.h), which
 *     holds a worker for as long as the lookup takes (resolv.conf's timeout and attempts), so
 *     callers bound how many lookups they start.
 * Every address of the answer is judged: an address in |cfg|'s allow list or public (NULL from
 * sg_addr_forbidden) may be reached. If any address of the answer may not, the whole name is
 * refused, even when others may be reached: an answer mixing public and internal addresses is
 * what DNS rebinding looks like, and a name that points inside is not one to send secrets to.
 * Otherwise the first address of the answer (getaddrinfo's order, or the map's) is delivered.
 *
 * |cb| runs exactly once, on |loop|'s thread, and never before this function returns, whatever
 * the case (answers that need no lookup are posted too), so callers have one code path. There
 * is no cancelling: a caller whose connection goes first keeps |arg| valid until |cb| runs. If
 * |loop| stops first, |cb| never runs (see sg_loop_post) and the request's small allocation is
 * lost with the loop: |arg| must not be the only owner of anything that outlives the loop.
 * Thread-safe; |host| and |*cfg| are copied (a NULL |cfg| has neither map nor allow list). */
void sg_resolve_async(sg_loop *loop, const sg_resolve_config *cfg, const char *host, uint16_t port,
                      sg_resolve_cb cb, void *arg);

#endif
