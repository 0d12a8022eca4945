/* The streaming token replacer: see scan.h for what a token is and why the scan is prefix-led.
 *
 * Every token starts with 'o' and has no other 'o' in it, which keeps the scan simple: memchr
 * finds the next possible start, and a candidate that fails or completes never hides another
 * start inside the bytes it matched, so no byte is ever looked at twice. */
#include "proxy/scan.h"

#include <string.h>

#include "core/mem.h"

static int is_token_digit(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

/* How many of the |n| bytes at |p| fit a token, the first being at token offset |off|. */
static size_t match_len(const char *p, size_t n, size_t off) {
  size_t i;
  for (i = 0; i < n; i++) {
    size_t pos = off + i;
    if (pos < SG_TOKEN_PREFIX_LEN ? p[i] != SG_TOKEN_PREFIX[pos] : !is_token_digit(p[i]))
      break;
  }
  return i;
}

/* Emits |len| bytes unless there are none, keeping the first error. */
static int emit(sg_scanner *s, const char *data, size_t len) {
  if (len == 0 || s->err != 0)
    return s->err;
  int rc = s->emit(s->emit_arg, data, len);
  if (rc != 0)
    s->err = rc < 0 ? rc : -1;
  return s->err;
}

/* Looks up the complete token at |token|. If the lookup knows it, emits the |run_len| bytes at
 * |run| that precede it, then its value, and returns 1. Returns 0, having emitted nothing, if
 * the lookup does not know it (it then stays in the caller's run), or the emit error. */
static int replace(sg_scanner *s, const char *token, const char *run, size_t run_len) {
  const char *value;
  size_t len;
  if (!s->lookup(s->lookup_arg, token, &value, &len))
    return 0;
  if (emit(s, run, run_len) < 0 || emit(s, value, len) < 0)
    return s->err;
  s->replaced++;
  return 1;
}

void sg_scan_init(sg_scanner *s, sg_scan_lookup lookup, void *lookup_arg, sg_scan_emit emit_fn,
                  void *emit_arg) {
  memset(s, 0, sizeof(*s));
  s->lookup = lookup;
  s->lookup_arg = lookup_arg;
  s->emit = emit_fn;
  s->emit_arg = emit_arg;
}

/* Continues the possible token held in the carry with the start of |data|. Sets |*used| to how
 * many bytes of |data| it emitted or carried, and |*scanned| to how many it has looked at (the
 * bytes in between are the start of the caller's run). Returns 0 or the emit error. */
static int feed_carry(sg_scanner *s, const char *data, size_t len, size_t *used, size_t *scanned) {
  size_t need = SG_TOKEN_LEN - s->carry_len;
  size_t k = match_len(data, len < need ? len : need, s->carry_len);
  *used = *scanned = k;
  if (k == len && k < need) {
    memcpy(s->carry + s->carry_len, data, k);
    s->carry_len += k;
    return 0;
  }
  int rc;
  if (k == need) {
    memcpy(s->carry + s->carry_len, data, k);
    rc = replace(s, s->carry, NULL, 0);
    if (rc == 0)
      rc = emit(s, s->carry, SG_TOKEN_LEN);
  } else {
    /* Not a token. The matched bytes of |data| hold no 'o', so the scan goes on from the first
     * byte that failed to match, which may itself start a token. */
    rc = emit(s, s->carry, s->carry_len);
    *used = 0;
  }
  s->carry_len = 0;
  return rc < 0 ? rc : 0;
}

int sg_scan_feed(sg_scanner *s, const char *data, size_t len) {
  if (s->err != 0 || len == 0)
    return s->err;
  /* Bytes [run, i) are scanned and not yet emitted; they go out in one call when a replaced
   * token or the end of the chunk ends the run. An unknown token stays in the run. */
  size_t run = 0, i = 0;
  if (s->carry_len > 0 && feed_carry(s, data, len, &run, &i) < 0)
    return s->err;
  while (i < len) {
    const char *o = memchr(data + i, 'o', len - i);
    if (o == NULL)
      break;
    size_t p = (size_t)(o - data), avail = len - p;
    size_t m = match_len(o, avail < SG_TOKEN_LEN ? avail : SG_TOKEN_LEN, 0);
    if (m == SG_TOKEN_LEN) {
      int rc = replace(s, o, data + run, p - run);
      if (rc < 0)
        return rc;
      if (rc == 1)
        run = p + SG_TOKEN_LEN;
      i = p + SG_TOKEN_LEN;
    } else if (m == avail) {
      /* A possible token cut by the end of the chunk: carried to the next feed. */
      if (emit(s, data + run, p - run) < 0)
        return s->err;
      memcpy(s->carry, o, avail);
      s->carry_len = avail;
      return 0;
    } else {
      i = p + m; /* m >= 1: the 'o' matched */
    }
  }
  return emit(s, data + run, len - run);
}

int sg_scan_finish(sg_scanner *s) {
  int rc = emit(s, s->carry, s->carry_len);
  s->carry_len = 0;
  return rc;
}

size_t sg_scan_replaced(const sg_scanner *s) {
  return s->replaced;
}

void sg_scan_out_init(sg_scan_out *b, size_t cap) {
  b->cap = cap > 0 ? cap : 1;
  b->len = 0;
  b->data = sg_malloc(b->cap);
}

int sg_scan_out_append(void *arg, const char *data, size_t len) {
  sg_scan_out *b = arg;
  if (b->cap - b->len < len + 1) {
    while (b->cap - b->len < len + 1)
      b->cap *= 2;
    b->data = sg_realloc(b->data, b->cap);
  }
  memcpy(b->data + b->len, data, len);
  b->len += len;
  return 0;
}

char *sg_scan_replace_all(const char *in, size_t len, sg_scan_lookup lookup, void *lookup_arg,
                          size_t *out_len, size_t *count) {
  sg_scan_out b;
  sg_scan_out_init(&b, len + 1);
  sg_scanner s;
  sg_scan_init(&s, lookup, lookup_arg, sg_scan_out_append, &b);
  /* sg_scan_out_append never fails, so neither does the scan. */
  (void)sg_scan_feed(&s, in, len);
  (void)sg_scan_finish(&s);
  b.data[b.len] = '\0';
  *out_len = b.len;
  if (count != NULL)
    *count = s.replaced;
  return b.data;
}
