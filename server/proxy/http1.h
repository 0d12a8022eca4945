/* The egress proxy's HTTP/1.1 codec (SPEC §5; RFC 9110, RFC 9112): request and response heads,
 * chunked bodies, and the few helpers the proxy needs to re-serialize what it forwards.
 *
 * A pure codec in the picohttpparser model: no sockets, no allocation, headers returned as
 * slices of the caller's buffer, and head parsers that take the whole buffer received so far
 * and return "bytes consumed, -2 partial, -1 error". Call them again from the start of the
 * buffer when more bytes arrive; the result never depends on how the bytes were split.
 *
 * The proxy never forwards the bytes it received: it re-serializes every head from what these
 * parsers return, so upstream sees exactly what was validated. To make that safe the parsers
 * are strict where other parsers disagree (request smuggling, notes §2.8): CRLF line endings
 * only, no obs-fold, no control bytes, no whitespace before ':', one unambiguous framing
 * (Content-Length or chunked, never both, never twice). Anything ambiguous is refused rather
 * than repaired, with a short reason for the error page. */
#ifndef SG_PROXY_HTTP1_H
#define SG_PROXY_HTTP1_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* The parsers' negative returns. A head refused as SG_H1_BAD is answered 400 (a request) or
 * 502 (a response); SG_H1_TOO_LARGE is answered 431 (a request) or 502. */
#define SG_H1_BAD       -1 /* malformed or ambiguous: |why| says what */
#define SG_H1_PARTIAL   -2 /* incomplete: call again with more bytes */
#define SG_H1_TOO_LARGE -3 /* head over max_head bytes, or over SG_H1_MAX_HEADERS fields */

#define SG_H1_MAX_HEADERS 100 /* field lines in a head */

/* One field line: name and value are slices of the parsed buffer, not NUL-terminated. The
 * value has its leading and trailing whitespace (SP, HTAB) removed and may be empty. */
typedef struct sg_h1_header {
  const char *name;
  size_t name_len;
  const char *value;
  size_t value_len;
} sg_h1_header;

/* The four forms of request-target (RFC 9112 §3.2). */
typedef enum sg_h1_target_form {
  SG_H1_TARGET_ORIGIN,    /* "/path?query": any method but CONNECT */
  SG_H1_TARGET_ABSOLUTE,  /* "http://authority/path?query": any method but CONNECT */
  SG_H1_TARGET_AUTHORITY, /* "host:port": CONNECT, and only CONNECT */
  SG_H1_TARGET_ASTERISK,  /* "*": OPTIONS only */
} sg_h1_target_form;

/* A parsed request head. Every pointer is into the buffer given to sg_h1_parse_request, so the
 * buffer must outlive the struct's use. The proxy allocates it (3.3 KiB) like a libuv handle. */
typedef struct sg_h1_request {
  const char *method; /* a token, case-sensitive ("GET", "CONNECT") */
  size_t method_len;
  const char *target; /* printable ASCII, no SP, no '#' */
  size_t target_len;
  sg_h1_target_form form;
  int minor_version; /* HTTP/1.0 or HTTP/1.1 */
  sg_h1_header headers[SG_H1_MAX_HEADERS];
  size_t num_headers;
  /* The one Host value (HTTP/1.1 requires it), or NULL in HTTP/1.0. With an absolute-form
   * target, the target's authority is the one that counts (RFC 9112 §3.2.2). */
  const char *host;
  size_t host_len;
  /* Framing: the body is |content_length| bytes, or chunked, or empty when neither is set. */
  int64_t content_length; /* -1 when there is no Content-Length */
  int chunked;
  int keep_alive;      /* the client may send another request on this connection */
  int upgrade;         /* Connection lists "upgrade" and Upgrade is present (HTTP/1.1 only) */
  int expect_continue; /* Expect lists "100-continue" (HTTP/1.1 only) */
  const char *why;     /* after SG_H1_BAD or SG_H1_TOO_LARGE: a static string saying why */
} sg_h1_request;

