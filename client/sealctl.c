/* sealctl: the command-line client of sealgate, built on libsealgate (sealgate/channel.h and
 * the typed functions generated from proto/). Every method of the sealgate.v1 services is a
 * subcommand ("sealctl stores create NAME"); results print as a table, or as JSON with --json.
 *
 * Secret values come only from stdin or --from-file, never from the command line, where any
 * user of the machine could read them (ps, /proc/PID/cmdline, shell history). The API key
 * likewise comes from $SEALGATE_API_KEY or --api-key-file. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include "sealgate/sealgate.h"

#include "core/flags.h"
#include "core/mem.h"

#include "grpc/health/v1/health.sg.h"
#include "sealgate/v1/audit.sg.h"
#include "sealgate/v1/sandbox.sg.h"
#include "sealgate/v1/secret.sg.h"
#include "sealgate/v1/secret_store.sg.h"

#define MAX_VALUE_BYTES (64 * 1024) /* SPEC §2: values are 1 byte to 64 KiB */

/* Everything meant for stdout goes here first and reaches stdout when the command ends well:
 * a command that fails half-way (a list whose second page fails) prints nothing on stdout,
 * rather than half a table or unparseable JSON. */
static FILE *out;
static char *out_buf;
static size_t out_len;
static int out_discard;

#define PUTC(c) fputc((c), out)

static void out_open(void) {
  out = open_memstream(&out_buf, &out_len);
  if (out == NULL)
    sg_fatal("open_memstream failed");
}

static void out_close(void) {
  fclose(out);
  if (!out_discard && out_len > 0)
    fwrite(out_buf, 1, out_len, stdout);
  free(out_buf);
}

/* Exit statuses. */
enum {
  EXIT_FAILED = 1,      /* the server answered with an error */
  EXIT_USAGE = 2,       /* the command line is wrong */
  EXIT_UNAVAILABLE = 3, /* no answer: the server is unreachable or overloaded; may be retried */
};

/* --- Global state: options shared by every command ------------------------------------------ */

static struct {
  const char *addr, *tls_ca, *tls_cert, *tls_key, *tls_server_name, *api_key_file;
  int tls, json;
  long long deadline_s;
  sg_channel *ch;
  sg_call_options call;   /* for calls that change something: one attempt */
  sg_call_options lookup; /* for reads: retried while the server is unavailable */
  char *api_key;          /* from --api-key-file */
  const char *usage;      /* of the running command, for error messages */
} g = {.deadline_s = 30};

#define GLOBAL_FLAGS                                                                               \
  {"addr",                                                                                         \
   SG_FLAG_STR,                                                                                    \
   &g.addr,                                                                                        \
   0,                                                                                              \
   0,                                                                                              \
   "HOST:PORT",                                                                                    \
   "the gateway's gRPC address (default 127.0.0.1:50051)",                                         \
   0},                                                                                             \
      {"api-key-file",                                                                             \
       SG_FLAG_STR,                                                                                \
       &g.api_key_file,                                                                            \
       0,                                                                                          \
       0,                                                                                          \
       "FILE",                                                                                     \
       "read the API key from FILE (default: $SEALGATE_API_KEY)",                                  \
       0},                                                                                         \
      {"tls", SG_FLAG_BOOL, &g.tls, 0, 0, NULL, "connect with TLS (implied by --tls-ca)", 0},      \
      {"tls-ca",                                                                                   \
       SG_FLAG_STR,                                                                                \
       &g.tls_ca,                                                                                  \
       0,                                                                                          \
       0,                                                                                          \
       "FILE",                                                                                     \
       "CA bundle that signed the gateway's certificate",                                          \
       0},                                                                                         \
      {"tls-server-name",                                                                          \
       SG_FLAG_STR,                                                                                \
       &g.tls_server_name,                                                                         \
       0,                                                                                          \
       0,                                                                                          \
       "NAME",                                                                                     \
       "name the certificate must carry (default: the host of --addr)",                            \
       0},                                                                                         \
      {"tls-cert", SG_FLAG_STR, &g.tls_cert, 0, 0, "FILE", "client certificate (mutual TLS)", 0},  \
      {"tls-key", SG_FLAG_STR, &g.tls_key, 0, 0, "FILE", "its private key", 0},                    \
      {"deadline",                                                                                 \
       SG_FLAG_INT,                                                                                \
       &g.deadline_s,                                                                              \
       1,                                                                                          \
       86400,                                                                                      \
       "SECONDS",                                                                                  \
       "give up on a call after this long (30)",                                                   \
       0},                                                                                         \
  {                                                                                                \
    "json", SG_FLAG_BOOL, &g.json, 0, 0, NULL, "print the result as JSON", 0                       \
  }

static void die_usage(const char *fmt, const char *arg) {
  fprintf(stderr, "sealctl: ");
  fprintf(stderr, fmt, arg);
  fprintf(stderr, "\nusage: %s\n(sealctl ... --help shows every flag)\n", g.usage);
  exit(EXIT_USAGE);
}

/* Parses a command's own flags together with the global ones. Exits on --help or a bad
 * command line; on return pos holds between min_pos and max_pos arguments. */
static void parse(const char *usage, const char *what, const sg_flag *own, size_t n_own, int argc,
                  char **argv, sg_positionals *pos, size_t min_pos, size_t max_pos) {
  const sg_flag global[] = {GLOBAL_FLAGS};
  size_t n = n_own + SG_ARRAY_LEN(global);
  sg_flag *all = sg_malloc(n * sizeof(*all));
  if (n_own > 0)
    memcpy(all, own, n_own * sizeof(*own));
  memcpy(all + n_own, global, sizeof(global));
  char err[512];
  g.usage = usage;
  int rv = sg_flags_parse(all, n, argc, argv, pos, err, sizeof(err));
  if (rv == SG_FLAGS_HELP) {
    fprintf(out, "usage: %s\n\n%s\n", usage, what);
    if (n_own > 0) {
      fprintf(out, "\nflags:\n");
      sg_flags_usage(stdout, own, n_own);
    }
    fprintf(out, "\nglobal flags:\n");
    sg_flags_usage(stdout, global, SG_ARRAY_LEN(global));
    fprintf(out, "  %-36s %s [%s]\n", "(environment only)", "the API key", "SEALGATE_API_KEY");
    free(all);
    exit(0);
  }
  free(all);
  if (rv != SG_FLAGS_OK)
    die_usage("%s", err);
  if (pos->n < min_pos)
    die_usage("%s", min_pos - pos->n == 1 ? "an argument is missing" : "arguments are missing");
  /* Not echoed: it may be a secret value typed where it does not belong. */
  if (pos->n > max_pos)
    die_usage("%s", "unexpected argument (too many; secret values go on stdin or in a file "
                    "named by --from-file)");
}

/* Reads at most |max| + 1 bytes of |path| ("-": stdin) with read(2), so that no stdio buffer
 * keeps a copy of a secret; the caller checks the length against |max|. Exits when the file
 * cannot be read. */
static char *read_small_file(const char *path, size_t max, size_t *len_out, const char *what) {
  int fd = strcmp(path, "-") == 0 ? STDIN_FILENO : open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    fprintf(stderr, "sealctl: cannot open %s %s: %s\n", what, path, strerror(errno));
    exit(EXIT_USAGE);
  }
  char *buf = sg_malloc(max + 2);
  size_t len = 0;
  while (len < max + 1) {
    ssize_t n = read(fd, buf + len, max + 1 - len);
    if (n == 0)
      break;
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      int err = errno;
      explicit_bzero(buf, max + 2); /* it may hold a secret value */
      free(buf);
      fprintf(stderr, "sealctl: cannot read %s %s: %s\n", what, path, strerror(err));
      exit(EXIT_USAGE);
    }
    len += (size_t)n;
  }
  if (fd != STDIN_FILENO)
    close(fd);
  buf[len] = '\0';
  *len_out = len;
  return buf;
}

static size_t strip_newline(const char *s, size_t len) {
  if (len > 0 && s[len - 1] == '\n')
    len--;
  if (len > 0 && s[len - 1] == '\r')
    len--;
  return len;
}

static int have_api_key(void) {
  const char *env_key = getenv("SEALGATE_API_KEY");
  return g.api_key_file != NULL || (env_key != NULL && env_key[0] != '\0');
}

static void need_api_key(void) {
  if (have_api_key())
    return;
  fprintf(stderr, "sealctl: no API key: set SEALGATE_API_KEY to your organization's key "
                  "(sealgate admin create-org prints one), or pass --api-key-file FILE\n");
  exit(EXIT_USAGE);
}

