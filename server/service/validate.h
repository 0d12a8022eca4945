/* Input rules of SPEC §2 "Semantics". Each validator returns 0 if the input is valid, or -1
 * after writing into |err| a message that names the field, e.g. "name: must be 1-128
 * characters of A-Z a-z 0-9 . _ -". Handlers pass that message on with INVALID_ARGUMENT. */
#ifndef SG_SERVICE_VALIDATE_H
#define SG_SERVICE_VALIDATE_H

#include <stddef.h>
#include <stdint.h>

#include "core/arena.h"

#define SG_VALUE_MAX (64 * 1024)

/* Store names: 1-128 characters of [A-Za-z0-9._-]. */
int sg_validate_store_name(const char *field, const char *s, char *err, size_t errlen);

/* Secret names: environment-variable names, [A-Za-z_][A-Za-z0-9_]{0,127}. */
int sg_validate_secret_name(const char *field, const char *s, char *err, size_t errlen);

/* Secret values: 1 byte to 64 KiB. */
int sg_validate_value(const char *field, size_t len, char *err, size_t errlen);

/* A non-empty id (UUID text, as the API hands out). An id that is well formed but belongs to
 * nobody is NOT_FOUND, not invalid. */
int sg_validate_id(const char *field, const char *s, char *err, size_t errlen);

/* A UUID in text form (8-4-4-4-12 hex digits), for an id that filters a list: an id nobody has
 * matches nothing, but text that is no id at all is invalid. */
int sg_validate_uuid(const char *field, const char *s, char *err, size_t errlen);

/* A time in RFC 3339 form: 2026-11-27T22:41:40Z, with an optional fraction of 1-9 digits and
 * "Z" or an offset (+05:45); every field in its range (February 30th is refused). */
int sg_validate_time(const char *field, const char *s, char *err, size_t errlen);

/* A list of host patterns (policy/host.h): each must be valid; duplicates after normalization
 * are dropped; at most 256 entries. On success |*out| (allocated in |arena|) holds the
 * normalized patterns in their first-seen order and |*n_out| their number. The message of an
 * error names the field, the entry's index and the entry itself (quoted, cut to 64 bytes,
 * unprintable bytes shown as '?'), e.g. "egress_allowlist[2]: \"a.com:443\" has a port". On
 * error |*out| is NULL and |*n_out| 0. */
int sg_validate_hosts(const char *field, char *const *in, size_t n, sg_arena *arena, char ***out,
                      size_t *n_out, char *err, size_t errlen);

/* page_size: 0 means the default (50); 1..1000 as given; anything else is invalid. */
int sg_validate_page_size(const char *field, int32_t in, int32_t *out, char *err, size_t errlen);

#endif
