#include "service/queries.h"

/* RFC 3339 UTC with seconds, as the API speaks it: 2026-11-27T22:41:40Z */
#define RFC3339(col) "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"

#define STORE_COLS                                                                                 \
  "id, org_id, name, egress_allowlist, " RFC3339("created_at") ", " RFC3339(                       \
      "updated_at") ", to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')"

#define SECRET_COLS(s)                                                                             \
  s "id, " s "store_id, " s "name, " s "allowed_hosts, " RFC3339(s "created_at") ", " RFC3339(     \
      s "updated_at") ", " s "version, coalesce(" RFC3339(s "last_used_at") ", ''), " s            \
                                                                            "use_count"

const sg_db_stmt sg_queries[Q_COUNT] = {
    [Q_AUTH_KEY] = {"auth_key",
                    "SELECT org_id FROM api_keys WHERE digest = $1::bytea AND revoked_at IS NULL",
                    1},
    [Q_ORG_KEY_GET] = {"org_key_get",
                       "SELECT k.dek_id, k.wrapped, "
                       "EXISTS (SELECT 1 FROM org_keys o WHERE o.org_id = $1::uuid) "
                       "FROM (SELECT 1) AS one LEFT JOIN org_keys k "
                       "ON k.org_id = $1::uuid AND k.root_key_id = $2",
                       2},
    /* Only when the organization has no data key at all: a key wrapped for another root key
     * means a rotation is under way, and a second key would orphan every secret sealed with
     * the first. */
    [Q_ORG_KEY_CREATE] = {"org_key_create",
                          "INSERT INTO org_keys (org_id, root_key_id, dek_id, wrapped) "
                          "SELECT $1::uuid, $2, $3::uuid, $4::bytea "
                          "WHERE NOT EXISTS (SELECT 1 FROM org_keys WHERE org_id = $1::uuid) "
                          "ON CONFLICT DO NOTHING RETURNING dek_id",
                          4},
    [Q_STORE_CREATE] = {"store_create",
                        "INSERT INTO secret_stores (org_id, name, egress_allowlist) "
                        "VALUES ($1, $2, $3) RETURNING " STORE_COLS,
                        3},
    [Q_STORE_GET] = {"store_get",
                     "SELECT " STORE_COLS " FROM secret_stores "
                     "WHERE id = $1 AND org_id = $2 AND deleted_at IS NULL",
                     2},
    [Q_STORE_LIST] = {"store_list",
                      "SELECT " STORE_COLS " FROM secret_stores "
                      "WHERE org_id = $1 AND deleted_at IS NULL "
                      "AND (created_at, id) > ($2::timestamp AT TIME ZONE 'UTC', $3::uuid) "
                      "ORDER BY created_at, id LIMIT $4",
                      4},
    [Q_STORE_UPDATE] = {"store_update",
                        "UPDATE secret_stores SET "
                        "name = CASE WHEN $3::boolean THEN $4 ELSE name END, "
                        "egress_allowlist = CASE WHEN $5::boolean THEN $6::text[] "
                        "ELSE egress_allowlist END, updated_at = clock_timestamp() "
                        "WHERE id = $1 AND org_id = $2 AND deleted_at IS NULL "
                        "RETURNING " STORE_COLS,
                        6},
    [Q_STORE_DELETE] = {"store_delete",
                        "UPDATE secret_stores SET deleted_at = clock_timestamp() "
                        "WHERE id = $1 AND org_id = $2 AND deleted_at IS NULL RETURNING id",
                        2},
    /* Only for a live store of the caller's organization: otherwise nothing is returned. */
    [Q_SECRET_RESERVE] = {"secret_reserve",
                          "INSERT INTO secret_version_counters AS c (store_id, name, last_version) "
                          "SELECT st.id, $3, coalesce((SELECT s.version FROM secrets s "
                          "WHERE s.store_id = st.id AND s.name = $3), 0) + 1 "
                          "FROM secret_stores st WHERE st.id = $1 "
                          "AND st.org_id = $2 AND st.deleted_at IS NULL "
                          "ON CONFLICT (store_id, name) DO UPDATE SET last_version = "
                          "greatest(c.last_version, EXCLUDED.last_version - 1) + 1 "
                          "RETURNING c.store_id, c.last_version",
                          3},
    /* Writes only over an older version: when a concurrent SetSecret with a higher number got
     * there first, nothing is returned (that newer value stays). A deleted secret is brought
     * back. */
    [Q_SECRET_WRITE] = {"secret_write",
                        "INSERT INTO secrets AS s (org_id, store_id, name, allowed_hosts, "
                        "version, nonce, ciphertext) "
                        "SELECT $1::uuid, $2::uuid, $3, $4::text[], $5::bigint, $6::bytea, "
                        "$7::bytea WHERE EXISTS (SELECT 1 FROM secret_stores WHERE "
                        "id = $2::uuid AND org_id = $1::uuid AND deleted_at IS NULL) "
                        "ON CONFLICT (store_id, name) DO UPDATE SET "
                        "allowed_hosts = EXCLUDED.allowed_hosts, version = EXCLUDED.version, "
                        "nonce = EXCLUDED.nonce, ciphertext = EXCLUDED.ciphertext, "
                        "updated_at = clock_timestamp(), "
                        "created_at = CASE WHEN s.deleted_at IS NULL THEN s.created_at "
                        "ELSE clock_timestamp() END, "
                        "use_count = CASE WHEN s.deleted_at IS NULL THEN s.use_count ELSE 0 END, "
                        "last_used_at = CASE WHEN s.deleted_at IS NULL THEN s.last_used_at END, "
                        "deleted_at = NULL "
                        "WHERE s.version < EXCLUDED.version RETURNING " SECRET_COLS("s."),
                        7},
    [Q_SECRET_GET] =
        {"secret_get",
         "SELECT " SECRET_COLS(
             "s.") " FROM secrets s JOIN secret_stores st "
                   "ON st.id = s.store_id WHERE st.id = $1 AND st.org_id = $2 "
                   "AND st.deleted_at IS NULL AND s.name = $3 AND s.deleted_at IS NULL",
         3},
    [Q_SECRET_LIST] =
        {"secret_list",
         "SELECT " SECRET_COLS(
             "s.") " FROM secret_stores st "
                   "LEFT JOIN secrets s ON s.store_id = st.id AND s.deleted_at IS NULL "
                   "WHERE st.id = $1 AND st.org_id = $2 AND st.deleted_at IS NULL "
                   "ORDER BY s.name",
         2},
    [Q_SECRET_DELETE] = {"secret_delete",
                         "UPDATE secrets s SET deleted_at = clock_timestamp() "
                         "FROM secret_stores st WHERE st.id = s.store_id AND st.id = $1 "
                         "AND st.org_id = $2 AND st.deleted_at IS NULL AND s.name = $3 "
                         "AND s.deleted_at IS NULL RETURNING s.id",
                         3},
};