/* Opens the channel with the global flags. */
static void connect_channel(int needs_key) {
  if (needs_key)
    need_api_key();
  if (g.api_key_file != NULL) {
    size_t len;
    g.api_key = read_small_file(g.api_key_file, 1024, &len, "API key file");
    if (len > 1024) {
      fprintf(stderr, "sealctl: the API key file %s is larger than an API key\n", g.api_key_file);
      exit(EXIT_USAGE);
    }
    len = strip_newline(g.api_key, len);
    g.api_key[len] = '\0';
  }
  sg_channel_options o = {
      .target = g.addr,
      .tls = g.tls || g.tls_ca != NULL || g.tls_cert != NULL ? SG_TLS_ON : SG_TLS_FROM_ENV,
      .tls_ca_file = g.tls_ca,
      .tls_cert_file = g.tls_cert,
      .tls_key_file = g.tls_key,
      .tls_server_name = g.tls_server_name,
      .api_key = g.api_key,
  };
  char err[512];
  g.ch = sg_channel_new(&o, err, sizeof(err));
  if (g.ch == NULL) {
    fprintf(stderr, "sealctl: %s\n", err);
    exit(EXIT_USAGE);
  }
  g.call.timeout_ms = g.deadline_s * 1000;
  g.lookup = g.call;
  g.lookup.retry = 1;
  g.lookup.max_attempts = 3;
}

static void disconnect(void) {
  sg_channel_free(g.ch);
  if (g.api_key != NULL) {
    explicit_bzero(g.api_key, strlen(g.api_key));
    free(g.api_key);
  }
}

/* Whether a method only reads: safe to run again whatever happened. */
static int is_read(const char *method) {
  return strncmp(method, "Get", 3) == 0 || strncmp(method, "List", 4) == 0 ||
         strncmp(method, "Health", 6) == 0;
}

/* Reports a failed call with what to do about it, and exits. */
static void fail(const char *method, const sg_status *st, const char *not_found_hint) {
  out_discard = 1;
  fprintf(stderr, "sealctl: %s: %s\n", sg_status_code_name(st->code),
          st->message[0] ? st->message : "(no message)");
  const char *hint = NULL;
  char buf[320];
  int code = EXIT_FAILED;
  const char *addr = g.addr                    ? g.addr
                     : getenv("SEALGATE_ADDR") ? getenv("SEALGATE_ADDR")
                                               : "127.0.0.1:50051";
  switch (st->code) {
  case SG_STATUS_UNAUTHENTICATED:
    hint = "the API key was refused: set SEALGATE_API_KEY (or --api-key-file) to a valid key of "
           "your organization";
    break;
  case SG_STATUS_UNAVAILABLE:
    if (strstr(st->message, "certificate") != NULL) {
      hint = "the gateway's certificate is not trusted for this name: give the CA that signed it "
             "with --tls-ca (SEALGATE_TLS_CA), or the name it carries with --tls-server-name";
      break;
    }
    snprintf(buf, sizeof(buf),
             "is sealgate running at %s? Set SEALGATE_ADDR or --addr (and --tls-ca for TLS). %s",
             addr,
             is_read(method) ? "Running the command again is safe."
                             : "The change may or may not have been made: check (get or list) "
                               "before running it again.");
    hint = buf;
    code = EXIT_UNAVAILABLE;
    break;
  case SG_STATUS_DEADLINE_EXCEEDED:
    snprintf(buf, sizeof(buf),
             "the gateway did not answer in time: allow longer with --deadline. %s",
             is_read(method) ? "Running the command again is safe."
                             : "The change may or may not have been made: check (get or list) "
                               "before running it again.");
    hint = buf;
    code = EXIT_UNAVAILABLE;
    break;
  case SG_STATUS_NOT_FOUND:
    hint = not_found_hint;
    break;
  case SG_STATUS_ALREADY_EXISTS:
    hint = "choose another name, or use the existing one";
    break;
  case SG_STATUS_INVALID_ARGUMENT:
    hint = "fix the field named above and run the command again";
    break;
  case SG_STATUS_UNIMPLEMENTED:
    snprintf(buf, sizeof(buf), "this gateway does not offer %s yet", method);
    hint = buf;
    break;
  case SG_STATUS_RESOURCE_EXHAUSTED:
    hint = "a limit was reached: send less, or retry later";
    break;
  case SG_STATUS_FAILED_PRECONDITION:
    hint = "the resource is not in a state that allows this";
    break;
  case SG_STATUS_INTERNAL:
  case SG_STATUS_UNKNOWN:
    hint = "this is a gateway bug: its log has the details";
    break;
  }
  if (hint != NULL)
    fprintf(stderr, "hint: %s\n", hint);
  disconnect();
  exit(code);
}

/* --- Printing messages: JSON ------------------------------------------------------------------ */

/* The length of the valid UTF-8 sequence at |p| (at most |left| bytes), or 0. */
static size_t utf8_seq(const unsigned char *p, size_t left) {
  size_t n = p[0] >= 0xf0 ? 4 : p[0] >= 0xe0 ? 3 : p[0] >= 0xc2 ? 2 : 0;
  if (n == 0 || n > left || p[0] > 0xf4)
    return 0;
  for (size_t i = 1; i < n; i++)
    if ((p[i] & 0xc0) != 0x80)
      return 0;
  if ((p[0] == 0xe0 && p[1] < 0xa0) || (p[0] == 0xed && p[1] >= 0xa0) ||
      (p[0] == 0xf0 && p[1] < 0x90) || (p[0] == 0xf4 && p[1] >= 0x90))
    return 0; /* overlong, a surrogate, or past U+10FFFF */
  return n;
}

/* A JSON string: control characters escaped, bytes that are not UTF-8 as U+FFFD, so that the
 * output always parses whatever the server sent. */
static void json_string(const char *str, size_t len) {
  const unsigned char *s = (const unsigned char *)str;
  PUTC('"');
  for (size_t i = 0; i < len; i++) {
    unsigned char c = s[i];
    if (c == '"' || c == '\\')
      fprintf(out, "\\%c", c);
    else if (c == '\n')
      fputs("\\n", out);
    else if (c == '\t')
      fputs("\\t", out);
    else if (c < 0x20 || c == 0x7f)
      fprintf(out, "\\u%04x", c);
    else if (c < 0x80)
      PUTC(c);
    else {
      size_t n = utf8_seq(s + i, len - i);
      if (n == 0) {
        fputs("\\ufffd", out);
      } else {
        fwrite(s + i, 1, n, out);
        i += n - 1;
      }
    }
  }
  PUTC('"');
}

/* A map<K, V> field is a repeated message "…Entry" of two fields, key and value. */
static int is_map_entry(const ProtobufCMessageDescriptor *d) {
  size_t len = strlen(d->name);
  return d->n_fields == 2 && len > 5 && strcmp(d->name + len - 5, "Entry") == 0 &&
         strcmp(d->fields[0].name, "key") == 0 && strcmp(d->fields[1].name, "value") == 0;
}

static void json_message(const ProtobufCMessage *m, int indent);

/* One value of field |f| stored at |p|. */
static void json_value(const ProtobufCFieldDescriptor *f, const void *p, int indent) {
  switch (f->type) {
  case PROTOBUF_C_TYPE_STRING: {
    const char *s = *(char *const *)p;
    json_string(s ? s : "", s ? strlen(s) : 0);
    break;
  }
  case PROTOBUF_C_TYPE_BYTES: {
    const ProtobufCBinaryData *b = p;
    json_string((const char *)b->data, b->len);
    break;
  }
  case PROTOBUF_C_TYPE_BOOL:
    fputs(*(const protobuf_c_boolean *)p ? "true" : "false", out);
    break;
  case PROTOBUF_C_TYPE_INT32:
  case PROTOBUF_C_TYPE_SINT32:
  case PROTOBUF_C_TYPE_SFIXED32:
    fprintf(out, "%d", *(const int32_t *)p);
    break;
  case PROTOBUF_C_TYPE_UINT32:
  case PROTOBUF_C_TYPE_FIXED32:
    fprintf(out, "%u", *(const uint32_t *)p);
    break;
  case PROTOBUF_C_TYPE_INT64:
  case PROTOBUF_C_TYPE_SINT64:
  case PROTOBUF_C_TYPE_SFIXED64:
    fprintf(out, "%lld", (long long)*(const int64_t *)p);
    break;
  case PROTOBUF_C_TYPE_UINT64:
  case PROTOBUF_C_TYPE_FIXED64:
    fprintf(out, "%llu", (unsigned long long)*(const uint64_t *)p);
    break;
  case PROTOBUF_C_TYPE_FLOAT:
    fprintf(out, "%g", (double)*(const float *)p);
    break;
  case PROTOBUF_C_TYPE_DOUBLE:
    fprintf(out, "%g", *(const double *)p);
    break;
  case PROTOBUF_C_TYPE_ENUM: {
    const ProtobufCEnumValue *v =
        protobuf_c_enum_descriptor_get_value(f->descriptor, *(const int *)p);
    if (v != NULL)
      json_string(v->name, strlen(v->name));
    else
      fprintf(out, "%d", *(const int *)p);
    break;
  }
  case PROTOBUF_C_TYPE_MESSAGE:
    json_message(*(ProtobufCMessage *const *)p, indent);
    break;
  }
}

