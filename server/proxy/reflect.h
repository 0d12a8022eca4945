/* Real values echoed back (SPEC §5: "real values echoed back in a response are replaced by
 * their sealed token before the sandbox sees them"). The mirror image of the token scanner
 * (proxy/scan.h): a stream of response bytes, in chunks of any size, has every occurrence of a
 * few values (those substituted into the request at hand) replaced by their tokens.
 *
 * Matching is left to right, non-overlapping: at each position the longest value that starts
 * there wins; after a replacement the scan goes on after it. Values shorter than
 * SG_REFLECT_MIN_LEN are not looked for: a one-byte secret would otherwise rewrite that byte in
 * every response. Between feeds at most (longest value - 1) bytes are held back. The cost per
 * byte is a table look-up, plus a comparison where a value's first byte appears; the worst case
 * is bounded by the number of values times their length per byte. */
#ifndef SG_PROXY_REFLECT_H
#define SG_PROXY_REFLECT_H

#include <stddef.h>

#define SG_REFLECT_MIN_LEN    8
#define SG_REFLECT_MAX_VALUES 32

/* The output sink, as scan.h's: the next |len| > 0 bytes; 0, or a negative code to stop. */
typedef int (*sg_reflect_emit)(void *arg, const char *data, size_t len);

/* Told of each replacement, with the tag given to sg_reflect_add. */
typedef void (*sg_reflect_hit)(void *arg, void *tag);

/* A replacer, allocated by the caller; the fields are private to reflect.c. */
typedef struct sg_reflector {
  sg_reflect_emit emit;
  sg_reflect_hit hit;
  void *arg, *hit_arg;
  struct {
    const char *value, *token;
    size_t value_len, token_len;
    void *tag;
  } needles[SG_REFLECT_MAX_VALUES];
  size_t n, longest;
  unsigned char first[256]; /* nonzero where some value starts with that byte */
  char *buf;                /* the carried bytes, then the fed ones */
  size_t len, cap;
  int err;
} sg_reflector;

/* Sets up |r| with no values; |emit| gets |arg|, |hit| (may be NULL) gets |hit_arg|. */
void sg_reflect_init(sg_reflector *r, sg_reflect_emit emit, void *arg, sg_reflect_hit hit,
                     void *hit_arg);

/* Looks for |value| and puts |token| in its place. Both must stay valid while |r| is used.
 * Returns 0; 1 if the value is too short to look for (nothing added); -1 if |r| is full. */
int sg_reflect_add(sg_reflector *r, const char *value, size_t value_len, const char *token,
                   size_t token_len, void *tag);

/* Nonzero if |r| has a value to look for. */
int sg_reflect_active(const sg_reflector *r);

/* Scans the next |len| bytes. Returns 0, or the emit error (then every later call returns it). */
int sg_reflect_feed(sg_reflector *r, const char *data, size_t len);

/* Ends the stream: emits what is held back. Returns 0 or the emit error. */
int sg_reflect_finish(sg_reflector *r);

/* Forgets the values and the stream (the held bytes are zeroed) and frees the buffer; |r| can
 * be set up again with sg_reflect_init. */
void sg_reflect_reset(sg_reflector *r);

/* Replaces the values in one small buffer (a header value): a malloc'd copy, NUL-terminated,
 * its length in |*out_len|. Uses |r|'s values and hit callback, not its stream. */
char *sg_reflect_all(sg_reflector *r, const char *in, size_t len, size_t *out_len);

#endif
