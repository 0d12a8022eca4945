/* Structured log lines, read back from a memory file and parsed the way a log collector would: text
 * lines as logfmt, JSON lines as one object each. Client bytes in a value must come back as the
 * same value and never as a second line or a forged field. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/log.h"

/* The log's destination: a memory file, which never blocks a writer as a full pipe would. */
static int log_fd = -1;
static off_t read_off;

/* What was written since the last drain: the bytes, and the lines split at '\n' (without it). */
static struct {
  char bytes[256 * 1024];
  size_t len;
  const char *line[64];
  size_t line_len[64];
  size_t n_lines;
} out;

static void start(sg_log_level level, sg_log_format format) {
  if (log_fd >= 0)
    close(log_fd);
  log_fd = memfd_create("sealgate-log", 0);
  cr_assert_geq(log_fd, 0);
  read_off = 0;
  sg_log_set_buffered(0);
  sg_log_init(level, format, log_fd);
}

static void stop(void) {
  sg_log_init(SG_LOG_INFO, SG_LOG_TEXT, 2);
  if (log_fd >= 0)
    close(log_fd);
  log_fd = -1;
}

TestSuite(log, .fini = stop);

/* Reads whatever has been written since the last call and splits it into lines. */
static void drain(void) {
  out.len = 0;
  out.n_lines = 0;
  for (;;) {
    ssize_t n = pread(log_fd, out.bytes + out.len, sizeof(out.bytes) - 1 - out.len, read_off);
    if (n <= 0)
      break;
    out.len += (size_t)n;
    read_off += n;
  }
  out.bytes[out.len] = '\0';
  const char *p = out.bytes, *end = out.bytes + out.len;
  while (p < end) {
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    cr_assert_not_null(nl, "the output does not end with a newline: \"%s\"", p);
    cr_assert_lt(out.n_lines, 64);
    out.line[out.n_lines] = p;
    out.line_len[out.n_lines] = (size_t)(nl - p);
    out.n_lines++;
    p = nl + 1;
  }
}

/* Drains the output and asserts it held exactly one line. */
static void drain_one_line(void) {
  drain();
  cr_assert_eq(out.n_lines, 1, "%zu lines: \"%s\"", out.n_lines, out.bytes);
}

/* --- A logfmt reader and a JSON reader, each decoding into the same list of fields. -------- */

typedef struct {
  char key[64];
  char val[8192];
  size_t val_len;
  int quoted; /* logfmt: the value was quoted; JSON: the value was a string */
} field;

static field fields[64];
static size_t n_fields;

static const field *get(const char *key) {
  for (size_t i = 0; i < n_fields; i++)
    if (strcmp(fields[i].key, key) == 0)
      return &fields[i];
  cr_assert_fail("no field \"%s\"", key);
  return NULL;
}

static int has(const char *key) {
  for (size_t i = 0; i < n_fields; i++)
    if (strcmp(fields[i].key, key) == 0)
      return 1;
  return 0;
}

static void assert_field(const char *key, const void *want, size_t want_len) {
  const field *f = get(key);
  cr_assert_eq(f->val_len, want_len, "%s: %zu bytes, want %zu", key, f->val_len, want_len);
  cr_assert_arr_eq(f->val, want, want_len, "%s", key);
}

static void assert_field_str(const char *key, const char *want) {
  assert_field(key, want, strlen(want));
}

