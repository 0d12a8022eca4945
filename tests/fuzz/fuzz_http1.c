/* The proxy's HTTP/1 codec (proxy/http1.h). The first input byte picks the parser and its
 * parameters; the rest is what a peer sent.
 *
 * Heads (requests, responses): the parsers are called on every prefix of the input, as the
 * proxy calls them on a growing buffer. Once a prefix settles the outcome (a length, BAD or
 * TOO_LARGE), every longer prefix must give the same outcome and the same parsed head: the
 * result may not depend on where the bytes were split. The proxy's own schedule, parsing only
 * when sg_h1_head_worth_parsing says so, must find every complete head. A parsed head is
 * checked against its contract: pointers inside the buffer, a length ending in CRLF CRLF, one
 * framing, no control byte in a field, an absolute-form target that sg_h1_split_target takes.
 *
 * Chunked bodies: decoded in one piece and in pieces split at input-derived points: the same
 * data, the same bytes consumed, the same end or error. And the encoder's chunks, holding the
 * input's bytes, decode back to them. */
#include "fuzz.h"
#include "proxy/http1.h"

static int in_buf(const char *p, size_t n, const char *buf, size_t len) {
  return n == 0 || (p >= buf && p + n <= buf + len);
}

static void check_headers(const sg_h1_header *h, size_t n, const char *buf, size_t len) {
  FUZZ_CHECK(n <= SG_H1_MAX_HEADERS);
  for (size_t i = 0; i < n; i++) {
    FUZZ_CHECK(h[i].name_len > 0 && in_buf(h[i].name, h[i].name_len, buf, len));
    FUZZ_CHECK(in_buf(h[i].value, h[i].value_len, buf, len));
    for (size_t j = 0; j < h[i].name_len; j++)
      FUZZ_CHECK(h[i].name[j] > 0x20 && h[i].name[j] < 0x7f && h[i].name[j] != ':');
    for (size_t j = 0; j < h[i].value_len; j++) {
      unsigned char c = (unsigned char)h[i].value[j];
      FUZZ_CHECK((c >= 0x20 && c != 0x7f) || c == '\t');
    }
    if (h[i].value_len > 0) {
      FUZZ_CHECK(h[i].value[0] != ' ' && h[i].value[0] != '\t');
      FUZZ_CHECK(h[i].value[h[i].value_len - 1] != ' ' && h[i].value[h[i].value_len - 1] != '\t');
    }
    /* Every field the Connection header names is hop-by-hop; the check must not crash on any
     * name. */
    (void)sg_h1_is_hop_by_hop(h, n, h[i].name, h[i].name_len);
  }
}

static void check_head_len(int rc, const char *buf, size_t len) {
  if (rc > 0) {
    FUZZ_CHECK((size_t)rc <= len && rc >= 4);
    FUZZ_CHECK(memcmp(buf + rc - 4, "\r\n\r\n", 4) == 0);
  }
}

