/* The grpc-timeout header (PROTOCOL-HTTP2.md): at most 8 ASCII digits and a unit, one of
 * H (hours), M (minutes), S (seconds), m (milliseconds), u (microseconds), n (nanoseconds). */
#ifndef SG_RPC_TIMEOUT_H
#define SG_RPC_TIMEOUT_H

#include <stddef.h>
#include <stdint.h>

#define SG_TIMEOUT_MAX_LEN 9 /* 8 digits and a unit */

/* Parses |len| bytes of |s| into nanoseconds; values too large for int64 are clamped to
 * INT64_MAX. Returns 0, or -1 if the text is not a valid timeout (empty, no unit, a sign,
 * more than 8 digits, an unknown unit). */
int sg_timeout_parse(const char *s, size_t len, int64_t *ns);

/* Formats |ns| (> 0) in the finest unit that keeps the value within 8 digits, rounding up so
 * the peer never sees a shorter deadline than ours. Writes a NUL-terminated string of at most
 * SG_TIMEOUT_MAX_LEN characters into |out| and returns its length. */
size_t sg_timeout_format(int64_t ns, char out[SG_TIMEOUT_MAX_LEN + 1]);

#endif
