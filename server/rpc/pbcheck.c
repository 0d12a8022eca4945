#include "rpc/pbcheck.h"

#include <stdio.h>
#include <string.h>

/* Bounded: messages nest at most this deep before the check gives up (protobuf-c refuses
 * deeper ones anyway). */
#define MAX_DEPTH 32

static int read_varint(const uint8_t **p, const uint8_t *end, uint64_t *v) {
  *v = 0;
  for (int shift = 0; shift < 64 && *p < end; shift += 7) {
    uint8_t b = *(*p)++;
    *v |= (uint64_t)(b & 0x7f) << shift;
    if (!(b & 0x80))
      return 0;
  }
  return -1;
}

/* UTF-8 as RFC 3629 defines it (no overlongs, no surrogates, nothing above U+10FFFF), and no
 * NUL. */
static int good_text(const uint8_t *s, size_t n) {
  size_t i = 0;
  while (i < n) {
    uint8_t c = s[i];
    if (c == 0)
      return 0;
    if (c < 0x80) {
      i++;
      continue;
    }
    size_t len;
    uint32_t cp, min;
    if ((c & 0xe0) == 0xc0)
      len = 2, cp = c & 0x1f, min = 0x80;
    else if ((c & 0xf0) == 0xe0)
      len = 3, cp = c & 0x0f, min = 0x800;
    else if ((c & 0xf8) == 0xf0)
      len = 4, cp = c & 0x07, min = 0x10000;
    else
      return 0;
    if (i + len > n)
      return 0;
    for (size_t k = 1; k < len; k++) {
      if ((s[i + k] & 0xc0) != 0x80)
        return 0;
      cp = cp << 6 | (s[i + k] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
      return 0;
    i += len;
  }
  return 1;
}

/* Appends ".name" (or "name" at the top) and "[i]" for a repeated field to |where|. */
static void name_field(char *where, size_t cap, const ProtobufCFieldDescriptor *f, unsigned index) {
  size_t n = strlen(where);
  if (n >= cap)
    return;
  if (f->label == PROTOBUF_C_LABEL_REPEATED)
    snprintf(where + n, cap - n, "%s%s[%u]", n ? "." : "", f->name, index);
  else
    snprintf(where + n, cap - n, "%s%s", n ? "." : "", f->name);
}

static int check(const ProtobufCMessageDescriptor *desc, const uint8_t *p, const uint8_t *end,
                 int depth, char *where, size_t cap) {
  if (depth > MAX_DEPTH)
    return 0;
  /* Occurrences so far of each field, to name the element of a repeated one. */
  unsigned seen[64] = {0};
  size_t base = strlen(where);
  while (p < end) {
    uint64_t key, v;
    if (read_varint(&p, end, &key) != 0)
      return 0;
    unsigned wire = key & 7;
    const ProtobufCFieldDescriptor *f =
        protobuf_c_message_descriptor_get_field(desc, (unsigned)(key >> 3));
    size_t fi = f ? (size_t)(f - desc->fields) : 0;
    unsigned index = f && fi < 64 ? seen[fi]++ : 0;
    switch (wire) {
    case 0: /* varint */
      if (read_varint(&p, end, &v) != 0)
        return 0;
      break;
    case 1: /* 64-bit */
      if (end - p < 8)
        return 0;
      p += 8;
      break;
    case 5: /* 32-bit */
      if (end - p < 4)
        return 0;
      p += 4;
      break;
    case 2: /* length-delimited */
      if (read_varint(&p, end, &v) != 0 || v > (uint64_t)(end - p))
        return 0;
      if (f != NULL && f->type == PROTOBUF_C_TYPE_STRING && !good_text(p, (size_t)v)) {
        name_field(where, cap, f, index);
        return -1;
      }
      if (f != NULL && f->type == PROTOBUF_C_TYPE_MESSAGE) {
        name_field(where, cap, f, index);
        if (check(f->descriptor, p, p + v, depth + 1, where, cap) != 0)
          return -1;
        where[base] = '\0';
      }
      p += v;
      break;
    default: /* groups and garbage: protobuf-c decides */
      return 0;
    }
  }
  return 0;
}

int sg_pb_check_strings(const ProtobufCMessageDescriptor *desc, const uint8_t *data, size_t len,
                        char *where, size_t cap) {
  if (cap == 0)
    return 0;
  where[0] = '\0';
  return check(desc, data, data + len, 0, where, cap);
}
