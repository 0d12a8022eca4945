/* The egress proxy's strict HTTP/1.1 codec: request heads of every target form, every request
 * smuggling vector refused with its reason, heads split at every byte, size limits, pipelining,
 * the response framing table (RFC 9112 §6.3), the chunked decoder split at every pair of
 * points, its strictness and limits, the chunk encoder, and the proxy's small helpers.
 *
 * Every head and body is also parsed from exact-size heap copies of its prefixes, so that ASan
 * catches a read past |len|. */
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/mem.h"
#include "proxy/http1.h"

#define MAX_HEAD 8192

/* ---- Helpers ---- */

/* An exact-size heap copy of the first |len| bytes of |s|, so ASan sees reads past |len|. */
static char *copy(const char *s, size_t len) {
  char *p = malloc(len == 0 ? 1 : len);
  cr_assert_not_null(p);
  memcpy(p, s, len);
  return p;
}

static int parse_request_n(const char *s, size_t len, size_t max_head, sg_h1_request *r) {
  char *p = copy(s, len);
  int rc = sg_h1_parse_request(p, len, max_head, r);
  /* The slices point into |p|: re-parse the original so that they stay valid for the test. */
  free(p);
  if (rc > 0 || rc == SG_H1_BAD || rc == SG_H1_TOO_LARGE) {
    int again = sg_h1_parse_request(s, len, max_head, r);
    cr_assert_eq(again, rc, "parsing the copy gave %d, the original %d", rc, again);
  }
  return rc;
}

static int parse_response_n(const char *s, size_t len, int head, sg_h1_response *r) {
  char *p = copy(s, len);
  int rc = sg_h1_parse_response(p, len, MAX_HEAD, head, r);
  free(p);
  if (rc > 0 || rc == SG_H1_BAD || rc == SG_H1_TOO_LARGE)
    cr_assert_eq(sg_h1_parse_response(s, len, MAX_HEAD, head, r), rc);
  return rc;
}

/* Parses the request head |s| (the whole string is the head), checking that every proper prefix
 * is SG_H1_PARTIAL, and returns the result in |r|. */
static void expect_request(const char *s, sg_h1_request *r) {
  size_t len = strlen(s);
  for (size_t k = 0; k < len; k++) {
    int rc = parse_request_n(s, k, MAX_HEAD, r);
    cr_assert_eq(rc, SG_H1_PARTIAL, "prefix %zu of \"%s\" gave %d (%s)", k, s, rc,
                 r->why ? r->why : "");
  }
  int rc = parse_request_n(s, len, MAX_HEAD, r);
  cr_assert_eq(rc, (int)len, "\"%s\" gave %d (%s)", s, rc, rc < 0 && r->why ? r->why : "");
}

/* Expects the head |s| (|len| bytes) refused with |code| and |why|; every prefix must be
 * SG_H1_PARTIAL or already that same refusal, never anything else. */
static void expect_refused_n(const char *s, size_t len, int code, const char *why) {
  sg_h1_request r;
  int refused = 0;
  for (size_t k = 0; k <= len; k++) {
    int rc = parse_request_n(s, k, MAX_HEAD, &r);
    if (rc == SG_H1_PARTIAL && !refused)
      continue;
    cr_assert_eq(rc, code, "prefix %zu of \"%.*s\" gave %d (%s), want %d (%s)", k, (int)len, s, rc,
                 rc < 0 && r.why ? r.why : "", code, why);
    cr_assert_str_eq(r.why, why, "prefix %zu of \"%.*s\"", k, (int)len, s);
    refused = 1;
  }
  cr_assert(refused, "\"%.*s\" was never refused", (int)len, s);
}

static void expect_refused(const char *s, const char *why) {
  expect_refused_n(s, strlen(s), SG_H1_BAD, why);
}

static int slice_is(const char *p, size_t len, const char *want) {
  return len == strlen(want) && memcmp(p, want, len) == 0;
}

#define expect_slice(p, len, want)                                                                 \
  cr_expect(slice_is((p), (len), (want)), "got \"%.*s\", want \"%s\"", (int)(len), (p), (want))

/* ---- Requests: valid heads ---- */

Test(request, origin_form_is_parsed_into_slices) {
  sg_h1_request r;
  expect_request("GET /a/b?x=1 HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n", &r);
  expect_slice(r.method, r.method_len, "GET");
  expect_slice(r.target, r.target_len, "/a/b?x=1");
  cr_expect_eq(r.form, SG_H1_TARGET_ORIGIN);
  cr_expect_eq(r.minor_version, 1);
  cr_assert_eq(r.num_headers, 2);
  expect_slice(r.headers[0].name, r.headers[0].name_len, "Host");
  expect_slice(r.headers[0].value, r.headers[0].value_len, "example.com");
  expect_slice(r.headers[1].name, r.headers[1].name_len, "Accept");
  expect_slice(r.headers[1].value, r.headers[1].value_len, "*/*");
  expect_slice(r.host, r.host_len, "example.com");
  cr_expect_eq(r.content_length, -1);
  cr_expect_eq(r.chunked, 0);
  cr_expect_eq(r.keep_alive, 1);
  cr_expect_null(r.why);
}

Test(request, absolute_form_is_parsed) {
  sg_h1_request r;
  expect_request("POST http://api.example.com:8080/v1?q HTTP/1.1\r\nHost: api.example.com:8080\r\n"
                 "Content-Length: 12\r\n\r\n",
                 &r);
  expect_slice(r.target, r.target_len, "http://api.example.com:8080/v1?q");
  cr_expect_eq(r.form, SG_H1_TARGET_ABSOLUTE);
  cr_expect_eq(r.content_length, 12);
}

Test(request, authority_form_is_accepted_for_connect) {
  sg_h1_request r;
  expect_request("CONNECT api.example.com:443 HTTP/1.1\r\nHost: api.example.com:443\r\n\r\n", &r);
  expect_slice(r.method, r.method_len, "CONNECT");
  expect_slice(r.target, r.target_len, "api.example.com:443");
  cr_expect_eq(r.form, SG_H1_TARGET_AUTHORITY);
}

Test(request, asterisk_form_is_accepted_for_options) {
  sg_h1_request r;
  expect_request("OPTIONS * HTTP/1.1\r\nHost: example.com\r\n\r\n", &r);
  cr_expect_eq(r.form, SG_H1_TARGET_ASTERISK);
}

Test(request, target_form_must_fit_the_method) {
  expect_refused("GET * HTTP/1.1\r\nHost: h\r\n\r\n", "'*' target without OPTIONS");
  expect_refused("CONNECT /path HTTP/1.1\r\nHost: h\r\n\r\n",
                 "CONNECT needs an authority-form target");
  expect_refused("CONNECT http://h:443/ HTTP/1.1\r\nHost: h\r\n\r\n",
                 "CONNECT needs an authority-form target");
  expect_refused("CONNECT * HTTP/1.1\r\nHost: h\r\n\r\n", "CONNECT needs an authority-form target");
  expect_refused("CONNECT user@h:443 HTTP/1.1\r\nHost: h\r\n\r\n", "userinfo in request-target");
  expect_refused("GET example.com:443 HTTP/1.1\r\nHost: h\r\n\r\n", "invalid request-target");
  expect_refused("GET http://user:pw@h/ HTTP/1.1\r\nHost: h\r\n\r\n", "userinfo in request-target");
  expect_refused("GET http:///x HTTP/1.1\r\nHost: h\r\n\r\n", "empty authority in request-target");
}