static int hexval(char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

static field *new_field(void) {
  cr_assert_lt(n_fields, 64);
  field *f = &fields[n_fields++];
  memset(f, 0, sizeof(*f));
  return f;
}

static void add_byte(field *f, int c) {
  cr_assert_lt(f->val_len, sizeof(f->val));
  f->val[f->val_len++] = (char)c;
}

/* logfmt as sealgate writes it: key=value pairs separated by one space; a value is either a
 * token of printable ASCII without '"', '=' or '\', or a quoted string whose only escapes are
 * \" \\ and \xHH. Fails the test on anything else. */
static void parse_logfmt(const char *p, size_t len) {
  const char *end = p + len;
  n_fields = 0;
  while (p < end) {
    field *f = new_field();
    size_t k = 0;
    while (p < end && *p != '=') {
      cr_assert(*p > 0x20 && *p < 0x7f && *p != '"', "bad key byte 0x%02x", (unsigned char)*p);
      cr_assert_lt(k, sizeof(f->key) - 1);
      f->key[k++] = *p++;
    }
    cr_assert(k > 0 && p < end, "a field without key=value");
    p++;
    if (p < end && *p == '"') {
      f->quoted = 1;
      for (p++;; p++) {
        cr_assert_lt(p, end, "unterminated quoted value for %s", f->key);
        unsigned char c = (unsigned char)*p;
        cr_assert(c >= 0x20 && c < 0x7f, "raw byte 0x%02x in %s", c, f->key);
        if (c == '"')
          break;
        if (c != '\\') {
          add_byte(f, c);
          continue;
        }
        cr_assert_lt(p + 1, end);
        char e = *++p;
        if (e == '"' || e == '\\') {
          add_byte(f, e);
        } else {
          cr_assert(e == 'x' && p + 2 < end, "bad escape \\%c in %s", e, f->key);
          int hi = hexval(p[1]), lo = hexval(p[2]);
          cr_assert(hi >= 0 && lo >= 0, "bad \\x escape in %s", f->key);
          add_byte(f, hi << 4 | lo);
          p += 2;
        }
      }
      p++;
    } else {
      while (p < end && *p != ' ') {
        unsigned char c = (unsigned char)*p++;
        cr_assert(c > 0x20 && c < 0x7f && c != '"' && c != '=' && c != '\\',
                  "byte 0x%02x in the unquoted value of %s", c, f->key);
        add_byte(f, c);
      }
      cr_assert_gt(f->val_len, 0, "an empty unquoted value for %s", f->key);
    }
    if (p < end) {
      cr_assert_eq(*p, ' ', "fields must be separated by one space");
      p++;
      cr_assert_lt(p, end, "a trailing space");
    }
  }
}

static const char *json_string(const char *p, const char *end, field *f, int into_key) {
  size_t k = 0;
  cr_assert(p < end && *p == '"', "a JSON string must start with '\"'");
  for (p++;; p++) {
    cr_assert_lt(p, end, "unterminated JSON string");
    unsigned char c = (unsigned char)*p;
    cr_assert_geq(c, 0x20, "raw control byte 0x%02x in a JSON string", c);
    if (c == '"')
      break;
    int b = c;
    if (c == '\\') {
      cr_assert_lt(p + 1, end);
      char e = *++p;
      const char *simple = "\"\\/bfnrt", *decoded = "\"\\/\b\f\n\r\t";
      const char *s = strchr(simple, e);
      if (e != '\0' && s != NULL) {
        b = (unsigned char)decoded[s - simple];
      } else {
        cr_assert(e == 'u' && p + 4 < end, "bad JSON escape \\%c", e);
        int cp = 0;
        for (int i = 1; i <= 4; i++) {
          int h = hexval(p[i]);
          cr_assert_geq(h, 0, "bad \\u escape");
          cp = cp << 4 | h;
        }
        /* sealgate escapes single bytes only; read \u00XX back as byte XX. */
        cr_assert_lt(cp, 0x100, "\\u%04x is not a byte escape", cp);
        b = cp;
        p += 4;
      }
    }
    if (into_key) {
      cr_assert_lt(k, sizeof(f->key) - 1);
      f->key[k++] = (char)b;
    } else {
      add_byte(f, b);
    }
  }
  return p + 1;
}

/* One JSON object whose values are strings, numbers or null. Fails the test on anything else. */
static void parse_json(const char *p, size_t len) {
  const char *end = p + len;
  n_fields = 0;
  cr_assert(len >= 2 && p[0] == '{' && end[-1] == '}', "not a JSON object");
  p++;
  end--;
  while (p < end) {
    field *f = new_field();
    p = json_string(p, end, f, 1);
    cr_assert(p < end && *p == ':', "no ':' after key %s", f->key);
    p++;
    if (p < end && *p == '"') {
      f->quoted = 1;
      p = json_string(p, end, f, 0);
    } else if (end - p >= 4 && memcmp(p, "null", 4) == 0) {
      p += 4;
    } else {
      /* -?digits(.digits)?([eE][+-]?digits)? */
      const char *start = p;
      if (p < end && *p == '-')
        p++;
      cr_assert(p < end && *p >= '0' && *p <= '9', "bad JSON value for %s", f->key);
      while (p < end && *p >= '0' && *p <= '9')
        p++;
      if (p < end && *p == '.') {
        p++;
        cr_assert(p < end && *p >= '0' && *p <= '9', "bad JSON number for %s", f->key);
        while (p < end && *p >= '0' && *p <= '9')
          p++;
      }
      if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '+' || *p == '-'))
          p++;
        while (p < end && *p >= '0' && *p <= '9')
          p++;
      }
      for (const char *q = start; q < p; q++)
        add_byte(f, *q);
    }
    if (p < end) {
      cr_assert_eq(*p, ',', "no ',' after %s", f->key);
      p++;
      cr_assert_lt(p, end, "a trailing ','");
    }
  }
}

