/* Request messages through the dispatcher's decoding (rpc/h2.c on_message): the string check
 * (rpc/pbcheck.h), protobuf-c unpacking into an arena under the memory budget a call gets, and
 * the input rules (service/validate.h), for every request message type the gateway routes
 * (sealgate.v1's four services, health, both reflection versions). The first input byte picks
 * the method; the rest is the message.
 *
 * Checked: sg_pb_check_strings names a field when it refuses; a message it passes and
 * protobuf-c unpacks has only valid UTF-8 in its strings, at any depth; it packs again, and
 * that encoding passes the check and is stable (pack(unpack(pack(m))) == pack(m)). Every
 * string, list and page_size of the decoded message goes through the validators the handlers
 * use, which must refuse with a message that names the field, or accept only what their rule
 * says (names of the allowed characters and lengths, canonical UUIDs, RFC 3339 times, host
 * lists normalized and without duplicates, page sizes 1..1000). */
#include "crypto/token.h"
#include "fuzz.h"
#include "policy/host.h"
#include "rpc/pbcheck.h"
#include "rpc/router.h"
#include "service/api.h"
#include "service/health.h"
#include "service/reflection.h"
#include "service/validate.h"

static sg_router *router;

/* Valid UTF-8 (no overlongs, surrogates or code points past U+10FFFF), independently of
 * pbcheck. */
static int utf8_ok(const uint8_t *s, size_t len) {
  for (size_t i = 0; i < len;) {
    uint8_t c = s[i];
    size_t n;
    uint32_t cp;
    if (c < 0x80) {
      i++;
      continue;
    } else if ((c & 0xe0) == 0xc0) {
      n = 1, cp = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
      n = 2, cp = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
      n = 3, cp = c & 0x07;
    } else {
      return 0;
    }
    if (i + n >= len)
      return 0;
    for (size_t j = 1; j <= n; j++) {
      if ((s[i + j] & 0xc0) != 0x80)
        return 0;
      cp = cp << 6 | (s[i + j] & 0x3f);
    }
    if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) ||
        cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
      return 0;
    i += n + 1;
  }
  return 1;
}

static int only(const char *s, const char *set_extra, int digits_first) {
  for (size_t i = 0; s[i]; i++) {
    char c = s[i];
    int alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
    int digit = c >= '0' && c <= '9';
    if (!(alpha || digit || strchr(set_extra, c)))
      return 0;
    if (i == 0 && digit && !digits_first)
      return 0;
  }
  return 1;
}

static void check_refusal(int rc, const char *field, const char *err) {
  if (rc != 0) {
    FUZZ_CHECK(rc == -1);
    FUZZ_CHECK(strncmp(err, field, strlen(field)) == 0);
  }
}

/* A string field through every validator that takes one. */
static void validate_string(const char *field, const char *s) {
  char err[256];
  size_t len = strlen(s);
  int rc = sg_validate_store_name(field, s, err, sizeof(err));
  check_refusal(rc, field, err);
  if (rc == 0)
    FUZZ_CHECK(len >= 1 && len <= 128 && only(s, "._-", 1));
  rc = sg_validate_secret_name(field, s, err, sizeof(err));
  check_refusal(rc, field, err);
  if (rc == 0)
    FUZZ_CHECK(len >= 1 && len <= 128 && only(s, "_", 0));
  rc = sg_validate_id(field, s, err, sizeof(err));
  check_refusal(rc, field, err);
  if (rc == 0)
    FUZZ_CHECK(len >= 1);
  rc = sg_validate_uuid(field, s, err, sizeof(err));
  check_refusal(rc, field, err);
  if (rc == 0) {
    FUZZ_CHECK(len == SG_UUID_LEN);
    for (size_t i = 0; i < len; i++)
      FUZZ_CHECK((i == 8 || i == 13 || i == 18 || i == 23)
                     ? s[i] == '-'
                     : strchr("0123456789abcdefABCDEF", s[i]) != NULL);
  }
  rc = sg_validate_time(field, s, err, sizeof(err));
  check_refusal(rc, field, err);
  if (rc == 0) /* 2026-11-27T22:41:40Z at the least */
    FUZZ_CHECK(len >= 20 && s[4] == '-' && s[7] == '-' && s[13] == ':' && s[16] == ':');
  rc = sg_validate_value(field, len, err, sizeof(err));
  check_refusal(rc, field, err);
  FUZZ_CHECK((rc == 0) == (len >= 1 && len <= SG_VALUE_MAX));
}

/* A list of strings as a list of host patterns. */
static void validate_list(const char *field, char *const *items, size_t n, sg_arena *a) {
  char err[256], **out;
  size_t n_out;
  int rc = sg_validate_hosts(field, items, n, a, &out, &n_out, err, sizeof(err));
  check_refusal(rc, field, err);
  if (rc != 0)
    return;
  FUZZ_CHECK(n_out <= n);
  for (size_t i = 0; i < n_out; i++) {
    char again[SG_HOST_MAX + 1];
    const char *why;
    FUZZ_CHECK(sg_host_pattern_normalize(out[i], strlen(out[i]), again, &why) == 0);
    FUZZ_CHECK(strcmp(again, out[i]) == 0);
    for (size_t j = 0; j < i; j++)
      FUZZ_CHECK(strcmp(out[i], out[j]) != 0);
  }
}

