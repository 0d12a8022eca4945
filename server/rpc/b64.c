#include "rpc/b64.h"

#include <string.h>

#include <openssl/evp.h>

size_t sg_b64_encode(const uint8_t *in, size_t len, char *out) {
  int n = EVP_EncodeBlock((unsigned char *)out, in, (int)len);
  while (n > 0 && out[n - 1] == '=')
    n--;
  out[n] = '\0';
  return (size_t)n;
}

/* EVP_DecodeBlock is lenient: it skips leading blanks and drops trailing blanks, line ends and
 * '-' (its end-of-data marker) before decoding, so "Zm9v----" would decode as "Zm9v". Base64 in
 * a header has none of these, so every character before the padding is checked here. */
static int in_alphabet(unsigned char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
         c == '/';
}

int sg_b64_decode(const char *in, size_t len, uint8_t *out, size_t *out_len) {
  size_t pad = 0;
  while (len > 0 && in[len - 1] == '=' && pad < 2) {
    len--;
    pad++;
  }
  if (len % 4 == 1 || (pad > 0 && (len + pad) % 4 != 0))
    return -1;
  for (size_t i = 0; i < len; i++)
    if (!in_alphabet((unsigned char)in[i]))
      return -1;
  size_t full = len / 4 * 4, tail = len - full;
  int n = full ? EVP_DecodeBlock(out, (const unsigned char *)in, (int)full) : 0;
  if (n < 0)
    return -1;
  size_t total = (size_t)n;
  if (tail > 0) {
    /* Re-pad the last group and decode it on its own. */
    char group[4] = {'=', '=', '=', '='};
    uint8_t bytes[3];
    memcpy(group, in + full, tail);
    if (EVP_DecodeBlock(bytes, (const unsigned char *)group, 4) < 0)
      return -1;
    memcpy(out + total, bytes, tail - 1);
    total += tail - 1;
  }
  *out_len = total;
  return 0;
}