static size_t value_size(const ProtobufCFieldDescriptor *f) {
  switch (f->type) {
  case PROTOBUF_C_TYPE_STRING:
  case PROTOBUF_C_TYPE_MESSAGE:
    return sizeof(void *);
  case PROTOBUF_C_TYPE_BYTES:
    return sizeof(ProtobufCBinaryData);
  case PROTOBUF_C_TYPE_BOOL:
    return sizeof(protobuf_c_boolean);
  case PROTOBUF_C_TYPE_INT64:
  case PROTOBUF_C_TYPE_SINT64:
  case PROTOBUF_C_TYPE_SFIXED64:
  case PROTOBUF_C_TYPE_UINT64:
  case PROTOBUF_C_TYPE_FIXED64:
  case PROTOBUF_C_TYPE_DOUBLE:
    return 8;
  default:
    return 4;
  }
}

static void newline_indent(int indent) {
  fprintf(out, "\n%*s", indent * 2, "");
}

/* Every field is printed, also at its default, so that scripts find every key. Field names are
 * those of the .proto (snake_case); 64-bit integers are JSON numbers. */
static void json_message(const ProtobufCMessage *m, int indent) {
  if (m == NULL) {
    fputs("null", out);
    return;
  }
  const ProtobufCMessageDescriptor *d = m->descriptor;
  PUTC('{');
  for (unsigned i = 0; i < d->n_fields; i++) {
    const ProtobufCFieldDescriptor *f = &d->fields[i];
    const char *base = (const char *)m + f->offset;
    if (i > 0)
      PUTC(',');
    newline_indent(indent + 1);
    json_string(f->name, strlen(f->name));
    fputs(": ", out);
    if (f->label != PROTOBUF_C_LABEL_REPEATED) {
      json_value(f, base, indent + 1);
      continue;
    }
    size_t n = *(const size_t *)((const char *)m + f->quantifier_offset);
    const char *items = *(char *const *)base;
    int map = f->type == PROTOBUF_C_TYPE_MESSAGE && is_map_entry(f->descriptor);
    PUTC(map ? '{' : '[');
    for (size_t k = 0; k < n; k++) {
      const void *item = items + k * value_size(f);
      if (k > 0)
        PUTC(',');
      newline_indent(indent + 2);
      if (map) {
        const ProtobufCMessage *e = *(ProtobufCMessage *const *)item;
        const ProtobufCMessageDescriptor *ed = e->descriptor;
        json_value(&ed->fields[0], (const char *)e + ed->fields[0].offset, indent + 2);
        fputs(": ", out);
        json_value(&ed->fields[1], (const char *)e + ed->fields[1].offset, indent + 2);
      } else {
        json_value(f, item, indent + 2);
      }
    }
    if (n > 0)
      newline_indent(indent + 1);
    PUTC(map ? '}' : ']');
  }
  if (d->n_fields > 0)
    newline_indent(indent);
  PUTC('}');
}

/* --- Printing messages: text ------------------------------------------------------------------ */

typedef struct {
  char *data;
  size_t len, cap;
} sbuf;

static void sb_add(sbuf *b, const char *s, size_t n) {
  if (b->len + n + 1 > b->cap) {
    b->cap = (b->len + n + 1) * 2;
    b->data = sg_realloc(b->data, b->cap);
  }
  memcpy(b->data + b->len, s, n);
  b->len += n;
  b->data[b->len] = '\0';
}

static void sb_str(sbuf *b, const char *s) {
  sb_add(b, s, strlen(s));
}

/* Text from the server, for a terminal: control characters (escape sequences, newlines that
 * would break a table) shown as \xNN. */
static void sb_text(sbuf *b, const char *s, size_t n) {
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c < 0x20 || c == 0x7f) {
      char esc[5];
      snprintf(esc, sizeof(esc), "\\x%02x", c);
      sb_add(b, esc, 4);
    } else {
      sb_add(b, s + i, 1);
    }
  }
}

static void text_message(sbuf *b, const ProtobufCMessage *m);

static void text_value(sbuf *b, const ProtobufCFieldDescriptor *f, const void *p) {
  char num[32];
  switch (f->type) {
  case PROTOBUF_C_TYPE_STRING: {
    const char *str = *(char *const *)p ? *(char *const *)p : "";
    sb_text(b, str, strlen(str));
    return;
  }
  case PROTOBUF_C_TYPE_BYTES: {
    const ProtobufCBinaryData *bin = p;
    sb_text(b, (const char *)bin->data, bin->len);
    return;
  }
  case PROTOBUF_C_TYPE_MESSAGE:
    text_message(b, *(ProtobufCMessage *const *)p);
    return;
  case PROTOBUF_C_TYPE_BOOL:
    sb_str(b, *(const protobuf_c_boolean *)p ? "true" : "false");
    return;
  case PROTOBUF_C_TYPE_INT64:
  case PROTOBUF_C_TYPE_SINT64:
  case PROTOBUF_C_TYPE_SFIXED64:
    snprintf(num, sizeof(num), "%lld", (long long)*(const int64_t *)p);
    break;
  case PROTOBUF_C_TYPE_UINT64:
  case PROTOBUF_C_TYPE_FIXED64:
    snprintf(num, sizeof(num), "%llu", (unsigned long long)*(const uint64_t *)p);
    break;
  case PROTOBUF_C_TYPE_UINT32:
  case PROTOBUF_C_TYPE_FIXED32:
    snprintf(num, sizeof(num), "%u", *(const uint32_t *)p);
    break;
  default:
    snprintf(num, sizeof(num), "%d", *(const int32_t *)p);
    break;
  }
  sb_str(b, num);
}

/* A field as one line of text: lists joined with ",", maps as k=v, messages as their fields. */
static void text_field(sbuf *b, const ProtobufCMessage *m, const ProtobufCFieldDescriptor *f) {
  const char *base = (const char *)m + f->offset;
  if (f->label != PROTOBUF_C_LABEL_REPEATED) {
    text_value(b, f, base);
    return;
  }
  size_t n = *(const size_t *)((const char *)m + f->quantifier_offset);
  const char *items = *(char *const *)base;
  int map = f->type == PROTOBUF_C_TYPE_MESSAGE && is_map_entry(f->descriptor);
  for (size_t k = 0; k < n; k++) {
    const void *item = items + k * value_size(f);
    if (k > 0)
      sb_str(b, map ? " " : ",");
    if (map) {
      const ProtobufCMessage *e = *(ProtobufCMessage *const *)item;
      const ProtobufCMessageDescriptor *ed = e->descriptor;
      text_value(b, &ed->fields[0], (const char *)e + ed->fields[0].offset);
      sb_str(b, "=");
      text_value(b, &ed->fields[1], (const char *)e + ed->fields[1].offset);
    } else {
      text_value(b, f, item);
    }
  }
}

static void text_message(sbuf *b, const ProtobufCMessage *m) {
  if (m == NULL)
    return;
  const ProtobufCMessageDescriptor *d = m->descriptor;
  if (d->n_fields == 1) { /* HostList and the like: just the list */
    text_field(b, m, &d->fields[0]);
    return;
  }
  for (unsigned i = 0; i < d->n_fields; i++) {
    if (i > 0)
      sb_str(b, " ");
    sb_str(b, d->fields[i].name);
    sb_str(b, "=");
    text_field(b, m, &d->fields[i]);
  }
}

/* One object: a line per field ("name:  value"); a map, a line per entry below its name. */
static void print_object(const ProtobufCMessage *m) {
  const ProtobufCMessageDescriptor *d = m->descriptor;
  int width = 0;
  for (unsigned i = 0; i < d->n_fields; i++)
    if ((int)strlen(d->fields[i].name) > width)
      width = (int)strlen(d->fields[i].name);
  for (unsigned i = 0; i < d->n_fields; i++) {
    const ProtobufCFieldDescriptor *f = &d->fields[i];
    if (f->label == PROTOBUF_C_LABEL_REPEATED && f->type == PROTOBUF_C_TYPE_MESSAGE &&
        is_map_entry(f->descriptor)) {
      size_t n = *(const size_t *)((const char *)m + f->quantifier_offset);
      ProtobufCMessage *const *entries =
          *(ProtobufCMessage *const *const *)((const char *)m + f->offset);
      fprintf(out, "%s:%s\n", f->name, n == 0 ? " -" : "");
      for (size_t k = 0; k < n; k++) {
        const ProtobufCMessageDescriptor *ed = entries[k]->descriptor;
        sbuf key = {0}, value = {0};
        text_value(&key, &ed->fields[0], (const char *)entries[k] + ed->fields[0].offset);
        text_value(&value, &ed->fields[1], (const char *)entries[k] + ed->fields[1].offset);
        fprintf(out, "  %s=%s\n", key.data ? key.data : "", value.data ? value.data : "");
        free(key.data);
        free(value.data);
      }
      continue;
    }
    if (f->type == PROTOBUF_C_TYPE_MESSAGE && f->label != PROTOBUF_C_LABEL_REPEATED) {
      const ProtobufCMessage *sub = *(ProtobufCMessage *const *)((const char *)m + f->offset);
      const ProtobufCMessageDescriptor *sd = f->descriptor;
      for (unsigned k = 0; k < sd->n_fields; k++) {
        sbuf v = {0};
        if (sub != NULL)
          text_field(&v, sub, &sd->fields[k]);
        char name[128];
        snprintf(name, sizeof(name), "%s.%s", f->name, sd->fields[k].name);
        int pad = width - (int)strlen(name);
        fprintf(out, "%s:%*s %s\n", name, pad > 0 ? pad : 0, "", v.len ? v.data : "-");
        free(v.data);
      }
      continue;
    }
    sbuf v = {0};
    text_field(&v, m, f);
    fprintf(out, "%s:%*s %s\n", f->name, width - (int)strlen(f->name), "", v.len ? v.data : "-");
    free(v.data);
  }
}

