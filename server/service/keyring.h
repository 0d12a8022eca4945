/* The organizations' data keys, as this node can open them: unwrapped with the node's root key
 * (crypto/keys.h) and cached in memory for the life of the process. A data key never changes
 * (a root-key rotation wraps the same key again), so the cache needs no invalidation. An
 * organization gets its data key on its first sealed write. */
#ifndef SG_SERVICE_KEYRING_H
#define SG_SERVICE_KEYRING_H

#include <stddef.h>
#include <stdint.h>

#include "crypto/keys.h"
#include "rpc/call.h"

/* Loads the root key. Returns 0, or -1 with a message in |err|. */
int sg_keyring_init(const char *root_key_file, char *err, size_t errlen);

/* Zeroes the root key and every cached data key. */
void sg_keyring_cleanup(void);

/* The loaded root key (NULL before sg_keyring_init). */
const sg_root_key *sg_keyring_root(void);

/* Delivers |org_id|'s data key to |cb| on the call's loop: |dek| is valid only during the
 * callback (it is zeroed right after). When the key cannot be had, |cb| is not called: the
 * call is finished with UNAVAILABLE (database down) or INTERNAL (the stored key fails to
 * authenticate, or exists only under another root key: the server logs which). */
typedef void (*sg_dek_cb)(sg_call *call, void *arg, const uint8_t dek[SG_KEY_LEN]);
void sg_keyring_get(sg_call *call, const char *org_id, sg_dek_cb cb, void *arg);

/* The same without a call (the egress proxy's lookups), on the calling loop's thread: |cb|
 * runs exactly once, maybe before sg_keyring_fetch returns (a cached key), with SG_DEK_OK and
 * the key (valid only during the callback), SG_DEK_UNAVAILABLE (database down: retry later)
 * or SG_DEK_FAILED (logged: the key fails to authenticate, exists only under another root
 * key, or cannot be made) and NULL. */
typedef enum { SG_DEK_OK, SG_DEK_UNAVAILABLE, SG_DEK_FAILED } sg_dek_status;
typedef void (*sg_dek_fetch_cb)(void *arg, sg_dek_status status, const uint8_t *dek);
void sg_keyring_fetch(const char *org_id, sg_dek_fetch_cb cb, void *arg);

#endif
