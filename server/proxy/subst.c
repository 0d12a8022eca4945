#include "proxy/subst.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>

#include "core/mem.h"
#include "core/stats.h"
#include "proxy/scan.h"
#include "rpc/b64.h"

/* Replaces every token by a fixed marker, so that paths reach logs and audit rows without one. */
static int mask_token(void *arg, const char *token, const char **value, size_t *len) {
  (void)arg;
  (void)token;
  *value = SG_TOKEN_PREFIX "********************************";
  *len = SG_TOKEN_LEN;
  return 1;
}

void sg_subst_begin(sg_subst *s, const sg_view *view, const char *host, const char *withhold,
                    const char *method, size_t method_len, const char *target, size_t target_len) {
  sg_subst_end(s);
  s->view = view;
  s->host = host;
  s->withhold = withhold;
  if (method_len >= sizeof(s->method))
    method_len = sizeof(s->method) - 1;
  memcpy(s->method, method, method_len);
  s->method[method_len] = '\0';
  const char *q = memchr(target, '?', target_len);
  if (q != NULL)
    target_len = (size_t)(q - target);
  size_t n;
  char *masked = sg_scan_replace_all(target, target_len, mask_token, NULL, &n, NULL);
  if (n > SG_SUBST_PATH_MAX)
    n = SG_SUBST_PATH_MAX;
  memcpy(s->path, masked, n);
  s->path[n] = '\0';
  free(masked);
}

static sg_subst_use *use_of(sg_subst *s, const sg_view_secret *secret, const char *token) {
  for (size_t i = 0; i < s->n_uses; i++)
    if (s->uses[i].secret == secret)
      return &s->uses[i];
  if (s->n_uses == SG_SUBST_MAX_USES)
    return NULL;
  sg_subst_use *u = &s->uses[s->n_uses++];
  memset(u, 0, sizeof(*u));
  u->secret = secret;
  memcpy(u->token, token, SG_TOKEN_LEN);
  return u;
}

int sg_subst_lookup(void *arg, const char *token, const char **value, size_t *len) {
  sg_subst *s = arg;
  if (s->view == NULL)
    return 0;
  const sg_view_secret *secret = sg_view_find(s->view, token);
  if (secret == NULL)
    return 0; /* another sandbox's, or no token at all: it goes out as it is */
  sg_subst_use *u = use_of(s, secret, token);
  if (u == NULL)
    return 0; /* a request with more secrets than are remembered: the rest stay tokens, as a
                 value that could be neither audited nor redacted must not go out */
  const char *why = s->withhold;
  if (why == NULL && !sg_view_secret_allowed(secret, s->host))
    why = "host not in the secret's allowed_hosts";
  if (why != NULL) {
    if (!u->withheld) {
      u->withheld = 1;
      u->reason = why;
    }
    return 0;
  }
  u->substituted = 1;
  *value = (const char *)secret->value;
  *len = secret->value_len;
  return 1;
}

void sg_subst_free_text(char *text, size_t len) {
  if (text == NULL)
    return;
  OPENSSL_cleanse(text, len);
  free(text);
}

static int has_token(const char *p, size_t len) {
  return memmem(p, len, SG_TOKEN_PREFIX, SG_TOKEN_PREFIX_LEN) != NULL;
}

/* "Basic base64(user:password)": tokens inside the decoded credentials are substituted and the
 * result encoded again (git over HTTPS sends its token this way). */
static char *subst_basic(sg_subst *s, const char *value, size_t len, size_t *out_len) {
  if (len < 7 || strncasecmp(value, "basic ", 6) != 0 || len - 6 > 8192)
    return NULL;
  const char *b = value + 6;
  size_t blen = len - 6, cap = blen / 4 * 3 + 3, plen;
  uint8_t *plain = sg_malloc(cap);
  char *result = NULL;
  if (sg_b64_decode(b, blen, plain, &plen) == 0 && has_token((const char *)plain, plen)) {
    size_t n, count;
    char *r = sg_scan_replace_all((const char *)plain, plen, sg_subst_lookup, s, &n, &count);
    if (count > 0) {
      result = sg_malloc(6 + SG_B64_ENCODED_CAP(n) + 3);
      memcpy(result, "Basic ", 6);
      size_t elen = sg_b64_encode((const uint8_t *)r, n, result + 6);
      while (elen % 4 != 0)
        result[6 + elen++] = '=';
      result[6 + elen] = '\0';
      *out_len = 6 + elen;
    }
    sg_subst_free_text(r, n);
  }
  OPENSSL_cleanse(plain, cap);
  free(plain);
  return result;
}

