/* gRPC Length-Prefixed-Message framing (PROTOCOL-HTTP2.md): a 1-byte compressed flag, a 4-byte
 * big-endian length, then the message. DATA frame boundaries have no relation to message
 * boundaries, so the decoder reassembles messages split across chunks and splits chunks that
 * hold several messages. It knows nothing of sockets or HTTP/2. */
#ifndef SG_RPC_FRAME_H
#define SG_RPC_FRAME_H

#include <stddef.h>
#include <stdint.h>

#define SG_FRAME_HEADER_LEN 5

enum {
  SG_FRAME_ERR_TOO_LARGE = -1, /* a declared length exceeds max_len (see declared_len) */
  SG_FRAME_ERR_BAD_FLAG = -2,  /* the compressed flag is neither 0 nor 1 */
  SG_FRAME_ERR_TRUNCATED = -3, /* the stream ended inside a message */
  SG_FRAME_ERR_STOPPED = -4,   /* returned by a callback to stop decoding */
};

typedef struct {
  size_t max_len; /* largest message accepted */
  uint8_t hdr[SG_FRAME_HEADER_LEN];
  size_t hdr_len;        /* header bytes collected so far */
  uint32_t declared_len; /* length from the current header */
  int compressed;
  uint8_t *buf; /* partial message body (malloc'd, grown as bytes arrive) */
  size_t buf_len, buf_cap;
  int failed; /* after an error the decoder accepts nothing more */
} sg_frame_decoder;

/* Called once per complete message. |msg| is valid only during the call; it points into the
 * fed bytes when the message arrived whole, else into the decoder's buffer. Returns 0 to go
 * on, or SG_FRAME_ERR_STOPPED to stop decoding (sg_frame_decoder_feed then returns it). */
typedef int (*sg_frame_cb)(void *user_data, int compressed, const uint8_t *msg, size_t len);

void sg_frame_decoder_init(sg_frame_decoder *d, size_t max_len);

/* Releases the partial-message buffer. */
void sg_frame_decoder_free(sg_frame_decoder *d);

/* Feeds |len| bytes. Returns 0, SG_FRAME_ERR_TOO_LARGE as soon as a header declares more than
 * max_len (before any of the body is buffered), SG_FRAME_ERR_BAD_FLAG, or
 * SG_FRAME_ERR_STOPPED from |cb|. After an error every later call returns
 * SG_FRAME_ERR_BAD_FLAG. */
int sg_frame_decoder_feed(sg_frame_decoder *d, const uint8_t *data, size_t len, sg_frame_cb cb,
                          void *user_data);

/* At end of stream: returns 0 if the decoder stands between messages, SG_FRAME_ERR_TRUNCATED if
 * a header or body was cut short. */
int sg_frame_decoder_finish(const sg_frame_decoder *d);

/* Writes a message header for a |len|-byte message. */
void sg_frame_header_write(uint8_t out[SG_FRAME_HEADER_LEN], int compressed, uint32_t len);

#endif