static int present(const ProtobufCMessage *m, const ProtobufCFieldDescriptor *f) {
  if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF)
    return *(const uint32_t *)((const char *)m + f->quantifier_offset) == f->id;
  return 1;
}

/* Walks |m|: every string valid UTF-8 and through the validators. Drops unknown fields on the
 * way: the handlers never read them, and protobuf-c keeps some it cannot write back (a tag of
 * field number 0 spelled in two bytes, 0x82 0x00, unpacks; written as 0x02 it does not). */
static void walk(ProtobufCMessage *m, sg_arena *a, int depth) {
  FUZZ_CHECK(depth < 64);
  m->n_unknown_fields = 0;
  const ProtobufCMessageDescriptor *d = m->descriptor;
  for (unsigned i = 0; i < d->n_fields; i++) {
    const ProtobufCFieldDescriptor *f = &d->fields[i];
    const char *at = (const char *)m + f->offset;
    if (!present(m, f))
      continue;
    if (f->label == PROTOBUF_C_LABEL_REPEATED) {
      size_t n = *(const size_t *)((const char *)m + f->quantifier_offset);
      if (f->type == PROTOBUF_C_TYPE_STRING) {
        char *const *items = *(char *const *const *)at;
        for (size_t j = 0; j < n; j++) {
          FUZZ_CHECK(items[j] != NULL && utf8_ok((const uint8_t *)items[j], strlen(items[j])));
          validate_string(f->name, items[j]);
        }
        validate_list(f->name, items, n, a);
      } else if (f->type == PROTOBUF_C_TYPE_MESSAGE) {
        ProtobufCMessage *const *items = *(ProtobufCMessage *const *const *)at;
        for (size_t j = 0; j < n; j++)
          walk(items[j], a, depth + 1);
      }
    } else if (f->type == PROTOBUF_C_TYPE_STRING) {
      const char *s = *(const char *const *)at;
      if (s != NULL) {
        FUZZ_CHECK(utf8_ok((const uint8_t *)s, strlen(s)));
        validate_string(f->name, s);
      }
    } else if (f->type == PROTOBUF_C_TYPE_MESSAGE) {
      ProtobufCMessage *sub = *(ProtobufCMessage *const *)at;
      if (sub != NULL)
        walk(sub, a, depth + 1);
    } else if (f->type == PROTOBUF_C_TYPE_INT32 && strcmp(f->name, "page_size") == 0) {
      int32_t in = *(const int32_t *)at, out = -1;
      char err[256];
      int rc = sg_validate_page_size(f->name, in, &out, err, sizeof(err));
      check_refusal(rc, f->name, err);
      FUZZ_CHECK((rc == 0) == (in >= 0 && in <= 1000));
      if (rc == 0)
        FUZZ_CHECK(out >= 1 && out <= 1000 && (in == 0 || out == in));
    }
  }
}

static uint8_t *pack(const ProtobufCMessage *m, size_t *len) {
  *len = protobuf_c_message_get_packed_size(m);
  uint8_t *buf = malloc(*len ? *len : 1);
  FUZZ_CHECK(protobuf_c_message_pack(m, buf) == *len);
  return buf;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (router == NULL) {
    router = sg_router_new();
    sg_api_register(router);
    sg_router_add(router, &sg_health_service);
    sg_router_add(router, &sg_reflection_v1_service);
    sg_router_add(router, &sg_reflection_v1alpha_service);
  }
  if (size == 0)
    return 0;
  const sg_route *route = sg_router_route(router, data[0] % sg_router_count(router));
  /* The message, copied to exactly its size so ASan sees reads past it. */
  size_t len = size - 1;
  uint8_t *msg = fuzz_copy(data + 1, len);

  char where[96];
  memset(where, 0x55, sizeof(where));
  int checked = sg_pb_check_strings(route->input, msg, len, where, sizeof(where));
  if (checked != 0) {
    FUZZ_CHECK(checked == -1);
    FUZZ_CHECK(memchr(where, '\0', sizeof(where)) != NULL && where[0] != '\0');
  }
  sg_arena *a = sg_arena_new();
  ProtobufCAllocator *alloc = sg_arena_allocator(a);
  /* The budget rpc/call.c gives a call whose max message is the message's size. */
  sg_arena_set_pb_budget(a, sg_arena_used(a) + 4 * len + 65536);
  ProtobufCMessage *m = protobuf_c_message_unpack(route->input, alloc, len, msg);
  sg_arena_set_pb_budget(a, 0);
  if (m != NULL && checked == 0) {
    FUZZ_CHECK(protobuf_c_message_check(m));
    walk(m, a, 0);
    size_t n1, n2;
    uint8_t *p1 = pack(m, &n1);
    FUZZ_CHECK(sg_pb_check_strings(route->input, p1, n1, where, sizeof(where)) == 0);
    ProtobufCMessage *m2 = protobuf_c_message_unpack(route->input, alloc, n1, p1);
    FUZZ_CHECK(m2 != NULL);
    uint8_t *p2 = pack(m2, &n2);
    FUZZ_CHECK(n1 == n2 && (n1 == 0 || memcmp(p1, p2, n1) == 0));
    free(p1);
    free(p2);
  }
  sg_arena_free(a);
  free(msg);
  return 0;
}
