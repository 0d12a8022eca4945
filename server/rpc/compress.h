/* Message compression for grpc-encoding (zlib): "gzip" (RFC 1952) and "deflate" (the zlib
 * stream of RFC 1950, as grpc implementations mean it). Decompression is bounded, so a small
 * compressed message cannot expand past the message size limit (a "zip bomb"). */
#ifndef SG_RPC_COMPRESS_H
#define SG_RPC_COMPRESS_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
  SG_ENCODING_IDENTITY,
  SG_ENCODING_GZIP,
  SG_ENCODING_DEFLATE,
  SG_ENCODING_UNSUPPORTED,
} sg_encoding;

enum {
  SG_COMPRESS_ERR_TOO_LARGE = -1, /* the output would exceed the limit */
  SG_COMPRESS_ERR_CORRUPT = -2,   /* the input is not valid compressed data */
};

/* What sealgate accepts, for grpc-accept-encoding. */
#define SG_ACCEPT_ENCODINGS "identity,deflate,gzip"

/* Maps a grpc-encoding value to an encoding; anything unknown is SG_ENCODING_UNSUPPORTED. */
sg_encoding sg_encoding_parse(const char *s, size_t len);

/* "identity", "gzip" or "deflate". */
const char *sg_encoding_name(sg_encoding enc);

/* Returns nonzero if the comma-separated grpc-accept-encoding list |list| names |enc|. */
int sg_encoding_accepted(const char *list, size_t len, sg_encoding enc);

/* Decompresses |len| bytes into a malloc'd buffer of at most |max_out| bytes that the caller
 * wipes and frees (a request may carry a secret value). Returns 0, SG_COMPRESS_ERR_TOO_LARGE
 * or SG_COMPRESS_ERR_CORRUPT; on error nothing is left to free, and what was inflated is
 * wiped. */
int sg_decompress(sg_encoding enc, const uint8_t *in, size_t len, size_t max_out, uint8_t **out,
                  size_t *out_len);

/* Compresses |len| bytes into a malloc'd buffer that the caller frees. Returns 0 (it cannot
 * fail short of running out of memory, which aborts). */
int sg_compress(sg_encoding enc, const uint8_t *in, size_t len, uint8_t **out, size_t *out_len);

#endif