static const ProtobufCFieldDescriptor *field_named(const ProtobufCMessageDescriptor *d,
                                                   const char *name) {
  const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field_by_name(d, name);
  if (f == NULL)
    sg_fatal("sealctl: a table names a field its message does not have");
  return f;
}

/* Rows of a table: the chosen |columns| (field names) of each message, aligned. */
typedef struct {
  const char *const *columns;
  size_t n_cols;
  sbuf *cells; /* n_rows * n_cols */
  size_t n_rows;
} table;

static void table_add(table *t, const ProtobufCMessage *m) {
  t->cells = sg_realloc(t->cells, (t->n_rows + 1) * t->n_cols * sizeof(sbuf));
  for (size_t c = 0; c < t->n_cols; c++) {
    sbuf *cell = &t->cells[t->n_rows * t->n_cols + c];
    *cell = (sbuf){0};
    text_field(cell, m, field_named(m->descriptor, t->columns[c]));
    if (cell->data == NULL)
      sb_str(cell, "");
    if (cell->len == 0)
      sb_str(cell, "-");
  }
  t->n_rows++;
}

static void table_print(table *t, const char *none) {
  if (t->n_rows == 0) {
    fprintf(stderr, "%s\n", none);
    return;
  }
  size_t width[16] = {0};
  for (size_t c = 0; c < t->n_cols; c++) {
    width[c] = strlen(t->columns[c]);
    for (size_t r = 0; r < t->n_rows; r++)
      if (t->cells[r * t->n_cols + c].len > width[c])
        width[c] = t->cells[r * t->n_cols + c].len;
  }
  for (size_t c = 0; c < t->n_cols; c++) {
    for (const char *p = t->columns[c]; *p; p++)
      PUTC(toupper((unsigned char)*p));
    fprintf(out, "%*s", c + 1 < t->n_cols ? (int)(width[c] - strlen(t->columns[c]) + 2) : 0, "");
  }
  PUTC('\n');
  for (size_t r = 0; r < t->n_rows; r++) {
    for (size_t c = 0; c < t->n_cols; c++) {
      sbuf *cell = &t->cells[r * t->n_cols + c];
      fputs(cell->data, out);
      fprintf(out, "%*s", c + 1 < t->n_cols ? (int)(width[c] - cell->len + 2) : 0, "");
      free(cell->data);
    }
    PUTC('\n');
  }
  free(t->cells);
}

/* Prints a single result. */
static void show(const ProtobufCMessage *m) {
  if (g.json) {
    json_message(m, 0);
    PUTC('\n');
  } else {
    print_object(m);
  }
}

/* Prints the result of a call that returns nothing (google.protobuf.Empty). */
static void show_done(const char *text, const char *id) {
  if (g.json)
    fprintf(out, "{}\n");
  else
    fprintf(out, "%s %s\n", text, id);
}

/* --- Listing with pages ----------------------------------------------------------------------- */

/* A list response: its items field and its next_page_token. */
typedef struct {
  const char *items_field;
  table t;
  int first_item;
  const char *none;
} listing;

static void listing_start(listing *l, const char *items_field, const char *const *cols,
                          size_t n_cols, const char *none) {
  *l = (listing){.items_field = items_field,
                 .t = {.columns = cols, .n_cols = n_cols},
                 .first_item = 1,
                 .none = none};
  if (g.json)
    fprintf(out, "{\n  \"%s\": [", items_field);
}

/* Adds a page's items. */
static void listing_page(listing *l, const ProtobufCMessage *page) {
  const ProtobufCFieldDescriptor *f = field_named(page->descriptor, l->items_field);
  size_t n = *(const size_t *)((const char *)page + f->quantifier_offset);
  ProtobufCMessage *const *items =
      *(ProtobufCMessage *const *const *)((const char *)page + f->offset);
  for (size_t i = 0; i < n; i++) {
    if (g.json) {
      fprintf(out, l->first_item ? "\n    " : ",\n    ");
      json_message(items[i], 2);
      l->first_item = 0;
    } else {
      table_add(&l->t, items[i]);
    }
  }
}

static void listing_end(listing *l, const char *next_page_token, int paged) {
  if (g.json) {
    fprintf(out, l->first_item ? "]" : "\n  ]");
    if (paged) {
      fprintf(out, ",\n  \"next_page_token\": ");
      json_string(next_page_token, strlen(next_page_token));
    }
    fprintf(out, "\n}\n");
    return;
  }
  table_print(&l->t, l->none);
  if (paged && next_page_token[0] != '\0')
    fprintf(stderr, "more: --page-token %s\n", next_page_token);
}

#define PAGE_FLAGS(size, token)                                                                    \
  {"page-size",                                                                                    \
   SG_FLAG_INT,                                                                                    \
   &(size),                                                                                        \
   1,                                                                                              \
   1000,                                                                                           \
   "N",                                                                                            \
   "one page of at most N (default: every page)",                                                  \
   1},                                                                                             \
  {                                                                                                \
    "page-token", SG_FLAG_STR, &(token), 0, 0, "TOKEN", "the page after the one that gave TOKEN",  \
        1                                                                                          \
  }

/* --- Commands: stores ------------------------------------------------------------------------- */

static const char *const store_cols[] = {"id", "name", "egress_allowlist", "created_at",
                                         "updated_at"};
static const char store_not_found[] = "list your stores with `sealctl stores list`";

static int stores_create(int argc, char **argv) {
  static sg_strlist allow; /* static: freed at exit */
  const sg_flag own[] = {{"allow", SG_FLAG_LIST, &allow, 0, 0, "HOST",
                          "a host the store's secrets may be sent to (repeatable; none: every "
                          "public host); api.example.com or *.example.com",
                          1}};
  static sg_positionals pos;
  parse("sealctl stores create NAME [--allow HOST]...", "Creates a secret store.", own, 1, argc,
        argv, &pos, 1, 1);
  connect_channel(1);
  Sealgate__V1__CreateSecretStoreRequest req = SEALGATE__V1__CREATE_SECRET_STORE_REQUEST__INIT;
  req.name = pos.args[0];
  req.n_egress_allowlist = allow.n;
  req.egress_allowlist = (char **)allow.items;
  Sealgate__V1__SecretStore *resp;
  sg_status st;
  if (sealgate_v1_secret_store_service_create_secret_store(g.ch, &req, &resp, &g.call, &st))
    fail("CreateSecretStore", &st, NULL);
  show(&resp->base);
  protobuf_c_message_free_unpacked(&resp->base, NULL);
  return 0;
}

/* One page of a list: asks for up to |size| rows after |token| (fail() exits on an error) and
 * returns the response, with |*next| pointing at its next_page_token. */
typedef ProtobufCMessage *(*page_fetch)(const void *filters, int32_t size, char *token,
                                        const char **next);

/* Prints a listing page by page: every page when |page_size| is 0, else that one page and the
 * token of the next. */
static void list_pages(listing *l, long long page_size, int32_t default_size, const char *token,
                       page_fetch fetch, const void *filters) {
  char *next = sg_strdup(token);
  do {
    const char *following;
    ProtobufCMessage *resp =
        fetch(filters, (int32_t)(page_size > 0 ? page_size : default_size), next, &following);
    listing_page(l, resp);
    free(next);
    next = sg_strdup(following);
    protobuf_c_message_free_unpacked(resp, NULL);
  } while (page_size == 0 && next[0] != '\0');
  listing_end(l, next, page_size > 0);
  free(next);
}

static ProtobufCMessage *stores_page(const void *filters, int32_t size, char *token,
                                     const char **next) {
  (void)filters;
  Sealgate__V1__ListSecretStoresRequest req = SEALGATE__V1__LIST_SECRET_STORES_REQUEST__INIT;
  req.page_size = size;
  req.page_token = token;
  Sealgate__V1__ListSecretStoresResponse *resp;
  sg_status st;
  if (sealgate_v1_secret_store_service_list_secret_stores(g.ch, &req, &resp, &g.lookup, &st))
    fail("ListSecretStores", &st, NULL);
  *next = resp->next_page_token;
  return &resp->base;
}

