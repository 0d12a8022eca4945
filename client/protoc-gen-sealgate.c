/* protoc-gen-sealgate: the protoc plugin that writes libsealgate's typed client functions.
 *
 * protoc runs it with a CodeGeneratorRequest on stdin and reads a CodeGeneratorResponse from
 * stdout. For every file to generate that declares services, it writes <file>.sg.h and
 * <file>.sg.c: one function per unary method over sg_channel_unary, a pair (open, _next) per
 * server-streaming method over sg_channel_stream_open / sg_stream_next, and a comment for the
 * client- and bidi-streaming methods the C client does not offer. The functions take and return
 * the message types protoc-c generates for the same files, so names follow protoc-c's rules
 * (ToCamel, CamelToLower, FullNameToC, FullNameToLower in its c_helpers.cc).
 *
 * The output is laid out as clang-format (the project's .clang-format) would, so that it reads
 * like the rest of the code base: it is what users of the library open.
 *
 * Usage: protoc --plugin=protoc-gen-sealgate=PATH --sealgate_out=DIR -I... x.proto */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "google/protobuf/compiler/plugin.pb-c.h"

typedef Google__Protobuf__FileDescriptorProto file_proto;
typedef Google__Protobuf__ServiceDescriptorProto service_proto;
typedef Google__Protobuf__MethodDescriptorProto method_proto;

#define COLUMNS 100 /* .clang-format's ColumnLimit */

/* FileDescriptorProto.service and ServiceDescriptorProto.method field numbers, the steps of a
 * SourceCodeInfo.Location path that leads to a method's comment. */
#define FILE_SERVICE_FIELD   6
#define SERVICE_METHOD_FIELD 2

static void die(const char *what) {
  fprintf(stderr, "protoc-gen-sealgate: %s\n", what);
  exit(1);
}

/* A growing string; an allocation failure ends the program (a plugin has no way to go on). */
typedef struct {
  char *data;
  size_t len, cap;
} strbuf;

static void sb_reserve(strbuf *b, size_t more) {
  if (b->len + more + 1 <= b->cap) {
    return;
  }
  size_t cap = b->cap ? b->cap : 256;
  while (cap < b->len + more + 1) {
    cap *= 2;
  }
  if (!(b->data = realloc(b->data, cap))) {
    die("out of memory");
  }
  b->cap = cap;
}

static void sb_add(strbuf *b, const char *s, size_t n) {
  sb_reserve(b, n);
  memcpy(b->data + b->len, s, n);
  b->len += n;
  b->data[b->len] = '\0';
}

static void sb_putc(strbuf *b, char c) {
  sb_add(b, &c, 1);
}

static void sb_vprintf(strbuf *b, const char *format, va_list ap) {
  va_list measure;
  va_copy(measure, ap);
  int n = vsnprintf(NULL, 0, format, measure);
  va_end(measure);
  sb_reserve(b, (size_t)n);
  vsnprintf(b->data + b->len, (size_t)n + 1, format, ap);
  b->len += (size_t)n;
}

__attribute__((format(printf, 2, 3))) static void sb_printf(strbuf *b, const char *format, ...) {
  va_list ap;
  va_start(ap, format);
  sb_vprintf(b, format, ap);
  va_end(ap);
}

/* Returns the string, "" for an empty buffer; the caller frees it. */
static char *sb_take(strbuf *b) {
  sb_reserve(b, 0);
  b->data[b->len] = '\0';
  return b->data;
}

/* Returns a new string formatted like printf; the caller frees it. */
__attribute__((format(printf, 1, 2))) static char *fmt(const char *format, ...) {
  strbuf b = {0};
  va_list ap;
  va_start(ap, format);
  sb_vprintf(&b, format, ap);
  va_end(ap);
  return sb_take(&b);
}

/* --- names, as protoc-c makes them --- */

typedef void (*word_fn)(strbuf *b, const char *s, size_t n);

