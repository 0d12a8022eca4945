/* Host names and host patterns (SPEC §2 "Host patterns"), shared by the API (validation of
 * egress_allowlist and allowed_hosts) and the egress proxy (matching).
 *
 * A pattern is a host name ("api.anthropic.com"), a wildcard "*.openai.com" (any subdomain at
 * any depth, not the apex), or "*" alone (every public host). Names are compared normalized:
 * lower-case, one trailing dot dropped. A pattern with a scheme, a path, a port, a '*'
 * anywhere but a leading "*." label, or an IP literal is invalid. */
#ifndef SG_POLICY_HOST_H
#define SG_POLICY_HOST_H

#include <stddef.h>

#define SG_HOST_MAX 253 /* longest DNS name, without the trailing dot */

/* Normalizes a host name: lower-case, one trailing dot dropped; labels of letters, digits,
 * '-' and '_' (1..63 each, not starting or ending with '-'), 253 characters at most. Writes
 * the result and its NUL into |out| (SG_HOST_MAX + 1 bytes). Returns 0, or -1 if |in| is not
 * a valid host name (IP literals are not host names here). */
int sg_host_normalize(const char *in, size_t len, char out[SG_HOST_MAX + 1]);

/* Validates and normalizes a pattern into |out| (SG_HOST_MAX + 1 bytes). Returns 0, or -1 with
 * |*why| set to a short reason for the error message ("has a scheme", "has a port",
 * "is an IP literal", "has '*' outside a leading '*.' label", ...). */
int sg_host_pattern_normalize(const char *in, size_t len, char out[SG_HOST_MAX + 1],
                              const char **why);

/* Nonzero if the normalized |host| matches the normalized |pattern|: "*" matches any host,
 * "*.example.com" matches "a.example.com" and "a.b.example.com" but not "example.com" nor
 * "badexample.com", anything else must be equal. */
int sg_host_match(const char *pattern, const char *host);

/* The hosts two normalized patterns both match, as one of them: |b| when |a| matches every
 * host |b| does ("*.openai.com" and "api.openai.com" give "api.openai.com"), |a| in the
 * converse case, NULL when they share none. Two patterns never overlap otherwise: a wildcard
 * "*.d" and a name share hosts only when one contains the other. */
const char *sg_host_pattern_intersect(const char *a, const char *b);

#endif