Test(request, methods_are_case_sensitive_tokens) {
  sg_h1_request r;
  expect_refused("connect h:443 HTTP/1.1\r\nHost: h\r\n\r\n", "invalid request-target");
  expect_request("M-SEARCH / HTTP/1.1\r\nHost: h\r\n\r\n", &r);
  expect_refused("GE(T / HTTP/1.1\r\nHost: h\r\n\r\n", "invalid method");
  expect_refused(" GET / HTTP/1.1\r\nHost: h\r\n\r\n", "invalid method");
  expect_refused("GET  / HTTP/1.1\r\nHost: h\r\n\r\n", "invalid request-target");
}

Test(request, header_values_are_trimmed_of_ows_only_at_the_ends) {
  sg_h1_request r;
  expect_request("GET / HTTP/1.1\r\nHost:h\r\nA: \t x \t y \t \r\nB:\r\nC:   \r\n"
                 "D: caf\xc3\xa9\r\n\r\n",
                 &r);
  cr_assert_eq(r.num_headers, 5);
  expect_slice(r.headers[0].value, r.headers[0].value_len, "h");
  expect_slice(r.headers[1].value, r.headers[1].value_len, "x \t y");
  cr_expect_eq(r.headers[2].value_len, 0);
  cr_expect_eq(r.headers[3].value_len, 0);
  expect_slice(r.headers[4].value, r.headers[4].value_len, "caf\xc3\xa9"); /* obs-text */
}

Test(request, one_leading_empty_line_is_ignored) {
  sg_h1_request r;
  expect_request("\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n", &r);
  expect_slice(r.method, r.method_len, "GET");
}

Test(request, more_than_one_leading_empty_line_is_refused) {
  expect_refused("\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n",
                 "more than one empty line before the request line");
  expect_refused("\nGET / HTTP/1.1\r\nHost: h\r\n\r\n", "bare LF");
  expect_refused("\r\n\nGET / HTTP/1.1\r\nHost: h\r\n\r\n", "bare LF");
}

Test(request, http10_needs_no_host) {
  sg_h1_request r;
  expect_request("GET / HTTP/1.0\r\n\r\n", &r);
  cr_expect_eq(r.minor_version, 0);
  cr_expect_null(r.host);
  cr_expect_eq(r.keep_alive, 0);
}