static int stores_list(int argc, char **argv) {
  long long page_size = 0;
  const char *token = "";
  const sg_flag own[] = {PAGE_FLAGS(page_size, token)};
  static sg_positionals pos;
  parse("sealctl stores list [--page-size N [--page-token TOKEN]]",
        "Lists the organization's secret stores.", own, 2, argc, argv, &pos, 0, 0);
  connect_channel(1);
  listing l;
  listing_start(&l, "secret_stores", store_cols, SG_ARRAY_LEN(store_cols), "No secret stores.");
  list_pages(&l, page_size, 100, token, stores_page, NULL);
  return 0;
}

static int stores_get(int argc, char **argv) {
  static sg_positionals pos;
  parse("sealctl stores get STORE_ID", "Shows one secret store.", NULL, 0, argc, argv, &pos, 1, 1);
  connect_channel(1);
  Sealgate__V1__GetSecretStoreRequest req = SEALGATE__V1__GET_SECRET_STORE_REQUEST__INIT;
  req.store_id = pos.args[0];
  Sealgate__V1__SecretStore *resp;
  sg_status st;
  if (sealgate_v1_secret_store_service_get_secret_store(g.ch, &req, &resp, &g.lookup, &st))
    fail("GetSecretStore", &st, store_not_found);
  show(&resp->base);
  protobuf_c_message_free_unpacked(&resp->base, NULL);
  return 0;
}

static int stores_update(int argc, char **argv) {
  const char *name = NULL;
  static sg_strlist allow; /* static: freed at exit */
  int clear = 0;
  const sg_flag own[] = {
      {"name", SG_FLAG_STR, &name, 0, 0, "NAME", "rename the store", 1},
      {"allow", SG_FLAG_LIST, &allow, 0, 0, "HOST",
       "replace the egress allowlist with these hosts (repeatable)", 1},
      {"clear-allowlist", SG_FLAG_BOOL, &clear, 0, 0, NULL,
       "empty the egress allowlist (every public host)", 1},
  };
  static sg_positionals pos;
  parse("sealctl stores update STORE_ID [--name NAME] [--allow HOST]... [--clear-allowlist]",
        "Changes a store's name or egress allowlist; what is not named stays as it is.", own,
        SG_ARRAY_LEN(own), argc, argv, &pos, 1, 1);
  if (name == NULL && allow.n == 0 && !clear)
    die_usage("%s", "nothing to change: give --name, --allow or --clear-allowlist");
  if (allow.n > 0 && clear)
    die_usage("%s", "--allow and --clear-allowlist contradict each other");
  connect_channel(1);
  char *paths[2];
  Google__Protobuf__FieldMask mask = GOOGLE__PROTOBUF__FIELD_MASK__INIT;
  mask.paths = paths;
  if (name != NULL)
    paths[mask.n_paths++] = "name";
  if (allow.n > 0 || clear)
    paths[mask.n_paths++] = "egress_allowlist";
  Sealgate__V1__UpdateSecretStoreRequest req = SEALGATE__V1__UPDATE_SECRET_STORE_REQUEST__INIT;
  req.store_id = pos.args[0];
  req.name = name ? (char *)name : "";
  req.n_egress_allowlist = allow.n;
  req.egress_allowlist = (char **)allow.items;
  req.update_mask = &mask;
  Sealgate__V1__SecretStore *resp;
  sg_status st;
  if (sealgate_v1_secret_store_service_update_secret_store(g.ch, &req, &resp, &g.call, &st))
    fail("UpdateSecretStore", &st, store_not_found);
  show(&resp->base);
  protobuf_c_message_free_unpacked(&resp->base, NULL);
  return 0;
}

static int stores_delete(int argc, char **argv) {
  static sg_positionals pos;
  parse("sealctl stores delete STORE_ID",
        "Deletes a store and its secrets. Running sandboxes bound to it keep working until they "
        "end.",
        NULL, 0, argc, argv, &pos, 1, 1);
  connect_channel(1);
  Sealgate__V1__DeleteSecretStoreRequest req = SEALGATE__V1__DELETE_SECRET_STORE_REQUEST__INIT;
  req.store_id = pos.args[0];
  Google__Protobuf__Empty *resp;
  sg_status st;
  if (sealgate_v1_secret_store_service_delete_secret_store(g.ch, &req, &resp, &g.call, &st))
    fail("DeleteSecretStore", &st, store_not_found);
  protobuf_c_message_free_unpacked(&resp->base, NULL);
  show_done("deleted store", pos.args[0]);
  return 0;
}

/* --- Commands: secrets ------------------------------------------------------------------------ */

static const char *const secret_cols[] = {"name",      "version",      "allowed_hosts",
                                          "use_count", "last_used_at", "updated_at"};

/* Reads the value typed at a terminal, without echo. */
static char *read_hidden(const char *name, size_t *len) {
  struct termios old, quiet;
  fprintf(stderr, "value of %s (one line, not shown): ", name);
  fflush(stderr);
  int restore = tcgetattr(STDIN_FILENO, &old) == 0;
  if (restore) {
    quiet = old;
    quiet.c_lflag &= ~(tcflag_t)ECHO;
    tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
  }
  char *buf = sg_malloc(MAX_VALUE_BYTES + 2);
  setvbuf(stdin, NULL, _IONBF, 0); /* no stdio buffer keeps a copy */
  char *got = fgets(buf, MAX_VALUE_BYTES + 2, stdin);
  if (restore)
    tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
  fputc('\n', stderr);
  *len = got ? strlen(buf) : 0;
  return buf;
}

static int secrets_set(int argc, char **argv) {
  const char *from_file = NULL;
  static sg_strlist hosts; /* static: freed at exit */
  int keep_newline = 0;
  const sg_flag own[] = {
      {"from-file", SG_FLAG_STR, &from_file, 0, 0, "FILE",
       "read the value from FILE (default: stdin)", 1},
      {"allow-host", SG_FLAG_LIST, &hosts, 0, 0, "HOST",
       "a host this secret may be sent to (repeatable; none: every host the store allows)", 1},
      {"keep-newline", SG_FLAG_BOOL, &keep_newline, 0, 0, NULL,
       "keep a trailing newline of the value (dropped by default)", 1},
  };
  static sg_positionals pos;
  parse("sealctl secrets set STORE_ID NAME [--from-file FILE] [--allow-host HOST]... < value",
        "Sets a secret (a new version of it if it exists). The value is read from stdin, or from "
        "--from-file; never from the command line. A terminal is asked without echo.",
        own, SG_ARRAY_LEN(own), argc, argv, &pos, 2, 2);
  /* Refusals that need no value come before the value is typed or read. */
  need_api_key();
  if (from_file == NULL && g.api_key_file != NULL && strcmp(g.api_key_file, "-") == 0)
    die_usage("%s", "stdin cannot hold both the API key and the value: use --from-file");
  size_t len;
  char *value;
  if (from_file == NULL && isatty(STDIN_FILENO))
    value = read_hidden(pos.args[1], &len);
  else
    value = read_small_file(from_file ? from_file : "-", MAX_VALUE_BYTES + 1, &len, "value from");
  if (!keep_newline)
    len = strip_newline(value, len);
  const char *bad = len == 0                ? "empty (give it on stdin or with --from-file FILE)"
                    : len > MAX_VALUE_BYTES ? "larger than 64 KiB, the most a secret may hold"
                    : memchr(value, 0, len) ? "contains a NUL byte: values are text (UTF-8); "
                                              "encode a binary secret, e.g. in base64"
                                            : NULL;
  if (bad != NULL) {
    explicit_bzero(value, MAX_VALUE_BYTES + 2);
    free(value);
    fprintf(stderr, "sealctl: value: %s\n", bad);
    return EXIT_USAGE;
  }
  value[len] = '\0';
  connect_channel(1);
  Sealgate__V1__SetSecretRequest req = SEALGATE__V1__SET_SECRET_REQUEST__INIT;
  req.store_id = pos.args[0];
  req.name = pos.args[1];
  req.value = value;
  req.n_allowed_hosts = hosts.n;
  req.allowed_hosts = (char **)hosts.items;
  Sealgate__V1__SecretEntry *resp;
  sg_status st;
  int code = sealgate_v1_secret_service_set_secret(g.ch, &req, &resp, &g.call, &st);
  explicit_bzero(value, MAX_VALUE_BYTES + 2); /* the channel cleared its own copy */
  free(value);
  if (code != SG_STATUS_OK)
    fail("SetSecret", &st, store_not_found);
  show(&resp->base);
  protobuf_c_message_free_unpacked(&resp->base, NULL);
  return 0;
}

