/* gRPC Length-Prefixed-Message decoding (PROTOCOL-HTTP2.md): messages reassembled across feeds
 * whatever the chunking, split when a feed holds several, bounded by the size limit before any
 * body byte is kept. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "rpc/frame.h"

#define MAX_MSGS 16

/* Every message the decoder delivered, copied out of the callback (|msg| dies with it). */
static struct {
  size_t n;
  int compressed[MAX_MSGS];
  uint8_t *msg[MAX_MSGS];
  size_t len[MAX_MSGS];
  size_t fail_at; /* the callback stops at this message (1-based; 0: never) */
} got;

static sg_frame_decoder dec;

static void setup(void) {
  memset(&got, 0, sizeof(got));
  sg_frame_decoder_init(&dec, 1024);
}

static void teardown(void) {
  for (size_t i = 0; i < got.n; i++)
    free(got.msg[i]);
  sg_frame_decoder_free(&dec);
}

TestSuite(frame, .init = setup, .fini = teardown);

static int collect(void *ud, int compressed, const uint8_t *msg, size_t len) {
  (void)ud;
  cr_assert_lt(got.n, MAX_MSGS);
  got.compressed[got.n] = compressed;
  got.len[got.n] = len;
  got.msg[got.n] = malloc(len ? len : 1);
  if (len > 0)
    memcpy(got.msg[got.n], msg, len);
  got.n++;
  return got.fail_at == got.n ? SG_FRAME_ERR_STOPPED : 0;
}

/* Appends one framed message to |out| at |*off|. */
static void put_msg(uint8_t *out, size_t *off, int compressed, const char *body, size_t len) {
  sg_frame_header_write(out + *off, compressed, (uint32_t)len);
  memcpy(out + *off + SG_FRAME_HEADER_LEN, body, len);
  *off += SG_FRAME_HEADER_LEN + len;
}

static int feed(const uint8_t *p, size_t len) {
  return sg_frame_decoder_feed(&dec, p, len, collect, NULL);
}

/* Feeds |len| bytes in pieces of |chunk| bytes, asserting each feed succeeds. */
static void feed_in_chunks(const uint8_t *p, size_t len, size_t chunk) {
  for (size_t off = 0; off < len; off += chunk) {
    size_t n = len - off < chunk ? len - off : chunk;
    cr_assert_eq(feed(p + off, n), 0, "feed at offset %zu of %zu (chunk %zu)", off, len, chunk);
  }
}

static void assert_msg(size_t i, int compressed, const char *body, size_t len) {
  cr_assert_gt(got.n, i, "message %zu was not delivered", i);
  cr_assert_eq(got.compressed[i], compressed);
  cr_assert_eq(got.len[i], len, "message %zu: length %zu, want %zu", i, got.len[i], len);
  cr_assert_arr_eq(got.msg[i], body, len);
}

Test(frame, a_whole_message_in_one_feed_is_delivered) {
  uint8_t buf[64];
  size_t n = 0;
  put_msg(buf, &n, 0, "hello", 5);

  cr_assert_eq(feed(buf, n), 0);

  cr_assert_eq(got.n, 1);
  assert_msg(0, 0, "hello", 5);
  cr_assert_eq(sg_frame_decoder_finish(&dec), 0);
}

Test(frame, a_message_split_across_feeds_is_reassembled) {
  uint8_t buf[64];
  size_t n = 0;
  put_msg(buf, &n, 0, "split message", 13);

  /* Header cut in two, body in three. */
  cr_assert_eq(feed(buf, 2), 0);
  cr_assert_eq(feed(buf + 2, 3), 0);
  cr_assert_eq(feed(buf + 5, 4), 0);
  cr_assert_eq(feed(buf + 9, 6), 0);
  cr_assert_eq(got.n, 0, "delivered before the last byte arrived");
  cr_assert_eq(feed(buf + 15, n - 15), 0);

  cr_assert_eq(got.n, 1);
  assert_msg(0, 0, "split message", 13);
  cr_assert_eq(sg_frame_decoder_finish(&dec), 0);
}

Test(frame, a_message_fed_byte_by_byte_is_reassembled) {
  uint8_t buf[64];
  size_t n = 0;
  put_msg(buf, &n, 0, "one byte at a time", 18);

  feed_in_chunks(buf, n, 1);

  cr_assert_eq(got.n, 1);
  assert_msg(0, 0, "one byte at a time", 18);
  cr_assert_eq(sg_frame_decoder_finish(&dec), 0);
}

Test(frame, several_messages_in_one_feed_are_each_delivered) {
  uint8_t buf[64];
  size_t n = 0;
  put_msg(buf, &n, 0, "first", 5);
  put_msg(buf, &n, 1, "second", 6);
  put_msg(buf, &n, 0, "3", 1);

  cr_assert_eq(feed(buf, n), 0);

  cr_assert_eq(got.n, 3);
  assert_msg(0, 0, "first", 5);
  assert_msg(1, 1, "second", 6);
  assert_msg(2, 0, "3", 1);
  cr_assert_eq(sg_frame_decoder_finish(&dec), 0);
}

