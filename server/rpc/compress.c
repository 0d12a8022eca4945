#include "rpc/compress.h"

#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include "core/mem.h"

static int window_bits(sg_encoding enc) {
  return enc == SG_ENCODING_GZIP ? 15 + 16 : 15;
}

sg_encoding sg_encoding_parse(const char *s, size_t len) {
  static const struct {
    const char *name;
    sg_encoding enc;
  } table[] = {
      {"identity", SG_ENCODING_IDENTITY},
      {"gzip", SG_ENCODING_GZIP},
      {"deflate", SG_ENCODING_DEFLATE},
  };
  for (size_t i = 0; i < SG_ARRAY_LEN(table); i++)
    if (strlen(table[i].name) == len && memcmp(table[i].name, s, len) == 0)
      return table[i].enc;
  return SG_ENCODING_UNSUPPORTED;
}

const char *sg_encoding_name(sg_encoding enc) {
  switch (enc) {
  case SG_ENCODING_GZIP:
    return "gzip";
  case SG_ENCODING_DEFLATE:
    return "deflate";
  default:
    return "identity";
  }
}

int sg_encoding_accepted(const char *list, size_t len, sg_encoding enc) {
  const char *name = sg_encoding_name(enc);
  size_t i = 0;
  while (i < len) {
    while (i < len && (list[i] == ' ' || list[i] == ','))
      i++;
    size_t start = i;
    while (i < len && list[i] != ',' && list[i] != ' ')
      i++;
    if (i - start == strlen(name) && memcmp(list + start, name, i - start) == 0)
      return 1;
  }
  return 0;
}

int sg_decompress(sg_encoding enc, const uint8_t *in, size_t len, size_t max_out, uint8_t **out,
                  size_t *out_len) {
  z_stream zs;
  memset(&zs, 0, sizeof(zs));
  if (inflateInit2(&zs, window_bits(enc)) != Z_OK)
    sg_fatal("zlib inflateInit2 failed");
  /* One byte of room past the limit tells "too large" from "exactly at the limit". */
  size_t limit = max_out + 1;
  size_t cap = len * 4 + 64 < limit ? len * 4 + 64 : limit;
  uint8_t *buf = sg_malloc(cap);
  zs.next_in = (Bytef *)in;
  zs.avail_in = (uInt)len;
  int result;
  for (;;) {
    zs.next_out = buf + zs.total_out;
    zs.avail_out = (uInt)(cap - zs.total_out);
    int rv = inflate(&zs, Z_NO_FLUSH);
    if (rv == Z_STREAM_END) {
      /* Bytes after the end of the stream are not part of any valid message. */
      result = zs.total_out > max_out ? SG_COMPRESS_ERR_TOO_LARGE
               : zs.avail_in != 0     ? SG_COMPRESS_ERR_CORRUPT
                                      : 0;
      break;
    }
    if (rv != Z_OK && rv != Z_BUF_ERROR) {
      result = SG_COMPRESS_ERR_CORRUPT;
      break;
    }
    if (zs.avail_out != 0) {
      result = SG_COMPRESS_ERR_CORRUPT; /* input ran out before the stream ended */
      break;
    }
    if (cap == limit) {
      result = SG_COMPRESS_ERR_TOO_LARGE;
      break;
    }
    /* Not realloc: the old block holds the message so far (it may carry a secret value), and
     * is wiped before it is freed. */
    size_t grown_cap = cap * 2 < limit ? cap * 2 : limit;
    uint8_t *grown = sg_malloc(grown_cap);
    memcpy(grown, buf, zs.total_out);
    explicit_bzero(buf, zs.total_out);
    free(buf);
    buf = grown;
    cap = grown_cap;
  }
  size_t produced = zs.total_out;
  inflateEnd(&zs);
  if (result != 0) {
    explicit_bzero(buf, produced);
    free(buf);
    return result;
  }
  *out = buf;
  *out_len = produced;
  return 0;
}

int sg_compress(sg_encoding enc, const uint8_t *in, size_t len, uint8_t **out, size_t *out_len) {
  z_stream zs;
  memset(&zs, 0, sizeof(zs));
  if (deflateInit2(&zs, Z_DEFAULT_COMPRESSION, Z_DEFLATED, window_bits(enc), 8,
                   Z_DEFAULT_STRATEGY) != Z_OK)
    sg_fatal("zlib deflateInit2 failed");
  size_t cap = deflateBound(&zs, (uLong)len);
  uint8_t *buf = sg_malloc(cap);
  zs.next_in = (Bytef *)in;
  zs.avail_in = (uInt)len;
  zs.next_out = buf;
  zs.avail_out = (uInt)cap;
  if (deflate(&zs, Z_FINISH) != Z_STREAM_END)
    sg_fatal("zlib deflate did not finish within deflateBound");
  *out = buf;
  *out_len = zs.total_out;
  deflateEnd(&zs);
  return 0;
}