static void parse_line(sg_log_format format, size_t i) {
  if (format == SG_LOG_JSON)
    parse_json(out.line[i], out.line_len[i]);
  else
    parse_logfmt(out.line[i], out.line_len[i]);
}

/* Logs one line with a single string field and reads it back parsed. */
static void log_value(sg_log_format format, const char *value, size_t len) {
  start(SG_LOG_INFO, format);
  sg_log_begin(SG_LOG_INFO, "event");
  sg_log_str("v", value, len);
  sg_log_end();
  drain_one_line();
  parse_line(format, 0);
}

/* "2024-05-01T12:34:56.789Z" */
static int is_timestamp(const char *s, size_t len) {
  const char *pattern = "dddd-dd-ddTdd:dd:dd.dddZ";
  if (len != strlen(pattern))
    return 0;
  for (size_t i = 0; i < len; i++)
    if (pattern[i] == 'd' ? !(s[i] >= '0' && s[i] <= '9') : s[i] != pattern[i])
      return 0;
  return 1;
}

/* --- Text ------------------------------------------------------------------------------- */

Test(log, a_text_line_is_logfmt_with_time_level_and_event_first) {
  start(SG_LOG_INFO, SG_LOG_TEXT);

  sg_log_begin(SG_LOG_INFO, "rpc");
  sg_log_cstr("method", "/grpc.health.v1.Health/Check");
  sg_log_int("code", 0);
  sg_log_end();

  drain_one_line();
  const char *line = out.line[0];
  cr_assert_eq(strncmp(line, "time=", 5), 0, "\"%s\"", line);
  cr_assert(is_timestamp(line + 5, 24), "\"%s\"", line);
  cr_assert_str_eq(line + 5 + 24,
                   " level=info msg=rpc method=/grpc.health.v1.Health/Check code=0\n");
}

Test(log, text_lines_name_every_level) {
  start(SG_LOG_DEBUG, SG_LOG_TEXT);
  const char *names[] = {"debug", "info", "warn", "error"};

  for (int level = SG_LOG_DEBUG; level <= SG_LOG_ERROR; level++) {
    sg_log_begin((sg_log_level)level, "e");
    sg_log_end();
  }

  drain();
  cr_assert_eq(out.n_lines, 4);
  for (size_t i = 0; i < 4; i++) {
    parse_logfmt(out.line[i], out.line_len[i]);
    assert_field_str("level", names[i]);
  }
}

Test(log, a_plain_text_value_is_not_quoted) {
  log_value(SG_LOG_TEXT, "abc-123_x/y.z:8443", 18);

  cr_assert_not(get("v")->quoted);
  assert_field_str("v", "abc-123_x/y.z:8443");
}

Test(log, a_text_value_with_spaces_is_quoted) {
  log_value(SG_LOG_TEXT, "hello world", 11);

  cr_assert(get("v")->quoted);
  assert_field_str("v", "hello world");
  cr_assert_not_null(strstr(out.bytes, " v=\"hello world\"\n"));
}

Test(log, quotes_and_backslashes_in_a_text_value_are_escaped) {
  log_value(SG_LOG_TEXT, "say \"hi\" \\o/", 12);

  assert_field_str("v", "say \"hi\" \\o/");
  cr_assert_not_null(strstr(out.bytes, "v=\"say \\\"hi\\\" \\\\o/\""));
}

Test(log, an_equals_sign_cannot_forge_a_text_field) {
  log_value(SG_LOG_TEXT, "x level=error", 13);

  cr_assert_eq(n_fields, 4);
  assert_field_str("level", "info");
  assert_field_str("v", "x level=error");
}

