/* The egress proxy's streaming token replacer (SPEC §5).
 *
 * The proxy sees a request body, a header value or a query string as a stream of chunks of any
 * size. The scanner replaces every sealed token in it by the value a lookup callback gives, in
 * one pass over the bytes, finding tokens split across chunk boundaries. Its cost does not
 * depend on how many secrets a sandbox has: every token shares SG_TOKEN_PREFIX, so the scanner
 * looks for that prefix and asks the lookup only about complete candidates.
 *
 * What is a token: exactly SG_TOKEN_LEN bytes, SG_TOKEN_PREFIX then 32 digits of [0-9a-f].
 * The bytes around it do not matter: "xosb_sealed_<32 hex>" and "osb_sealed_<33 hex>" both
 * contain a token (the first 43 bytes from the 'o'), as the sandbox's program may glue a token
 * to anything ("Bearer" schemes, "key=" prefixes, base64 padding). Upper-case hex is not a
 * token: sg_token_generate never writes it. Since 'o' appears in a token only as its first
 * byte, candidates never overlap, and "osb_sealed_osb_sealed_<32 hex>" holds the inner token.
 *
 * The scanner never allocates: between feeds it carries at most SG_TOKEN_LEN - 1 bytes (a
 * possible token start at the end of a chunk) and emits everything else as soon as it is fed,
 * in runs between tokens rather than byte by byte. */
#ifndef SG_PROXY_SCAN_H
#define SG_PROXY_SCAN_H

#include <stddef.h>

#include "crypto/token.h"

/* Looks up a complete token (SG_TOKEN_LEN bytes at |token|, not NUL-terminated). Returns 1 and
 * sets |*value| and |*len| to the bytes to put in its place, or 0 to leave the token as it is.
 * |*value| need only stay valid until the sg_scan_feed or sg_scan_finish call that asked for it
 * returns: the scanner emits it before returning and keeps no pointer to it. */
typedef int (*sg_scan_lookup)(void *arg, const char *token, const char **value, size_t *len);

/* The output sink: called with the next |len| bytes of output (|len| > 0), in order. Returns 0,
 * or a negative code to stop the scan; the scanner returns that code to its caller. */
typedef int (*sg_scan_emit)(void *arg, const char *data, size_t len);

/* A scanner, allocated by the caller (on the stack or inside a connection) like a libuv handle
 * and set up with sg_scan_init. The fields are private to scan.c. */
typedef struct sg_scanner {
  sg_scan_lookup lookup;
  void *lookup_arg;
  sg_scan_emit emit;
  void *emit_arg;
  size_t replaced;
  int err; /* the first emit error: the scan stopped there, and every later call returns it */
  size_t carry_len;
  /* A possible token start, held back until the next feed tells whether it is one; full only
   * for the moment a token split across feeds is looked up. */
  char carry[SG_TOKEN_LEN];
} sg_scanner;

/* Sets up |s| for a new stream. Call it again to reuse |s| for another stream; the scanner
 * holds no resources, so there is nothing to free. */
void sg_scan_init(sg_scanner *s, sg_scan_lookup lookup, void *lookup_arg, sg_scan_emit emit,
                  void *emit_arg);

/* Scans the next |len| bytes of the stream and emits everything that can no longer be part of a
 * token, with tokens the lookup knows replaced. Returns 0, or the negative code an emit call
 * returned; after an error the stream is abandoned and every later call returns that code
 * without emitting. */
int sg_scan_feed(sg_scanner *s, const char *data, size_t len);

/* Ends the stream: emits the carried tail (an unfinished token start) unchanged. Returns 0 or
 * the emit error, as sg_scan_feed. */
int sg_scan_finish(sg_scanner *s);

/* How many tokens have been replaced since sg_scan_init. */
size_t sg_scan_replaced(const sg_scanner *s);

/* Replaces the tokens of a small buffer in one go (a header value, a query string). Returns the
 * output, NUL-terminated for convenience, which the caller frees with free(); sets |*out_len|
 * to its length without the NUL and, if |count| is not NULL, |*count| to how many tokens were
 * replaced. Never fails: allocation failure aborts (core/mem.h). */
char *sg_scan_replace_all(const char *in, size_t len, sg_scan_lookup lookup, void *lookup_arg,
                          size_t *out_len, size_t *count);

/* A growing NUL-terminable output buffer: the sink of the one-shot replacers (here and in
 * proxy/redact.h). The caller owns |data| and frees it with free(). */
typedef struct {
  char *data;
  size_t len, cap;
} sg_scan_out;

/* Starts an empty buffer with room for |cap| bytes. */
void sg_scan_out_init(sg_scan_out *b, size_t cap);

/* An sg_scan_emit appending to the sg_scan_out |arg|, always keeping room for a final NUL.
 * Never fails: allocation failure aborts (core/mem.h). */
int sg_scan_out_append(void *arg, const char *data, size_t len);

#endif
