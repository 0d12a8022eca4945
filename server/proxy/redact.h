/* The egress proxy's redactor of echoed values (SPEC §5: "Real values echoed back in a response
 * are replaced by their sealed token"), the mirror image of the token scanner (proxy/scan.h).
 *
 * The proxy substitutes a few real values into a request (typically one to three); if the
 * upstream echoes one back, in a header or an identity-encoded body, the sandbox must see the
 * token instead. The redactor replaces every occurrence of those values in a stream of chunks
 * of any size, finding values split across chunk boundaries, and tells the proxy of each
 * replacement so it can audit it.
 *
 * Which occurrences: those a left-to-right scan picks. At each position the longest value that
 * starts there is replaced, and the scan goes on after it; a value that starts inside a replaced
 * one is not looked at. So with "abcdefgh" and "abcdefghij", "abcdefghij" is one replacement,
 * and with "abcdefgh" and "cdefghijkl", "abcdefghijkl" is the first token then "ijkl". Two equal
 * values: the one added first wins. Values may hold any byte, NUL included.
 *
 * Values shorter than SG_REDACT_MIN_LEN bytes are not looked for: a one-byte secret would rewrite
 * that byte everywhere in every response, and a short one would be found in noise. Such a secret
 * can be echoed back unredacted; policy, not this module, must keep short secrets out of hosts
 * that echo.
 *
 * Cost: each value is matched by its own Knuth-Morris-Pratt automaton, so the work per byte is
 * bounded whatever the input: at most about 2 steps per value per byte (2 * SG_REDACT_MAX_VALUES
 * for the worst input), never a re-scan. Between possible matches the redactor skips ahead with
 * memchr (one distinct first byte among the values) or a 256-entry table of first bytes, so a
 * large body with no hit costs about what copying it does. Between feeds it holds back at most
 * (longest value - 1) bytes: the ones that may still begin a value. Memory is allocated when
 * values are added (their failure tables, the held-back bytes), never when fed. */
#ifndef SG_PROXY_REDACT_H
#define SG_PROXY_REDACT_H

#include <stddef.h>
#include <stdint.h>

#define SG_REDACT_MIN_LEN    8
#define SG_REDACT_MAX_VALUES 64
/* The longest value looked for: the longest secret value the gateway stores (SG_VALUE_MAX,
 * service/validate.h). */
#define SG_REDACT_MAX_LEN (64 * 1024)

/* sg_redact_add's codes besides 0. */
#define SG_REDACT_SHORT       1    /* shorter than SG_REDACT_MIN_LEN: not looked for */
#define SG_REDACT_ERR_FULL    (-1) /* SG_REDACT_MAX_VALUES values already */
#define SG_REDACT_ERR_LONG    (-2) /* longer than SG_REDACT_MAX_LEN */
#define SG_REDACT_ERR_STARTED (-3) /* the stream has begun: add before the first feed */

/* The output sink, as scan.h's: called with the next |len| bytes of output (|len| > 0), in
 * order. Returns 0, or a negative code to stop the stream; the redactor returns that code. */
typedef int (*sg_redact_emit)(void *arg, const char *data, size_t len);

/* Told of each replacement, after its token is emitted, with the tag given to sg_redact_add. */
typedef void (*sg_redact_hit)(void *arg, void *tag);

/* One value to look for and the state of its automaton. Private to redact.c. */
struct sg_redact_value {
  const unsigned char *value;
  const char *token;
  size_t value_len, token_len;
  void *tag;
  uint32_t *border; /* border[q]: the longest proper border of value[0..q), 1 <= q <= value_len */
  size_t state;     /* how many bytes of the value end the stream so far (< value_len) */
};

/* A redactor, allocated by the caller (on the stack or inside a request) like sg_scanner; the
 * fields are private to redact.c. Stream positions count bytes since sg_redact_init. */
typedef struct sg_redactor {
  sg_redact_emit emit;
  void *emit_arg;
  sg_redact_hit hit;
  void *hit_arg;
  struct sg_redact_value values[SG_REDACT_MAX_VALUES];
  size_t n, longest;
  int only_first;           /* the first byte of every value when they share it, else -1 */
  unsigned char first[256]; /* nonzero for a byte that starts some value */
  uint64_t pos;             /* bytes fed */
  uint64_t at;              /* the scan: every byte before it is emitted or replaced */
  uint64_t run;             /* where the bytes decided unchanged but not yet emitted begin */
  size_t hold;              /* the longest partial match: positions >= pos - hold are open */
  /* For each position in [at, pos), 1 + the longest value found to start there, or 0; indexed
   * by position & mask. */
  unsigned char *found;
  size_t mask;
  /* The bytes [at, pos) between feeds, at carry + carry_off; carry_len <= longest - 1. */
  char *carry;
  size_t carry_off, carry_len, carry_cap;
  size_t replaced;
  int err; /* the first emit error: the stream stopped there, and every later call returns it */
} sg_redactor;

/* Sets up |r| with no values, emitting to |emit|. Call sg_redact_free when done with it. */
void sg_redact_init(sg_redactor *r, sg_redact_emit emit, void *emit_arg);

/* Reports each replacement to |hit| (NULL: no reports) with |hit_arg|. */
void sg_redact_set_hit(sg_redactor *r, sg_redact_hit hit, void *hit_arg);

/* Looks for the |value_len| bytes at |value| and puts the |token_len| bytes at |token| in their
 * place, reporting |tag| to the hit callback. The redactor keeps the pointers, not copies: the
 * caller keeps both alive until sg_redact_free. Returns 0; SG_REDACT_SHORT if the value is
 * shorter than SG_REDACT_MIN_LEN (nothing added, not an error); or SG_REDACT_ERR_FULL,
 * SG_REDACT_ERR_LONG or SG_REDACT_ERR_STARTED (after a feed since init or reset). */
int sg_redact_add(sg_redactor *r, const char *value, size_t value_len, const char *token,
                  size_t token_len, void *tag);

/* Nonzero if |r| has a value to look for. */
int sg_redact_active(const sg_redactor *r);

/* Scans the next |len| bytes of the stream and emits everything that can no longer be part of a
 * value, with the values replaced. Returns 0, or the negative code an emit call returned; after
 * an error the stream is abandoned and every later call returns that code without emitting. */
int sg_redact_feed(sg_redactor *r, const char *data, size_t len);

/* Ends the stream: a partial value held back cannot complete, so the held bytes are emitted,
 * with any value found among them replaced, and zeroed. Returns 0 or the emit error, as
 * sg_redact_feed. */
int sg_redact_finish(sg_redactor *r);

/* How many values have been replaced since sg_redact_init or sg_redact_reset. */
size_t sg_redact_replaced(const sg_redactor *r);

/* Forgets the stream (the held bytes are zeroed, an emit error is cleared, the count restarts)
 * and keeps the values, for the next response to the same request. */
void sg_redact_reset(sg_redactor *r);

/* Zeroes the held bytes and frees what |r| allocated; |r| can be set up again with
 * sg_redact_init. The values' bytes are the caller's and are not touched. */
void sg_redact_free(sg_redactor *r);

/* Redacts a small buffer in one go (a header value) with |r|'s values, reporting each
 * replacement to |r|'s hit callback; |r|'s stream is not touched. Returns the output,
 * NUL-terminated for convenience, which the caller frees with free(); sets |*out_len| to its
 * length without the NUL and, if |count| is not NULL, |*count| to how many values were
 * replaced. Never fails: allocation failure aborts (core/mem.h). */
char *sg_redact_all(const sg_redactor *r, const char *in, size_t len, size_t *out_len,
                    size_t *count);

#endif