Test(log, an_empty_text_value_is_an_empty_quoted_string) {
  log_value(SG_LOG_TEXT, "", 0);

  cr_assert(get("v")->quoted);
  assert_field("v", "", 0);
}

Test(log, a_newline_in_a_text_value_never_starts_a_second_line) {
  const char *v = "first\nlevel=error msg=forged\r\nthird";
  log_value(SG_LOG_TEXT, v, strlen(v));

  assert_field_str("v", v);
  assert_field_str("msg", "event");
  cr_assert_not_null(strstr(out.bytes, "\\x0a"));
}

Test(log, control_bytes_in_a_text_value_are_escaped) {
  const char v[] = "\x1b[31mred\x1b[0m\x7f\x00\x01\t";
  log_value(SG_LOG_TEXT, v, sizeof(v) - 1);

  assert_field("v", v, sizeof(v) - 1);
  cr_assert_not_null(strstr(out.bytes, "\\x1b[31mred"));
}

Test(log, non_ascii_bytes_in_a_text_value_are_escaped) {
  const char *v = "caf\xc3\xa9 \xe2\x98\xba \xff";
  log_value(SG_LOG_TEXT, v, strlen(v));

  assert_field_str("v", v);
  cr_assert_not_null(strstr(out.bytes, "caf\\xc3\\xa9"));
}

Test(log, a_text_value_longer_than_1024_bytes_is_cut_and_marked) {
  char v[2000];
  memset(v, 'a', sizeof(v));
  log_value(SG_LOG_TEXT, v, sizeof(v));

  const field *f = get("v");
  cr_assert(f->quoted);
  cr_assert_eq(f->val_len, 1024 + 3);
  cr_assert_arr_eq(f->val, v, 1024);
  cr_assert_arr_eq(f->val + 1024, "...", 3);
}

Test(log, a_text_value_of_exactly_1024_bytes_is_kept_whole) {
  char v[1024];
  memset(v, 'b', sizeof(v));
  log_value(SG_LOG_TEXT, v, sizeof(v));

  assert_field("v", v, sizeof(v));
  cr_assert_not(get("v")->quoted);
}

Test(log, a_cut_text_value_of_escaped_bytes_stays_well_formed) {
  char v[1500];
  memset(v, '\n', sizeof(v));
  log_value(SG_LOG_TEXT, v, sizeof(v));

  const field *f = get("v");
  cr_assert_eq(f->val_len, 1024 + 3);
  cr_assert_arr_eq(f->val, v, 1024);
}

Test(log, integers_are_written_in_decimal) {
  start(SG_LOG_INFO, SG_LOG_TEXT);

  sg_log_begin(SG_LOG_INFO, "n");
  sg_log_int("zero", 0);
  sg_log_int("neg", -42);
  sg_log_int("min", INT64_MIN);
  sg_log_int("max", INT64_MAX);
  sg_log_end();

  drain_one_line();
  parse_logfmt(out.line[0], out.line_len[0]);
  assert_field_str("zero", "0");
  assert_field_str("neg", "-42");
  assert_field_str("min", "-9223372036854775808");
  assert_field_str("max", "9223372036854775807");
}

Test(log, doubles_are_written_with_three_decimals) {
  start(SG_LOG_INFO, SG_LOG_TEXT);

  sg_log_begin(SG_LOG_INFO, "d");
  sg_log_double("ms", 1.5);
  sg_log_double("neg", -0.0004);
  sg_log_end();

  drain_one_line();
  parse_logfmt(out.line[0], out.line_len[0]);
  assert_field_str("ms", "1.500");
  assert_field_str("neg", "-0.000");
}

Test(log, a_huge_double_is_written_whole) {
  start(SG_LOG_INFO, SG_LOG_TEXT);

  sg_log_begin(SG_LOG_INFO, "d");
  sg_log_double("big", -1e300);
  sg_log_end();

  drain_one_line();
  parse_logfmt(out.line[0], out.line_len[0]);
  const field *f = get("big");
  cr_assert_eq(f->val_len, 1 + 301 + 4, "\"%.*s\"", (int)f->val_len, f->val);
  cr_assert_eq(strncmp(f->val, "-1000000000", 11), 0);
  cr_assert_arr_eq(f->val + f->val_len - 4, ".000", 4);
}