/* A parsed response head; pointers into the parsed buffer as for requests. */
typedef struct sg_h1_response {
  int minor_version;
  int status;         /* 100..599 */
  const char *reason; /* the reason-phrase, possibly empty */
  size_t reason_len;
  sg_h1_header headers[SG_H1_MAX_HEADERS];
  size_t num_headers;
  /* Framing (RFC 9112 §6.3), exactly one of: |no_body| (a response to HEAD, 1xx, 204, 304),
   * |chunked|, |content_length| >= 0, |until_close| (the body ends when upstream closes). */
  int no_body;
  int chunked;
  /* The Content-Length value, -1 when absent. Set with |no_body| too: the proxy forwards it
   * unchanged in a response to HEAD or a 304. */
  int64_t content_length;
  int until_close;
  /* Transfer-Encoding lists a coding other than chunked ("gzip, chunked", "gzip"): the body,
   * dechunked or not, is still in that coding, which the proxy must pass on or refuse. */
  int transfer_coded;
  int keep_alive; /* upstream may serve another request on this connection */
  const char *why;
} sg_h1_response;

/* Parses the request head at the start of |buf| (|len| bytes received so far), reading at most
 * |max_head| bytes. Returns the head's length (> 0, up to and including the CRLF CRLF that ends
 * it; the body or the next request starts there), or
 *   SG_H1_PARTIAL    the head is incomplete and |len| < |max_head|: read more and call again;
 *   SG_H1_BAD        the head is malformed or its framing ambiguous;
 *   SG_H1_TOO_LARGE  the head is longer than |max_head| or has over SG_H1_MAX_HEADERS fields.
 * On SG_H1_BAD and SG_H1_TOO_LARGE, |req->why| says why; on success |req| describes the head.
 * Refused (SG_H1_BAD): bare LF or CR, NUL and other control bytes (HTAB is allowed in values),
 * obs-fold, whitespace before ':', non-token names and methods, a version other than HTTP/1.0
 * and HTTP/1.1, a target form that does not fit the method, more than one empty line before
 * the request line, a missing or repeated Host in HTTP/1.1, a repeated Host in HTTP/1.0, and
 * ambiguous framing: Content-Length with Transfer-Encoding, Content-Length repeated or a list,
 * a Content-Length that is not a number, Transfer-Encoding in HTTP/1.0, and any
 * Transfer-Encoding but "chunked" (we decode no other coding). */
int sg_h1_parse_request(const char *buf, size_t len, size_t max_head, sg_h1_request *req);

/* Parses the response head at the start of |buf|, as sg_h1_parse_request. |request_method_head|
 * is nonzero when the request was HEAD, whose response has no body. The parser does not know
 * about CONNECT: the proxy never forwards one. A 1xx response is followed by another response
 * to the same request. Refused (SG_H1_BAD, answered 502): the syntax errors of requests, a
 * status outside 100..599, Content-Length with Transfer-Encoding, Content-Lengths that differ
 * (identical repeats such as "5, 5" are accepted), "chunked" twice, and Transfer-Encoding in
 * HTTP/1.0. A Transfer-Encoding whose final coding is not chunked means |until_close|. */
int sg_h1_parse_response(const char *buf, size_t len, size_t max_head, int request_method_head,
                         sg_h1_response *res);

/* Nonzero if parsing the head in |buf| again is worthwhile now that it has grown from |prev_len|
 * to |len| bytes: the new bytes hold an LF, or |len| has reached |max_head|. The parsers read
 * from the start of the buffer at every call, so a peer sending a byte at a time would cost
 * max_head squared; calling them only when this says so costs at most one read per line, at
 * the price of learning about a bad byte (a NUL, a bare CR) at the end of its line. */
int sg_h1_head_worth_parsing(const char *buf, size_t len, size_t prev_len, size_t max_head);

/* Nonzero if |h| is the field named |name| (NUL-terminated), ignoring case. */
int sg_h1_header_eq(const sg_h1_header *h, const char *name);

/* Nonzero if the field named |name| (|len| bytes, any case) is hop-by-hop in a message with
 * these |headers|, so the proxy must not forward it: Connection, Keep-Alive, Proxy-Connection,
 * Proxy-Authenticate, Proxy-Authorization, TE, Trailer, Transfer-Encoding, Upgrade, and every
 * field a Connection header names. Works for requests and responses alike. The proxy writes
 * its own framing (Content-Length or Transfer-Encoding: chunked) and decides about Upgrade. */
int sg_h1_is_hop_by_hop(const sg_h1_header *headers, size_t num_headers, const char *name,
                        size_t len);

/* An absolute-form target split into slices of it. |path| is "/" (a static string) when the
 * target has no path; |query| is empty or starts with '?'. Origin-form is |path| + |query|. */