/* protoc-c's ToCamel: "secret_store" -> "SecretStore". */
static void put_camel(strbuf *b, const char *s, size_t n) {
  int upper_next = 1;
  for (size_t i = 0; i < n; i++) {
    if (s[i] == '_') {
      upper_next = 1;
    } else {
      sb_putc(b, upper_next ? (char)toupper((unsigned char)s[i]) : s[i]);
      upper_next = 0;
    }
  }
}

/* protoc-c's CamelToLower: "CreateSecretStore" -> "create_secret_store"; a run of capitals
 * stays one word ("HTTPProxy" -> "httpproxy"). */
static void put_lower(strbuf *b, const char *s, size_t n) {
  int was_upper = 1;
  for (size_t i = 0; i < n; i++) {
    int is_upper = isupper((unsigned char)s[i]) != 0;
    if (is_upper && !was_upper) {
      sb_putc(b, '_');
    }
    sb_putc(b, is_upper ? (char)tolower((unsigned char)s[i]) : s[i]);
    was_upper = is_upper;
  }
}

/* Writes each piece of a dotted name (".sealgate.v1.SecretStore") with |word|, joined by
 * |sep|; empty pieces (the leading dot of a type reference) are skipped, as protoc-c does. */
static void put_dotted(strbuf *b, const char *name, word_fn word, const char *sep) {
  int first = 1;
  while (*name) {
    size_t n = strcspn(name, ".");
    if (n > 0) {
      if (!first) {
        sb_add(b, sep, strlen(sep));
      }
      word(b, name, n);
      first = 0;
    }
    name += n + (name[n] == '.');
  }
}

/* protoc-c's FullNameToC: ".sealgate.v1.SecretStore" -> "Sealgate__V1__SecretStore". */
static char *c_type_name(const char *full_name) {
  strbuf b = {0};
  put_dotted(&b, full_name, put_camel, "__");
  return sb_take(&b);
}

/* protoc-c's FullNameToLower + "__descriptor": "sealgate__v1__secret_store__descriptor". */
static char *c_descriptor_name(const char *full_name) {
  strbuf b = {0};
  put_dotted(&b, full_name, put_lower, "__");
  sb_add(&b, "__descriptor", strlen("__descriptor"));
  return sb_take(&b);
}

/* Our own: "<package>_<service>_<method>" in snake case, package dots as '_':
 * "sealgate_v1_secret_store_service_create_secret_store". */
static char *function_name(const char *package, const char *service, const char *method) {
  strbuf b = {0};
  put_dotted(&b, package, put_lower, "_");
  if (b.len > 0) {
    sb_putc(&b, '_');
  }
  put_lower(&b, service, strlen(service));
  sb_putc(&b, '_');
  put_lower(&b, method, strlen(method));
  return sb_take(&b);
}

/* "sealgate/v1/secret_store.proto" -> "sealgate/v1/secret_store" (a copy). */
static char *strip_proto(const char *file) {
  size_t n = strlen(file);
  return fmt("%.*s", (int)(n > 6 && strcmp(file + n - 6, ".proto") == 0 ? n - 6 : n), file);
}

/* --- layout --- */

/* Writes "head(arg, ..., arg)tail" starting at column |indent| as clang-format lays it out: on
 * one line when it fits; otherwise the arguments packed onto lines aligned after the
 * parenthesis, or, when an argument would not fit there, packed from |indent| + 4 on the lines
 * that follow the parenthesis. */