Test(log, a_null_cstr_is_an_empty_value) {
  start(SG_LOG_INFO, SG_LOG_TEXT);

  sg_log_begin(SG_LOG_INFO, "e");
  sg_log_cstr("org", NULL);
  sg_log_end();

  drain_one_line();
  parse_logfmt(out.line[0], out.line_len[0]);
  assert_field("org", "", 0);
}

Test(log, each_line_is_written_when_it_ends) {
  start(SG_LOG_INFO, SG_LOG_TEXT);

  sg_log_begin(SG_LOG_INFO, "one");
  sg_log_int("k", 1);
  drain();
  cr_assert_eq(out.len, 0, "a line was written before it ended");
  sg_log_end();

  drain_one_line();
}

/* --- Levels ----------------------------------------------------------------------------- */

Test(log, lines_below_the_threshold_are_dropped) {
  start(SG_LOG_WARN, SG_LOG_TEXT);

  sg_log_begin(SG_LOG_DEBUG, "d");
  sg_log_cstr("k", "v");
  sg_log_end();
  sg_log_begin(SG_LOG_INFO, "i");
  sg_log_int("k", 1);
  sg_log_double("x", 1.0);
  sg_log_end();
  sg_log_begin(SG_LOG_WARN, "w");
  sg_log_end();
  sg_log_begin(SG_LOG_ERROR, "e");
  sg_log_end();

  drain();
  cr_assert_eq(out.n_lines, 2, "\"%s\"", out.bytes);
  parse_logfmt(out.line[0], out.line_len[0]);
  assert_field_str("msg", "w");
  cr_assert_eq(n_fields, 3, "a field of a dropped line leaked into the next");
  parse_logfmt(out.line[1], out.line_len[1]);
  assert_field_str("msg", "e");
}

Test(log, enabled_follows_the_threshold) {
  start(SG_LOG_WARN, SG_LOG_TEXT);

  cr_assert_not(sg_log_enabled(SG_LOG_DEBUG));
  cr_assert_not(sg_log_enabled(SG_LOG_INFO));
  cr_assert(sg_log_enabled(SG_LOG_WARN));
  cr_assert(sg_log_enabled(SG_LOG_ERROR));
}

Test(log, logf_below_the_threshold_writes_nothing) {
  start(SG_LOG_ERROR, SG_LOG_TEXT);

  sg_logf(SG_LOG_WARN, "w", "%d", 1);

  drain();
  cr_assert_eq(out.len, 0);
}

Test(log, logf_adds_the_formatted_text_to_the_event) {
  start(SG_LOG_INFO, SG_LOG_TEXT);

  sg_logf(SG_LOG_WARN, "listen", "bound %s:%d", "0.0.0.0", 8443);

  drain_one_line();
  parse_logfmt(out.line[0], out.line_len[0]);
  assert_field_str("level", "warn");
  assert_field_str("msg", "listen");
  cr_assert_eq(n_fields, 4);
  assert_field_str(fields[3].key, "bound 0.0.0.0:8443");
}

Test(log, level_names_parse) {
  sg_log_level l;
  cr_assert_eq(sg_log_parse_level("debug", &l), 0);
  cr_assert_eq(l, SG_LOG_DEBUG);
  cr_assert_eq(sg_log_parse_level("info", &l), 0);
  cr_assert_eq(l, SG_LOG_INFO);
  cr_assert_eq(sg_log_parse_level("warn", &l), 0);
  cr_assert_eq(l, SG_LOG_WARN);
  cr_assert_eq(sg_log_parse_level("error", &l), 0);
  cr_assert_eq(l, SG_LOG_ERROR);
}

Test(log, unknown_level_names_are_rejected) {
  sg_log_level l = SG_LOG_ERROR;
  cr_assert_eq(sg_log_parse_level("warning", &l), -1);
  cr_assert_eq(sg_log_parse_level("INFO", &l), -1);
  cr_assert_eq(sg_log_parse_level("", &l), -1);
  cr_assert_eq(l, SG_LOG_ERROR);
}

Test(log, format_names_parse) {
  sg_log_format f = SG_LOG_TEXT;
  cr_assert_eq(sg_log_parse_format("json", &f), 0);
  cr_assert_eq(f, SG_LOG_JSON);
  cr_assert_eq(sg_log_parse_format("text", &f), 0);
  cr_assert_eq(f, SG_LOG_TEXT);
  cr_assert_eq(sg_log_parse_format("logfmt", &f), -1);
}

