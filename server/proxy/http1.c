/* The egress proxy's strict HTTP/1.1 codec: see http1.h for the contract.
 *
 * The head parsers keep no state between calls: each call reads the buffer from its start,
 * one byte at a time, and stops at the first byte that settles the outcome. So a head split
 * anywhere gives SG_H1_PARTIAL until the byte that completes or condemns it arrives, and the
 * same answer then as when read whole. Heads are bounded by max_head, so the re-reading is
 * bounded too. Framing is decided after the syntax, from the parsed fields, in one pass that
 * collects every field the rules look at (collect_fields). */
#include "proxy/http1.h"

#include <limits.h>
#include <string.h>

#include "core/mem.h"

/* Character classes (RFC 9110 §5.6.2 tchar, §5.5 field values, RFC 9112 §3.2 targets). */
static int is_tchar(unsigned char c) {
  if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
    return 1;
  return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static int is_ows(unsigned char c) {
  return c == ' ' || c == '\t';
}

/* A byte of a field value, a reason phrase or a quoted-pair: VCHAR, obs-text, SP, HTAB. */
static int is_field_char(unsigned char c) {
  return c == '\t' || (c >= 0x20 && c != 0x7f);
}

/* A byte a request-target may hold: printable ASCII but SP. */
static int is_target_char(unsigned char c) {
  return c > 0x20 && c < 0x7f;
}

static int hex_value(unsigned char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

static unsigned char lower(unsigned char c) {
  return c >= 'A' && c <= 'Z' ? (unsigned char)(c + ('a' - 'A')) : c;
}

/* Nonzero if the two spans are equal, ignoring ASCII case (field names, tokens, codings). */
static int spans_eq(const char *a, size_t alen, const char *b, size_t blen) {
  if (alen != blen)
    return 0;
  for (size_t i = 0; i < alen; i++)
    if (lower((unsigned char)a[i]) != lower((unsigned char)b[i]))
      return 0;
  return 1;
}

static int span_eq(const char *s, size_t len, const char *word) {
  return spans_eq(s, len, word, strlen(word));
}

/* Methods are case-sensitive (RFC 9110 §9.1). */
static int method_is(const sg_h1_request *r, const char *method) {
  return r->method_len == strlen(method) && memcmp(r->method, method, r->method_len) == 0;
}

/* ---- Heads ---- */

/* A head being read: |end| is where the bytes run out, at most max_head. */
typedef struct head {
  const char *buf;
  size_t pos;
  size_t end;
  const char **why;
} head;

/* Sets |c| to the byte at the read position, or returns SG_H1_PARTIAL from the caller. */
#define PEEK(h, c)                                                                                 \
  do {                                                                                             \
    if ((h)->pos >= (h)->end)                                                                      \
      return SG_H1_PARTIAL;                                                                        \
    (c) = (unsigned char)(h)->buf[(h)->pos];                                                       \
  } while (0)

static int bad(head *h, const char *why) {
  *h->why = why;
  return SG_H1_BAD;
}

/* Refuses the byte |c| at the read position, which cannot be there. The reason is |why|, unless
 * the byte is one of those every part of a head refuses the same way: a bare LF, a CR not
 * followed by LF, or a NUL (|nul_why|). A CR makes it look at the next byte, so that a head
 * split after the CR gets the same reason as a whole one. */
static int refuse(head *h, unsigned char c, const char *nul_why, const char *why) {
  if (c == '\n')
    return bad(h, "bare LF");
  if (c == '\0')
    return bad(h, nul_why);
  if (c == '\r') {
    if (h->pos + 1 >= h->end)
      return SG_H1_PARTIAL;
    if (h->buf[h->pos + 1] != '\n')
      return bad(h, "bare CR");
  }
  return bad(h, why);
}

/* Reads the CR at the read position and the LF that must follow it. */
static int end_line(head *h) {
  unsigned char c;
  h->pos++;
  PEEK(h, c);
  if (c != '\n')
    return bad(h, "bare CR");
  h->pos++;
  return 0;
}

/* Reads "HTTP/1.0" or "HTTP/1.1" and sets |*minor|. */
static int parse_version(head *h, int *minor, const char *nul_why) {
  static const char pattern[] = "HTTP/d.d"; /* 'd': a digit */
  size_t start = h->pos;
  for (size_t i = 0; i < sizeof(pattern) - 1; i++) {
    unsigned char c;
    PEEK(h, c);
    int ok = pattern[i] == 'd' ? (c >= '0' && c <= '9') : c == (unsigned char)pattern[i];
    if (!ok)
      return refuse(h, c, nul_why, "malformed HTTP version");
    h->pos++;
  }
  const char *v = h->buf + start;
  if (v[5] != '1' || (v[7] != '0' && v[7] != '1'))
    return bad(h, "unsupported HTTP version");
  *minor = v[7] - '0';
  return 0;
}

/* Reads one field line "name: value CRLF" into |f|. */
static int parse_field(head *h, sg_h1_header *f) {
  unsigned char c;
  size_t start = h->pos;
  for (;;) {
    PEEK(h, c);
    if (!is_tchar(c))
      break;
    h->pos++;
  }
  if (c != ':') {
    if (!is_ows(c))
      return refuse(h, c, "NUL in header name",
                    c == '\r' ? "header line without colon" : "invalid header name");
    /* "Name : v" is the classic smuggling vector: say so rather than "invalid name". */
    while (is_ows(c)) {
      h->pos++;
      PEEK(h, c);
    }
    return bad(h, c == ':' ? "whitespace before colon" : "invalid header name");
  }
  if (h->pos == start)
    return bad(h, "empty header name");
  f->name = h->buf + start;
  f->name_len = h->pos - start;
  h->pos++;
  for (;;) {
    PEEK(h, c);
    if (!is_ows(c))
      break;
    h->pos++;
  }
  size_t value = h->pos, value_end = h->pos;
  for (;;) {
    PEEK(h, c);
    if (c == '\r')
      break;
    if (!is_field_char(c))
      return refuse(h, c, "NUL in header value", "control character in header value");
    h->pos++;
    if (!is_ows(c))
      value_end = h->pos;
  }
  f->value = h->buf + value;
  f->value_len = value_end - value;
  return end_line(h);
}

/* Reads the field lines and the empty line that ends the head. */
static int parse_fields(head *h, sg_h1_header *fields, size_t *num) {
  *num = 0;
  for (;;) {
    unsigned char c;
    PEEK(h, c);
    if (c == '\r')
      return end_line(h);
    /* Also whitespace before the first field, which RFC 9112 §2.2 says to refuse too. */
    if (is_ows(c))
      return bad(h, "obs-fold");
    if (*num == SG_H1_MAX_HEADERS) {
      *h->why = "too many header fields";
      return SG_H1_TOO_LARGE;
    }
    int rc = parse_field(h, &fields[*num]);
    if (rc < 0)
      return rc;
    (*num)++;
  }
}

/* What running out of bytes means: more may come, or the head is over max_head. */
static int ran_out(head *h, size_t len, size_t max_head) {
  if (len < max_head)
    return SG_H1_PARTIAL;
  *h->why = "head too large";
  return SG_H1_TOO_LARGE;
}

/* The request line "method SP target SP version CRLF", after at most one empty line. */
static int parse_request_line(head *h, sg_h1_request *r) {
  static const char nul[] = "NUL in request line";
  unsigned char c;
  PEEK(h, c);
  if (c == '\r') {
    int rc = end_line(h);
    if (rc < 0)
      return rc;
    PEEK(h, c);
    if (c == '\r')
      return refuse(h, c, nul, "more than one empty line before the request line");
  }
  size_t start = h->pos;
  for (;;) {
    PEEK(h, c);
    if (!is_tchar(c))
      break;
    h->pos++;
  }
  if (c != ' ' || h->pos == start)
    return refuse(h, c, nul, "invalid method");
  r->method = h->buf + start;
  r->method_len = h->pos - start;
  start = ++h->pos;
  for (;;) {
    PEEK(h, c);
    if (!is_target_char(c))
      break;
    h->pos++;
  }
  if (c != ' ' || h->pos == start)
    return refuse(h, c, nul, c == '\r' ? "missing HTTP version" : "invalid request-target");
  r->target = h->buf + start;
  r->target_len = h->pos - start;
  h->pos++;
  int rc = parse_version(h, &r->minor_version, nul);
  if (rc < 0)
    return rc;
  PEEK(h, c);
  return c == '\r' ? end_line(h) : refuse(h, c, nul, "malformed HTTP version");
}

/* The status line "version SP 3DIGIT SP reason CRLF". The SP before an empty reason is
 * optional: RFC 9112 §4 requires servers to send it, but many do not. */
static int parse_status_line(head *h, sg_h1_response *r) {
  static const char nul[] = "NUL in status line";
  unsigned char c;
  int rc = parse_version(h, &r->minor_version, nul);
  if (rc < 0)
    return rc;
  PEEK(h, c);
  if (c != ' ')
    return refuse(h, c, nul, "malformed status line");
  h->pos++;
  r->status = 0;
  for (int i = 0; i < 3; i++) {
    PEEK(h, c);
    if (c < '0' || c > '9')
      return refuse(h, c, nul, "malformed status code");
    r->status = r->status * 10 + (c - '0');
    h->pos++;
  }
  if (r->status < 100 || r->status > 599)
    return bad(h, "status code out of range");
  PEEK(h, c);
  if (c == ' ')
    h->pos++;
  else if (c != '\r')
    return refuse(h, c, nul, "malformed status code");
  size_t start = h->pos;
  for (;;) {
    PEEK(h, c);
    if (c == '\r')
      break;
    if (!is_field_char(c))
      return refuse(h, c, nul, "control character in reason phrase");
    h->pos++;
  }
  r->reason = h->buf + start;
  r->reason_len = h->pos - start;
  return end_line(h);
}

/* ---- Framing and connection semantics ---- */

/* The next element of the comma-separated list in [*p, end) (RFC 9110 §5.6.1), without the OWS
 * around it; empty elements are skipped. Returns 0 at the end of the list. Commas inside
 * quoted strings are not special: none of the lists read here has a use for them. */
static int list_next(const char **p, const char *end, const char **elem, size_t *elem_len) {
  const char *s = *p;
  while (s < end && (is_ows((unsigned char)*s) || *s == ','))
    s++;
  if (s == end) {
    *p = s;
    return 0;
  }
  const char *e = s;
  while (e < end && *e != ',')
    e++;
  *p = e;
  while (e > s && is_ows((unsigned char)e[-1]))
    e--;
  *elem = s;
  *elem_len = (size_t)(e - s);
  return 1;
}

/* A Content-Length value: 1*DIGIT, up to INT64_MAX. Returns it, or -1. */
static int64_t parse_length(const char *s, size_t len) {
  if (len == 0)
    return -1;
  int64_t v = 0;
  for (size_t i = 0; i < len; i++) {
    if (s[i] < '0' || s[i] > '9')
      return -1;
    int d = s[i] - '0';
    if (v > (INT64_MAX - d) / 10)
      return -1;
    v = v * 10 + d;
  }
  return v;
}

/* What the framing and connection rules look at, gathered from the fields in one pass. */
typedef struct fields_info {
  int cl_lines;    /* Content-Length field lines */
  int cl_list;     /* a Content-Length value with a comma */
  int cl_invalid;  /* an element that is not a number */
  int cl_conflict; /* two elements that differ */
  int64_t cl;      /* the (first) value, -1 when absent */
  int te_lines;    /* Transfer-Encoding field lines */
  int te_invalid;  /* an element that is not "token [params]" */
  int te_codings;  /* codings listed */
  int te_chunked;  /* how many of them are "chunked" */
  int te_other;    /* how many are something else */
  int te_last_chunked;
  int conn_close, conn_keep_alive, conn_upgrade;
  int upgrade_lines;
  int expect_continue;
  int host_lines;
  const sg_h1_header *host;
} fields_info;

static void collect_length(fields_info *fi, const sg_h1_header *f) {
  const char *p = f->value, *end = f->value + f->value_len, *e;
  size_t n;
  fi->cl_lines++;
  if (memchr(f->value, ',', f->value_len) != NULL)
    fi->cl_list = 1;
  int elements = 0;
  while (list_next(&p, end, &e, &n)) {
    elements++;
    int64_t v = parse_length(e, n);
    if (v < 0)
      fi->cl_invalid = 1;
    else if (fi->cl < 0)
      fi->cl = v;
    else if (v != fi->cl)
      fi->cl_conflict = 1;
  }
  if (elements == 0)
    fi->cl_invalid = 1;
}

/* One transfer-coding: a token, then nothing or parameters (";..."), which we never accept
 * for chunked, the only coding whose meaning we need. */
static void collect_coding(fields_info *fi, const char *e, size_t n) {
  size_t i = 0;
  while (i < n && is_tchar((unsigned char)e[i]))
    i++;
  size_t name_len = i;
  while (i < n && is_ows((unsigned char)e[i]))
    i++;
  if (name_len == 0 || (i < n && e[i] != ';'))
    fi->te_invalid = 1;
  fi->te_codings++;
  fi->te_last_chunked = i == n && span_eq(e, name_len, "chunked");
  if (fi->te_last_chunked)
    fi->te_chunked++;
  else
    fi->te_other++;
}

static void collect_connection(fields_info *fi, const sg_h1_header *f) {
  const char *p = f->value, *end = f->value + f->value_len, *e;
  size_t n;
  while (list_next(&p, end, &e, &n)) {
    fi->conn_close |= span_eq(e, n, "close");
    fi->conn_keep_alive |= span_eq(e, n, "keep-alive");
    fi->conn_upgrade |= span_eq(e, n, "upgrade");
  }
}

static void collect_fields(fields_info *fi, const sg_h1_header *fields, size_t num) {
  memset(fi, 0, sizeof(*fi));
  fi->cl = -1;
  for (size_t i = 0; i < num; i++) {
    const sg_h1_header *f = &fields[i];
    const char *p = f->value, *end = f->value + f->value_len, *e;
    size_t n;
    if (sg_h1_header_eq(f, "content-length")) {
      collect_length(fi, f);
    } else if (sg_h1_header_eq(f, "transfer-encoding")) {
      fi->te_lines++;
      while (list_next(&p, end, &e, &n))
        collect_coding(fi, e, n);
    } else if (sg_h1_header_eq(f, "connection")) {
      collect_connection(fi, f);
    } else if (sg_h1_header_eq(f, "upgrade")) {
      fi->upgrade_lines++;
    } else if (sg_h1_header_eq(f, "expect")) {
      while (list_next(&p, end, &e, &n))
        fi->expect_continue |= span_eq(e, n, "100-continue");
    } else if (sg_h1_header_eq(f, "host")) {
      fi->host_lines++;
      fi->host = f;
    }
  }
}

/* The Transfer-Encoding errors requests and responses share: a syntax error, no coding at all,
 * or chunked twice (RFC 9112 §6.1: a sender MUST NOT apply chunked more than once). */
static const char *te_error(const fields_info *fi) {
  if (fi->te_invalid || fi->te_codings == 0)
    return "invalid Transfer-Encoding";
  if (fi->te_chunked > 1)
    return "chunked applied twice";
  return NULL;
}

/* The message framing rules shared by requests and responses (RFC 9112 §6.1, §6.3). In
 * HTTP/1.0, Transfer-Encoding means the framing is faulty whatever else is there. */
static const char *framing_error(const fields_info *fi, int minor_version) {
  if (fi->te_lines > 0 && minor_version == 0)
    return "Transfer-Encoding in HTTP/1.0";
  if (fi->te_lines > 0 && fi->cl_lines > 0)
    return "Content-Length with Transfer-Encoding";
  return fi->te_lines > 0 ? te_error(fi) : NULL;
}

static int keep_alive(const fields_info *fi, int minor_version) {
  if (fi->conn_close)
    return 0;
  return minor_version == 1 || fi->conn_keep_alive;
}

/* The request-target's form must fit the method (RFC 9112 §3.2). */
static const char *check_target(sg_h1_request *r) {
  const char *t = r->target;
  size_t n = r->target_len;
  if (memchr(t, '#', n) != NULL)
    return "fragment in request-target";
  if (method_is(r, "CONNECT")) {
    r->form = SG_H1_TARGET_AUTHORITY;
    if (memchr(t, '/', n) != NULL || memchr(t, '?', n) != NULL || (n == 1 && t[0] == '*'))
      return "CONNECT needs an authority-form target";
    return memchr(t, '@', n) != NULL ? "userinfo in request-target" : NULL;
  }
  if (n == 1 && t[0] == '*') {
    r->form = SG_H1_TARGET_ASTERISK;
    return method_is(r, "OPTIONS") ? NULL : "'*' target without OPTIONS";
  }
  if (t[0] == '/') {
    r->form = SG_H1_TARGET_ORIGIN;
    return NULL;
  }
  sg_h1_target split;
  const char *why = NULL;
  r->form = SG_H1_TARGET_ABSOLUTE;
  return sg_h1_split_target(t, n, &split, &why) == 0 ? NULL : why;
}

/* The rules a syntactically valid request head must also follow. */
static const char *request_error(sg_h1_request *r) {
  const char *why = check_target(r);
  if (why != NULL)
    return why;
  fields_info fi;
  collect_fields(&fi, r->headers, r->num_headers);
  /* RFC 9112 §3.2: 400 for a missing Host in HTTP/1.1 or more than one. Two Hosts would let the
   * policy check one and upstream serve the other. */
  if (fi.host_lines > 1)
    return "duplicate Host";
  if (fi.host_lines == 0 && r->minor_version == 1)
    return "missing Host";
  r->host = fi.host != NULL ? fi.host->value : NULL;
  r->host_len = fi.host != NULL ? fi.host->value_len : 0;
  if ((why = framing_error(&fi, r->minor_version)) != NULL)
    return why;
  if (fi.cl_lines > 1)
    return "duplicate Content-Length";
  if (fi.cl_list)
    return "Content-Length list";
  if (fi.cl_invalid)
    return "invalid Content-Length";
  if (fi.te_chunked == 1 && !fi.te_last_chunked)
    return "chunked is not the final transfer coding";
  if (fi.te_other > 0)
    return "unsupported transfer coding (only chunked is accepted)";
  r->content_length = fi.cl;
  r->chunked = fi.te_chunked == 1;
  r->keep_alive = keep_alive(&fi, r->minor_version);
  /* RFC 9110 §7.8 and §10.1.1: Upgrade and 100-continue are ignored in HTTP/1.0 requests. */
  r->upgrade = r->minor_version == 1 && fi.conn_upgrade && fi.upgrade_lines > 0;
  r->expect_continue = r->minor_version == 1 && fi.expect_continue;
  return NULL;
}

static int response_no_body(int status, int request_method_head) {
  return request_method_head || (status >= 100 && status < 200) || status == 204 || status == 304;
}

/* The framing of a syntactically valid response head (RFC 9112 §6.3). */
static const char *response_error(sg_h1_response *r, int request_method_head) {
  fields_info fi;
  collect_fields(&fi, r->headers, r->num_headers);
  const char *why = framing_error(&fi, r->minor_version);
  if (why != NULL)
    return why;
  if (fi.cl_invalid)
    return "invalid Content-Length";
  if (fi.cl_conflict)
    return "conflicting Content-Length";
  r->content_length = fi.cl;
  r->transfer_coded = fi.te_other > 0;
  r->no_body = response_no_body(r->status, request_method_head);
  if (!r->no_body) {
    r->chunked = fi.te_lines > 0 && fi.te_last_chunked;
    r->until_close = fi.te_lines > 0 ? !r->chunked : fi.cl < 0;
  }
  r->keep_alive = !r->until_close && keep_alive(&fi, r->minor_version);
  return NULL;
}

/* Head lengths are returned as int: a larger max_head reads as INT_MAX. */
static size_t clamp_max_head(size_t max_head) {
  return max_head > INT_MAX ? INT_MAX : max_head;
}

int sg_h1_parse_request(const char *buf, size_t len, size_t max_head, sg_h1_request *r) {
  max_head = clamp_max_head(max_head);
  head h = {buf, 0, len < max_head ? len : max_head, &r->why};
  r->why = NULL;
  r->num_headers = 0;
  r->host = NULL;
  r->host_len = 0;
  r->content_length = -1;
  r->chunked = r->keep_alive = r->upgrade = r->expect_continue = 0;
  int rc = parse_request_line(&h, r);
  if (rc == 0)
    rc = parse_fields(&h, r->headers, &r->num_headers);
  if (rc == SG_H1_PARTIAL)
    return ran_out(&h, len, max_head);
  if (rc < 0)
    return rc;
  if ((r->why = request_error(r)) != NULL)
    return SG_H1_BAD;
  return (int)h.pos;
}

int sg_h1_parse_response(const char *buf, size_t len, size_t max_head, int request_method_head,
                         sg_h1_response *r) {
  max_head = clamp_max_head(max_head);
  head h = {buf, 0, len < max_head ? len : max_head, &r->why};
  r->why = NULL;
  r->num_headers = 0;
  r->content_length = -1;
  r->no_body = r->chunked = r->until_close = r->transfer_coded = r->keep_alive = 0;
  int rc = parse_status_line(&h, r);
  if (rc == 0)
    rc = parse_fields(&h, r->headers, &r->num_headers);
  if (rc == SG_H1_PARTIAL)
    return ran_out(&h, len, max_head);
  if (rc < 0)
    return rc;
  if ((r->why = response_error(r, request_method_head)) != NULL)
    return SG_H1_BAD;
  return (int)h.pos;
}

int sg_h1_head_worth_parsing(const char *buf, size_t len, size_t prev_len, size_t max_head) {
  if (len >= max_head)
    return 1;
  return prev_len < len && memchr(buf + prev_len, '\n', len - prev_len) != NULL;
}

int sg_h1_header_eq(const sg_h1_header *h, const char *name) {
  return span_eq(h->name, h->name_len, name);
}

int sg_h1_is_hop_by_hop(const sg_h1_header *headers, size_t num_headers, const char *name,
                        size_t len) {
  static const char *const always[] = {
      "connection",
      "keep-alive",
      "proxy-connection",
      "proxy-authenticate",
      "proxy-authorization",
      "te",
      "trailer",
      "transfer-encoding",
      "upgrade",
  };
  for (size_t i = 0; i < SG_ARRAY_LEN(always); i++)
    if (span_eq(name, len, always[i]))
      return 1;
  for (size_t i = 0; i < num_headers; i++) {
    if (!sg_h1_header_eq(&headers[i], "connection"))
      continue;
    const char *p = headers[i].value, *end = p + headers[i].value_len, *e;
    size_t n;
    while (list_next(&p, end, &e, &n))
      if (spans_eq(e, n, name, len))
        return 1;
  }
  return 0;
}

static int is_scheme_char(unsigned char c, int first) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
    return 1;
  return !first && ((c >= '0' && c <= '9') || c == '+' || c == '-' || c == '.');
}

static int split_fail(const char **why, const char *reason) {
  if (why != NULL)
    *why = reason;
  return SG_H1_BAD;
}

int sg_h1_split_target(const char *t, size_t n, sg_h1_target *out, const char **why) {
  for (size_t i = 0; i < n; i++) {
    if (!is_target_char((unsigned char)t[i]))
      return split_fail(why, "invalid request-target");
    if (t[i] == '#')
      return split_fail(why, "fragment in request-target");
  }
  size_t i = 0;
  while (i < n && is_scheme_char((unsigned char)t[i], i == 0))
    i++;
  if (i == 0 || n - i < 3 || memcmp(t + i, "://", 3) != 0)
    return split_fail(why, "invalid request-target");
  out->scheme = t;
  out->scheme_len = i;
  size_t start = i += 3;
  while (i < n && t[i] != '/' && t[i] != '?')
    i++;
  out->authority = t + start;
  out->authority_len = i - start;
  if (out->authority_len == 0)
    return split_fail(why, "empty authority in request-target");
  /* RFC 9110 §4.2.4: userinfo is deprecated and a recipient should treat it as an error; it
   * would also let "http://allowed.com@evil.com/" read as two different hosts. */
  if (memchr(out->authority, '@', out->authority_len) != NULL)
    return split_fail(why, "userinfo in request-target");
  start = i;
  while (i < n && t[i] != '?')
    i++;
  out->path = i > start ? t + start : "/";
  out->path_len = i > start ? i - start : 1;
  out->query = t + i;
  out->query_len = n - i;
  return 0;
}

/* ---- Chunked bodies ---- */

/* The decoder's states, in the order of a chunk: size, extensions, data, CRLF; then, after the
 * last chunk, the trailer section. */
enum {
  CH_SIZE_FIRST,
  CH_SIZE,
  CH_EXT_WS, /* BWS before ';' */
  CH_EXT_NAME_START,
  CH_EXT_NAME,
  CH_EXT_AFTER_NAME,
  CH_EXT_VALUE_START,
  CH_EXT_TOKEN,
  CH_EXT_QUOTED,
  CH_EXT_ESCAPE,
  CH_EXT_AFTER_QUOTED,
  CH_SIZE_LF,
  CH_DATA,
  CH_DATA_CR,
  CH_DATA_LF,
  CH_TRAILER_START,
  CH_TRAILER_NAME,
  CH_TRAILER_VALUE,
  CH_TRAILER_LF,
  CH_END_LF,
  CH_DONE,
};

static int chunked_fail(sg_h1_chunked *d, int code, const char *why) {
  d->err = code;
  d->why = why;
  return code;
}

static int chunked_bad(sg_h1_chunked *d, unsigned char c, const char *why) {
  return chunked_fail(d, SG_H1_BAD, c == '\n' ? "bare LF" : why);
}

/* Ends a chunk-size line at its CR. */
static int end_size_line(sg_h1_chunked *d) {
  d->state = CH_SIZE_LF;
  return 0;
}

/* One byte of the chunk-size (1 to 16 hex digits) or of what may follow it on the line. */
static int size_step(sg_h1_chunked *d, unsigned char c) {
  int v = hex_value(c);
  if (v >= 0) {
    if (d->digits == 16)
      return chunked_fail(d, SG_H1_BAD, "chunk size overflow");
    d->size = d->size << 4 | (uint64_t)v;
    d->digits++;
    d->state = CH_SIZE;
    if (d->max_chunk != 0 && d->size > d->max_chunk)
      return chunked_fail(d, SG_H1_TOO_LARGE, "chunk over the size limit");
    return 0;
  }
  if (d->state == CH_SIZE_FIRST)
    return chunked_bad(d, c, "invalid chunk size");
  d->dropped = 0;
  if (c == '\r')
    return end_size_line(d);
  if (c == ';')
    d->state = CH_EXT_NAME_START;
  else if (is_ows(c))
    d->state = CH_EXT_WS;
  else
    return chunked_bad(d, c, "invalid chunk size");
  return 0;
}

/* One byte of the chunk extensions: *( BWS ";" BWS name [ BWS "=" BWS ( token /
 * quoted-string ) ] ) (RFC 9112 §7.1.1). */
static int ext_step(sg_h1_chunked *d, unsigned char c) {
  static const char why[] = "invalid chunk extension";
  if (++d->dropped > SG_H1_MAX_CHUNK_EXT)
    return chunked_fail(d, SG_H1_TOO_LARGE, "chunk extensions too long");
  switch (d->state) {
  case CH_EXT_WS:
  case CH_EXT_AFTER_NAME:
    /* Whitespace before the CRLF is not in the grammar, but some servers pad the size with
     * it; we drop the line, so tolerating it adds no ambiguity. */
    if (c == '\r')
      return end_size_line(d);
    if (c == ';')
      d->state = CH_EXT_NAME_START;
    else if (c == '=' && d->state == CH_EXT_AFTER_NAME)
      d->state = CH_EXT_VALUE_START;
    else if (!is_ows(c))
      return chunked_bad(d, c, why);
    return 0;
  case CH_EXT_NAME_START:
  case CH_EXT_VALUE_START:
    if (is_tchar(c))
      d->state = d->state == CH_EXT_NAME_START ? CH_EXT_NAME : CH_EXT_TOKEN;
    else if (c == '"' && d->state == CH_EXT_VALUE_START)
      d->state = CH_EXT_QUOTED;
    else if (!is_ows(c))
      return chunked_bad(d, c, why);
    return 0;
  case CH_EXT_QUOTED:
    if (c == '"')
      d->state = CH_EXT_AFTER_QUOTED;
    else if (c == '\\')
      d->state = CH_EXT_ESCAPE;
    else if (!is_field_char(c))
      return chunked_bad(d, c, why);
    return 0;
  case CH_EXT_ESCAPE:
    if (!is_field_char(c))
      return chunked_bad(d, c, why);
    d->state = CH_EXT_QUOTED;
    return 0;
  default: /* CH_EXT_NAME, CH_EXT_TOKEN, CH_EXT_AFTER_QUOTED: a name or value has ended */
    if (c == '\r')
      return end_size_line(d);
    if (c == ';')
      d->state = CH_EXT_NAME_START;
    else if (is_ows(c))
      d->state = d->state == CH_EXT_NAME ? CH_EXT_AFTER_NAME : CH_EXT_WS;
    else if (c == '=' && d->state == CH_EXT_NAME)
      d->state = CH_EXT_VALUE_START;
    else if (!is_tchar(c) || d->state == CH_EXT_AFTER_QUOTED)
      return chunked_bad(d, c, why);
    return 0;
  }
}

/* One byte of the trailer section: field lines as in a head, then the final CRLF. */
static int trailer_step(sg_h1_chunked *d, unsigned char c) {
  if (++d->dropped > SG_H1_MAX_TRAILER)
    return chunked_fail(d, SG_H1_TOO_LARGE, "trailer section too long");
  switch (d->state) {
  case CH_TRAILER_START:
    if (c == '\r')
      d->state = CH_END_LF;
    else if (is_tchar(c))
      d->state = CH_TRAILER_NAME;
    else
      return chunked_bad(d, c, is_ows(c) ? "obs-fold" : "invalid trailer field");
    return 0;
  case CH_TRAILER_NAME:
    if (c == ':')
      d->state = CH_TRAILER_VALUE;
    else if (!is_tchar(c))
      return chunked_bad(d, c, is_ows(c) ? "whitespace before colon" : "invalid trailer field");
    return 0;
  case CH_TRAILER_VALUE:
    if (c == '\r')
      d->state = CH_TRAILER_LF;
    else if (!is_field_char(c))
      return chunked_bad(d, c, c == '\0' ? "NUL in trailer field" : "control character in trailer");
    return 0;
  default: /* CH_TRAILER_LF, CH_END_LF */
    if (c != '\n')
      return chunked_fail(d, SG_H1_BAD, "bare CR");
    d->state = d->state == CH_TRAILER_LF ? CH_TRAILER_START : CH_DONE;
    return 0;
  }
}

/* One byte outside chunk data. */
static int chunked_step(sg_h1_chunked *d, unsigned char c) {
  switch (d->state) {
  case CH_SIZE_FIRST:
  case CH_SIZE:
    return size_step(d, c);
  case CH_SIZE_LF:
    if (c != '\n')
      return chunked_fail(d, SG_H1_BAD, "bare CR");
    d->dropped = 0;
    d->state = d->size == 0 ? CH_TRAILER_START : CH_DATA;
    return 0;
  case CH_DATA_CR:
    if (c != '\r')
      return chunked_bad(d, c, "missing CRLF after chunk data");
    d->state = CH_DATA_LF;
    return 0;
  case CH_DATA_LF:
    if (c != '\n')
      return chunked_fail(d, SG_H1_BAD, "missing CRLF after chunk data");
    d->state = CH_SIZE_FIRST;
    d->size = 0;
    d->digits = 0;
    return 0;
  default:
    return d->state >= CH_TRAILER_START ? trailer_step(d, c) : ext_step(d, c);
  }
}

void sg_h1_chunked_init(sg_h1_chunked *d, uint64_t max_chunk) {
  memset(d, 0, sizeof(*d));
  d->max_chunk = max_chunk;
  d->state = CH_SIZE_FIRST;
}

ssize_t sg_h1_chunked_decode(sg_h1_chunked *d, const char *in, size_t len, sg_h1_chunk_data_cb cb,
                             void *arg) {
  if (d->err != 0)
    return d->err;
  size_t i = 0;
  while (i < len && d->state != CH_DONE) {
    if (d->state == CH_DATA) {
      size_t n = len - i < d->size ? len - i : (size_t)d->size;
      int rc = cb(arg, in + i, n);
      if (rc != 0)
        return chunked_fail(d, rc < 0 ? rc : SG_H1_BAD, "data callback failed");
      i += n;
      d->size -= n;
      if (d->size == 0)
        d->state = CH_DATA_CR;
      continue;
    }
    int rc = chunked_step(d, (unsigned char)in[i]);
    if (rc < 0)
      return rc;
    i++;
  }
  return (ssize_t)i;
}

int sg_h1_chunked_done(const sg_h1_chunked *d) {
  return d->err == 0 && d->state == CH_DONE;
}

const char *sg_h1_chunked_why(const sg_h1_chunked *d) {
  return d->why;
}

size_t sg_h1_chunk_header(char out[20], size_t len) {
  static const char hex[] = "0123456789abcdef";
  char digits[16];
  size_t n = 0;
  do {
    digits[n++] = hex[len & 15];
    len >>= 4;
  } while (len != 0);
  for (size_t i = 0; i < n; i++)
    out[i] = digits[n - 1 - i];
  memcpy(out + n, "\r\n", 3);
  return n + 2;
}
