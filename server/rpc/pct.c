#include "rpc/pct.h"

static int unreserved(unsigned char c) {
  return c >= 0x20 && c <= 0x7e && c != '%';
}

size_t sg_pct_encoded_len(const char *in, size_t len) {
  size_t n = 0;
  for (size_t i = 0; i < len; i++)
    n += unreserved((unsigned char)in[i]) ? 1 : 3;
  return n;
}

size_t sg_pct_encode(const char *in, size_t len, char *out) {
  static const char hex[] = "0123456789ABCDEF";
  size_t n = 0;
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)in[i];
    if (unreserved(c)) {
      out[n++] = (char)c;
    } else {
      out[n++] = '%';
      out[n++] = hex[c >> 4];
      out[n++] = hex[c & 15];
    }
  }
  return n;
}

static int hexval(char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  return -1;
}

size_t sg_pct_decode(const char *in, size_t len, char *out) {
  size_t n = 0;
  for (size_t i = 0; i < len; i++) {
    int hi, lo;
    if (in[i] == '%' && i + 2 < len && (hi = hexval(in[i + 1])) >= 0 &&
        (lo = hexval(in[i + 2])) >= 0) {
      out[n++] = (char)(hi << 4 | lo);
      i += 2;
    } else {
      out[n++] = in[i];
    }
  }
  return n;
}