Test(frame, messages_are_the_same_whatever_the_chunk_size) {
  uint8_t buf[128];
  size_t n = 0;
  put_msg(buf, &n, 0, "alpha", 5);
  put_msg(buf, &n, 0, "", 0);
  put_msg(buf, &n, 1, "a somewhat longer third message", 31);

  for (size_t chunk = 1; chunk <= n; chunk++) {
    teardown();
    setup();
    feed_in_chunks(buf, n, chunk);
    cr_assert_eq(got.n, 3, "chunk size %zu: %zu messages", chunk, got.n);
    assert_msg(0, 0, "alpha", 5);
    assert_msg(1, 0, "", 0);
    assert_msg(2, 1, "a somewhat longer third message", 31);
    cr_assert_eq(sg_frame_decoder_finish(&dec), 0, "chunk size %zu", chunk);
  }
}

Test(frame, a_large_message_over_many_feeds_is_reassembled) {
  enum { LEN = 100000 };
  sg_frame_decoder_free(&dec);
  sg_frame_decoder_init(&dec, LEN);
  uint8_t *buf = malloc(SG_FRAME_HEADER_LEN + LEN);
  char *body = malloc(LEN);
  for (size_t i = 0; i < LEN; i++)
    body[i] = (char)(i * 7 + i / 251);
  size_t n = 0;
  put_msg(buf, &n, 0, body, LEN);

  feed_in_chunks(buf, n, 997);

  cr_assert_eq(got.n, 1);
  assert_msg(0, 0, body, LEN);
  free(buf);
  free(body);
}

Test(frame, a_zero_length_message_is_delivered) {
  uint8_t hdr[SG_FRAME_HEADER_LEN];
  sg_frame_header_write(hdr, 0, 0);

  cr_assert_eq(feed(hdr, sizeof(hdr)), 0);

  cr_assert_eq(got.n, 1, "an empty message must not wait for more bytes");
  cr_assert_eq(got.len[0], 0);
  cr_assert_eq(sg_frame_decoder_finish(&dec), 0);
}

Test(frame, a_zero_length_message_between_others_is_delivered) {
  uint8_t buf[64];
  size_t n = 0;
  put_msg(buf, &n, 0, "before", 6);
  put_msg(buf, &n, 0, "", 0);
  put_msg(buf, &n, 0, "after", 5);

  cr_assert_eq(feed(buf, n), 0);

  cr_assert_eq(got.n, 3);
  assert_msg(0, 0, "before", 6);
  assert_msg(1, 0, "", 0);
  assert_msg(2, 0, "after", 5);
}

Test(frame, finish_before_any_input_is_ok) {
  cr_assert_eq(sg_frame_decoder_finish(&dec), 0);
}

Test(frame, finish_inside_a_header_is_truncated) {
  uint8_t buf[64];
  size_t n = 0;
  put_msg(buf, &n, 0, "x", 1);

  cr_assert_eq(feed(buf, 3), 0);

  cr_assert_eq(sg_frame_decoder_finish(&dec), SG_FRAME_ERR_TRUNCATED);
  cr_assert_eq(got.n, 0);
}

Test(frame, finish_inside_a_body_is_truncated) {
  uint8_t buf[64];
  size_t n = 0;
  put_msg(buf, &n, 0, "cut short", 9);

  cr_assert_eq(feed(buf, n - 1), 0);

  cr_assert_eq(sg_frame_decoder_finish(&dec), SG_FRAME_ERR_TRUNCATED);
  cr_assert_eq(got.n, 0);
}

Test(frame, finish_after_a_complete_header_with_no_body_is_truncated) {
  uint8_t hdr[SG_FRAME_HEADER_LEN];
  sg_frame_header_write(hdr, 0, 10);

  cr_assert_eq(feed(hdr, sizeof(hdr)), 0);

  cr_assert_eq(sg_frame_decoder_finish(&dec), SG_FRAME_ERR_TRUNCATED);
}

Test(frame, a_declared_length_over_the_limit_fails_at_the_header) {
  uint8_t hdr[SG_FRAME_HEADER_LEN];
  sg_frame_header_write(hdr, 0, 1025);

  /* Only the header: the limit is enforced before a single body byte arrives. */
  cr_assert_eq(feed(hdr, 4), 0);
  cr_assert_eq(feed(hdr + 4, 1), SG_FRAME_ERR_TOO_LARGE);

  cr_assert_eq(dec.declared_len, 1025);
  cr_assert_eq(dec.buf_len, 0);
  cr_assert_eq(dec.buf_cap, 0, "nothing may be buffered for an oversized message");
  cr_assert_eq(got.n, 0);
}

Test(frame, a_declared_length_over_the_limit_buffers_none_of_the_body) {
  uint8_t buf[2048];
  size_t n = 0;
  char body[1500];
  memset(body, 'b', sizeof(body));
  put_msg(buf, &n, 0, body, sizeof(body));

  cr_assert_eq(feed(buf, n), SG_FRAME_ERR_TOO_LARGE);

  cr_assert_eq(dec.declared_len, 1500);
  cr_assert_eq(dec.buf_cap, 0);
  cr_assert_eq(got.n, 0);
}

