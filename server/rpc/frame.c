#include "rpc/frame.h"

#include <stdlib.h>
#include <string.h>

#include "core/mem.h"

void sg_frame_decoder_init(sg_frame_decoder *d, size_t max_len) {
  memset(d, 0, sizeof(*d));
  d->max_len = max_len;
}

void sg_frame_decoder_free(sg_frame_decoder *d) {
  if (d->buf != NULL)
    explicit_bzero(d->buf, d->buf_cap); /* a message being reassembled may carry a value */
  free(d->buf);
  d->buf = NULL;
  d->buf_len = d->buf_cap = 0;
}

void sg_frame_header_write(uint8_t out[SG_FRAME_HEADER_LEN], int compressed, uint32_t len) {
  out[0] = compressed ? 1 : 0;
  out[1] = (uint8_t)(len >> 24);
  out[2] = (uint8_t)(len >> 16);
  out[3] = (uint8_t)(len >> 8);
  out[4] = (uint8_t)len;
}

/* Validates a complete header. */
static int header_done(sg_frame_decoder *d) {
  if (d->hdr[0] > 1)
    return SG_FRAME_ERR_BAD_FLAG;
  d->compressed = d->hdr[0];
  d->declared_len =
      (uint32_t)d->hdr[1] << 24 | (uint32_t)d->hdr[2] << 16 | (uint32_t)d->hdr[3] << 8 | d->hdr[4];
  if (d->declared_len > d->max_len)
    return SG_FRAME_ERR_TOO_LARGE;
  return 0;
}

/* Grows the body buffer for |more| bytes. The buffer grows with what has arrived, never to the
 * declared length up front, so a peer announcing a large message and sending nothing costs
 * nothing. */
static void reserve(sg_frame_decoder *d, size_t more) {
  size_t need = d->buf_len + more;
  if (need <= d->buf_cap)
    return;
  size_t cap = d->buf_cap ? d->buf_cap : 256;
  while (cap < need)
    cap *= 2;
  if (cap > d->declared_len)
    cap = d->declared_len;
  /* Not realloc: the old block, holding the message so far, is wiped before it is freed. */
  uint8_t *grown = sg_malloc(cap);
  if (d->buf != NULL) {
    memcpy(grown, d->buf, d->buf_len);
    explicit_bzero(d->buf, d->buf_cap);
    free(d->buf);
  }
  d->buf = grown;
  d->buf_cap = cap;
}

int sg_frame_decoder_feed(sg_frame_decoder *d, const uint8_t *p, size_t len, sg_frame_cb cb,
                          void *ud) {
  if (d->failed)
    return SG_FRAME_ERR_BAD_FLAG;
  while (len > 0) {
    if (d->hdr_len < SG_FRAME_HEADER_LEN) {
      size_t n = SG_FRAME_HEADER_LEN - d->hdr_len;
      if (n > len)
        n = len;
      memcpy(d->hdr + d->hdr_len, p, n);
      d->hdr_len += n;
      p += n;
      len -= n;
      if (d->hdr_len < SG_FRAME_HEADER_LEN)
        break;
      int rv = header_done(d);
      if (rv != 0) {
        d->failed = 1;
        return rv;
      }
    }
    size_t want = d->declared_len - d->buf_len;
    const uint8_t *msg;
    if (d->buf_len == 0 && len >= want) {
      msg = p; /* the whole message is here: no copy */
    } else {
      if (len == 0)
        break; /* the body is still to come; memcpy to a NULL buffer would be undefined */
      size_t n = want < len ? want : len;
      reserve(d, n);
      memcpy(d->buf + d->buf_len, p, n);
      d->buf_len += n;
      p += n;
      len -= n;
      if (d->buf_len < d->declared_len)
        break;
      msg = d->buf;
      want = 0;
    }
    p += want;
    len -= want;
    d->hdr_len = 0;
    d->buf_len = 0;
    int rv = cb(ud, d->compressed, msg, d->declared_len);
    if (rv != 0) {
      d->failed = 1;
      return rv;
    }
  }
  return 0;
}

int sg_frame_decoder_finish(const sg_frame_decoder *d) {
  return d->hdr_len == 0 ? 0 : SG_FRAME_ERR_TRUNCATED;
}
