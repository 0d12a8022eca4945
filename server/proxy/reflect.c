#include "proxy/reflect.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "core/mem.h"

void sg_reflect_init(sg_reflector *r, sg_reflect_emit emit, void *arg, sg_reflect_hit hit,
                     void *hit_arg) {
  memset(r, 0, sizeof(*r));
  r->emit = emit;
  r->hit = hit;
  r->arg = arg;
  r->hit_arg = hit_arg;
}

int sg_reflect_add(sg_reflector *r, const char *value, size_t value_len, const char *token,
                   size_t token_len, void *tag) {
  if (value_len < SG_REFLECT_MIN_LEN)
    return 1;
  if (r->n == SG_REFLECT_MAX_VALUES)
    return -1;
  r->needles[r->n].value = value;
  r->needles[r->n].value_len = value_len;
  r->needles[r->n].token = token;
  r->needles[r->n].token_len = token_len;
  r->needles[r->n].tag = tag;
  r->n++;
  r->first[(unsigned char)value[0]] = 1;
  if (value_len > r->longest)
    r->longest = value_len;
  return 0;
}

int sg_reflect_active(const sg_reflector *r) {
  return r->n > 0;
}

/* The longest value that starts at |p| (with at least |avail| bytes there), or -1. */
static int match_at(const sg_reflector *r, const char *p, size_t avail) {
  int best = -1;
  for (size_t k = 0; k < r->n; k++) {
    size_t l = r->needles[k].value_len;
    if (l <= avail && memcmp(p, r->needles[k].value, l) == 0 &&
        (best < 0 || l > r->needles[best].value_len))
      best = (int)k;
  }
  return best;
}

static int out(sg_reflector *r, const char *p, size_t len) {
  if (len == 0 || r->err != 0)
    return r->err;
  int rv = r->emit(r->arg, p, len);
  if (rv != 0)
    r->err = rv;
  return r->err;
}

/* Scans r->buf[0..len): positions before |limit| are decided, the rest are held back. Every
 * value that starts before |limit| fits in the buffer when |limit| = len - (longest - 1). */
static int scan(sg_reflector *r, size_t limit) {
  size_t run = 0, i = 0;
  while (i < limit) {
    if (!r->first[(unsigned char)r->buf[i]]) {
      i++;
      continue;
    }
    int k = match_at(r, r->buf + i, r->len - i);
    if (k < 0) {
      i++;
      continue;
    }
    if (out(r, r->buf + run, i - run) != 0 ||
        out(r, r->needles[k].token, r->needles[k].token_len) != 0)
      return r->err;
    if (r->hit != NULL)
      r->hit(r->hit_arg, r->needles[k].tag);
    i += r->needles[k].value_len;
    run = i;
  }
  /* i >= limit here: a replacement may have ended past it. */
  if (out(r, r->buf + run, i - run) != 0)
    return r->err;
  size_t kept = r->len - i;
  memmove(r->buf, r->buf + r->len - kept, kept);
  OPENSSL_cleanse(r->buf + kept, r->len - kept);
  r->len = kept;
  return 0;
}

int sg_reflect_feed(sg_reflector *r, const char *data, size_t len) {
  if (r->err != 0)
    return r->err;
  if (r->n == 0 || len == 0)
    return out(r, data, len);
  if (r->len + len > r->cap) {
    size_t cap = r->len + len;
    char *nb = sg_malloc(cap);
    if (r->buf != NULL) {
      memcpy(nb, r->buf, r->len);
      OPENSSL_cleanse(r->buf, r->cap);
      free(r->buf);
    }
    r->buf = nb;
    r->cap = cap;
  }
  memcpy(r->buf + r->len, data, len);
  r->len += len;
  size_t hold = r->longest - 1;
  return r->len > hold ? scan(r, r->len - hold) : 0;
}

int sg_reflect_finish(sg_reflector *r) {
  if (r->err != 0 || r->len == 0)
    return r->err;
  return scan(r, r->len);
}

void sg_reflect_reset(sg_reflector *r) {
  if (r->buf != NULL) {
    OPENSSL_cleanse(r->buf, r->cap);
    free(r->buf);
  }
  sg_reflect_init(r, r->emit, r->arg, r->hit, r->hit_arg);
}

typedef struct {
  char *p;
  size_t len, cap;
} growbuf;

static int to_growbuf(void *arg, const char *data, size_t len) {
  growbuf *g = arg;
  if (g->len + len + 1 > g->cap) {
    g->cap = 2 * (g->len + len + 1);
    g->p = sg_realloc(g->p, g->cap);
  }
  memcpy(g->p + g->len, data, len);
  g->len += len;
  return 0;
}

char *sg_reflect_all(sg_reflector *r, const char *in, size_t len, size_t *out_len) {
  sg_reflector one;
  growbuf g = {sg_malloc(len + 1), 0, len + 1};
  sg_reflect_init(&one, to_growbuf, &g, r->hit, r->hit_arg);
  memcpy(one.needles, r->needles, sizeof(r->needles));
  one.n = r->n;
  one.longest = r->longest;
  memcpy(one.first, r->first, sizeof(one.first));
  sg_reflect_feed(&one, in, len);
  sg_reflect_finish(&one);
  sg_reflect_reset(&one);
  g.p[g.len] = '\0';
  *out_len = g.len;
  return g.p;
}
