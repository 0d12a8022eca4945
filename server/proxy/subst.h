/* One request's substitution (SPEC §5): which of a sandbox's tokens it may carry to the host it
 * goes to as real values, which it carries untouched and why, the audit events that follow,
 * and the values to look for in its response. The HTTP/1 and HTTP/2 sides of the proxy each
 * keep one per request in flight and call these functions on header values, the query and the
 * body; nothing here knows about sockets.
 *
 * A token is replaced only if the request's |withhold| is NULL (CONNECT host, SNI and Host
 * agree, and the connection is TLS) and the secret's own hosts admit the request's host. A
 * token of another sandbox, or no sandbox, is left as it is and not audited (it names no
 * secret of this organization). */
#ifndef SG_PROXY_SUBST_H
#define SG_PROXY_SUBST_H

#include <stddef.h>

#include "crypto/token.h"
#include "db/audit_writer.h"
#include "proxy/redact.h"
#include "proxy/view.h"

#define SG_SUBST_MAX_USES 32  /* secrets one request may use; tokens of more stay untouched */
#define SG_SUBST_PATH_MAX 256 /* the longest path kept for audit and logs */

typedef struct {
  const sg_view_secret *secret;
  char token[SG_TOKEN_LEN + 1];
  int substituted, withheld, redacted;
  const char *reason; /* why it was withheld */
} sg_subst_use;

typedef struct sg_subst {
  const sg_view *view;  /* the sandbox; the caller holds a reference */
  const char *host;     /* the normalized host the request goes to (the CONNECT host) */
  const char *withhold; /* when set, nothing is substituted, and this is why */
  char method[16];
  char path[SG_SUBST_PATH_MAX + 1]; /* without the query; tokens masked */
  sg_subst_use uses[SG_SUBST_MAX_USES];
  size_t n_uses;
  int audited; /* the uses have been recorded */
  sg_redactor reflector;
} sg_subst;

/* Starts a request: |method| and |target| (a path or an absolute URL; its query is dropped and
 * tokens in it masked) are kept for audit and logs. |view| and |host| must outlive |s|'s use. */
void sg_subst_begin(sg_subst *s, const sg_view *view, const char *host, const char *withhold,
                    const char *method, size_t method_len, const char *target, size_t target_len);

/* An sg_scan_lookup over |s| (pass |s| as the argument): the real value where allowed. */
int sg_subst_lookup(void *s, const char *token, const char **value, size_t *len);

/* A header value with its tokens substituted, also inside "Basic" credentials when |name| is
 * Authorization: a malloc'd, NUL-terminated copy (length in |*out_len|), or NULL when the value
 * holds no token and goes out as it is. The caller frees it with sg_subst_free_text. */
char *sg_subst_header(sg_subst *s, const char *name, size_t name_len, const char *value, size_t len,
                      size_t *out_len);

/* A request target (path and query) with the tokens of its query substituted, each value
 * percent-encoded; the path is left alone. NULL when there is nothing to change. */
char *sg_subst_target(sg_subst *s, const char *target, size_t len, size_t *out_len);

/* Zeroes and frees what sg_subst_header or sg_subst_target returned. */
void sg_subst_free_text(char *text, size_t len);

/* Records the request's substitutions and withholdings in the audit trail, once. */
void sg_subst_audit(sg_subst *s);

/* Records one more event about this request (a denial, a redaction). */
void sg_subst_audit_event(const sg_subst *s, const sg_view_secret *secret,
                          sg_audit_decision decision, const char *reason);

/* Arms s->reflector to put the tokens back in place of the values this request substituted,
 * output to |emit|. Returns nonzero if there is any value to look for. */
int sg_subst_arm_reflector(sg_subst *s, sg_redact_emit emit, void *emit_arg);

/* Forgets the request (zeroes what it held). */
void sg_subst_end(sg_subst *s);

#endif