Test(request, http11_needs_exactly_one_host) {
  expect_refused("GET / HTTP/1.1\r\nAccept: */*\r\n\r\n", "missing Host");
  expect_refused("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "duplicate Host");
  expect_refused("GET / HTTP/1.0\r\nHost: a\r\nhost: a\r\n\r\n", "duplicate Host");
}

Test(request, content_length_frames_the_body) {
  sg_h1_request r;
  expect_request("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n", &r);
  cr_expect_eq(r.content_length, 0);
  expect_request("POST / HTTP/1.1\r\nHost: h\r\ncontent-length: 007\r\n\r\n", &r);
  cr_expect_eq(r.content_length, 7);
  expect_request("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 9223372036854775807\r\n\r\n", &r);
  cr_expect_eq(r.content_length, INT64_MAX);
}

Test(request, chunked_frames_the_body_in_any_case) {
  sg_h1_request r;
  expect_request("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n", &r);
  cr_expect_eq(r.chunked, 1);
  cr_expect_eq(r.content_length, -1);
  expect_request("POST / HTTP/1.1\r\nHost: h\r\ntransfer-encoding: Chunked\r\n\r\n", &r);
  cr_expect_eq(r.chunked, 1);
  expect_request("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: , chunked ,\r\n\r\n", &r);
  cr_expect_eq(r.chunked, 1, "empty list elements are ignored (RFC 9110 §5.6.1)");
}

Test(request, keep_alive_follows_version_and_connection) {
  static const struct {
    const char *head;
    int keep_alive;
  } cases[] = {
      {"GET / HTTP/1.1\r\nHost: h\r\n\r\n", 1},
      {"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", 0},
      {"GET / HTTP/1.1\r\nHost: h\r\nConnection: foo, CLOSE\r\n\r\n", 0},
      {"GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive\r\n\r\n", 1},
      {"GET / HTTP/1.0\r\n\r\n", 0},
      {"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", 1},
      {"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n", 0},
      {"GET / HTTP/1.0\r\nConnection: keep-alive-not\r\n\r\n", 0},
  };
  for (size_t i = 0; i < SG_ARRAY_LEN(cases); i++) {
    sg_h1_request r;
    expect_request(cases[i].head, &r);
    cr_expect_eq(r.keep_alive, cases[i].keep_alive, "%s", cases[i].head);
  }
}

Test(request, upgrade_needs_the_connection_token_and_the_header_in_http11) {
  sg_h1_request r;
  expect_request("GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
                 &r);
  cr_expect_eq(r.upgrade, 1);
  expect_request("GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r\n", &r);
  cr_expect_eq(r.upgrade, 0);
  expect_request("GET / HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\n\r\n", &r);
  cr_expect_eq(r.upgrade, 0);
  expect_request("GET / HTTP/1.0\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n", &r);
  cr_expect_eq(r.upgrade, 0, "HTTP/1.0 Upgrade is ignored (RFC 9110 §7.8)");
}

Test(request, expect_continue_is_flagged_in_http11) {
  sg_h1_request r;
  expect_request("PUT / HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\nContent-Length: 3\r\n\r\n",
                 &r);
  cr_expect_eq(r.expect_continue, 1);
  expect_request("PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\n", &r);
  cr_expect_eq(r.expect_continue, 0);
  expect_request("PUT / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n", &r);
  cr_expect_eq(r.expect_continue, 0, "HTTP/1.0 expectations are ignored");
}

Test(request, pipelined_requests_are_left_untouched) {
  const char *two = "GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n";
  const char *second = strstr(two, "GET /2");
  sg_h1_request r;
  int n = sg_h1_parse_request(two, strlen(two), MAX_HEAD, &r);
  cr_assert_eq(n, second - two);
  expect_slice(r.target, r.target_len, "/1");
  cr_assert_eq(sg_h1_parse_request(two + n, strlen(two) - n, MAX_HEAD, &r), (int)strlen(second));
  expect_slice(r.target, r.target_len, "/2");
  /* A body after the head is not the parser's either. */
  const char *post = "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello";
  cr_assert_eq(sg_h1_parse_request(post, strlen(post), MAX_HEAD, &r), (int)strlen(post) - 5);
}

/* ---- Requests: smuggling vectors ---- */

Test(smuggling, content_length_with_transfer_encoding_is_refused) {
  expect_refused("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n"
                 "Transfer-Encoding: chunked\r\n\r\n",
                 "Content-Length with Transfer-Encoding");
  expect_refused("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
                 "Content-Length: 0\r\n\r\n",
                 "Content-Length with Transfer-Encoding");
}

Test(smuggling, duplicate_content_length_with_the_same_value_is_refused) {
  expect_refused("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
                 "duplicate Content-Length");
}

Test(smuggling, duplicate_content_length_with_different_values_is_refused) {
  expect_refused("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\ncontent-length: 6\r\n\r\n",
                 "duplicate Content-Length");
}

Test(smuggling, content_length_list_is_refused) {
  expect_refused("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 5\r\n\r\n",
                 "Content-Length list");
  expect_refused("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5,6\r\n\r\n",
                 "Content-Length list");
  expect_refused("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5,\r\n\r\n", "Content-Length list");
}

Test(smuggling, content_length_that_is_not_a_number_is_refused) {
  static const char *const values[] = {"+5",
                                       "-1",
                                       "5a",
                                       "0x5",
                                       "5 5",
                                       "",
                                       "1e3",
                                       "\xd9\xa5",
                                       "9223372036854775808",
                                       "99999999999999999999999"};
  for (size_t i = 0; i < SG_ARRAY_LEN(values); i++) {
    char head[256];
    snprintf(head, sizeof(head), "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: %s\r\n\r\n",
             values[i]);
    expect_refused(head, "invalid Content-Length");
  }
}

Test(smuggling, chunked_not_last_is_refused) {
  expect_refused("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
                 "chunked is not the final transfer coding");
  expect_refused("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
                 "Transfer-Encoding: gzip\r\n\r\n",
                 "chunked is not the final transfer coding");
}

Test(smuggling, chunked_twice_is_refused) {
  expect_refused("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
                 "chunked applied twice");
  expect_refused("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
                 "Transfer-Encoding: chunked\r\n\r\n",
                 "chunked applied twice");
}

Test(smuggling, transfer_codings_other_than_chunked_are_refused) {
  static const char *const values[] = {"identity",      "xchunked",    "chunkedx",   "gzip",
                                       "gzip, chunked", "chunked;x=1", "\"chunked\""};
  for (size_t i = 0; i < SG_ARRAY_LEN(values); i++) {
    char head[256];
    snprintf(head, sizeof(head), "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: %s\r\n\r\n",
             values[i]);
    expect_refused(head, i == 6 ? "invalid Transfer-Encoding"
                                : "unsupported transfer coding (only chunked is accepted)");
  }
  expect_refused("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding:\r\n\r\n",
                 "invalid Transfer-Encoding");
  expect_refused("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked x\r\n\r\n",
                 "invalid Transfer-Encoding");
}

Test(smuggling, transfer_encoding_in_http10_is_refused) {
  expect_refused("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
                 "Transfer-Encoding in HTTP/1.0");
  expect_refused("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
                 "Transfer-Encoding in HTTP/1.0");
}

Test(smuggling, obs_fold_is_refused) {
  expect_refused("GET / HTTP/1.1\r\nHost: h\r\nX-A: a\r\n b\r\n\r\n", "obs-fold");
  expect_refused("GET / HTTP/1.1\r\nHost: h\r\nX-A: a\r\n\tb\r\n\r\n", "obs-fold");
  expect_refused("GET / HTTP/1.1\r\n Host: h\r\n\r\n", "obs-fold");
}

Test(smuggling, bare_lf_is_refused_everywhere) {
  expect_refused("GET / HTTP/1.1\nHost: h\r\n\r\n", "bare LF");
  expect_refused("GET /\n HTTP/1.1\r\nHost: h\r\n\r\n", "bare LF");
  expect_refused("GET / HTTP/1.1\r\nHost: h\nX: y\r\n\r\n", "bare LF");
  expect_refused("GET / HTTP/1.1\r\nHost: h\r\nX: a\nb\r\n\r\n", "bare LF");
  expect_refused("GET / HTTP/1.1\r\nHost: h\r\nX\n: y\r\n\r\n", "bare LF");
  expect_refused("GET / HTTP/1.1\r\nHost: h\r\n\n", "bare LF");
}

Test(smuggling, bare_cr_is_refused_everywhere) {
  expect_refused("GET / HTTP/1.1\rHost: h\r\n\r\n", "bare CR");
  expect_refused("GET /\rx HTTP/1.1\r\nHost: h\r\n\r\n", "bare CR");
  expect_refused("GET / HTTP/1.1\r\nHost: h\r\nX: a\rb\r\n\r\n", "bare CR");
  expect_refused("GET / HTTP/1.1\r\nHost: h\r\nX\r: y\r\n\r\n", "bare CR");
  expect_refused("GET / HTTP/1.1\r\nHost: h\r\n\rX", "bare CR");
}

Test(smuggling, nul_is_refused) {
  static const char value[] = "GET / HTTP/1.1\r\nHost: h\r\nX: a\0b\r\n\r\n";
  static const char name[] = "GET / HTTP/1.1\r\nHost: h\r\nX\0Y: a\r\n\r\n";
  static const char line[] = "GET /\0 HTTP/1.1\r\nHost: h\r\n\r\n";
  expect_refused_n(value, sizeof(value) - 1, SG_H1_BAD, "NUL in header value");
  expect_refused_n(name, sizeof(name) - 1, SG_H1_BAD, "NUL in header name");
  expect_refused_n(line, sizeof(line) - 1, SG_H1_BAD, "NUL in request line");
}

Test(smuggling, other_control_bytes_in_values_are_refused_but_htab) {
  expect_refused("GET / HTTP/1.1\r\nHost: h\r\nX: a\x01"
                 "b\r\n\r\n",
                 "control character in header value");
  expect_refused("GET / HTTP/1.1\r\nHost: h\r\nX: a\x7f\r\n\r\n",
                 "control character in header value");
  expect_refused("GET / HTTP/1.1\r\nHost: h\r\nX: a\x1b[0m\r\n\r\n",
                 "control character in header value");
}

Test(smuggling, whitespace_before_colon_is_refused) {
  expect_refused("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding : chunked\r\n\r\n",
                 "whitespace before colon");
  expect_refused("POST / HTTP/1.1\r\nHost: h\r\nContent-Length\t: 5\r\n\r\n",
                 "whitespace before colon");
}

Test(smuggling, header_names_must_be_tokens) {
  expect_refused("GET / HTTP/1.1\r\nHost: h\r\n: v\r\n\r\n", "empty header name");
  expect_refused("GET / HTTP/1.1\r\nHost: h\r\nX Y: v\r\n\r\n", "invalid header name");
  expect_refused("GET / HTTP/1.1\r\nHost: h\r\nX(Y): v\r\n\r\n", "invalid header name");
  expect_refused("GET / HTTP/1.1\r\nHost: h\r\nX\xc3\xa9: v\r\n\r\n", "invalid header name");
  expect_refused("GET / HTTP/1.1\r\nHost: h\r\nNoColon\r\n\r\n", "header line without colon");
}

Test(smuggling, invalid_bytes_in_the_target_are_refused) {
  expect_refused("GET /a\x7f HTTP/1.1\r\nHost: h\r\n\r\n", "invalid request-target");
  expect_refused("GET /caf\xc3\xa9 HTTP/1.1\r\nHost: h\r\n\r\n", "invalid request-target");
  expect_refused("GET /a\tb HTTP/1.1\r\nHost: h\r\n\r\n", "invalid request-target");
  expect_refused("GET /a#frag HTTP/1.1\r\nHost: h\r\n\r\n", "fragment in request-target");
  expect_refused("GET /a b HTTP/1.1\r\nHost: h\r\n\r\n", "malformed HTTP version");
}

Test(smuggling, versions_other_than_http10_and_http11_are_refused) {
  expect_refused("GET / HTTP/2.0\r\nHost: h\r\n\r\n", "unsupported HTTP version");
  expect_refused("GET / HTTP/1.2\r\nHost: h\r\n\r\n", "unsupported HTTP version");
  expect_refused("GET / HTTP/0.9\r\nHost: h\r\n\r\n", "unsupported HTTP version");
  expect_refused("GET / HTTP/1.1 \r\nHost: h\r\n\r\n", "malformed HTTP version");
  expect_refused("GET / HTTP/1.10\r\nHost: h\r\n\r\n", "malformed HTTP version");
  expect_refused("GET / http/1.1\r\nHost: h\r\n\r\n", "malformed HTTP version");
  expect_refused("GET / HTTP/1\r\nHost: h\r\n\r\n", "malformed HTTP version");
  expect_refused("GET / HTTP/11\r\nHost: h\r\n\r\n", "malformed HTTP version");
  expect_refused("GET /\r\nHost: h\r\n\r\n", "missing HTTP version");
  expect_refused("GET / \r\nHost: h\r\n\r\n", "malformed HTTP version");
}

/* ---- Requests: limits ---- */

Test(limits, head_over_max_head_is_too_large) {
  const char *s = "GET / HTTP/1.1\r\nHost: h\r\nX-Long: 0123456789\r\n\r\n";
  size_t len = strlen(s);
  sg_h1_request r;
  cr_expect_eq(parse_request_n(s, len, len, &r), (int)len, "a head of exactly max_head fits");
  cr_expect_eq(parse_request_n(s, len, len - 1, &r), SG_H1_TOO_LARGE);
  cr_expect_str_eq(r.why, "head too large");
  cr_expect_eq(parse_request_n(s, len - 2, len - 1, &r), SG_H1_PARTIAL,
               "fewer than max_head bytes: more may come");
  cr_expect_eq(parse_request_n(s, len - 1, len - 1, &r), SG_H1_TOO_LARGE);
}

Test(limits, heads_are_worth_parsing_again_only_at_line_ends) {
  const char *s = "GET / HTTP/1.1\r\nHost: h\r\n\r\n";
  size_t len = strlen(s);
  cr_expect(!sg_h1_head_worth_parsing(s, 10, 0, MAX_HEAD));
  cr_expect(sg_h1_head_worth_parsing(s, 16, 10, MAX_HEAD), "the request line ended");
  cr_expect(!sg_h1_head_worth_parsing(s, 16, 16, MAX_HEAD), "no new bytes");
  cr_expect(sg_h1_head_worth_parsing(s, len, len - 1, MAX_HEAD));
  cr_expect(sg_h1_head_worth_parsing(s, 10, 9, 10), "max_head reached: the parser says so");
  /* Parsing only when it says so gives the same answers as parsing at every byte. */
  sg_h1_request r;
  size_t parsed = 0;
  int rc = SG_H1_PARTIAL;
  for (size_t k = 1; k <= len && rc == SG_H1_PARTIAL; k++) {
    if (!sg_h1_head_worth_parsing(s, k, k - 1, MAX_HEAD))
      continue;
    rc = parse_request_n(s, k, MAX_HEAD, &r);
    parsed++;
  }
  cr_expect_eq(rc, (int)len);
  cr_expect_eq(parsed, 3, "one parse per line");
}

Test(limits, an_error_within_max_head_is_bad_not_too_large) {
  const char *s = "GET / HTTP/1.1\nHost: h\r\nX-Long: 0123456789\r\n\r\n";
  sg_h1_request r;
  cr_expect_eq(parse_request_n(s, strlen(s), 20, &r), SG_H1_BAD);
}

static size_t build_fields(char *buf, size_t cap, int n) {
  size_t len = (size_t)snprintf(buf, cap, "GET / HTTP/1.1\r\nHost: h\r\n");
  for (int i = 1; i < n; i++)
    len += (size_t)snprintf(buf + len, cap - len, "X-%d: %d\r\n", i, i);
  len += (size_t)snprintf(buf + len, cap - len, "\r\n");
  cr_assert_lt(len, cap);
  return len;
}

Test(limits, a_hundred_fields_are_accepted_and_more_are_too_large) {
  static char buf[4096];
  sg_h1_request r;
  size_t len = build_fields(buf, sizeof(buf), SG_H1_MAX_HEADERS);
  cr_expect_eq(parse_request_n(buf, len, MAX_HEAD, &r), (int)len);
  cr_expect_eq(r.num_headers, SG_H1_MAX_HEADERS);
  len = build_fields(buf, sizeof(buf), SG_H1_MAX_HEADERS + 1);
  expect_refused_n(buf, len, SG_H1_TOO_LARGE, "too many header fields");
}

/* ---- Randomized: mutated heads ---- */

static uint32_t rng_state = 2463534242u;

static uint32_t rng(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 17;
  rng_state ^= rng_state << 5;
  return rng_state;
}

/* Applies a few random edits (replace, insert, delete) with the bytes parsers trip on. */
static size_t mutate(char *buf, size_t len, size_t cap) {
  static const char bytes[] = "\r\n \t:,;=\"\\\x00\x7f\x80\x01"
                              "a0fGH/.#@*?-";
  int edits = 1 + (int)(rng() % 3);
  for (int e = 0; e < edits && len > 0; e++) {
    size_t at = rng() % len;
    char b = bytes[rng() % (sizeof(bytes) - 1)];
    switch (rng() % 3) {
    case 0:
      buf[at] = b;
      break;
    case 1:
      if (len < cap) {
        memmove(buf + at + 1, buf + at, len - at);
        buf[at] = b;
        len++;
      }
      break;
    default:
      memmove(buf + at, buf + at + 1, len - at - 1);
      len--;
    }
  }
  return len;
}

/* Writes the head |r| describes as the proxy would forward it. */
static size_t reserialize(const sg_h1_request *r, char *out, size_t cap) {
  size_t n = (size_t)snprintf(out, cap, "%.*s %.*s HTTP/1.%d\r\n", (int)r->method_len, r->method,
                              (int)r->target_len, r->target, r->minor_version);
  for (size_t i = 0; i < r->num_headers; i++)
    n += (size_t)snprintf(out + n, cap - n, "%.*s: %.*s\r\n", (int)r->headers[i].name_len,
                          r->headers[i].name, (int)r->headers[i].value_len, r->headers[i].value);
  n += (size_t)snprintf(out + n, cap - n, "\r\n");
  cr_assert_lt(n, cap);
  return n;
}

Test(request, mutated_heads_parse_the_same_however_split_and_round_trip) {
  static const char *const seeds[] = {
      "GET /a?b=c HTTP/1.1\r\nHost: h\r\nAccept: */*\r\n\r\n",
      "POST http://h:80/x HTTP/1.1\r\nHost: h\r\nContent-Length: 12\r\nConnection: close\r\n\r\n",
      "PUT / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n",
      "\r\nCONNECT h:443 HTTP/1.1\r\nHost: h:443\r\nProxy-Authorization: Basic eA==\r\n\r\n",
      "GET / HTTP/1.0\r\nConnection: keep-alive\r\nX:\t v \r\n\r\n",
  };
  int accepted = 0;
  for (int iter = 0; iter < 4000; iter++) {
    char buf[256];
    const char *seed = seeds[rng() % (SG_ARRAY_LEN(seeds))];
    size_t len = strlen(seed);
    memcpy(buf, seed, len);
    len = mutate(buf, len, sizeof(buf));
    sg_h1_request r;
    int full = parse_request_n(buf, len, MAX_HEAD, &r);
    const char *why = r.why;
    for (size_t k = 0; k < len; k++) {
      int rc = parse_request_n(buf, k, MAX_HEAD, &r);
      if (full > 0 && (int)k >= full) {
        cr_assert_eq(rc, full, "iteration %d, prefix %zu", iter, k);
      } else if (rc != SG_H1_PARTIAL) {
        cr_assert_eq(rc, full, "iteration %d: prefix %zu gave %d, the whole %d", iter, k, rc, full);
        cr_assert_str_eq(r.why, why, "iteration %d, prefix %zu", iter, k);
      }
    }
    if (full <= 0)
      continue;
    accepted++;
    parse_request_n(buf, len, MAX_HEAD, &r);
    char out[512];
    size_t n = reserialize(&r, out, sizeof(out));
    sg_h1_request again;
    cr_assert_eq(parse_request_n(out, n, MAX_HEAD, &again), (int)n, "iteration %d: \"%.*s\"", iter,
                 (int)n, out);
    cr_assert_eq(again.num_headers, r.num_headers);
    cr_assert_eq(again.content_length, r.content_length);
    cr_assert_eq(again.chunked, r.chunked);
    cr_assert_eq(again.keep_alive, r.keep_alive);
    cr_assert_eq(again.form, r.form);
  }
  cr_expect_gt(accepted, 100, "the mutations should leave some heads valid");
}

/* ---- Responses ---- */

static void expect_response(const char *s, int head, sg_h1_response *r) {
  size_t len = strlen(s);
  for (size_t k = 0; k < len; k++)
    cr_assert_eq(parse_response_n(s, k, head, r), SG_H1_PARTIAL, "prefix %zu of \"%s\"", k, s);
  int rc = parse_response_n(s, len, head, r);
  cr_assert_eq(rc, (int)len, "\"%s\" gave %d (%s)", s, rc, rc < 0 && r->why ? r->why : "");
}

static void expect_response_refused(const char *s, const char *why) {
  sg_h1_response r;
  cr_expect_eq(parse_response_n(s, strlen(s), 0, &r), SG_H1_BAD, "\"%s\" was accepted", s);
  if (r.why != NULL)
    cr_expect_str_eq(r.why, why, "\"%s\"", s);
}

Test(response, status_line_is_parsed) {
  sg_h1_response r;
  expect_response("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", 0, &r);
  cr_expect_eq(r.status, 404);
  cr_expect_eq(r.minor_version, 1);
  expect_slice(r.reason, r.reason_len, "Not Found");
  cr_assert_eq(r.num_headers, 1);
  expect_response("HTTP/1.0 200 \r\n\r\n", 0, &r);
  cr_expect_eq(r.reason_len, 0);
  expect_response("HTTP/1.1 204\r\n\r\n", 0, &r);
  cr_expect_eq(r.status, 204, "the SP before an empty reason is optional");
  expect_response("HTTP/1.1 200 caf\xc3\xa9\tok\r\n\r\n", 0, &r);
}

Test(response, malformed_status_lines_are_refused) {
  expect_response_refused("HTTP/1.1 099 Low\r\n\r\n", "status code out of range");
  expect_response_refused("HTTP/1.1 600 High\r\n\r\n", "status code out of range");
  expect_response_refused("HTTP/1.1 20 OK\r\n\r\n", "malformed status code");
  expect_response_refused("HTTP/1.1 2000 OK\r\n\r\n", "malformed status code");
  expect_response_refused("HTTP/1.1  200 OK\r\n\r\n", "malformed status code");
  expect_response_refused("HTTP/2 200 OK\r\n\r\n", "malformed HTTP version");
  expect_response_refused("HTTP/1.1 200 OK\nX: y\r\n\r\n", "bare LF");
  expect_response_refused("HTTP/1.1 200 O\x01K\r\n\r\n", "control character in reason phrase");
  expect_response_refused("HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n", "obs-fold");
}

Test(response, framing_follows_rfc9112_section_6_3) {
  static const struct {
    const char *head;
    int head_request;
    int no_body, chunked;
    int64_t content_length;
    int until_close, keep_alive;
  } cases[] = {
      {"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", 1, 1, 0, 5, 0, 1},
      {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", 1, 1, 0, -1, 0, 1},
      {"HTTP/1.1 100 Continue\r\n\r\n", 0, 1, 0, -1, 0, 1},
      {"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\n\r\n", 0, 1, 0, -1, 0, 1},
      {"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n", 0, 1, 0, 0, 0, 1},
      {"HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n", 0, 1, 0, 99, 0, 1},
      {"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n", 0, 1, 0, -1, 0, 1},
      {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", 0, 0, 1, -1, 0, 1},
      {"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", 0, 0, 0, 5, 0, 1},
      {"HTTP/1.1 200 OK\r\n\r\n", 0, 0, 0, -1, 1, 0},
      {"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\n\r\n", 0, 0, 0, -1, 1, 0},
      {"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", 0, 0, 0, -1, 1, 0},
      {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 0, 0, 0, -1, 1, 0},
      {"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 0, 0, 1, -1, 0, 1},
      {"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\n", 0, 0, 0, 5, 0, 0},
      {"HTTP/1.1 500 Oops\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", 0, 0, 0, 5, 0, 1},
      {"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n", 0, 0, 0, 5, 0, 1},
      {"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\n", 0, 0, 0, 5, 0, 0},
      {"HTTP/1.0 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\n", 0, 0, 0, 5, 0, 1},
      {"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\n", 0, 0, 0, -1, 1, 0},
  };
  for (size_t i = 0; i < SG_ARRAY_LEN(cases); i++) {
    sg_h1_response r;
    expect_response(cases[i].head, cases[i].head_request, &r);
    cr_expect_eq(r.no_body, cases[i].no_body, "case %zu no_body", i);
    cr_expect_eq(r.chunked, cases[i].chunked, "case %zu chunked", i);
    cr_expect_eq(r.content_length, cases[i].content_length, "case %zu content_length", i);
    cr_expect_eq(r.until_close, cases[i].until_close, "case %zu until_close", i);
    cr_expect_eq(r.keep_alive, cases[i].keep_alive, "case %zu keep_alive", i);
  }
}

Test(response, codings_other_than_chunked_are_flagged) {
  sg_h1_response r;
  expect_response("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 0, &r);
  cr_expect_eq(r.transfer_coded, 1);
  expect_response("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", 0, &r);
  cr_expect_eq(r.transfer_coded, 0);
}

Test(response, ambiguous_framing_is_refused) {
  expect_response_refused("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n"
                          "Transfer-Encoding: chunked\r\n\r\n",
                          "Content-Length with Transfer-Encoding");
  expect_response_refused("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
                          "conflicting Content-Length");
  expect_response_refused("HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\n",
                          "conflicting Content-Length");
  expect_response_refused("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
                          "invalid Content-Length");
  expect_response_refused("HTTP/1.1 200 OK\r\nContent-Length: ,\r\n\r\n", "invalid Content-Length");
  expect_response_refused("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
                          "chunked applied twice");
  expect_response_refused("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                          "Transfer-Encoding in HTTP/1.0");
  expect_response_refused("HTTP/1.1 200 OK\r\nTransfer-Encoding:\r\n\r\n",
                          "invalid Transfer-Encoding");
}

Test(response, head_over_max_head_is_too_large) {
  const char *s = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
  sg_h1_response r;
  cr_expect_eq(sg_h1_parse_response(s, strlen(s), 10, 0, &r), SG_H1_TOO_LARGE);
  cr_expect_eq(sg_h1_parse_response(s, 9, 10, 0, &r), SG_H1_PARTIAL);
}

/* ---- Hop-by-hop fields and helpers ---- */

Test(helpers, header_eq_ignores_case_but_not_length) {
  sg_h1_header h = {"Content-Length", 14, "5", 1};
  cr_expect(sg_h1_header_eq(&h, "content-length"));
  cr_expect(sg_h1_header_eq(&h, "CONTENT-LENGTH"));
  cr_expect(!sg_h1_header_eq(&h, "content-lengt"));
  cr_expect(!sg_h1_header_eq(&h, "content-lengths"));
  cr_expect(!sg_h1_header_eq(&h, ""));
}

Test(helpers, hop_by_hop_fields_include_those_connection_names) {
  sg_h1_request r;
  expect_request("GET / HTTP/1.1\r\nHost: h\r\nConnection: close, X-Secret ,  x-other\r\n"
                 "Connection: keep-alive\r\nX-Secret: 1\r\n\r\n",
                 &r);
  static const char *const hop[] = {
      "Connection", "keep-alive",         "Proxy-Connection", "Proxy-Authenticate", "TE",
      "Trailer",    "transfer-encoding",  "Upgrade",          "X-Secret",           "X-OTHER",
      "close",      "Proxy-Authorization"};
  static const char *const end_to_end[] = {"Host",     "X-Secret-2",     "X", "Accept",
                                           "Trailers", "Content-Length", ""};
  for (size_t i = 0; i < SG_ARRAY_LEN(hop); i++)
    cr_expect(sg_h1_is_hop_by_hop(r.headers, r.num_headers, hop[i], strlen(hop[i])), "%s", hop[i]);
  for (size_t i = 0; i < SG_ARRAY_LEN(end_to_end); i++)
    cr_expect(!sg_h1_is_hop_by_hop(r.headers, r.num_headers, end_to_end[i], strlen(end_to_end[i])),
              "%s", end_to_end[i]);
}

Test(helpers, split_target_splits_absolute_form) {
  sg_h1_target t;
  const char *why = NULL;
  cr_assert_eq(sg_h1_split_target("http://api.example.com:8080/v1/x?a=b&c", 38, &t, &why), 0);
  expect_slice(t.scheme, t.scheme_len, "http");
  expect_slice(t.authority, t.authority_len, "api.example.com:8080");
  expect_slice(t.path, t.path_len, "/v1/x");
  expect_slice(t.query, t.query_len, "?a=b&c");
  const char *bare = "HTTPS://h";
  cr_assert_eq(sg_h1_split_target(bare, strlen(bare), &t, NULL), 0);
  expect_slice(t.scheme, t.scheme_len, "HTTPS");
  expect_slice(t.authority, t.authority_len, "h");
  expect_slice(t.path, t.path_len, "/");
  cr_expect_eq(t.query_len, 0);
  const char *query = "http://[::1]:80?x";
  cr_assert_eq(sg_h1_split_target(query, strlen(query), &t, NULL), 0);
  expect_slice(t.authority, t.authority_len, "[::1]:80");
  expect_slice(t.path, t.path_len, "/");
  expect_slice(t.query, t.query_len, "?x");
}

Test(helpers, split_target_refuses_what_it_cannot_forward) {
  static const struct {
    const char *target, *why;
  } cases[] = {
      {"http://user@h/", "userinfo in request-target"},
      {"http://u:p@h:80", "userinfo in request-target"},
      {"http://h/p#frag", "fragment in request-target"},
      {"http:///p", "empty authority in request-target"},
      {"http://", "empty authority in request-target"},
      {"/path", "invalid request-target"},
      {"h:443", "invalid request-target"},
      {"http:/h", "invalid request-target"},
      {"1http://h", "invalid request-target"},
      {"http://h/ a", "invalid request-target"},
      {"http://h/\x80", "invalid request-target"},
      {"", "invalid request-target"},
  };
  for (size_t i = 0; i < SG_ARRAY_LEN(cases); i++) {
    sg_h1_target t;
    const char *why = NULL;
    cr_expect_eq(sg_h1_split_target(cases[i].target, strlen(cases[i].target), &t, &why), SG_H1_BAD,
                 "%s", cases[i].target);
    cr_expect_str_eq(why ? why : "", cases[i].why, "%s", cases[i].target);
  }
}

/* ---- Chunked bodies ---- */

struct body {
  char data[8192];
  size_t len;
  int calls;
  int fail; /* nonzero: the callback returns it */
};

static int collect(void *arg, const char *data, size_t len) {
  struct body *b = arg;
  cr_assert_gt(len, 0, "the callback got no bytes");
  b->calls++;
  if (b->fail != 0)
    return b->fail;
  cr_assert_leq(b->len + len, sizeof(b->data));
  memcpy(b->data + b->len, data, len);
  b->len += len;
  return 0;
}

/* Feeds |in| to a fresh decoder in the pieces [0, c1), [c1, c2), [c2, len), each from an
 * exact-size heap copy. Returns the first negative result, or the bytes consumed in all. */
static ssize_t decode_cut(sg_h1_chunked *d, const char *in, size_t len, size_t c1, size_t c2,
                          struct body *b) {
  size_t cuts[] = {0, c1, c2, len};
  ssize_t total = 0;
  memset(b, 0, sizeof(*b));
  for (int i = 0; i < 3; i++) {
    size_t n = cuts[i + 1] - cuts[i];
    char *p = copy(in + cuts[i], n);
    ssize_t rc = sg_h1_chunked_decode(d, p, n, collect, b);
    free(p);
    if (rc < 0)
      return rc;
    cr_assert_leq((size_t)rc, n);
    if ((size_t)rc < n)
      cr_assert(sg_h1_chunked_done(d), "stopped short of the input before the end");
    total += rc;
  }
  return total;
}

/* Decodes |in| (|body_len| bytes of chunked body, then anything) cut at every pair of points:
 * the body must always decode to |want|, consuming exactly |body_len| bytes. */
static void expect_body(const char *in, size_t len, size_t body_len, const char *want) {
  for (size_t c1 = 0; c1 <= len; c1++)
    for (size_t c2 = c1; c2 <= len; c2++) {
      sg_h1_chunked d;
      struct body b;
      sg_h1_chunked_init(&d, 0);
      ssize_t rc = decode_cut(&d, in, len, c1, c2, &b);
      cr_assert_eq(rc, (ssize_t)body_len, "cut at %zu, %zu: %zd (%s)", c1, c2, rc,
                   sg_h1_chunked_why(&d) ? sg_h1_chunked_why(&d) : "");
      cr_assert(sg_h1_chunked_done(&d));
      cr_assert_eq(b.len, strlen(want));
      cr_assert_eq(memcmp(b.data, want, b.len), 0, "cut at %zu, %zu: \"%.*s\"", c1, c2, (int)b.len,
                   b.data);
    }
}

/* Expects |in| refused with |code| and |why| however it is cut, and every prefix accepted. */
static void expect_body_refused(const char *in, int code, const char *why) {
  size_t len = strlen(in);
  for (size_t c1 = 0; c1 <= len; c1++) {
    sg_h1_chunked d;
    struct body b;
    sg_h1_chunked_init(&d, 0);
    ssize_t rc = decode_cut(&d, in, len, c1, c1, &b);
    cr_assert_eq(rc, code, "\"%s\" cut at %zu gave %zd (%s)", in, c1, rc,
                 sg_h1_chunked_why(&d) ? sg_h1_chunked_why(&d) : "");
    cr_assert_str_eq(sg_h1_chunked_why(&d), why, "\"%s\"", in);
    cr_assert_eq(sg_h1_chunked_decode(&d, "0\r\n\r\n", 5, collect, &b), code, "errors stick");
  }
}

#define EXPECT_BODY(in, want) expect_body((in), sizeof(in) - 1, sizeof(in) - 1, (want))

Test(chunked, bodies_decode_alike_however_they_are_cut) {
  EXPECT_BODY("0\r\n\r\n", "");
  EXPECT_BODY("5\r\nhello\r\n0\r\n\r\n", "hello");
  EXPECT_BODY("5\r\nhello\r\n1\r\n \r\nA\r\n0123456789\r\n0\r\n\r\n", "hello 0123456789");
  EXPECT_BODY("00a\r\n0123456789\r\n000\r\n\r\n", "0123456789");
  EXPECT_BODY("1\r\n\r\r\n2\r\n\r\n\r\n0\r\n\r\n", "\r\r\n"); /* CR and LF are data in data */
}

Test(chunked, extensions_are_checked_and_dropped) {
  EXPECT_BODY("5;name=value;flag\r\nhello\r\n0;last\r\n\r\n", "hello");
  EXPECT_BODY("5 ; a = b ;c= \"q \\\"x\\\" ;\"\r\nhello\r\n0\r\n\r\n", "hello");
  EXPECT_BODY("5;a=\"caf\xc3\xa9\"\r\nhello\r\n0\r\n\r\n", "hello");
  EXPECT_BODY("5 \r\nhello\r\n0\t\r\n\r\n", "hello"); /* BWS before the CRLF is tolerated */
  static const char *const bad[] = {
      "5;\r\nhello\r\n0\r\n\r\n",         "5;=b\r\nhello\r\n0\r\n\r\n",
      "5;a=\r\nhello\r\n0\r\n\r\n",       "5;a=b c\r\nhello\r\n0\r\n\r\n",
      "5;a=\"x\r\nhello\r\n0\r\n\r\n",    "5;a=\"\x01\"\r\nhello\r\n0\r\n\r\n",
      "5;a=\"x\"y\r\nhello\r\n0\r\n\r\n", "5;a==b\r\nhello\r\n0\r\n\r\n",
      "5;a b\r\nhello\r\n0\r\n\r\n",      "5;a=b=c\r\nhello\r\n0\r\n\r\n",
  };
  for (size_t i = 0; i < SG_ARRAY_LEN(bad); i++)
    expect_body_refused(bad[i], SG_H1_BAD, "invalid chunk extension");
  expect_body_refused("5;a=b\nhello\r\n0\r\n\r\n", SG_H1_BAD, "bare LF");
}

Test(chunked, trailers_are_checked_and_dropped) {
  EXPECT_BODY("5\r\nhello\r\n0\r\nX-Checksum: abc\r\nY:\r\nZ: \t v \t\r\n\r\n", "hello");
  expect_body_refused("0\r\n X: y\r\n\r\n", SG_H1_BAD, "obs-fold");
  expect_body_refused("0\r\nX: y\r\n z\r\n\r\n", SG_H1_BAD, "obs-fold");
  expect_body_refused("0\r\nX : y\r\n\r\n", SG_H1_BAD, "whitespace before colon");
  expect_body_refused("0\r\nNoColon\r\n\r\n", SG_H1_BAD, "invalid trailer field");
  expect_body_refused("0\r\n: y\r\n\r\n", SG_H1_BAD, "invalid trailer field");
  expect_body_refused("0\r\nX: a\nb\r\n\r\n", SG_H1_BAD, "bare LF");
  expect_body_refused("0\r\nX: a\rb\r\n\r\n", SG_H1_BAD, "bare CR");
  expect_body_refused("0\r\nX: a\x01\r\n\r\n", SG_H1_BAD, "control character in trailer");
  expect_body_refused("0\r\n\n", SG_H1_BAD, "bare LF");
  expect_body_refused("0\r\n\rX", SG_H1_BAD, "bare CR");
}

Test(chunked, nul_in_a_trailer_is_refused) {
  static const char in[] = "0\r\nX: a\0b\r\n\r\n";
  sg_h1_chunked d;
  struct body b = {0};
  sg_h1_chunked_init(&d, 0);
  cr_expect_eq(sg_h1_chunked_decode(&d, in, sizeof(in) - 1, collect, &b), SG_H1_BAD);
  cr_expect_str_eq(sg_h1_chunked_why(&d), "NUL in trailer field");
}

Test(chunked, sizes_must_be_plain_hex) {
  static const char *const bad[] = {"+5\r\nhello\r\n0\r\n\r\n",
                                    "-5\r\nhello\r\n0\r\n\r\n",
                                    " 5\r\nhello\r\n0\r\n\r\n",
                                    "0x5\r\nhello\r\n0\r\n\r\n",
                                    "g\r\n\r\n",
                                    "\r\n0\r\n\r\n",
                                    ";a\r\n0\r\n\r\n",
                                    "5,\r\nhello\r\n0\r\n\r\n"};
  for (size_t i = 0; i < SG_ARRAY_LEN(bad); i++)
    expect_body_refused(bad[i], SG_H1_BAD, "invalid chunk size");
}

Test(chunked, bare_lf_and_bare_cr_are_refused) {
  expect_body_refused("5\nhello\r\n0\r\n\r\n", SG_H1_BAD, "bare LF");
  expect_body_refused("5\rhello\r\n0\r\n\r\n", SG_H1_BAD, "bare CR");
  expect_body_refused("5\r\nhello\n0\r\n\r\n", SG_H1_BAD, "bare LF");
  expect_body_refused("\n0\r\n\r\n", SG_H1_BAD, "bare LF");
  expect_body_refused("0\n\r\n", SG_H1_BAD, "bare LF");
}

Test(chunked, data_must_be_followed_by_crlf) {
  expect_body_refused("5\r\nhelloX\r\n0\r\n\r\n", SG_H1_BAD, "missing CRLF after chunk data");
  expect_body_refused("5\r\nhello\rX0\r\n\r\n", SG_H1_BAD, "missing CRLF after chunk data");
  expect_body_refused("3\r\nhello\r\n0\r\n\r\n", SG_H1_BAD, "missing CRLF after chunk data");
}

Test(chunked, sizes_over_64_bits_are_refused) {
  expect_body_refused("10000000000000000\r\n", SG_H1_BAD, "chunk size overflow");
  expect_body_refused("00000000000000005\r\nhello\r\n0\r\n\r\n", SG_H1_BAD, "chunk size overflow");
  sg_h1_chunked d;
  struct body b = {0};
  sg_h1_chunked_init(&d, 0);
  cr_expect_eq(sg_h1_chunked_decode(&d, "ffffffffffffffff\r\nabc", 21, collect, &b), 21);
  cr_expect_eq(b.len, 3);
  cr_expect(!sg_h1_chunked_done(&d));
}

Test(chunked, chunks_over_max_chunk_are_too_large) {
  sg_h1_chunked d;
  struct body b = {0};
  sg_h1_chunked_init(&d, 10);
  cr_expect_eq(sg_h1_chunked_decode(&d, "a\r\n0123456789\r\n0\r\n\r\n", 20, collect, &b), 20);
  cr_expect(sg_h1_chunked_done(&d));
  sg_h1_chunked_init(&d, 10);
  cr_expect_eq(sg_h1_chunked_decode(&d, "b", 1, collect, &b), SG_H1_TOO_LARGE,
               "refused as soon as the size is known to be too large");
  cr_expect_str_eq(sg_h1_chunked_why(&d), "chunk over the size limit");
}

Test(chunked, dropped_bytes_are_bounded) {
  static char in[2 * SG_H1_MAX_TRAILER];
  sg_h1_chunked d;
  struct body b = {0};
  memset(in, 'a', sizeof(in));
  memcpy(in, "1;", 2);
  sg_h1_chunked_init(&d, 0);
  cr_expect_eq(sg_h1_chunked_decode(&d, in, SG_H1_MAX_CHUNK_EXT + 2, collect, &b),
               SG_H1_MAX_CHUNK_EXT + 2, "extensions up to the limit are fine");
  cr_expect_eq(sg_h1_chunked_decode(&d, "a", 1, collect, &b), SG_H1_TOO_LARGE);
  cr_expect_str_eq(sg_h1_chunked_why(&d), "chunk extensions too long");
  memcpy(in, "0\r\nX: ", 6);
  sg_h1_chunked_init(&d, 0);
  cr_expect_eq(sg_h1_chunked_decode(&d, in, sizeof(in), collect, &b), SG_H1_TOO_LARGE);
  cr_expect_str_eq(sg_h1_chunked_why(&d), "trailer section too long");
}

Test(chunked, data_is_delivered_in_runs) {
  const char *in = "a\r\n0123456789\r\n14\r\n01234567890123456789\r\n0\r\n\r\n";
  sg_h1_chunked d;
  struct body b = {0};
  sg_h1_chunked_init(&d, 0);
  cr_assert_eq(sg_h1_chunked_decode(&d, in, strlen(in), collect, &b), (ssize_t)strlen(in));
  cr_expect_eq(b.calls, 2, "one call per chunk when the input holds it whole");
  cr_expect_eq(b.len, 30);
}

Test(chunked, callback_errors_stop_the_decoder) {
  sg_h1_chunked d;
  struct body b = {0};
  b.fail = -42;
  sg_h1_chunked_init(&d, 0);
  cr_expect_eq(sg_h1_chunked_decode(&d, "5\r\nhello\r\n0\r\n\r\n", 15, collect, &b), -42);
  cr_expect_eq(sg_h1_chunked_decode(&d, "0\r\n\r\n", 5, collect, &b), -42);
  cr_expect_eq(b.calls, 1);
  cr_expect_str_eq(sg_h1_chunked_why(&d), "data callback failed");
}

Test(chunked, a_pipelined_request_after_the_last_chunk_is_left_unconsumed) {
  static const char in[] = "5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n"
                           "GET /next HTTP/1.1\r\nHost: h\r\n\r\n";
  size_t body_len = strstr(in, "GET") - in;
  expect_body(in, sizeof(in) - 1, body_len, "hello");
  sg_h1_chunked d;
  struct body b = {0};
  sg_h1_chunked_init(&d, 0);
  ssize_t n = sg_h1_chunked_decode(&d, in, sizeof(in) - 1, collect, &b);
  cr_assert_eq(n, (ssize_t)body_len);
  cr_expect_eq(sg_h1_chunked_decode(&d, in + n, sizeof(in) - 1 - n, collect, &b), 0,
               "nothing more is consumed once the body has ended");
  sg_h1_request r;
  cr_assert_eq(sg_h1_parse_request(in + n, sizeof(in) - 1 - n, MAX_HEAD, &r),
               (int)(sizeof(in) - 1 - n));
  expect_slice(r.target, r.target_len, "/next");
}

Test(chunked, chunk_header_writes_lower_case_hex_and_crlf) {
  char out[20];
  cr_expect_eq(sg_h1_chunk_header(out, 1), 3);
  cr_expect_str_eq(out, "1\r\n");
  cr_expect_eq(sg_h1_chunk_header(out, 0x1a), 4);
  cr_expect_str_eq(out, "1a\r\n");
  cr_expect_eq(sg_h1_chunk_header(out, 4096), 6);
  cr_expect_str_eq(out, "1000\r\n");
  if (sizeof(size_t) == 8) {
    cr_expect_eq(sg_h1_chunk_header(out, SIZE_MAX), 18);
    cr_expect_str_eq(out, "ffffffffffffffff\r\n");
  }
  cr_expect_eq(strlen(SG_H1_LAST_CHUNK), SG_H1_LAST_CHUNK_LEN);
}

Test(chunked, encoded_bodies_decode_to_their_data) {
  static const char *const pieces[] = {"a", "0123456789abcdef", "", "x\r\n0\r\n\r\n"};
  char enc[512];
  char want[256] = "";
  size_t len = 0;
  for (size_t i = 0; i < SG_ARRAY_LEN(pieces); i++) {
    size_t n = strlen(pieces[i]);
    if (n == 0)
      continue;
    len += sg_h1_chunk_header(enc + len, n);
    memcpy(enc + len, pieces[i], n);
    memcpy(enc + len + n, "\r\n", 2);
    len += n + 2;
    strcat(want, pieces[i]);
  }
  memcpy(enc + len, SG_H1_LAST_CHUNK, SG_H1_LAST_CHUNK_LEN);
  len += SG_H1_LAST_CHUNK_LEN;
  expect_body(enc, len, len, want);
}

/* Decodes |in| whole, byte by byte and cut at a random point: the results must agree. */
static void expect_same_decoding(const char *in, size_t len, int iter) {
  sg_h1_chunked d;
  static struct body whole, piece;
  sg_h1_chunked_init(&d, 0);
  ssize_t rc = decode_cut(&d, in, len, len, len, &whole);
  const char *why = sg_h1_chunked_why(&d);
  int done = sg_h1_chunked_done(&d);
  size_t cut = len == 0 ? 0 : rng() % len;
  for (int bytewise = 0; bytewise < 2; bytewise++) {
    sg_h1_chunked_init(&d, 0);
    ssize_t got = 0;
    if (bytewise) {
      memset(&piece, 0, sizeof(piece));
      for (size_t i = 0; i < len && got >= 0 && !sg_h1_chunked_done(&d); i++) {
        char *p = copy(in + i, 1);
        ssize_t one = sg_h1_chunked_decode(&d, p, 1, collect, &piece);
        free(p);
        got = one < 0 ? one : got + one;
      }
    } else {
      got = decode_cut(&d, in, len, cut, cut, &piece);
    }
    cr_assert_eq(got, rc, "iteration %d: %zd against %zd whole", iter, got, rc);
    cr_assert_eq(sg_h1_chunked_done(&d), done, "iteration %d", iter);
    if (rc < 0) {
      cr_assert_str_eq(sg_h1_chunked_why(&d), why, "iteration %d", iter);
      continue;
    }
    cr_assert_eq(piece.len, whole.len, "iteration %d", iter);
    cr_assert_eq(memcmp(piece.data, whole.data, whole.len), 0, "iteration %d", iter);
  }
}

Test(chunked, mutated_bodies_decode_the_same_however_split) {
  static const char *const seeds[] = {
      "5\r\nhello\r\n0\r\n\r\n",
      "3;a=b\r\nabc\r\n2;q=\"x\\\"y\"\r\nde\r\n0\r\nT: v\r\n\r\nGET",
      "A\r\n0123456789\r\n0 ; last\r\nX-A: 1\r\nX-B: 2\r\n\r\n",
  };
  for (int iter = 0; iter < 4000; iter++) {
    char buf[128];
    const char *seed = seeds[rng() % (SG_ARRAY_LEN(seeds))];
    size_t len = strlen(seed);
    memcpy(buf, seed, len);
    len = mutate(buf, len, sizeof(buf));
    expect_same_decoding(buf, len, iter);
  }
}
