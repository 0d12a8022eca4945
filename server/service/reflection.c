#include "service/reflection.h"

#include <stdlib.h>
#include <string.h>

#include "core/mem.h"
#include "google/protobuf/descriptor.pb-c.h"
#include "grpc/reflection/v1/reflection.pb-c.h"
#include "grpc/reflection/v1alpha/reflection.pb-c.h"

typedef struct {
  const char *name;
  ProtobufCBinaryData bytes; /* the serialized FileDescriptorProto, inside the set */
  Google__Protobuf__FileDescriptorProto *desc;
  size_t *deps; /* indexes into files */
  size_t n_deps;
} file_entry;

typedef struct {
  char *name; /* fully qualified, no leading dot */
  size_t file;
  int extension_number; /* > 0: an extension of message |name| */
} symbol;

static struct {
  file_entry *files;
  size_t n_files;
  symbol *symbols;
  size_t n_symbols, cap_symbols;
  const sg_router *router;
} ix;

/* --- Building the index -------------------------------------------------------------------- */

static int read_varint(const uint8_t **p, const uint8_t *end, uint64_t *v) {
  *v = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    if (*p == end)
      return -1;
    uint8_t b = *(*p)++;
    *v |= (uint64_t)(b & 0x7f) << shift;
    if (!(b & 0x80))
      return 0;
  }
  return -1;
}

static void add_symbol(char *name, size_t file, int ext) {
  if (ix.n_symbols == ix.cap_symbols) {
    ix.cap_symbols = ix.cap_symbols ? ix.cap_symbols * 2 : 64;
    ix.symbols = sg_realloc(ix.symbols, ix.cap_symbols * sizeof(*ix.symbols));
  }
  ix.symbols[ix.n_symbols++] = (symbol){name, file, ext};
}

static char *join(const char *scope, const char *name) {
  size_t a = strlen(scope), b = strlen(name);
  char *s = sg_malloc(a + b + 2);
  memcpy(s, scope, a);
  size_t n = a;
  if (a > 0)
    s[n++] = '.';
  memcpy(s + n, name, b + 1);
  return s;
}

static void add_extensions(Google__Protobuf__FieldDescriptorProto **ext, size_t n, size_t file) {
  for (size_t i = 0; i < n; i++) {
    const char *extendee = ext[i]->extendee ? ext[i]->extendee : "";
    if (extendee[0] == '.')
      extendee++;
    add_symbol(sg_strdup(extendee), file, ext[i]->number);
  }
}

static void add_enums(Google__Protobuf__EnumDescriptorProto **e, size_t n, const char *scope,
                      size_t file) {
  for (size_t i = 0; i < n; i++)
    add_symbol(join(scope, e[i]->name), file, 0);
}

static void add_messages(Google__Protobuf__DescriptorProto **m, size_t n, const char *scope,
                         size_t file) {
  for (size_t i = 0; i < n; i++) {
    char *full = join(scope, m[i]->name);
    add_symbol(full, file, 0);
    add_messages(m[i]->nested_type, m[i]->n_nested_type, full, file);
    add_enums(m[i]->enum_type, m[i]->n_enum_type, full, file);
    add_extensions(m[i]->extension, m[i]->n_extension, file);
  }
}

static void index_file(size_t f) {
  Google__Protobuf__FileDescriptorProto *d = ix.files[f].desc;
  const char *pkg = d->package ? d->package : "";
  add_messages(d->message_type, d->n_message_type, pkg, f);
  add_enums(d->enum_type, d->n_enum_type, pkg, f);
  add_extensions(d->extension, d->n_extension, f);
  for (size_t i = 0; i < d->n_service; i++) {
    char *svc = join(pkg, d->service[i]->name);
    add_symbol(svc, f, 0);
    for (size_t j = 0; j < d->service[i]->n_method; j++)
      add_symbol(join(svc, d->service[i]->method[j]->name), f, 0);
  }
}

static int cmp_symbol(const void *a, const void *b) {
  const symbol *x = a, *y = b;
  int c = strcmp(x->name, y->name);
  return c ? c : x->extension_number - y->extension_number;
}

static long find_file(const char *name) {
  for (size_t i = 0; i < ix.n_files; i++)
    if (strcmp(ix.files[i].name, name) == 0)
      return (long)i;
  return -1;
}

