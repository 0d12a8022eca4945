/* The streaming token replacer (proxy/scan.h). The input is a stream in which the byte 0x01
 * followed by a byte k stands for a well-formed sealed token made from k, and 0x02 for the
 * bare prefix "osb_sealed_", so the fuzzer reaches tokens, near-tokens and tokens glued
 * together without guessing 43 bytes. The lookup knows three tokens in four (by a hash of the
 * digits), giving values of 0 to 80 bytes with no 'o' in them.
 *
 * Checked: the output of the stream fed in one piece, fed in input-derived pieces (empty ones
 * included), and of sg_scan_replace_all are equal to a reference written here from the
 * contract (at each position a complete token the lookup knows is replaced, every other byte
 * passes); so are the replacement counts. No token the lookup knows is left in the output.
 * A sink that fails stops the scan for good, after a prefix of the reference output. */
#include "fuzz.h"
#include "proxy/scan.h"

static int is_lower_hex(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

static int is_token(const char *p, size_t left) {
  if (left < SG_TOKEN_LEN || memcmp(p, SG_TOKEN_PREFIX, SG_TOKEN_PREFIX_LEN) != 0)
    return 0;
  for (size_t i = SG_TOKEN_PREFIX_LEN; i < SG_TOKEN_LEN; i++)
    if (!is_lower_hex(p[i]))
      return 0;
  return 1;
}

static uint32_t digits_hash(const char *token) {
  uint32_t h = 2166136261u;
  for (size_t i = SG_TOKEN_PREFIX_LEN; i < SG_TOKEN_LEN; i++)
    h = (h ^ (uint8_t)token[i]) * 16777619u;
  return h;
}

/* The value of a known token, or -1 for an unknown one; written into |out| (>= 82 bytes). */
static int value_of(const char *token, char *out) {
  uint32_t h = digits_hash(token);
  if (h % 4 == 0)
    return -1;
  int n = (int)(h >> 8) % 81;
  for (int i = 0; i < n; i++)
    out[i] = "0123456789abcdefABCDEF-_=+/ \r\n"[(h >> (i % 24)) % 31];
  if (n > 0)
    out[0] = '['; /* not a hex digit: a value cannot finish a token begun before it */
  return n;
}

/* Every value handed out, freed at the end of the input: the contract only asks that a value
 * outlive the feed that asked for it. */
typedef struct {
  char **values;
  size_t n, cap, lookups;
} lookup_state;

static int lookup(void *arg, const char *token, const char **value, size_t *len) {
  lookup_state *st = arg;
  st->lookups++;
  FUZZ_CHECK(is_token(token, SG_TOKEN_LEN)); /* asked only about complete candidates */
  char buf[96];
  int n = value_of(token, buf);
  if (n < 0)
    return 0;
  if (st->n == st->cap) {
    st->cap = st->cap ? 2 * st->cap : 16;
    st->values = realloc(st->values, st->cap * sizeof(char *));
  }
  char *v = malloc((size_t)n + 1);
  memcpy(v, buf, (size_t)n);
  st->values[st->n++] = v;
  *value = v;
  *len = (size_t)n;
  return 1;
}

/* |*empty| is set when an empty value was put in: the bytes around it then meet. */
static void reference(const char *in, size_t len, fuzz_buf *out, size_t *count, int *empty) {
  char buf[96];
  for (size_t i = 0; i < len;) {
    int n;
    if (is_token(in + i, len - i) && (n = value_of(in + i, buf)) >= 0) {
      fuzz_buf_add(out, buf, (size_t)n);
      (*count)++;
      *empty |= n == 0;
      i += SG_TOKEN_LEN;
    } else {
      fuzz_buf_add(out, in + i, 1);
      i++;
    }
  }
}

typedef fuzz_sink sink;

/* Feeds |in| in pieces (one piece when |rng| is NULL). Returns the first error or 0. */
static int stream(const char *in, size_t len, fuzz_rng *rng, lookup_state *st, sink *k,
                  size_t *count) {
  sg_scanner s;
  sg_scan_init(&s, lookup, st, fuzz_sink_emit, k);
  size_t off = 0;
  int rc = 0;
  do {
    size_t n = rng ? fuzz_piece(rng, len - off) : len - off;
    char *piece = fuzz_copy(in + off, n);
    rc = sg_scan_feed(&s, piece, n);
    memset(piece, 'o', n); /* the scanner may keep no pointer into what it was fed */
    free(piece);
    off += n;
    if (rc == 0)
      FUZZ_CHECK(s.carry_len < SG_TOKEN_LEN);
  } while (off < len && rc == 0);
  if (rc == 0)
    rc = sg_scan_finish(&s);
  if (rc != 0) {
    FUZZ_CHECK(sg_scan_feed(&s, "x", 1) == rc && sg_scan_finish(&s) == rc);
  }
  *count = sg_scan_replaced(&s);
  return rc;
}

static size_t find_known_token(const char *p, size_t len) {
  char buf[96];
  size_t found = 0;
  for (size_t i = 0; i + SG_TOKEN_LEN <= len; i++)
    if (is_token(p + i, len - i) && value_of(p + i, buf) >= 0)
      found++;
  return found;
}

/* Expands the fuzzer's input: 0x01 k is a token, 0x02 the prefix alone. */
static void expand(const uint8_t *p, size_t len, fuzz_buf *out) {
  for (size_t i = 0; i < len; i++) {
    if (p[i] == 0x01 && i + 1 < len) {
      char tok[SG_TOKEN_LEN + 1];
      uint8_t k = p[++i];
      memcpy(tok, SG_TOKEN_PREFIX, SG_TOKEN_PREFIX_LEN);
      for (size_t j = 0; j < 32; j++)
        tok[SG_TOKEN_PREFIX_LEN + j] = "0123456789abcdef"[(k * 7 + j * (k | 1)) & 15];
      fuzz_buf_add(out, tok, SG_TOKEN_LEN);
    } else if (p[i] == 0x02) {
      fuzz_buf_add(out, SG_TOKEN_PREFIX, SG_TOKEN_PREFIX_LEN);
    } else {
      fuzz_buf_add(out, p + i, 1);
    }
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fuzz_in in = {data, size};
  uint8_t fail = fuzz_u8(&in);
  fuzz_buf text = {0};
  expand(in.p, in.len, &text);
  const char *s = text.len ? (const char *)text.data : "";
  fuzz_rng rng;
  fuzz_rng_seed(&rng, data, size);

  fuzz_buf ref = {0};
  size_t ref_count = 0;
  int empty = 0;
  reference(s, text.len, &ref, &ref_count, &empty);

  lookup_state st = {0};
  sink whole = {{0}, 0}, split = {{0}, 0};
  size_t whole_count, split_count, all_count, all_len;
  FUZZ_CHECK(stream(s, text.len, NULL, &st, &whole, &whole_count) == 0);
  FUZZ_CHECK(stream(s, text.len, &rng, &st, &split, &split_count) == 0);
  char *all = sg_scan_replace_all(s, text.len, lookup, &st, &all_len, &all_count);
  FUZZ_CHECK(all[all_len] == '\0');
  FUZZ_CHECK(fuzz_buf_eq(&whole.out, &ref) && whole_count == ref_count);
  FUZZ_CHECK(fuzz_buf_eq(&split.out, &ref) && split_count == ref_count);
  FUZZ_CHECK(all_len == ref.len && (ref.len == 0 || memcmp(all, ref.data, ref.len) == 0));
  FUZZ_CHECK(all_count == ref_count);
  /* Values hold no 'o' and start with no hex digit, so no known token is left or made of a
   * value and its neighbours (an empty value lets its neighbours meet: not checked then). */
  if (!empty)
    FUZZ_CHECK(find_known_token((const char *)whole.out.data, whole.out.len) == 0);
  free(all);

  if (fail != 0 && ref.len > 0) {
    sink failing = {{0}, 1 + fail % ref.len};
    size_t count;
    int rc = stream(s, text.len, &rng, &st, &failing, &count);
    FUZZ_CHECK(rc == FUZZ_SINK_FAILED);
    FUZZ_CHECK(failing.out.len <= ref.len &&
               memcmp(failing.out.data, ref.data, failing.out.len) == 0);
    fuzz_buf_free(&failing.out);
  }

  for (size_t i = 0; i < st.n; i++)
    free(st.values[i]);
  free(st.values);
  fuzz_buf_free(&whole.out);
  fuzz_buf_free(&split.out);
  fuzz_buf_free(&ref);
  fuzz_buf_free(&text);
  return 0;
}