static void check_request(int rc, const sg_h1_request *r, const char *buf, size_t len) {
  check_head_len(rc, buf, len);
  if (rc <= 0) {
    if (rc != SG_H1_PARTIAL)
      FUZZ_CHECK(r->why != NULL);
    return;
  }
  FUZZ_CHECK(r->method_len > 0 && in_buf(r->method, r->method_len, buf, len));
  FUZZ_CHECK(r->target_len > 0 && in_buf(r->target, r->target_len, buf, len));
  FUZZ_CHECK(r->minor_version == 0 || r->minor_version == 1);
  FUZZ_CHECK(!(r->chunked && r->content_length >= 0));
  FUZZ_CHECK(r->content_length >= -1);
  if (r->minor_version == 1)
    FUZZ_CHECK(r->host != NULL);
  if (r->host != NULL)
    FUZZ_CHECK(in_buf(r->host, r->host_len, buf, len));
  check_headers(r->headers, r->num_headers, buf, len);
  int connect = r->method_len == 7 && memcmp(r->method, "CONNECT", 7) == 0;
  FUZZ_CHECK(connect == (r->form == SG_H1_TARGET_AUTHORITY));
  for (size_t i = 0; i < r->target_len; i++)
    FUZZ_CHECK(r->target[i] > 0x20 && r->target[i] < 0x7f && r->target[i] != '#');
  if (r->form == SG_H1_TARGET_ABSOLUTE) {
    sg_h1_target t;
    const char *why = NULL;
    FUZZ_CHECK(sg_h1_split_target(r->target, r->target_len, &t, &why) == 0);
    FUZZ_CHECK(t.authority_len > 0);
    FUZZ_CHECK(t.path_len > 0 && t.path[0] == '/');
    FUZZ_CHECK(t.query_len == 0 || t.query[0] == '?');
  } else if (r->form == SG_H1_TARGET_ORIGIN) {
    FUZZ_CHECK(r->target[0] == '/');
  } else if (r->form == SG_H1_TARGET_ASTERISK) {
    FUZZ_CHECK(r->target_len == 1 && r->target[0] == '*');
  }
}

static void check_response(int rc, const sg_h1_response *r, const char *buf, size_t len) {
  check_head_len(rc, buf, len);
  if (rc <= 0) {
    if (rc != SG_H1_PARTIAL)
      FUZZ_CHECK(r->why != NULL);
    return;
  }
  FUZZ_CHECK(r->status >= 100 && r->status <= 599);
  FUZZ_CHECK(r->minor_version == 0 || r->minor_version == 1);
  FUZZ_CHECK(in_buf(r->reason, r->reason_len, buf, len));
  check_headers(r->headers, r->num_headers, buf, len);
  /* Exactly one framing. */
  int framings = (r->no_body != 0) + (r->chunked != 0) + (!r->no_body && r->content_length >= 0) +
                 (r->until_close != 0);
  FUZZ_CHECK(framings == 1);
  FUZZ_CHECK(r->content_length >= -1);
}

static int same_headers(const sg_h1_header *a, const sg_h1_header *b, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (a[i].name != b[i].name || a[i].name_len != b[i].name_len || a[i].value != b[i].value ||
        a[i].value_len != b[i].value_len)
      return 0;
  return 1;
}

static int same_request(const sg_h1_request *a, const sg_h1_request *b) {
  return a->method == b->method && a->method_len == b->method_len && a->target == b->target &&
         a->target_len == b->target_len && a->form == b->form &&
         a->minor_version == b->minor_version && a->num_headers == b->num_headers &&
         same_headers(a->headers, b->headers, a->num_headers) && a->host == b->host &&
         a->host_len == b->host_len && a->content_length == b->content_length &&
         a->chunked == b->chunked && a->keep_alive == b->keep_alive && a->upgrade == b->upgrade &&
         a->expect_continue == b->expect_continue;
}

static int same_response(const sg_h1_response *a, const sg_h1_response *b) {
  return a->minor_version == b->minor_version && a->status == b->status && a->reason == b->reason &&
         a->reason_len == b->reason_len && a->num_headers == b->num_headers &&
         same_headers(a->headers, b->headers, a->num_headers) && a->no_body == b->no_body &&
         a->chunked == b->chunked && a->content_length == b->content_length &&
         a->until_close == b->until_close && a->transfer_coded == b->transfer_coded &&
         a->keep_alive == b->keep_alive;
}

/* Parses |buf| as a head of the kind |response| says, on every prefix and on the proxy's
 * schedule. */