int sg_reflection_init(const uint8_t *set, size_t len, const sg_router *router) {
  sg_reflection_cleanup();
  ix.router = router;
  const uint8_t *p = set, *end = set + len;
  while (p < end) {
    uint64_t tag, n;
    /* FileDescriptorSet has one field: 1, length-delimited. */
    if (read_varint(&p, end, &tag) != 0 || tag != (1 << 3 | 2) || read_varint(&p, end, &n) != 0 ||
        n > (uint64_t)(end - p))
      return -1;
    Google__Protobuf__FileDescriptorProto *d =
        google__protobuf__file_descriptor_proto__unpack(NULL, (size_t)n, p);
    if (d == NULL || d->name == NULL)
      return -1;
    ix.files = sg_realloc(ix.files, (ix.n_files + 1) * sizeof(*ix.files));
    ix.files[ix.n_files++] = (file_entry){d->name, {(size_t)n, (uint8_t *)p}, d, NULL, 0};
    p += n;
  }
  for (size_t f = 0; f < ix.n_files; f++) {
    file_entry *fe = &ix.files[f];
    fe->deps = sg_calloc(fe->desc->n_dependency, sizeof(size_t));
    for (size_t i = 0; i < fe->desc->n_dependency; i++) {
      long dep = find_file(fe->desc->dependency[i]);
      if (dep < 0)
        return -1; /* --include_imports makes every dependency present */
      fe->deps[fe->n_deps++] = (size_t)dep;
    }
    index_file(f);
  }
  qsort(ix.symbols, ix.n_symbols, sizeof(*ix.symbols), cmp_symbol);
  return 0;
}

void sg_reflection_cleanup(void) {
  for (size_t i = 0; i < ix.n_files; i++) {
    google__protobuf__file_descriptor_proto__free_unpacked(ix.files[i].desc, NULL);
    free(ix.files[i].deps);
  }
  for (size_t i = 0; i < ix.n_symbols; i++)
    free(ix.symbols[i].name);
  free(ix.files);
  free(ix.symbols);
  memset(&ix, 0, sizeof(ix));
}

static const symbol *find_symbol(const char *name, int ext) {
  symbol key = {(char *)name, 0, ext};
  return bsearch(&key, ix.symbols, ix.n_symbols, sizeof(*ix.symbols), cmp_symbol);
}

/* --- Answering ----------------------------------------------------------------------------- */

/* The file and everything it imports, the file first; each once. */
static void collect(size_t f, unsigned char *seen, ProtobufCBinaryData *out, size_t *n) {
  if (seen[f])
    return;
  seen[f] = 1;
  out[(*n)++] = ix.files[f].bytes;
  for (size_t i = 0; i < ix.files[f].n_deps; i++)
    collect(ix.files[f].deps[i], seen, out, n);
}

static void set_error(sg_call *call, Grpc__Reflection__V1__ServerReflectionResponse *resp, int code,
                      const char *message) {
  Grpc__Reflection__V1__ErrorResponse *err = sg_arena_alloc(sg_call_arena(call), sizeof(*err));
  grpc__reflection__v1__error_response__init(err);
  err->error_code = code;
  err->error_message = (char *)message;
  resp->message_response_case =
      GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ERROR_RESPONSE;
  resp->error_response = err;
}

static void not_found(sg_call *call, Grpc__Reflection__V1__ServerReflectionResponse *resp,
                      const char *what, const char *name) {
  set_error(call, resp, SG_STATUS_NOT_FOUND,
            sg_arena_printf(sg_call_arena(call), "%s not found: %.200s", what, name));
}

static void set_files(sg_call *call, Grpc__Reflection__V1__ServerReflectionResponse *resp,
                      size_t f) {
  sg_arena *a = sg_call_arena(call);
  Grpc__Reflection__V1__FileDescriptorResponse *fdr = sg_arena_alloc(a, sizeof(*fdr));
  grpc__reflection__v1__file_descriptor_response__init(fdr);
  unsigned char *seen = sg_arena_zalloc(a, ix.n_files);
  fdr->file_descriptor_proto = sg_arena_alloc(a, ix.n_files * sizeof(ProtobufCBinaryData));
  collect(f, seen, fdr->file_descriptor_proto, &fdr->n_file_descriptor_proto);
  resp->message_response_case =
      GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_FILE_DESCRIPTOR_RESPONSE;
  resp->file_descriptor_response = fdr;
}