static void put_call(strbuf *b, size_t indent, const char *head, const char *const *args, size_t n,
                     const char *tail) {
  size_t open = indent + strlen(head) + 1, end = open, widest = 0;
  for (size_t i = 0; i < n; i++) {
    size_t w = strlen(args[i]) + 1 + (i + 1 < n ? 0 : strlen(tail)); /* with "," or ")tail" */
    end += w + (i > 0);
    widest = w > widest ? w : widest;
  }
  size_t align = end > COLUMNS && open + widest > COLUMNS ? indent + 4 : open, col = align;
  sb_printf(b, "%*s%s(", (int)indent, "", head);
  if (align != open) {
    sb_printf(b, "\n%*s", (int)align, "");
  }
  for (size_t i = 0; i < n; i++) {
    int last = i + 1 == n;
    size_t w = strlen(args[i]) + 1 + (last ? strlen(tail) : 0);
    if (col > align && col + 1 + w > COLUMNS) {
      sb_printf(b, "\n%*s", (int)align, "");
      col = align;
    } else if (col > align) {
      sb_putc(b, ' ');
      col++;
    }
    sb_printf(b, "%s%s", args[i], last ? ")" : ",");
    col += w;
  }
  sb_printf(b, "%s\n", tail);
}

/* Writes |text| (a proto comment, possibly NULL) as the lines of a C comment after |first|,
 * neutralizing any comment delimiters inside it. */
static void put_comment(strbuf *b, const char *first, const char *text) {
  sb_printf(b, "/* %s", first);
  size_t n = text ? strlen(text) : 0;
  while (n > 0 && isspace((unsigned char)text[n - 1])) {
    n--;
  }
  for (size_t i = 0; i < n;) {
    size_t end = i;
    while (end < n && text[end] != '\n') {
      end++;
    }
    size_t start = i + (i < end && text[i] == ' '); /* "// text" leaves " text" */
    sb_add(b, start < end ? "\n * " : "\n *", start < end ? 4 : 3);
    for (size_t j = start; j < end; j++) {
      int opens = text[j] == '/' && j + 1 < end && text[j + 1] == '*';
      int closes = text[j] == '*' && j + 1 < end && text[j + 1] == '/';
      sb_putc(b, text[j]);
      if (opens || closes) {
        sb_putc(b, ' ');
      }
    }
    i = end + 1;
  }
  sb_add(b, " */\n", 4);
}

/* --- one method --- */

typedef struct {
  char *path;     /* "/sealgate.v1.SecretStoreService/CreateSecretStore" */
  char *function; /* "sealgate_v1_secret_store_service_create_secret_store" */
  char *request_type, *response_type, *response_descriptor;
  const char *comment; /* the method's leading comment in the .proto, or NULL */
} method_names;

/* Returns the comment above the element at |path| (field numbers and indexes from the file's
 * root, as in SourceCodeInfo.Location), or NULL. */
static const char *leading_comment(const file_proto *file, const int *path, size_t n_path) {
  const Google__Protobuf__SourceCodeInfo *info = file->source_code_info;
  for (size_t i = 0; info && i < info->n_location; i++) {
    const Google__Protobuf__SourceCodeInfo__Location *loc = info->location[i];
    if (loc->n_path == n_path && memcmp(loc->path, path, n_path * sizeof *path) == 0) {
      return loc->leading_comments;
    }
  }
  return NULL;
}

static method_names names_of(const file_proto *file, size_t s, size_t m) {
  const service_proto *service = file->service[s];
  const method_proto *method = service->method[m];
  const char *package = file->package ? file->package : "";
  const int comment_path[] = {FILE_SERVICE_FIELD, (int)s, SERVICE_METHOD_FIELD, (int)m};
  return (method_names){
      .path = fmt("/%s%s%s/%s", package, *package ? "." : "", service->name, method->name),
      .function = function_name(package, service->name, method->name),
      .request_type = c_type_name(method->input_type),
      .response_type = c_type_name(method->output_type),
      .response_descriptor = c_descriptor_name(method->output_type),
      .comment = leading_comment(file, comment_path, 4),
  };
}

static void free_names(method_names *n) {
  free(n->path);
  free(n->function);
  free(n->request_type);
  free(n->response_type);
  free(n->response_descriptor);
}

/* The C spellings a method's functions are made of; put_unary and put_server_streaming
 * release them with free_spellings. */