static void fuzz_head(const char *buf, size_t len, int response, int head, size_t max_head,
                      fuzz_rng *rng) {
  static sg_h1_request req_full, req_pre;
  static sg_h1_response res_full, res_pre;
  int full = response ? sg_h1_parse_response(buf, len, max_head, head, &res_full)
                      : sg_h1_parse_request(buf, len, max_head, &req_full);
  if (response)
    check_response(full, &res_full, buf, len);
  else
    check_request(full, &req_full, buf, len);
  if (full == SG_H1_PARTIAL)
    FUZZ_CHECK(len < max_head);

  /* Every prefix: PARTIAL until the outcome is settled, then the full outcome. */
  int settled = 0;
  for (size_t n = 0; n <= len; n++) {
    int rc = response ? sg_h1_parse_response(buf, n, max_head, head, &res_pre)
                      : sg_h1_parse_request(buf, n, max_head, &req_pre);
    if (rc == SG_H1_PARTIAL) {
      FUZZ_CHECK(!settled);
      continue;
    }
    settled = 1;
    FUZZ_CHECK(rc == full);
    if (rc > 0)
      FUZZ_CHECK(response ? same_response(&res_pre, &res_full) : same_request(&req_pre, &req_full));
    break; /* the remaining prefixes give the same by induction on the next feeds */
  }

  /* The proxy's schedule: pieces arrive, and the head is parsed only when worth it. */
  size_t have = 0, prev = 0;
  int rc = SG_H1_PARTIAL;
  while (have < len && rc == SG_H1_PARTIAL) {
    have += fuzz_piece(rng, len - have);
    if (have == prev && have < len)
      continue;
    if (sg_h1_head_worth_parsing(buf, have, prev, max_head))
      rc = response ? sg_h1_parse_response(buf, have, max_head, head, &res_pre)
                    : sg_h1_parse_request(buf, have, max_head, &req_pre);
    prev = have;
  }
  if (rc != SG_H1_PARTIAL)
    FUZZ_CHECK(rc == full);
  if (full > 0) /* a complete head ends in LF, so the schedule always parses it */
    FUZZ_CHECK(rc == full);
}

typedef fuzz_sink sink;

typedef struct {
  ssize_t rc; /* the error, or 0 */
  size_t consumed;
  int done;
} chunk_outcome;

static chunk_outcome dechunk(const char *in, size_t len, uint64_t max_chunk, fuzz_rng *rng,
                             sink *s) {
  sg_h1_chunked d;
  sg_h1_chunked_init(&d, max_chunk);
  chunk_outcome o = {0, 0, 0};
  size_t off = 0;
  do {
    size_t n = rng ? fuzz_piece(rng, len - off) : len - off;
    char *piece = fuzz_copy(in + off, n);
    ssize_t rc = sg_h1_chunked_decode(&d, piece, n, fuzz_sink_emit, s);
    free(piece);
    if (rc < 0) {
      o.rc = rc;
      FUZZ_CHECK(sg_h1_chunked_why(&d) != NULL);
      FUZZ_CHECK(sg_h1_chunked_decode(&d, "0\r\n\r\n", 5, fuzz_sink_emit, s) == rc);
      break;
    }
    FUZZ_CHECK((size_t)rc <= n);
    o.consumed += (size_t)rc;
    off += n;
    if (sg_h1_chunked_done(&d)) {
      o.done = 1;
      break;
    }
    FUZZ_CHECK((size_t)rc == n); /* all of it until the body ends */
  } while (off < len);
  return o;
}

static void fuzz_chunked(const char *in, size_t len, uint64_t max_chunk, size_t fail_after,
                         fuzz_rng *rng) {
  sink whole = {{0}, fail_after}, split = {{0}, fail_after};
  chunk_outcome w = dechunk(in, len, max_chunk, NULL, &whole);
  chunk_outcome s = dechunk(in, len, max_chunk, rng, &split);
  FUZZ_CHECK(w.rc == s.rc && w.done == s.done);
  if (w.rc == 0)
    FUZZ_CHECK(w.consumed == s.consumed);
  if (w.rc == 0)
    FUZZ_CHECK(fuzz_buf_eq(&whole.out, &split.out));
  if (w.rc ==
      FUZZ_SINK_FAILED) { /* the sink stops at a run boundary, which depends on the pieces */
    size_t n = whole.out.len < split.out.len ? whole.out.len : split.out.len;
    FUZZ_CHECK(n >= fail_after && memcmp(whole.out.data, split.out.data, n) == 0);
  }
  if (w.done) /* the body ends after its last chunk's CRLF CRLF or trailers */
    FUZZ_CHECK(w.consumed >= 5 && memcmp(in + w.consumed - 2, "\r\n", 2) == 0);
  fuzz_buf_free(&whole.out);
  fuzz_buf_free(&split.out);
}