static void list_services(sg_call *call, Grpc__Reflection__V1__ServerReflectionResponse *resp) {
  sg_arena *a = sg_call_arena(call);
  size_t n;
  const sg_service *const *svcs = sg_router_services(ix.router, &n);
  Grpc__Reflection__V1__ListServiceResponse *list = sg_arena_alloc(a, sizeof(*list));
  grpc__reflection__v1__list_service_response__init(list);
  list->service = sg_arena_alloc(a, n * sizeof(*list->service));
  for (size_t i = 0; i < n; i++) {
    Grpc__Reflection__V1__ServiceResponse *s = sg_arena_alloc(a, sizeof(*s));
    grpc__reflection__v1__service_response__init(s);
    s->name = (char *)svcs[i]->descriptor->name;
    list->service[list->n_service++] = s;
  }
  resp->message_response_case =
      GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_LIST_SERVICES_RESPONSE;
  resp->list_services_response = list;
}

static void extension_numbers(sg_call *call, Grpc__Reflection__V1__ServerReflectionResponse *resp,
                              const char *type) {
  const symbol *s = find_symbol(type, 0);
  if (s == NULL) {
    not_found(call, resp, "type", type);
    return;
  }
  sg_arena *a = sg_call_arena(call);
  Grpc__Reflection__V1__ExtensionNumberResponse *en = sg_arena_alloc(a, sizeof(*en));
  grpc__reflection__v1__extension_number_response__init(en);
  en->base_type_name = (char *)type;
  en->extension_number = sg_arena_alloc(a, ix.n_symbols * sizeof(int32_t));
  /* Extensions of |type| sort right after it. */
  for (const symbol *e = s + 1; e < ix.symbols + ix.n_symbols && strcmp(e->name, type) == 0; e++)
    en->extension_number[en->n_extension_number++] = e->extension_number;
  resp->message_response_case =
      GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ALL_EXTENSION_NUMBERS_RESPONSE;
  resp->all_extension_numbers_response = en;
}

static void cancelled(sg_call *call, void *arg) {
  (void)arg;
  sg_call_finish(call, SG_STATUS_CANCELLED, NULL);
}

/* One answer per request, on a bidirectional stream; both versions decode as v1. */
static void reflection_info(sg_call *call, const ProtobufCMessage *msg) {
  if (msg == NULL) {
    sg_call_finish(call, SG_STATUS_OK, NULL);
    return;
  }
  sg_call_on_cancel(call, cancelled, NULL);
  const Grpc__Reflection__V1__ServerReflectionRequest *req = (const void *)msg;
  Grpc__Reflection__V1__ServerReflectionResponse resp =
      GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__INIT;
  resp.valid_host = req->host;
  resp.original_request = (Grpc__Reflection__V1__ServerReflectionRequest *)req;
  const symbol *s;
  long f;
  switch (req->message_request_case) {
  case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_BY_FILENAME:
    if ((f = find_file(req->file_by_filename)) < 0)
      not_found(call, &resp, "file", req->file_by_filename);
    else
      set_files(call, &resp, (size_t)f);
    break;
  case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL:
    if ((s = find_symbol(req->file_containing_symbol, 0)) == NULL)
      not_found(call, &resp, "symbol", req->file_containing_symbol);
    else
      set_files(call, &resp, s->file);
    break;
  case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_EXTENSION: {
    const Grpc__Reflection__V1__ExtensionRequest *er = req->file_containing_extension;
    const char *type = er && er->containing_type ? er->containing_type : "";
    if ((s = find_symbol(type, er ? er->extension_number : 0)) == NULL || s->extension_number <= 0)
      not_found(call, &resp, "extension of", type);
    else
      set_files(call, &resp, s->file);
    break;
  }
  case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_ALL_EXTENSION_NUMBERS_OF_TYPE:
    extension_numbers(call, &resp, req->all_extension_numbers_of_type);
    break;
  case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_LIST_SERVICES:
    list_services(call, &resp);
    break;
  default:
    set_error(call, &resp, SG_STATUS_INVALID_ARGUMENT, "no request type set");
    break;
  }
  sg_call_send(call, &resp.base);
}

static const sg_method_impl v1_methods[] = {
    {"ServerReflectionInfo", SG_METHOD_BIDI_STREAMING, reflection_info, NULL},
};
static const sg_method_impl v1alpha_methods[] = {
    {"ServerReflectionInfo", SG_METHOD_BIDI_STREAMING, reflection_info,
     &grpc__reflection__v1__server_reflection_request__descriptor},
};

const sg_service sg_reflection_v1_service = {&grpc__reflection__v1__server_reflection__descriptor,
                                             v1_methods, 1, NULL};
const sg_service sg_reflection_v1alpha_service = {
    &grpc__reflection__v1alpha__server_reflection__descriptor, v1alpha_methods, 1, NULL};