typedef struct {
  char *request;    /* "const Sealgate__V1__CreateSecretStoreRequest *request" */
  char *path;       /* "\"/sealgate.v1.SecretStoreService/CreateSecretStore\"" */
  char *descriptor; /* "&sealgate__v1__secret_store__descriptor" */
} spellings;

static spellings spell(const method_names *n) {
  return (spellings){.request = fmt("const %s *request", n->request_type),
                     .path = fmt("\"%s\"", n->path),
                     .descriptor = fmt("&%s", n->response_descriptor)};
}

static void free_spellings(spellings *s) {
  free(s->request);
  free(s->path);
  free(s->descriptor);
}

/* Writes the declaration (into |h|) and the definition (into |c|) of a unary method's function:
 *   int f(sg_channel *channel, const In *request, Out **response,
 *         const sg_call_options *options, sg_status *status); */
static void put_unary(strbuf *h, strbuf *c, const method_names *n) {
  spellings s = spell(n);
  char *head = fmt("int %s", n->function), *response = fmt("%s **response", n->response_type);
  const char *params[] = {"sg_channel *channel", s.request, response,
                          "const sg_call_options *options", "sg_status *status"};
  const char *args[] = {
      "channel", s.path,  "&request->base", s.descriptor, "(ProtobufCMessage **)response",
      "options", "status"};
  put_comment(h, n->path, n->comment);
  put_call(h, 0, head, params, 5, ";");
  put_call(c, 0, head, params, 5, " {");
  put_call(c, 2, "return sg_channel_unary", args, 7, ";");
  sb_add(c, "}\n", 2);
  free(head), free(response), free_spellings(&s);
}

/* The same for a server-streaming method: a function that opens the stream,
 *   sg_stream *f(sg_channel *channel, const In *request, const sg_call_options *options);
 * and f_next, which reads it as the response type:
 *   int f_next(sg_stream *stream, Out **message, sg_status *status); */
static void put_server_streaming(strbuf *h, strbuf *c, const method_names *n) {
  spellings s = spell(n);
  char *open = fmt("sg_stream *%s", n->function), *next = fmt("int %s_next", n->function),
       *message = fmt("%s **message", n->response_type);
  const char *open_params[] = {"sg_channel *channel", s.request, "const sg_call_options *options"};
  const char *open_args[] = {"channel", s.path, "&request->base", s.descriptor, "options"};
  const char *next_params[] = {"sg_stream *stream", message, "sg_status *status"};
  const char *next_args[] = {"stream", "(ProtobufCMessage **)message", "status"};
  put_comment(h, n->path, n->comment);
  put_call(h, 0, open, open_params, 3, ";");
  put_comment(h, "Reads the next message of the stream above: see sg_stream_next().", NULL);
  put_call(h, 0, next, next_params, 3, ";");
  put_call(c, 0, open, open_params, 3, " {");
  put_call(c, 2, "return sg_channel_stream_open", open_args, 5, ";");
  sb_add(c, "}\n\n", 3);
  put_call(c, 0, next, next_params, 3, " {");
  put_call(c, 2, "return sg_stream_next", next_args, 3, ";");
  sb_add(c, "}\n", 2);
  free(open), free(next), free(message), free_spellings(&s);
}

static void put_unsupported(strbuf *h, const method_names *n, const method_proto *method) {
  char *text =
      fmt(" %s streaming, which the C client does not offer.\n%s",
          method->server_streaming ? "Bidirectional" : "Client", n->comment ? n->comment : "");
  put_comment(h, n->path, text);
  free(text);
}

/* --- one file --- */

static const char UNARY_TEXT[] =
    " *\n"
    " * Each function makes one call on a sealgate channel (sealgate/channel.h) and returns its\n"
    " * gRPC status code, also left in |status| with the server's message (0 = SG_STATUS_OK).\n"
    " * On SG_STATUS_OK, |*response| is a new message that the caller frees with\n"
    " * protobuf_c_message_free_unpacked(); otherwise it is NULL. |options| may be NULL.\n";