static int secrets_list(int argc, char **argv) {
  static sg_positionals pos;
  parse("sealctl secrets list STORE_ID",
        "Lists a store's secrets: names, versions and use, never values.", NULL, 0, argc, argv,
        &pos, 1, 1);
  connect_channel(1);
  Sealgate__V1__ListSecretsRequest req = SEALGATE__V1__LIST_SECRETS_REQUEST__INIT;
  req.store_id = pos.args[0];
  Sealgate__V1__ListSecretsResponse *resp;
  sg_status st;
  if (sealgate_v1_secret_service_list_secrets(g.ch, &req, &resp, &g.lookup, &st))
    fail("ListSecrets", &st, store_not_found);
  if (g.json) {
    show(&resp->base);
  } else {
    table t = {.columns = secret_cols, .n_cols = SG_ARRAY_LEN(secret_cols)};
    for (size_t i = 0; i < resp->n_secrets; i++)
      table_add(&t, &resp->secrets[i]->base);
    table_print(&t, "No secrets in this store.");
  }
  protobuf_c_message_free_unpacked(&resp->base, NULL);
  return 0;
}

static int secrets_delete(int argc, char **argv) {
  static sg_positionals pos;
  parse("sealctl secrets delete STORE_ID NAME", "Deletes a secret from a store.", NULL, 0, argc,
        argv, &pos, 2, 2);
  connect_channel(1);
  Sealgate__V1__DeleteSecretRequest req = SEALGATE__V1__DELETE_SECRET_REQUEST__INIT;
  req.store_id = pos.args[0];
  req.name = pos.args[1];
  Google__Protobuf__Empty *resp;
  sg_status st;
  if (sealgate_v1_secret_service_delete_secret(g.ch, &req, &resp, &g.call, &st))
    fail("DeleteSecret", &st, "list the store's secrets with `sealctl secrets list STORE_ID`");
  protobuf_c_message_free_unpacked(&resp->base, NULL);
  show_done("deleted secret", pos.args[1]);
  return 0;
}

/* --- Commands: sandboxes and snapshots -------------------------------------------------------- */

static const char *const sandbox_cols[] = {"id",       "status",     "secret_stores",
                                           "snapshot", "created_at", "expires_at"};
static const char sandbox_not_found[] = "list your sandboxes with `sealctl sandboxes list`";

/* KEY=VALUE entries of --env into map entries. */
static Sealgate__V1__CreateSandboxRequest__EnvEntry **env_entries(const sg_strlist *env) {
  Sealgate__V1__CreateSandboxRequest__EnvEntry **entries = sg_calloc(env->n + 1, sizeof(*entries));
  for (size_t i = 0; i < env->n; i++) {
    const char *eq = strchr(env->items[i], '=');
    if (eq == NULL || eq == env->items[i])
      die_usage("--env \"%.64s\" is not KEY=VALUE", env->items[i]);
    entries[i] = sg_malloc(sizeof(*entries[i]));
    sealgate__v1__create_sandbox_request__env_entry__init(entries[i]);
    entries[i]->key = sg_strndup(env->items[i], (size_t)(eq - env->items[i]));
    entries[i]->value = (char *)eq + 1;
  }
  return entries;
}

static int sandboxes_create(int argc, char **argv) {
  const char *store = "", *snapshot = "";
  long long timeout = 0;
  static sg_strlist env; /* static: freed at exit */
  const sg_flag own[] = {
      {"store", SG_FLAG_STR, &store, 0, 0, "NAME", "the secret store the sandbox is bound to", 1},
      {"snapshot", SG_FLAG_STR, &snapshot, 0, 0, "NAME", "the snapshot to start from", 1},
      {"timeout-seconds", SG_FLAG_INT, &timeout, 1, 7 * 86400, "N",
       "end the sandbox after N seconds (default 300)", 1},
      {"env", SG_FLAG_LIST, &env, 0, 0, "KEY=VALUE",
       "a plain environment variable (repeatable; not for secrets)", 1},
  };
  static sg_positionals pos;
  parse("sealctl sandboxes create [--store NAME] [--snapshot NAME] [--timeout-seconds N] "
        "[--env KEY=VALUE]...",
        "Creates a sandbox; its environment holds sealed tokens for the store's secrets.", own,
        SG_ARRAY_LEN(own), argc, argv, &pos, 0, 0);
  Sealgate__V1__CreateSandboxRequest req = SEALGATE__V1__CREATE_SANDBOX_REQUEST__INIT;
  req.secret_store = (char *)store;
  req.snapshot = (char *)snapshot;
  req.timeout_seconds = (int32_t)timeout;
  req.n_env = env.n;
  req.env = env_entries(&env);
  connect_channel(1);
  Sealgate__V1__Sandbox *resp;
  sg_status st;
  int code = sealgate_v1_sandbox_service_create_sandbox(g.ch, &req, &resp, &g.call, &st);
  for (size_t i = 0; i < req.n_env; i++) {
    free(req.env[i]->key);
    free(req.env[i]);
  }
  free(req.env);
  if (code != SG_STATUS_OK)
    fail("CreateSandbox", &st, store_not_found);
  show(&resp->base);
  protobuf_c_message_free_unpacked(&resp->base, NULL);
  return 0;
}

/* The sandbox commands that take one id and return a Sandbox or nothing. */
static int sandbox_by_id(int argc, char **argv, int del) {
  static sg_positionals pos;
  parse(del ? "sealctl sandboxes delete SANDBOX_ID" : "sealctl sandboxes get SANDBOX_ID",
        del ? "Stops a sandbox: every token it holds dies." : "Shows one sandbox.", NULL, 0, argc,
        argv, &pos, 1, 1);
  connect_channel(1);
  sg_status st;
  if (del) {
    Sealgate__V1__DeleteSandboxRequest req = SEALGATE__V1__DELETE_SANDBOX_REQUEST__INIT;
    req.sandbox_id = pos.args[0];
    Google__Protobuf__Empty *resp;
    if (sealgate_v1_sandbox_service_delete_sandbox(g.ch, &req, &resp, &g.call, &st))
      fail("DeleteSandbox", &st, sandbox_not_found);
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    show_done("deleted sandbox", pos.args[0]);
    return 0;
  }
  Sealgate__V1__GetSandboxRequest req = SEALGATE__V1__GET_SANDBOX_REQUEST__INIT;
  req.sandbox_id = pos.args[0];
  Sealgate__V1__Sandbox *resp;
  if (sealgate_v1_sandbox_service_get_sandbox(g.ch, &req, &resp, &g.lookup, &st))
    fail("GetSandbox", &st, sandbox_not_found);
  show(&resp->base);
  protobuf_c_message_free_unpacked(&resp->base, NULL);
  return 0;
}

static int sandboxes_get(int argc, char **argv) {
  return sandbox_by_id(argc, argv, 0);
}

static int sandboxes_delete(int argc, char **argv) {
  return sandbox_by_id(argc, argv, 1);
}

static ProtobufCMessage *sandboxes_page(const void *filters, int32_t size, char *token,
                                        const char **next) {
  (void)filters;
  Sealgate__V1__ListSandboxesRequest req = SEALGATE__V1__LIST_SANDBOXES_REQUEST__INIT;
  req.page_size = size;
  req.page_token = token;
  Sealgate__V1__ListSandboxesResponse *resp;
  sg_status st;
  if (sealgate_v1_sandbox_service_list_sandboxes(g.ch, &req, &resp, &g.lookup, &st))
    fail("ListSandboxes", &st, NULL);
  *next = resp->next_page_token;
  return &resp->base;
}

static int sandboxes_list(int argc, char **argv) {
  long long page_size = 0;
  const char *token = "";
  const sg_flag own[] = {PAGE_FLAGS(page_size, token)};
  static sg_positionals pos;
  parse("sealctl sandboxes list [--page-size N [--page-token TOKEN]]",
        "Lists the organization's sandboxes.", own, 2, argc, argv, &pos, 0, 0);
  connect_channel(1);
  listing l;
  listing_start(&l, "sandboxes", sandbox_cols, SG_ARRAY_LEN(sandbox_cols), "No sandboxes.");
  list_pages(&l, page_size, 100, token, sandboxes_page, NULL);
  return 0;
}

static int sandboxes_checkpoint(int argc, char **argv) {
  static sg_positionals pos;
  parse("sealctl sandboxes checkpoint SANDBOX_ID NAME",
        "Checkpoints a sandbox; new sandboxes can start from it with its store layers.", NULL, 0,
        argc, argv, &pos, 2, 2);
  connect_channel(1);
  Sealgate__V1__CreateCheckpointRequest req = SEALGATE__V1__CREATE_CHECKPOINT_REQUEST__INIT;
  req.sandbox_id = pos.args[0];
  req.name = pos.args[1];
  Sealgate__V1__Checkpoint *resp;
  sg_status st;
  if (sealgate_v1_sandbox_service_create_checkpoint(g.ch, &req, &resp, &g.call, &st))
    fail("CreateCheckpoint", &st, sandbox_not_found);
  show(&resp->base);
  protobuf_c_message_free_unpacked(&resp->base, NULL);
  return 0;
}

