/* The redactor of echoed values: see redact.h for which occurrences are replaced and why the
 * cost is bounded.
 *
 * Each value runs its own Knuth-Morris-Pratt automaton over the raw stream, never restarted by
 * a replacement, so it finds every occurrence of the value, each when its last byte arrives.
 * The left-to-right choice among them is made apart, by a cursor |at| that trails the stream:
 * a position is decided once no partial match that could start there is still open, that is
 * when it lies before pos - hold (hold: the longest partial match of any value). The longest
 * occurrence found to start at each open position is noted in a ring, and deciding is reading
 * it: a value starts here (emit the run before it, then its token, and jump past it) or none
 * does (the byte joins the run). Since every open position is within hold < longest bytes of
 * the stream's end, the ring and the carried bytes need no more than the longest value. */
#include "proxy/redact.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "core/mem.h"
#include "proxy/scan.h"

void sg_redact_init(sg_redactor *r, sg_redact_emit emit_fn, void *emit_arg) {
  memset(r, 0, sizeof(*r));
  r->emit = emit_fn;
  r->emit_arg = emit_arg;
  r->only_first = -1;
}

void sg_redact_set_hit(sg_redactor *r, sg_redact_hit hit, void *hit_arg) {
  r->hit = hit;
  r->hit_arg = hit_arg;
}

/* The failure function of |v|: border[q] is the length of the longest proper prefix of
 * v[0..q) that is also its suffix, for 1 <= q <= len (border[0] is unused). */
static uint32_t *make_borders(const unsigned char *v, size_t len) {
  uint32_t *border = sg_malloc((len + 1) * sizeof(*border));
  border[0] = border[1] = 0;
  for (size_t q = 1; q < len; q++) {
    size_t k = border[q];
    while (k > 0 && v[q] != v[k])
      k = border[k];
    border[q + 1] = (uint32_t)(v[q] == v[k] ? k + 1 : 0);
  }
  return border;
}

/* Sizes the ring of found values and the carry for values up to r->longest bytes. The carry
 * is twice that so held bytes are moved to its front only once per r->longest bytes fed. */
static void alloc_stream(sg_redactor *r) {
  size_t cap = 1;
  while (cap < r->longest)
    cap <<= 1;
  r->found = sg_calloc(cap, 1);
  r->mask = cap - 1;
  r->carry_cap = 2 * r->longest;
  r->carry = sg_malloc(r->carry_cap);
}

static void free_stream(sg_redactor *r) {
  if (r->carry != NULL)
    OPENSSL_cleanse(r->carry, r->carry_cap);
  free(r->carry);
  free(r->found);
  r->carry = NULL;
  r->found = NULL;
}

int sg_redact_add(sg_redactor *r, const char *value, size_t value_len, const char *token,
                  size_t token_len, void *tag) {
  if (value_len < SG_REDACT_MIN_LEN)
    return SG_REDACT_SHORT;
  if (value_len > SG_REDACT_MAX_LEN)
    return SG_REDACT_ERR_LONG;
  if (r->n == SG_REDACT_MAX_VALUES)
    return SG_REDACT_ERR_FULL;
  if (r->pos > 0)
    return SG_REDACT_ERR_STARTED; /* the ring and carry are sized for the values so far */
  struct sg_redact_value *v = &r->values[r->n];
  v->value = (const unsigned char *)value;
  v->value_len = value_len;
  v->token = token;
  v->token_len = token_len;
  v->tag = tag;
  v->border = make_borders(v->value, value_len);
  v->state = 0;
  if (r->n == 0)
    r->only_first = v->value[0];
  else if (r->only_first != v->value[0])
    r->only_first = -1;
  r->first[v->value[0]] = 1;
  r->n++;
  if (value_len > r->longest) {
    r->longest = value_len;
    free_stream(r);
    alloc_stream(r);
  }
  return 0;
}

int sg_redact_active(const sg_redactor *r) {
  return r->n > 0;
}

/* Emits |len| bytes unless there are none, keeping the first error. */
static int emit(sg_redactor *r, const char *data, size_t len) {
  if (len == 0 || r->err != 0)
    return r->err;
  int rc = r->emit(r->emit_arg, data, len);
  if (rc != 0)
    r->err = rc < 0 ? rc : -1;
  return r->err;
}

/* Emits the stream bytes [from, to). Those before |base| are in the carry, which holds
 * [base - carry_len, base) while a feed runs; the others are in |data|, fed at |base|. */
static int emit_span(sg_redactor *r, const char *data, uint64_t base, uint64_t from, uint64_t to) {
  if (from < base) {
    uint64_t end = to < base ? to : base;
    const char *p = r->carry + r->carry_off + r->carry_len - (size_t)(base - from);
    if (emit(r, p, (size_t)(end - from)) < 0)
      return r->err;
    from = end;
  }
  return from < to ? emit(r, data + (from - base), (size_t)(to - from)) : r->err;
}

/* Notes that value |k| occurs from stream position |start|, unless that position is already
 * decided or a longer value (or an equal one added earlier) starts there too. */
static void note(sg_redactor *r, uint64_t start, size_t k) {
  if (start < r->at)
    return; /* inside a value replaced already */
  unsigned char *slot = &r->found[start & r->mask];
  if (*slot == 0 || r->values[*slot - 1].value_len < r->values[k].value_len)
    *slot = (unsigned char)(k + 1);
}