static const char STREAMING_TEXT[] =
    " *\n"
    " * A server-streaming method has a pair of functions: the first starts the call and returns\n"
    " * its stream (never NULL); the second (_next) waits for the next message and returns 1 with\n"
    " * it (the caller frees it), or 0 once the stream has ended, with |status| filled in. Free\n"
    " * the stream with sg_stream_free().\n";

/* Writes the header's opening: what it is, how its functions behave (for the kinds of method
 * it has), the include guard, its includes. |base| is the file's name without ".proto". */
static void put_header_start(strbuf *h, const file_proto *file, const char *base) {
  int has_unary = 0, has_streaming = 0;
  for (size_t s = 0; s < file->n_service; s++) {
    for (size_t m = 0; m < file->service[s]->n_method; m++) {
      const method_proto *method = file->service[s]->method[m];
      has_unary |= !method->client_streaming && !method->server_streaming;
      has_streaming |= !method->client_streaming && method->server_streaming;
    }
  }
  strbuf guard = {0};
  for (const char *p = base; *p; p++) {
    sb_putc(&guard, isalnum((unsigned char)*p) ? (char)toupper((unsigned char)*p) : '_');
  }
  sb_printf(h, "/* Generated by protoc-gen-sealgate from %s. DO NOT EDIT.", file->name);
  if (has_unary) {
    sb_printf(h, "\n%.*s", (int)sizeof UNARY_TEXT - 2, UNARY_TEXT);
  }
  if (has_streaming) {
    sb_printf(h, "\n%.*s", (int)sizeof STREAMING_TEXT - 2, STREAMING_TEXT);
  }
  sb_printf(h,
            " */\n#ifndef %s_SG_H\n#define %s_SG_H\n\n"
            "#include \"sealgate/channel.h\"\n#include \"%s.pb-c.h\"\n\n"
            "#ifdef __cplusplus\nextern \"C\" {\n#endif\n",
            guard.data, guard.data, base);
  free(guard.data);
}

/* Writes service |s|'s functions: declarations into |h|, definitions into |c|. */
static void put_service(strbuf *h, strbuf *c, const file_proto *file, size_t s) {
  const service_proto *service = file->service[s];
  const int comment_path[] = {FILE_SERVICE_FIELD, (int)s};
  char *name =
      fmt("%s%s%s", file->package ? file->package : "", file->package ? "." : "", service->name);
  sb_putc(h, '\n');
  put_comment(h, name, leading_comment(file, comment_path, 2));
  for (size_t m = 0; m < service->n_method; m++) {
    const method_proto *method = service->method[m];
    method_names n = names_of(file, s, m);
    sb_putc(h, '\n');
    if (method->client_streaming) {
      put_unsupported(h, &n, method);
    } else if (method->server_streaming) {
      sb_putc(c, '\n');
      put_server_streaming(h, c, &n);
    } else {
      sb_putc(c, '\n');
      put_unary(h, c, &n);
    }
    free_names(&n);
  }
  free(name);
}

/* Appends a file to |response|; it takes |name| and |content|. */
static void add_file(Google__Protobuf__Compiler__CodeGeneratorResponse *response, char *name,
                     char *content) {
  Google__Protobuf__Compiler__CodeGeneratorResponse__File *file = malloc(sizeof *file);
  response->file = realloc(response->file, (response->n_file + 1) * sizeof *response->file);
  if (!file || !response->file) {
    die("out of memory");
  }
  google__protobuf__compiler__code_generator_response__file__init(file);
  file->name = name;
  file->content = content;
  response->file[response->n_file++] = file;
}