char *sg_subst_header(sg_subst *s, const char *name, size_t name_len, const char *value, size_t len,
                      size_t *out_len) {
  if (!has_token(value, len) && !(name_len == 13 && strncasecmp(name, "authorization", 13) == 0))
    return NULL;
  if (name_len == 13 && strncasecmp(name, "authorization", 13) == 0) {
    char *basic = subst_basic(s, value, len, out_len);
    if (basic != NULL || !has_token(value, len))
      return basic;
  }
  size_t count;
  char *r = sg_scan_replace_all(value, len, sg_subst_lookup, s, out_len, &count);
  if (count == 0) {
    sg_subst_free_text(r, *out_len);
    return NULL;
  }
  return r;
}

/* The query's lookup: the value goes in percent-encoded. */
typedef struct {
  sg_subst *s;
  char *buf;
  size_t cap;
} query_lookup;

static int on_query_token(void *arg, const char *token, const char **value, size_t *len) {
  query_lookup *q = arg;
  const char *v;
  size_t vlen;
  if (!sg_subst_lookup(q->s, token, &v, &vlen))
    return 0;
  static const char hex[] = "0123456789ABCDEF";
  sg_subst_free_text(q->buf, q->cap);
  q->cap = 3 * vlen + 1;
  q->buf = sg_malloc(q->cap);
  size_t n = 0;
  for (size_t i = 0; i < vlen; i++) {
    unsigned char c = (unsigned char)v[i];
    if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
        c == '.' || c == '_' || c == '~') {
      q->buf[n++] = (char)c;
    } else {
      q->buf[n++] = '%';
      q->buf[n++] = hex[c >> 4];
      q->buf[n++] = hex[c & 15];
    }
  }
  *value = q->buf;
  *len = n;
  return 1;
}

char *sg_subst_target(sg_subst *s, const char *target, size_t len, size_t *out_len) {
  const char *q = memchr(target, '?', len);
  if (q == NULL || !has_token(q, len - (size_t)(q - target)))
    return NULL;
  size_t before = (size_t)(q - target), n, count;
  query_lookup ql = {s, NULL, 0};
  char *rq = sg_scan_replace_all(q, len - before, on_query_token, &ql, &n, &count);
  sg_subst_free_text(ql.buf, ql.cap);
  if (count == 0) {
    sg_subst_free_text(rq, n);
    return NULL;
  }
  char *out = sg_malloc(before + n + 1);
  memcpy(out, target, before);
  memcpy(out + before, rq, n);
  out[before + n] = '\0';
  *out_len = before + n;
  sg_subst_free_text(rq, n);
  return out;
}

void sg_subst_audit_event(const sg_subst *s, const sg_view_secret *secret,
                          sg_audit_decision decision, const char *reason) {
  if ((unsigned)decision < SG_PROXY_DECISION_COUNT)
    sg_counter_inc(&sg_stats.proxy_decisions[decision]);
  if (s->view == NULL)
    return;
  sg_audit_event ev = {
      .org_id = s->view->org_id,
      .sandbox_id = s->view->sandbox_id,
      .store_id = secret != NULL ? secret->store_id : "",
      .secret_name = secret != NULL ? secret->name : "",
      .secret_version = secret != NULL ? secret->version : 0,
      .host = s->host,
      .method = s->method,
      .path = s->path,
      .decision = decision,
      .reason = reason != NULL ? reason : "",
  };
  sg_audit_record(&ev);
}

void sg_subst_audit(sg_subst *s) {
  if (s->audited)
    return;
  s->audited = 1;
  for (size_t i = 0; i < s->n_uses; i++) {
    sg_subst_use *u = &s->uses[i];
    if (u->substituted)
      sg_subst_audit_event(s, u->secret, SG_AUDIT_SUBSTITUTED, NULL);
    if (u->withheld)
      sg_subst_audit_event(s, u->secret, SG_AUDIT_WITHHELD, u->reason);
  }
}

static void on_hit(void *arg, void *tag) {
  sg_subst *s = arg;
  sg_subst_use *u = tag;
  if (!u->redacted) {
    u->redacted = 1;
    sg_subst_audit_event(s, u->secret, SG_AUDIT_REDACTED, "value echoed in the response");
  }
}

int sg_subst_arm_reflector(sg_subst *s, sg_redact_emit emit, void *emit_arg) {
  sg_redact_free(&s->reflector);
  sg_redact_init(&s->reflector, emit, emit_arg);
  sg_redact_set_hit(&s->reflector, on_hit, s);
  int any = 0;
  for (size_t i = 0; i < s->n_uses; i++) {
    sg_subst_use *u = &s->uses[i];
    if (u->substituted && sg_redact_add(&s->reflector, (const char *)u->secret->value,
                                        u->secret->value_len, u->token, SG_TOKEN_LEN, u) == 0)
      any = 1;
  }
  return any;
}

void sg_subst_end(sg_subst *s) {
  sg_redact_free(&s->reflector);
  s->view = NULL;
  s->host = NULL;
  s->withhold = NULL;
  s->n_uses = 0;
  s->audited = 0;
  s->method[0] = '\0';
  s->path[0] = '\0';
  OPENSSL_cleanse(s->uses, sizeof(s->uses));
}