/* Moves every automaton over the next byte of the stream, noting the values it completes. */
static void step(sg_redactor *r, unsigned char c) {
  uint64_t p = r->pos++;
  r->found[p & r->mask] = 0; /* the slot last held position p - mask - 1, decided long ago */
  size_t hold = 0;
  for (size_t k = 0; k < r->n; k++) {
    struct sg_redact_value *v = &r->values[k];
    size_t q = v->state;
    while (q > 0 && v->value[q] != c)
      q = v->border[q];
    if (v->value[q] == c)
      q++;
    if (q == v->value_len) {
      note(r, p + 1 - q, k);
      q = v->border[q];
    }
    v->state = q;
    if (q > hold)
      hold = q;
  }
  r->hold = hold;
}

/* Decides the positions before |limit|, emitting each run of unchanged bytes before a value
 * and the value's token. Returns 0 or the emit error. */
static int decide(sg_redactor *r, const char *data, uint64_t base, uint64_t limit) {
  while (r->at < limit) {
    unsigned char k = r->found[r->at & r->mask];
    if (k == 0) {
      r->at++;
      continue;
    }
    const struct sg_redact_value *v = &r->values[k - 1];
    if (emit_span(r, data, base, r->run, r->at) < 0 || emit(r, v->token, v->token_len) < 0)
      return r->err;
    r->at += v->value_len;
    r->run = r->at;
    r->replaced++;
    if (r->hit != NULL)
      r->hit(r->hit_arg, v->tag);
  }
  return 0;
}

/* The first byte at or after |k| that starts some value, or |len|. */
static size_t skip(const sg_redactor *r, const unsigned char *p, size_t k, size_t len) {
  if (r->only_first >= 0) {
    const unsigned char *q = memchr(p + k, r->only_first, len - k);
    return q == NULL ? len : (size_t)(q - p);
  }
  while (k < len && !r->first[p[k]])
    k++;
  return k;
}

/* Keeps the open bytes [at, pos) for the next feed: the carried ones still open and those of
 * |data|, fed at |base|. */
static void keep(sg_redactor *r, const char *data, size_t len, uint64_t base) {
  if (r->at < base) {
    size_t drop = r->carry_len - (size_t)(base - r->at);
    r->carry_off += drop;
    r->carry_len -= drop;
  } else {
    r->carry_off = r->carry_len = 0;
    data += r->at - base;
    len -= (size_t)(r->at - base);
  }
  /* carry_len + len <= longest - 1: moving the held bytes to the front always makes room. */
  if (r->carry_off + r->carry_len + len > r->carry_cap) {
    memmove(r->carry, r->carry + r->carry_off, r->carry_len);
    r->carry_off = 0;
  }
  memcpy(r->carry + r->carry_off + r->carry_len, data, len);
  r->carry_len += len;
}

int sg_redact_feed(sg_redactor *r, const char *data, size_t len) {
  if (r->err != 0 || len == 0)
    return r->err;
  uint64_t base = r->pos;
  if (r->n == 0) {
    r->pos += len;
    r->at = r->run = r->pos;
    return emit(r, data, len);
  }
  const unsigned char *p = (const unsigned char *)data;
  size_t k = 0;
  while (k < len) {
    if (r->hold == 0) {
      /* Nothing open (at == pos): the bytes up to the next possible value start join the run. */
      size_t next = skip(r, p, k, len);
      r->pos += next - k;
      r->at = r->pos;
      k = next;
      if (k == len)
        break;
    }
    step(r, p[k++]);
    if (decide(r, data, base, r->pos - r->hold) < 0)
      return r->err;
  }
  if (emit_span(r, data, base, r->run, r->at) < 0)
    return r->err;
  r->run = r->at;
  keep(r, data, len, base);
  return 0;
}

/* Forgets the open bytes and partial matches, zeroing the carry. */
static void close_stream(sg_redactor *r) {
  if (r->carry != NULL)
    OPENSSL_cleanse(r->carry, r->carry_cap);
  r->carry_off = r->carry_len = 0;
  for (size_t k = 0; k < r->n; k++)
    r->values[k].state = 0;
  r->hold = 0;
  r->at = r->run = r->pos;
}

int sg_redact_finish(sg_redactor *r) {
  if (r->err == 0) {
    /* No byte will complete an open partial match, so every position can be decided; all the
     * undecided bytes are in the carry. */
    uint64_t base = r->pos;
    if (decide(r, NULL, base, base) == 0)
      (void)emit_span(r, NULL, base, r->run, r->at);
  }
  close_stream(r);
  return r->err;
}

size_t sg_redact_replaced(const sg_redactor *r) {
  return r->replaced;
}

void sg_redact_reset(sg_redactor *r) {
  close_stream(r);
  r->pos = r->at = r->run = 0;
  r->replaced = 0;
  r->err = 0;
}

void sg_redact_free(sg_redactor *r) {
  free_stream(r);
  for (size_t k = 0; k < r->n; k++)
    free(r->values[k].border);
  sg_redact_init(r, NULL, NULL);
}

char *sg_redact_all(const sg_redactor *r, const char *in, size_t len, size_t *out_len,
                    size_t *count) {
  sg_scan_out b;
  sg_scan_out_init(&b, len + 1);
  /* A redactor of its own over |r|'s values (their failure tables are only read), with a fresh
   * stream and buffers, so |r|'s stream is left as it is. */
  sg_redactor one = *r;
  one.emit = sg_scan_out_append;
  one.emit_arg = &b;
  one.found = NULL;
  one.carry = NULL;
  if (one.n > 0)
    alloc_stream(&one);
  sg_redact_reset(&one);
  /* sg_scan_out_append never fails, so neither does the stream. */
  (void)sg_redact_feed(&one, in, len);
  (void)sg_redact_finish(&one);
  free_stream(&one);
  b.data[b.len] = '\0';
  *out_len = b.len;
  if (count != NULL)
    *count = one.replaced;
  return b.data;
}
