/* What the egress proxy knows of a sandbox (SPEC §5): its organization, its proxy credential
 * (as a digest), whether it is live, its layered egress allowlist, and every sealed token it
 * holds with the secret behind it, value decrypted.
 *
 * A view is read in one query (Q_PROXY_VIEW) and the values are opened with the
 * organization's data key, then cached on the loop that asked, so the requests of a sandbox
 * cost no database round trip. A cached view serves only while the generations of the
 * secrets, stores and sandboxes tables (db/notify.h) are the ones it was read under: a
 * SetSecret or an allowlist change on any node makes it stale within a notification's round
 * trip, and the next request reads it again (rotation under the same token). While
 * notifications cannot be heard, a view serves for one second at most.
 *
 * Views hold secret values: they live only in this process's memory, are zeroed when freed,
 * and nothing here logs a value, a token or the proxy credential. */
#ifndef SG_PROXY_VIEW_H
#define SG_PROXY_VIEW_H

#include <stddef.h>
#include <stdint.h>

#include "crypto/token.h"

/* A secret as a sandbox sees it through one of its tokens. */
typedef struct {
  uint8_t digest[SG_TOKEN_DIGEST_LEN]; /* of the token */
  char store_id[SG_UUID_LEN + 1];
  char *name;
  uint64_t version;
  uint8_t *value;
  size_t value_len;
  /* The hosts it may be sent to: its allowed_hosts, else its store's allowlist, else "*". */
  char **hosts;
  size_t n_hosts;
} sg_view_secret;

typedef struct sg_view {
  int refs;
  char sandbox_id[SG_UUID_LEN + 1];
  char org_id[SG_UUID_LEN + 1];
  uint8_t proxy_digest[32];
  int live;           /* neither stopped nor expired when read */
  int64_t expires_ns; /* sg_now_ns() at which it expires */
  /* The union of the layers' allowlists: every public host when |any_host|. */
  int any_host;
  char **hosts;
  size_t n_hosts;
  sg_view_secret *secrets;
  size_t n_secrets;
  /* Open addressing on the token digest: indexes into |secrets| plus one, 0 for empty. */
  uint32_t *slots;
  size_t n_slots;
  /* Freshness (private to view.c). */
  uint64_t gens[3]; /* sg_gen_any when read */
  int deaf;         /* notifications were not heard when read */
  int64_t read_ns;
} sg_view;

typedef enum {
  SG_VIEW_OK,
  SG_VIEW_NOT_FOUND,   /* no such sandbox */
  SG_VIEW_UNAVAILABLE, /* the database cannot be reached: answer 503 */
  SG_VIEW_FAILED       /* a value failed to open (logged): answer 502 */
} sg_view_status;

/* Delivers a view: on SG_VIEW_OK |view| holds a reference for the callee (sg_view_unref). */
typedef void (*sg_view_cb)(void *arg, sg_view_status status, sg_view *view);

/* On a loop thread with a database pool (db/pool.h). If a fresh view of |sandbox_id| (a
 * canonical UUID) is cached, returns it at once with a reference for the caller, and |cb| is
 * never called. Otherwise returns NULL and |cb| runs exactly once, later, on this thread;
 * several requests for the same sandbox share one query. */
sg_view *sg_view_get(const char *sandbox_id, sg_view_cb cb, void *arg);

/* Drops a pending callback registered by sg_view_get for |arg| (the connection went away
 * first). */
void sg_view_cancel(const char *sandbox_id, void *arg);

/* Nonzero while |view| may still be used for a new request: live, not past its expiry, and
 * the generations it was read under still current. A stale view must be read again. */
int sg_view_fresh(const sg_view *view);

/* Nonzero if |view| is live now (it may be stale and still live). */
int sg_view_live(const sg_view *view);

/* The secret behind |token| (SG_TOKEN_LEN bytes), or NULL if it is not this sandbox's. */
const sg_view_secret *sg_view_find(const sg_view *view, const char *token);

/* Nonzero if the sandbox's layered allowlist admits the normalized host name |host|. */
int sg_view_host_allowed(const sg_view *view, const char *host);

/* Nonzero if |secret| may be sent to the normalized host name |host|. */
int sg_view_secret_allowed(const sg_view_secret *secret, const char *host);

void sg_view_ref(sg_view *view);
void sg_view_unref(sg_view *view);

/* Frees the calling thread's cache (at loop shutdown, after its connections are gone). */
void sg_view_cache_drop(void);

#endif