/* --- Buffering -------------------------------------------------------------------------- */

Test(log, buffered_lines_wait_for_a_flush) {
  start(SG_LOG_INFO, SG_LOG_TEXT);
  sg_log_set_buffered(1);

  for (int i = 0; i < 3; i++) {
    sg_log_begin(SG_LOG_INFO, "batched");
    sg_log_int("i", i);
    sg_log_end();
  }
  drain();
  cr_assert_eq(out.len, 0, "a buffered line was written before the flush");

  sg_log_flush();

  drain();
  cr_assert_eq(out.n_lines, 3);
  for (size_t i = 0; i < 3; i++) {
    parse_logfmt(out.line[i], out.line_len[i]);
    char want[2] = {(char)('0' + i), '\0'};
    assert_field_str("i", want);
  }
}

Test(log, a_flush_inside_a_line_writes_only_the_finished_lines) {
  start(SG_LOG_INFO, SG_LOG_TEXT);
  sg_log_set_buffered(1);
  sg_log_begin(SG_LOG_INFO, "done");
  sg_log_end();
  sg_log_begin(SG_LOG_INFO, "open");
  sg_log_int("k", 1);

  sg_log_flush();

  drain_one_line();
  parse_logfmt(out.line[0], out.line_len[0]);
  assert_field_str("msg", "done");
  sg_log_end();
  sg_log_flush();
  drain_one_line();
  parse_logfmt(out.line[0], out.line_len[0]);
  assert_field_str("msg", "open");
  assert_field_str("k", "1");
}

Test(log, a_full_buffer_is_written_without_a_flush) {
  start(SG_LOG_INFO, SG_LOG_TEXT);
  sg_log_set_buffered(1);
  char v[1000];
  memset(v, 'f', sizeof(v));

  for (int i = 0; i < 100; i++) { /* about 100 KiB, more than the 64 KiB buffer */
    sg_log_begin(SG_LOG_INFO, "bulk");
    sg_log_str("v", v, sizeof(v));
    sg_log_end();
  }

  drain();
  cr_assert_gt(out.n_lines, 0, "nothing written though the buffer overflowed");
  cr_assert_lt(out.n_lines, 64);
  for (size_t i = 0; i < out.n_lines; i++) {
    parse_logfmt(out.line[i], out.line_len[i]);
    assert_field("v", v, sizeof(v));
  }
}

/* --- Line size -------------------------------------------------------------------------- */

/* Logs one line with |n| fields k0..k(n-1), each |len| copies of |c|, then "last=1". */
static void log_wide_line(sg_log_format format, size_t n, size_t len, char c) {
  start(SG_LOG_INFO, format);
  char *v = malloc(len);
  memset(v, c, len);
  sg_log_begin(SG_LOG_INFO, "wide");
  for (size_t i = 0; i < n; i++) {
    char key[8];
    snprintf(key, sizeof(key), "k%zu", i);
    sg_log_str(key, v, len);
  }
  sg_log_int("last", 1);
  sg_log_end();
  free(v);
  drain_one_line();
  parse_line(format, 0);
}

Test(log, a_text_line_with_too_many_fields_stays_well_formed) {
  log_wide_line(SG_LOG_TEXT, 12, 1000, 'w');

  cr_assert(has("k0"));
  cr_assert_lt(out.line_len[0], 8192);
  for (size_t i = 0; i < n_fields; i++)
    if (fields[i].key[0] == 'k')
      cr_assert_eq(fields[i].val_len, 1000, "%s was cut short", fields[i].key);
  assert_field_str("last", "1");
}

Test(log, a_field_that_does_not_fit_is_left_out_whole) {
  /* Each value escapes to 4 KiB: the second does not fit in an 8 KiB line. */
  log_wide_line(SG_LOG_TEXT, 3, 1024, '\n');

  cr_assert(has("k0"));
  for (size_t i = 0; i < n_fields; i++)
    if (fields[i].key[0] == 'k')
      cr_assert_eq(fields[i].val_len, 1024, "%s was cut short", fields[i].key);
  assert_field_str("last", "1");
}

/* --- JSON ------------------------------------------------------------------------------- */