/* The encoder's output, in input-derived chunk sizes, decodes back to the input. */
static void fuzz_chunk_roundtrip(const char *data, size_t len, fuzz_rng *rng) {
  fuzz_buf enc = {0};
  for (size_t off = 0; off < len;) {
    size_t n = fuzz_piece(rng, len - off);
    if (n == 0)
      n = 1;
    char line[20];
    size_t hl = sg_h1_chunk_header(line, n);
    FUZZ_CHECK(hl <= 18 && line[hl] == '\0');
    fuzz_buf_add(&enc, line, hl);
    fuzz_buf_add(&enc, data + off, n);
    fuzz_buf_add(&enc, "\r\n", 2);
    off += n;
  }
  fuzz_buf_add(&enc, SG_H1_LAST_CHUNK, SG_H1_LAST_CHUNK_LEN);
  fuzz_buf_add(&enc, "GET", 3); /* a pipelined request after the body: not consumed */
  sink s = {{0}, 0};
  chunk_outcome o = dechunk((const char *)enc.data, enc.len, 0, rng, &s);
  FUZZ_CHECK(o.rc == 0 && o.done && o.consumed == enc.len - 3);
  FUZZ_CHECK(s.out.len == len && (len == 0 || memcmp(s.out.data, data, len) == 0));
  fuzz_buf_free(&enc);
  fuzz_buf_free(&s.out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fuzz_in in = {data, size};
  uint8_t mode = fuzz_u8(&in);
  uint8_t param = fuzz_u8(&in);
  /* An exact-size copy, so ASan catches reads past the end of what was received. */
  char *buf = fuzz_copy(in.p, in.len);
  size_t len = in.len;
  fuzz_rng rng;
  fuzz_rng_seed(&rng, data, size);
  /* max_head: mostly larger than the input, sometimes cutting it. */
  size_t max_head = param & 0x80 ? (size_t)(param & 0x7f) * 8 + 1 : 65536;

  switch (mode % 5) {
  case 0:
    fuzz_head(buf, len, 0, 0, max_head, &rng);
    break;
  case 1:
    fuzz_head(buf, len, 1, param & 1, max_head, &rng);
    break;
  case 2:
    fuzz_chunked(buf, len, param & 0x80 ? param & 0x7f : 0, (param & 0x40) ? param & 0x3f : 0,
                 &rng);
    break;
  case 3: {
    sg_h1_target t;
    const char *why = NULL;
    if (sg_h1_split_target(buf, len, &t, &why) == 0) {
      FUZZ_CHECK(in_buf(t.scheme, t.scheme_len, buf, len) && t.scheme_len > 0);
      FUZZ_CHECK(in_buf(t.authority, t.authority_len, buf, len) && t.authority_len > 0);
      FUZZ_CHECK(memchr(t.authority, '@', t.authority_len) == NULL);
      FUZZ_CHECK(memchr(buf, '#', len) == NULL);
      FUZZ_CHECK(t.path_len > 0 && t.path[0] == '/');
      FUZZ_CHECK(t.query_len == 0 || (in_buf(t.query, t.query_len, buf, len) && t.query[0] == '?'));
    } else {
      FUZZ_CHECK(why != NULL);
    }
    break;
  }
  default:
    fuzz_chunk_roundtrip(buf, len, &rng);
  }
  free(buf);
  return 0;
}
