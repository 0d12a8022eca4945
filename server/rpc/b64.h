/* Base64 for "-bin" metadata (PROTOCOL-HTTP2.md): senders emit it unpadded; receivers accept
 * padded and unpadded. Built on OpenSSL's EVP_EncodeBlock / EVP_DecodeBlock. */
#ifndef SG_RPC_B64_H
#define SG_RPC_B64_H

#include <stddef.h>
#include <stdint.h>

/* Room sg_b64_encode needs for |len| input bytes, including a terminating NUL. */
#define SG_B64_ENCODED_CAP(len) (((len) + 2) / 3 * 4 + 1)

/* Encodes |len| bytes unpadded into |out| (SG_B64_ENCODED_CAP(len) bytes), NUL-terminated.
 * Returns the length without the NUL. */
size_t sg_b64_encode(const uint8_t *in, size_t len, char *out);

/* Decodes |len| characters, padded or not, into |out| (room for len / 4 * 3 + 2 bytes).
 * Returns 0 and sets |*out_len|, or -1 if the text is not base64 (a bad character, a length
 * that no encoding produces, padding in the middle). */
int sg_b64_decode(const char *in, size_t len, uint8_t *out, size_t *out_len);

#endif