Test(frame, a_huge_declared_length_is_reported_with_its_value) {
  uint8_t hdr[SG_FRAME_HEADER_LEN] = {0, 0xff, 0xff, 0xff, 0xff};

  cr_assert_eq(feed(hdr, sizeof(hdr)), SG_FRAME_ERR_TOO_LARGE);

  cr_assert_eq(dec.declared_len, 0xffffffffu);
}

Test(frame, a_message_exactly_at_the_limit_is_accepted) {
  uint8_t buf[SG_FRAME_HEADER_LEN + 1024];
  char body[1024];
  for (size_t i = 0; i < sizeof(body); i++)
    body[i] = (char)i;
  size_t n = 0;
  put_msg(buf, &n, 0, body, sizeof(body));

  /* Split so that the body is buffered, not handed over in place. */
  feed_in_chunks(buf, n, 100);

  cr_assert_eq(got.n, 1);
  assert_msg(0, 0, body, sizeof(body));
}

Test(frame, the_compressed_flag_is_passed_through) {
  uint8_t buf[64];
  size_t n = 0;
  put_msg(buf, &n, 1, "zipped", 6);
  put_msg(buf, &n, 0, "plain", 5);

  cr_assert_eq(feed(buf, n), 0);

  cr_assert_eq(got.n, 2);
  assert_msg(0, 1, "zipped", 6);
  assert_msg(1, 0, "plain", 5);
}

Test(frame, a_compressed_flag_other_than_0_or_1_is_rejected) {
  uint8_t buf[64];
  size_t n = 0;
  put_msg(buf, &n, 0, "body", 4);
  buf[0] = 2;

  cr_assert_eq(feed(buf, n), SG_FRAME_ERR_BAD_FLAG);

  cr_assert_eq(got.n, 0);
}

Test(frame, a_callback_that_stops_ends_decoding_and_its_code_is_returned) {
  uint8_t buf[64];
  size_t n = 0;
  put_msg(buf, &n, 0, "one", 3);
  put_msg(buf, &n, 0, "two", 3);
  put_msg(buf, &n, 0, "three", 5);
  got.fail_at = 2;

  cr_assert_eq(feed(buf, n), SG_FRAME_ERR_STOPPED);

  cr_assert_eq(got.n, 2, "the message after the failing callback was delivered");
}

Test(frame, the_decoder_refuses_input_after_a_bad_flag) {
  uint8_t bad[SG_FRAME_HEADER_LEN] = {7, 0, 0, 0, 1};
  uint8_t good[64];
  size_t n = 0;
  put_msg(good, &n, 0, "ok", 2);
  cr_assert_eq(feed(bad, sizeof(bad)), SG_FRAME_ERR_BAD_FLAG);

  cr_assert_eq(feed(good, n), SG_FRAME_ERR_BAD_FLAG);

  cr_assert_eq(got.n, 0);
}

Test(frame, the_decoder_refuses_input_after_a_callback_error) {
  uint8_t buf[64];
  size_t n = 0;
  put_msg(buf, &n, 0, "one", 3);
  got.fail_at = 1;
  cr_assert_eq(feed(buf, n), SG_FRAME_ERR_STOPPED);

  cr_assert_eq(feed(buf, n), SG_FRAME_ERR_BAD_FLAG);

  cr_assert_eq(got.n, 1);
}

Test(frame, the_decoder_refuses_input_after_an_oversized_header) {
  uint8_t hdr[SG_FRAME_HEADER_LEN];
  sg_frame_header_write(hdr, 0, 5000);
  uint8_t good[64];
  size_t n = 0;
  put_msg(good, &n, 0, "ok", 2);
  cr_assert_eq(feed(hdr, sizeof(hdr)), SG_FRAME_ERR_TOO_LARGE);

  cr_assert_eq(feed(good, n), SG_FRAME_ERR_BAD_FLAG);

  cr_assert_eq(got.n, 0);
}

Test(frame, the_header_writer_emits_the_flag_and_a_big_endian_length) {
  uint8_t hdr[SG_FRAME_HEADER_LEN];

  sg_frame_header_write(hdr, 1, 0x01020304);

  uint8_t want[] = {1, 0x01, 0x02, 0x03, 0x04};
  cr_assert_arr_eq(hdr, want, sizeof(want));
}

Test(frame, the_header_writer_maps_any_nonzero_compressed_to_1) {
  uint8_t hdr[SG_FRAME_HEADER_LEN];

  sg_frame_header_write(hdr, 5, 0);

  cr_assert_eq(hdr[0], 1);
}

Test(frame, a_written_header_decodes_to_the_same_flag_and_length) {
  sg_frame_decoder_free(&dec);
  sg_frame_decoder_init(&dec, 70000);
  static uint8_t buf[SG_FRAME_HEADER_LEN + 70000];
  static char body[70000];
  memset(body, 'r', sizeof(body));
  size_t n = 0;
  put_msg(buf, &n, 1, body, 65536 + 3); /* a length that uses three header bytes */

  cr_assert_eq(feed(buf, n), 0);

  cr_assert_eq(got.n, 1);
  assert_msg(0, 1, body, 65536 + 3);
}