static int sandboxes_from_checkpoint(int argc, char **argv) {
  const char *store = "";
  long long timeout = 0;
  const sg_flag own[] = {
      {"store", SG_FLAG_STR, &store, 0, 0, "NAME", "a secret store layered on top", 1},
      {"timeout-seconds", SG_FLAG_INT, &timeout, 1, 7 * 86400, "N",
       "end the sandbox after N seconds (default 300)", 1},
  };
  static sg_positionals pos;
  parse("sealctl sandboxes create-from-checkpoint CHECKPOINT_ID --store NAME [--timeout-seconds N]",
        "Creates a sandbox from a checkpoint, with the checkpoint's store layers and --store on "
        "top.",
        own, SG_ARRAY_LEN(own), argc, argv, &pos, 1, 1);
  connect_channel(1);
  Sealgate__V1__CreateSandboxFromCheckpointRequest req =
      SEALGATE__V1__CREATE_SANDBOX_FROM_CHECKPOINT_REQUEST__INIT;
  req.checkpoint_id = pos.args[0];
  req.secret_store = (char *)store;
  req.timeout_seconds = (int32_t)timeout;
  Sealgate__V1__Sandbox *resp;
  sg_status st;
  if (sealgate_v1_sandbox_service_create_sandbox_from_checkpoint(g.ch, &req, &resp, &g.call, &st))
    fail("CreateSandboxFromCheckpoint", &st, "check the checkpoint id and the store name");
  show(&resp->base);
  protobuf_c_message_free_unpacked(&resp->base, NULL);
  return 0;
}

static int sandboxes_allowed_hosts(int argc, char **argv) {
  static sg_positionals pos;
  parse("sealctl sandboxes allowed-hosts SANDBOX_ID",
        "Shows where a sandbox may send each secret (\"*\": every public host).", NULL, 0, argc,
        argv, &pos, 1, 1);
  connect_channel(1);
  Sealgate__V1__GetAllowedHostsRequest req = SEALGATE__V1__GET_ALLOWED_HOSTS_REQUEST__INIT;
  req.sandbox_id = pos.args[0];
  Sealgate__V1__GetAllowedHostsResponse *resp;
  sg_status st;
  if (sealgate_v1_sandbox_service_get_allowed_hosts(g.ch, &req, &resp, &g.lookup, &st))
    fail("GetAllowedHosts", &st, sandbox_not_found);
  show(&resp->base);
  protobuf_c_message_free_unpacked(&resp->base, NULL);
  return 0;
}

static int sandboxes_run(int argc, char **argv) {
  const char *cwd = "";
  long long timeout = 0;
  const sg_flag own[] = {
      {"cwd", SG_FLAG_STR, &cwd, 0, 0, "DIR", "the directory to run in", 1},
      {"timeout-seconds", SG_FLAG_INT, &timeout, 1, 86400, "N", "stop the command after N seconds",
       1},
  };
  static sg_positionals pos;
  parse("sealctl sandboxes run SANDBOX_ID COMMAND [--cwd DIR] [--timeout-seconds N]",
        "Runs COMMAND (one argument, run by a shell) in the sandbox; prints its output and exits "
        "with its exit code.",
        own, SG_ARRAY_LEN(own), argc, argv, &pos, 2, 2);
  connect_channel(1);
  Sealgate__V1__RunCommandRequest req = SEALGATE__V1__RUN_COMMAND_REQUEST__INIT;
  req.sandbox_id = pos.args[0];
  req.command = pos.args[1];
  req.cwd = (char *)cwd;
  req.timeout_seconds = (int32_t)timeout;
  Sealgate__V1__RunCommandResponse *resp;
  sg_status st;
  /* The server's default command timeout is 60 s: wait for it, and for the answer. */
  long long runs_for = timeout > 0 ? timeout : 60;
  if (g.deadline_s < runs_for + 10)
    g.call.timeout_ms = (runs_for + 10) * 1000;
  if (sealgate_v1_sandbox_service_run_command(g.ch, &req, &resp, &g.call, &st))
    fail("RunCommand", &st, sandbox_not_found);
  int exit_code = resp->exit_code;
  if (g.json) {
    show(&resp->base);
  } else {
    fputs(resp->stdout, out);
    fputs(resp->stderr, stderr);
  }
  protobuf_c_message_free_unpacked(&resp->base, NULL);
  return exit_code >= 0 && exit_code < 256 ? exit_code : EXIT_FAILED;
}

static const char *const snapshot_cols[] = {"name", "id", "image", "created_at"};

static int snapshots_create(int argc, char **argv) {
  const char *base = "";
  static sg_strlist apt, pip, run; /* static: freed at exit */
  const sg_flag own[] = {
      {"base", SG_FLAG_STR, &base, 0, 0, "IMAGE", "the base image", 1},
      {"apt", SG_FLAG_LIST, &apt, 0, 0, "PACKAGE", "a Debian package to install (repeatable)", 1},
      {"pip", SG_FLAG_LIST, &pip, 0, 0, "PACKAGE", "a Python package to install (repeatable)", 1},
      {"run", SG_FLAG_LIST, &run, 0, 0, "COMMAND", "a build command (repeatable)", 1},
  };
  static sg_positionals pos;
  parse("sealctl snapshots create NAME [--base IMAGE] [--apt PKG]... [--pip PKG]... [--run CMD]...",
        "Creates a snapshot (an image sandboxes can start from).", own, SG_ARRAY_LEN(own), argc,
        argv, &pos, 1, 1);
  connect_channel(1);
  Sealgate__V1__Image image = SEALGATE__V1__IMAGE__INIT;
  image.base_ = (char *)base;
  image.n_apt_packages = apt.n;
  image.apt_packages = (char **)apt.items;
  image.n_pip_packages = pip.n;
  image.pip_packages = (char **)pip.items;
  image.n_run_commands = run.n;
  image.run_commands = (char **)run.items;
  Sealgate__V1__CreateSnapshotRequest req = SEALGATE__V1__CREATE_SNAPSHOT_REQUEST__INIT;
  req.name = pos.args[0];
  req.image = &image;
  Sealgate__V1__Snapshot *resp;
  sg_status st;
  if (sealgate_v1_sandbox_service_create_snapshot(g.ch, &req, &resp, &g.call, &st))
    fail("CreateSnapshot", &st, NULL);
  show(&resp->base);
  protobuf_c_message_free_unpacked(&resp->base, NULL);
  return 0;
}

static int snapshot_by_name(int argc, char **argv, int del) {
  static sg_positionals pos;
  parse(del ? "sealctl snapshots delete NAME" : "sealctl snapshots get NAME",
        del ? "Deletes a snapshot." : "Shows one snapshot.", NULL, 0, argc, argv, &pos, 1, 1);
  connect_channel(1);
  sg_status st;
  static const char hint[] = "list your snapshots with `sealctl snapshots list`";
  if (del) {
    Sealgate__V1__DeleteSnapshotRequest req = SEALGATE__V1__DELETE_SNAPSHOT_REQUEST__INIT;
    req.name = pos.args[0];
    Google__Protobuf__Empty *resp;
    if (sealgate_v1_sandbox_service_delete_snapshot(g.ch, &req, &resp, &g.call, &st))
      fail("DeleteSnapshot", &st, hint);
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    show_done("deleted snapshot", pos.args[0]);
    return 0;
  }
  Sealgate__V1__GetSnapshotRequest req = SEALGATE__V1__GET_SNAPSHOT_REQUEST__INIT;
  req.name = pos.args[0];
  Sealgate__V1__Snapshot *resp;
  if (sealgate_v1_sandbox_service_get_snapshot(g.ch, &req, &resp, &g.lookup, &st))
    fail("GetSnapshot", &st, hint);
  show(&resp->base);
  protobuf_c_message_free_unpacked(&resp->base, NULL);
  return 0;
}

static int snapshots_get(int argc, char **argv) {
  return snapshot_by_name(argc, argv, 0);
}

static int snapshots_delete(int argc, char **argv) {
  return snapshot_by_name(argc, argv, 1);
}

static int snapshots_list(int argc, char **argv) {
  static sg_positionals pos;
  parse("sealctl snapshots list", "Lists the organization's snapshots.", NULL, 0, argc, argv, &pos,
        0, 0);
  connect_channel(1);
  Sealgate__V1__ListSnapshotsRequest req = SEALGATE__V1__LIST_SNAPSHOTS_REQUEST__INIT;
  Sealgate__V1__ListSnapshotsResponse *resp;
  sg_status st;
  if (sealgate_v1_sandbox_service_list_snapshots(g.ch, &req, &resp, &g.lookup, &st))
    fail("ListSnapshots", &st, NULL);
  if (g.json) {
    show(&resp->base);
  } else {
    table t = {.columns = snapshot_cols, .n_cols = SG_ARRAY_LEN(snapshot_cols)};
    for (size_t i = 0; i < resp->n_snapshots; i++)
      table_add(&t, &resp->snapshots[i]->base);
    table_print(&t, "No snapshots.");
  }
  protobuf_c_message_free_unpacked(&resp->base, NULL);
  return 0;
}

