/* Percent-encoding of grpc-message (PROTOCOL-HTTP2.md): bytes 0x20-0x7E other than '%' stay as
 * they are, every other byte becomes %XX with upper-case hex. Decoding never fails: a '%' not
 * followed by two hex digits is kept literally, as the spec asks of decoders. */
#ifndef SG_RPC_PCT_H
#define SG_RPC_PCT_H

#include <stddef.h>

/* Bytes sg_pct_encode will write for |in| (at most 3 * len). */
size_t sg_pct_encoded_len(const char *in, size_t len);

/* Encodes |len| bytes of |in| into |out|, which has room for sg_pct_encoded_len bytes.
 * Returns the number of bytes written (no NUL is added). */
size_t sg_pct_encode(const char *in, size_t len, char *out);

/* Decodes |len| bytes of |in| into |out| (room for |len| bytes; may equal |in|). Returns the
 * number of bytes written. */
size_t sg_pct_decode(const char *in, size_t len, char *out);

#endif