Test(log, a_json_line_is_one_object_with_time_level_and_event) {
  start(SG_LOG_INFO, SG_LOG_JSON);

  sg_log_begin(SG_LOG_WARN, "rpc");
  sg_log_cstr("method", "/grpc.health.v1.Health/Check");
  sg_log_int("code", 5);
  sg_log_double("duration_ms", 0.25);
  sg_log_end();

  drain_one_line();
  parse_json(out.line[0], out.line_len[0]);
  cr_assert_eq(n_fields, 6);
  cr_assert_str_eq(fields[0].key, "time");
  cr_assert(is_timestamp(fields[0].val, fields[0].val_len));
  cr_assert_str_eq(fields[1].key, "level");
  assert_field_str("level", "warn");
  assert_field_str("msg", "rpc");
  assert_field_str("method", "/grpc.health.v1.Health/Check");
  assert_field_str("code", "5");
  cr_assert_not(get("code")->quoted, "an integer is a JSON number");
  assert_field_str("duration_ms", "0.250");
  cr_assert_not(get("duration_ms")->quoted);
}

Test(log, json_lines_are_one_object_per_line) {
  start(SG_LOG_INFO, SG_LOG_JSON);

  for (int i = 0; i < 5; i++) {
    sg_log_begin(SG_LOG_INFO, "tick");
    sg_log_int("i", i);
    sg_log_end();
  }

  drain();
  cr_assert_eq(out.n_lines, 5);
  for (size_t i = 0; i < 5; i++)
    parse_json(out.line[i], out.line_len[i]);
}

Test(log, quotes_and_backslashes_in_a_json_value_are_escaped) {
  const char *v = "say \"hi\" \\o/ {\"k\":1}";
  log_value(SG_LOG_JSON, v, strlen(v));

  assert_field_str("v", v);
  cr_assert_eq(n_fields, 4);
}

Test(log, a_newline_in_a_json_value_never_starts_a_second_line) {
  const char *v = "a\n{\"level\":\"error\"}\r\n";
  log_value(SG_LOG_JSON, v, strlen(v));

  assert_field_str("v", v);
}

Test(log, control_and_non_ascii_bytes_in_a_json_value_are_escaped) {
  const char v[] = "\x00\x01\x1b\x7f caf\xc3\xa9 \xff";
  log_value(SG_LOG_JSON, v, sizeof(v) - 1);

  assert_field("v", v, sizeof(v) - 1);
  for (size_t i = 0; i < out.line_len[0]; i++)
    cr_assert_lt((unsigned char)out.line[0][i], 0x80, "a raw non-ASCII byte at %zu", i);
}

Test(log, a_json_value_longer_than_1024_bytes_is_cut_and_marked) {
  char v[3000];
  memset(v, 'j', sizeof(v));
  log_value(SG_LOG_JSON, v, sizeof(v));

  const field *f = get("v");
  cr_assert_eq(f->val_len, 1024 + 3);
  cr_assert_arr_eq(f->val, v, 1024);
  cr_assert_arr_eq(f->val + 1024, "...", 3);
}

Test(log, a_json_line_with_too_many_fields_stays_valid) {
  log_wide_line(SG_LOG_JSON, 12, 1000, 'w');

  cr_assert(has("k0"));
  assert_field_str("last", "1");
}

Test(log, a_json_line_with_too_many_escaped_fields_stays_valid) {
  log_wide_line(SG_LOG_JSON, 3, 1024, '\x01');

  cr_assert(has("k0"));
  assert_field_str("last", "1");
}

Test(log, a_non_finite_double_is_still_valid_json) {
  start(SG_LOG_INFO, SG_LOG_JSON);

  sg_log_begin(SG_LOG_INFO, "d");
  sg_log_double("nan", NAN);
  sg_log_double("inf", INFINITY);
  sg_log_double("ok", 2.0);
  sg_log_end();

  drain_one_line();
  parse_json(out.line[0], out.line_len[0]);
  assert_field_str("ok", "2.000");
}

Test(log, logf_in_json_is_valid_json) {
  start(SG_LOG_INFO, SG_LOG_JSON);

  sg_logf(SG_LOG_ERROR, "tls", "cannot load \"%s\"", "/etc/key.pem");

  drain_one_line();
  parse_json(out.line[0], out.line_len[0]);
  assert_field_str("level", "error");
  assert_field_str("msg", "tls");
  assert_field_str(fields[3].key, "cannot load \"/etc/key.pem\"");
}