/* --- Commands: audit and health --------------------------------------------------------------- */

static const char *const audit_cols[] = {"time",           "decision", "sandbox_id", "secret_name",
                                         "secret_version", "method",   "host",       "path",
                                         "reason",         "actor",    "action",     "resource"};

typedef struct {
  const char *sandbox, *store, *secret, *since, *kind;
} audit_filters;

static ProtobufCMessage *audit_page(const void *filters, int32_t size, char *token,
                                    const char **next) {
  const audit_filters *f = filters;
  Sealgate__V1__ListAuditEventsRequest req = SEALGATE__V1__LIST_AUDIT_EVENTS_REQUEST__INIT;
  req.sandbox_id = (char *)f->sandbox;
  req.store_id = (char *)f->store;
  req.secret_name = (char *)f->secret;
  req.since = (char *)f->since;
  req.kind = (char *)f->kind;
  req.page_size = size;
  req.page_token = token;
  Sealgate__V1__ListAuditEventsResponse *resp;
  sg_status st;
  if (sealgate_v1_audit_service_list_audit_events(g.ch, &req, &resp, &g.lookup, &st))
    fail("ListAuditEvents", &st, "check the sandbox or store id");
  *next = resp->next_page_token;
  return &resp->base;
}

static int audit_list(int argc, char **argv) {
  const char *sandbox = "", *store = "", *secret = "", *since = "", *kind = "", *token = "";
  long long page_size = 0;
  const sg_flag own[] = {
      {"sandbox", SG_FLAG_STR, &sandbox, 0, 0, "SANDBOX_ID", "only this sandbox's events", 1},
      {"store", SG_FLAG_STR, &store, 0, 0, "STORE_ID", "only this store's events", 1},
      {"secret", SG_FLAG_STR, &secret, 0, 0, "NAME", "only this secret's events", 1},
      {"since", SG_FLAG_STR, &since, 0, 0, "TIME", "only events at or after TIME (RFC 3339)", 1},
      {"kind", SG_FLAG_STR, &kind, 0, 0, "KIND",
       "proxy (the egress proxy's decisions; the default), management (calls that changed "
       "something) or all",
       1},
      PAGE_FLAGS(page_size, token),
  };
  static sg_positionals pos;
  parse("sealctl audit list [--sandbox ID] [--store ID] [--secret NAME] [--since TIME] "
        "[--kind proxy|management|all] [--page-size N [--page-token TOKEN]]",
        "Lists what the egress proxy did with secrets (substituted, withheld, denied, "
        "redacted) or, with --kind management or all, the calls that changed something "
        "(created, updated, deleted, with the API key's prefix as actor).",
        own, SG_ARRAY_LEN(own), argc, argv, &pos, 0, 0);
  connect_channel(1);
  listing l;
  listing_start(&l, "events", audit_cols, SG_ARRAY_LEN(audit_cols), "No audit events.");
  audit_filters f = {sandbox, store, secret, since, kind};
  list_pages(&l, page_size, 500, token, audit_page, &f);
  return 0;
}

static int health(int argc, char **argv) {
  static sg_positionals pos;
  parse("sealctl health [SERVICE]",
        "Asks the gateway whether it serves (grpc.health.v1); exits 0 when it does. SERVICE: "
        "e.g. sealgate.v1.SecretStoreService (default: the whole server).",
        NULL, 0, argc, argv, &pos, 0, 1);
  connect_channel(0);
  Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
  req.service = pos.n > 0 ? pos.args[0] : "";
  Grpc__Health__V1__HealthCheckResponse *resp;
  sg_status st;
  if (grpc_health_v1_health_check(g.ch, &req, &resp, &g.call, &st))
    fail("Health/Check", &st, "the gateway does not know that service name");
  const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value(
      &grpc__health__v1__health_check_response__serving_status__descriptor, (int)resp->status);
  int serving = resp->status == GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
  if (g.json)
    show(&resp->base);
  else
    fprintf(out, "%s\n", v ? v->name : "UNKNOWN");
  protobuf_c_message_free_unpacked(&resp->base, NULL);
  return serving ? 0 : EXIT_FAILED;
}

/* --- Dispatch --------------------------------------------------------------------------------- */

typedef struct {
  const char *group, *verb;
  int (*run)(int argc, char **argv);
  const char *summary;
} command;

static const command commands[] = {
    {"stores", "create", stores_create, "create a secret store"},
    {"stores", "list", stores_list, "list secret stores"},
    {"stores", "get", stores_get, "show a secret store"},
    {"stores", "update", stores_update, "rename a store or change its egress allowlist"},
    {"stores", "delete", stores_delete, "delete a store and its secrets"},
    {"secrets", "set", secrets_set, "set a secret, its value from stdin or --from-file"},
    {"secrets", "list", secrets_list, "list a store's secrets (never their values)"},
    {"secrets", "delete", secrets_delete, "delete a secret"},
    {"sandboxes", "create", sandboxes_create, "create a sandbox bound to a store"},
    {"sandboxes", "list", sandboxes_list, "list sandboxes"},
    {"sandboxes", "get", sandboxes_get, "show a sandbox"},
    {"sandboxes", "delete", sandboxes_delete, "stop a sandbox"},
    {"sandboxes", "checkpoint", sandboxes_checkpoint, "checkpoint a sandbox"},
    {"sandboxes", "create-from-checkpoint", sandboxes_from_checkpoint,
     "create a sandbox from a checkpoint"},
    {"sandboxes", "allowed-hosts", sandboxes_allowed_hosts, "where a sandbox may send secrets"},
    {"sandboxes", "run", sandboxes_run, "run a command in a sandbox"},
    {"snapshots", "create", snapshots_create, "create a snapshot"},
    {"snapshots", "list", snapshots_list, "list snapshots"},
    {"snapshots", "get", snapshots_get, "show a snapshot"},
    {"snapshots", "delete", snapshots_delete, "delete a snapshot"},
    {"audit", "list", audit_list, "list the egress proxy's audit events"},
    {"health", NULL, health, "check that the gateway serves"},
};

static void usage(FILE *to, const char *group) {
  fprintf(to, "usage: sealctl %s COMMAND [ARGS] [flags]\n\n", group ? group : "GROUP");
  if (group == NULL)
    fprintf(out,
            "sealctl talks to a sealgate gateway (%s). Set SEALGATE_ADDR to its gRPC "
            "address and\nSEALGATE_API_KEY to your organization's API key.\n\n",
            sealgate_version());
  fprintf(to, "commands:\n");
  for (size_t i = 0; i < SG_ARRAY_LEN(commands); i++) {
    const command *c = &commands[i];
    if (group != NULL && strcmp(group, c->group) != 0)
      continue;
    char name[64];
    snprintf(name, sizeof(name), "%s%s%s", c->group, c->verb ? " " : "", c->verb ? c->verb : "");
    fprintf(to, "  %-38s %s\n", name, c->summary);
  }
  fprintf(to, "\nEvery command takes --help, --json and the global flags (--addr, --tls-ca, "
              "--deadline, ...).\nExit status: 0 done, 1 the gateway refused, 2 usage, 3 "
              "gateway unreachable (retry).\n");
}

int main(int argc, char **argv) {
  out_open();
  atexit(out_close);
  if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
      strcmp(argv[1], "help") == 0) {
    usage(argc < 2 ? stderr : out, NULL);
    return argc < 2 ? EXIT_USAGE : 0;
  }
  if (strcmp(argv[1], "--version") == 0) {
    fprintf(out, "sealctl %s\n", sealgate_version());
    return 0;
  }
  int known_group = 0;
  for (size_t i = 0; i < SG_ARRAY_LEN(commands); i++) {
    const command *c = &commands[i];
    if (strcmp(argv[1], c->group) != 0)
      continue;
    known_group = 1;
    int skip = c->verb == NULL ? 2 : argc > 2 && strcmp(argv[2], c->verb) == 0 ? 3 : 0;
    if (skip > 0) {
      int rv = c->run(argc - skip, argv + skip);
      disconnect();
      return rv;
    }
  }
  if (!known_group) {
    fprintf(stderr, "sealctl: unknown command \"%.64s\"\n\n", argv[1]);
    usage(stderr, NULL);
    return EXIT_USAGE;
  }
  int help = argc > 2 && (strcmp(argv[2], "--help") == 0 || strcmp(argv[2], "-h") == 0);
  if (!help)
    fprintf(stderr,
            argc > 2 ? "sealctl: unknown command \"%s %.64s\"\n\n"
                     : "sealctl: \"%s\" needs a command\n\n",
            argv[1], argc > 2 ? argv[2] : "");
  usage(help ? out : stderr, argv[1]);
  return help ? 0 : EXIT_USAGE;
}