typedef struct sg_h1_target {
  const char *scheme; /* as written: compare with case-insensitive tests */
  size_t scheme_len;
  const char *authority; /* host[:port], for server/proxy/addr.h to parse */
  size_t authority_len;
  const char *path;
  size_t path_len;
  const char *query;
  size_t query_len;
} sg_h1_target;

/* Splits the absolute-form target "scheme://authority[/path][?query]" into |out|. Returns 0,
 * or SG_H1_BAD with |*why| (when |why| is not NULL) set: not absolute-form, an empty
 * authority, userinfo ("user@host", which we never forward), a fragment ('#'), or a byte that
 * cannot be in a target (a control byte, SP, or above 0x7e). */
int sg_h1_split_target(const char *target, size_t len, sg_h1_target *out, const char **why);

/* Limits of the chunked decoder on the bytes it drops, so that a peer cannot make the proxy
 * read without end while nothing is forwarded. */
#define SG_H1_MAX_CHUNK_EXT 4096  /* chunk extension bytes on one chunk-size line */
#define SG_H1_MAX_TRAILER   16384 /* bytes of the trailer section */

/* The data sink: called with the next |len| bytes of the body (|len| > 0) in order, in runs as
 * long as the input allows. Returns 0, or a negative code that stops the decoder. */
typedef int (*sg_h1_chunk_data_cb)(void *arg, const char *data, size_t len);

/* A streaming chunked-body decoder (RFC 9112 §7.1), allocated by the caller and set up with
 * sg_h1_chunked_init. The fields are private to http1.c. */
typedef struct sg_h1_chunked {
  uint64_t max_chunk;
  uint64_t size; /* the chunk size being read, then the data bytes left in the chunk */
  unsigned state;
  unsigned digits;
  size_t dropped; /* bytes of the current extensions or of the trailer section */
  int err;        /* the first error: every later call returns it */
  const char *why;
} sg_h1_chunked;

/* Sets up |d| for a new body, refusing chunks over |max_chunk| bytes (0: no limit). The decoder
 * holds no resources; call it again to reuse |d|. */
void sg_h1_chunked_init(sg_h1_chunked *d, uint64_t max_chunk);

/* Decodes the next |len| bytes of a chunked body, passing the data to |cb|. Chunk extensions
 * (token or quoted-string values) and trailer fields are checked, then dropped: the proxy
 * forwards neither. Returns how many bytes of |in| it consumed: all of them until the body
 * ends, then only up to the end of the body, so that the bytes after it (a pipelined request)
 * are left to the caller; sg_h1_chunked_done tells when the body has ended. Returns
 *   SG_H1_BAD        malformed: a size that is not 1 to 16 hex digits (no sign, space or "0x"),
 *                    a bad extension or trailer field, a bare CR or LF, or data not followed by
 *                    CRLF (whitespace before the CRLF of a size line is tolerated: some servers
 *                    pad sizes with it, and the line is dropped);
 *   SG_H1_TOO_LARGE  a chunk over max_chunk, extensions over SG_H1_MAX_CHUNK_EXT, trailers
 *                    over SG_H1_MAX_TRAILER;
 * or the negative code |cb| returned. After an error the body is abandoned and every later
 * call returns the same code; sg_h1_chunked_why says why. */
ssize_t sg_h1_chunked_decode(sg_h1_chunked *d, const char *in, size_t len, sg_h1_chunk_data_cb cb,
                             void *arg);

/* Nonzero once the decoder has consumed the last chunk, the trailers and the final CRLF. */
int sg_h1_chunked_done(const sg_h1_chunked *d);

/* After an error: a static string saying why ("bare LF", "chunk size overflow", ...), or
 * "data callback failed" for the callback's error; NULL before any error. */
const char *sg_h1_chunked_why(const sg_h1_chunked *d);

/* The encoder side. sg_h1_chunk_header writes the chunk-size line "<hex>\r\n" of a chunk of
 * |len| bytes (|len| > 0: a zero size would end the body) into |out|, NUL-terminated, and
 * returns its length (at most 18). The data follows, then "\r\n"; SG_H1_LAST_CHUNK ends the
 * body (the last chunk and an empty trailer section). */
#define SG_H1_LAST_CHUNK     "0\r\n\r\n"
#define SG_H1_LAST_CHUNK_LEN 5
size_t sg_h1_chunk_header(char out[20], size_t len);

#endif