static void generate_file(const file_proto *file,
                          Google__Protobuf__Compiler__CodeGeneratorResponse *response) {
  char *base = strip_proto(file->name);
  strbuf h = {0}, c = {0};
  put_header_start(&h, file, base);
  sb_printf(&c, "/* Generated by protoc-gen-sealgate from %s. DO NOT EDIT. */\n", file->name);
  sb_printf(&c, "#include \"%s.sg.h\"\n", base);
  for (size_t s = 0; s < file->n_service; s++) {
    put_service(&h, &c, file, s);
  }
  sb_printf(&h, "\n#ifdef __cplusplus\n}\n#endif\n\n#endif\n");
  add_file(response, fmt("%s.sg.h", base), sb_take(&h));
  add_file(response, fmt("%s.sg.c", base), sb_take(&c));
  free(base);
}

static const file_proto *find_file(const Google__Protobuf__Compiler__CodeGeneratorRequest *req,
                                   const char *name) {
  for (size_t i = 0; i < req->n_proto_file; i++) {
    if (req->proto_file[i]->name && strcmp(req->proto_file[i]->name, name) == 0) {
      return req->proto_file[i];
    }
  }
  return NULL;
}

/* Fills |response| from |req|; returns an error message, or NULL. */
static const char *generate(const Google__Protobuf__Compiler__CodeGeneratorRequest *req,
                            Google__Protobuf__Compiler__CodeGeneratorResponse *response) {
  if (req->parameter && *req->parameter) {
    return "protoc-gen-sealgate takes no parameters";
  }
  for (size_t i = 0; i < req->n_file_to_generate; i++) {
    const file_proto *file = find_file(req, req->file_to_generate[i]);
    if (!file) {
      return "a file to generate is missing from the request";
    }
    if (file->n_service > 0) {
      generate_file(file, response);
    }
  }
  return NULL;
}

static strbuf read_all(FILE *f) {
  strbuf in = {0};
  char chunk[65536];
  size_t got;
  while ((got = fread(chunk, 1, sizeof chunk, f)) > 0) {
    sb_add(&in, chunk, got);
  }
  if (ferror(f)) {
    die("cannot read the request from stdin");
  }
  return in;
}

static void write_response(const Google__Protobuf__Compiler__CodeGeneratorResponse *response,
                           FILE *f) {
  size_t len = google__protobuf__compiler__code_generator_response__get_packed_size(response);
  uint8_t *out = malloc(len ? len : 1);
  if (!out) {
    die("out of memory");
  }
  google__protobuf__compiler__code_generator_response__pack(response, out);
  if (fwrite(out, 1, len, f) != len || fflush(f) != 0) {
    die("cannot write the response to stdout");
  }
  free(out);
}

/* Frees what generate() added to |response|. Everything is freed so that a sanitizer build's
 * leak check, which runs this plugin during the build, stays quiet. */
static void free_files(Google__Protobuf__Compiler__CodeGeneratorResponse *response) {
  for (size_t i = 0; i < response->n_file; i++) {
    free(response->file[i]->name);
    free(response->file[i]->content);
    free(response->file[i]);
  }
  free(response->file);
}

int main(void) {
  strbuf in = read_all(stdin);
  Google__Protobuf__Compiler__CodeGeneratorRequest *req =
      google__protobuf__compiler__code_generator_request__unpack(NULL, in.len,
                                                                 (const uint8_t *)in.data);
  if (!req) {
    die("stdin does not hold a CodeGeneratorRequest (run me from protoc)");
  }
  Google__Protobuf__Compiler__CodeGeneratorResponse response =
      GOOGLE__PROTOBUF__COMPILER__CODE_GENERATOR_RESPONSE__INIT;
  /* Field presence does not change what is generated: proto3 optional needs no work here. */
  response.has_supported_features = 1;
  response.supported_features =
      GOOGLE__PROTOBUF__COMPILER__CODE_GENERATOR_RESPONSE__FEATURE__FEATURE_PROTO3_OPTIONAL;
  response.error = (char *)generate(req, &response);
  write_response(&response, stdout);

  free_files(&response);
  google__protobuf__compiler__code_generator_request__free_unpacked(req, NULL);
  free(in.data);
  return 0;
}
