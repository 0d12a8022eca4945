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

/* "expired" is decided when read: a sandbox needs no write to expire. */
#define SANDBOX_STATUS_SQL                                                                         \
  "CASE WHEN stopped_at IS NOT NULL THEN 'stopped' "                                               \
  "WHEN expires_at <= clock_timestamp() THEN 'expired' ELSE 'running' END"

#define SANDBOX_COLS                                                                               \
  "id, org_id, " SANDBOX_STATUS_SQL ", store_names, snapshot, coalesce(checkpoint_id::text, ''), " \
  "nonce, sealed, " RFC3339("created_at") ", " RFC3339(                                            \
      "expires_at") ", to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US'), "       \
                    "coalesce(snapshot_id::text, '')"

#define CHECKPOINT_COLS(c)                                                                         \
  c "id, " c "sandbox_id, " c "name, " c                                                           \
    "store_names, " RFC3339(c "created_at") ", " c "store_ids, " c "snapshot"

#define SNAPSHOT_COLS                                                                              \
  "id, name, base, apt_packages, pip_packages, run_commands, " RFC3339("created_at")

#define AUDIT_COLS                                                                                 \
  "id, " RFC3339("time") ", coalesce(sandbox_id::text, ''), coalesce(store_id::text, ''), "        \
                         "secret_name, secret_version, host, method, path, decision, reason, "     \
                         "to_char(time AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US'), "          \
                         "actor, action, coalesce(actor_key_id::text, ''), resource"

/* Each filter of ListAuditEvents, on (1) or off (0: its parameter is "", a constant the
 * planner sees through). */
#define AUDIT_BY_SANDBOX_1 "sandbox_id = $5::uuid"
#define AUDIT_BY_SANDBOX_0 "$5 = ''"
#define AUDIT_BY_STORE_1   "store_id = $6::uuid"
#define AUDIT_BY_STORE_0   "$6 = ''"
#define AUDIT_BY_SECRET_1  "secret_name = $7"
#define AUDIT_BY_SECRET_0  "$7 = ''"
/* The kind of event, spelled out in each statement: literal, so that "management" plans on
 * the partial index audit_events_changes (WHERE action <> ''). */
#define AUDIT_KIND_proxy " AND action = ''"
#define AUDIT_KIND_mgmt  " AND action <> ''"
#define AUDIT_KIND_all   ""
#define AUDIT_LIST_SQL(sandbox, store, secret, kind)                                               \
  "SELECT " AUDIT_COLS " FROM audit_events WHERE org_id = $1"                                      \
  " AND " AUDIT_BY_SANDBOX_##sandbox " AND " AUDIT_BY_STORE_##store                                \
      " AND " AUDIT_BY_SECRET_##secret " AND time >= $8::timestamptz" AUDIT_KIND_##kind            \
      " AND (time, id) > ($2::timestamp AT TIME ZONE 'UTC', $3::uuid) ORDER BY time, id LIMIT $4"
#define AUDIT_BITS(sandbox, store, secret)                                                         \
  ((sandbox)*AUDIT_BY_SANDBOX + (store)*AUDIT_BY_STORE + (secret)*AUDIT_BY_SECRET)
#define AUDIT_LIST(kind, sandbox, store, secret, name)                                             \
  [Q_AUDIT_LIST + AUDIT_##kind * AUDIT_KIND_STRIDE + AUDIT_BITS(sandbox, store, secret)] = {       \
      name, AUDIT_LIST_SQL(sandbox, store, secret, kind), 8}
/* The eight filter combinations of one kind. */
#define AUDIT_LISTS(kind)                                                                          \
  AUDIT_LIST(kind, 0, 0, 0, "audit_list_" #kind),                                                  \
      AUDIT_LIST(kind, 1, 0, 0, "audit_list_" #kind "_sb"),                                        \
      AUDIT_LIST(kind, 0, 1, 0, "audit_list_" #kind "_st"),                                        \
      AUDIT_LIST(kind, 1, 1, 0, "audit_list_" #kind "_st_sb"),                                     \
      AUDIT_LIST(kind, 0, 0, 1, "audit_list_" #kind "_se"),                                        \
      AUDIT_LIST(kind, 1, 0, 1, "audit_list_" #kind "_se_sb"),                                     \
      AUDIT_LIST(kind, 0, 1, 1, "audit_list_" #kind "_se_st"),                                     \
      AUDIT_LIST(kind, 1, 1, 1, "audit_list_" #kind "_se_st_sb")

const sg_db_stmt sg_queries[Q_COUNT] = {
    [Q_AUTH_KEY] = {"auth_key",
                    "SELECT org_id, id, prefix FROM api_keys WHERE digest = $1::bytea "
                    "AND revoked_at IS NULL",
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
                        "version, nonce, ciphertext, created_at, updated_at) "
                        "SELECT $1::uuid, $2::uuid, $3, $4::text[], $5::bigint, $6::bytea, "
                        "$7::bytea, now.t, now.t FROM (SELECT clock_timestamp() AS t) now "
                        "WHERE EXISTS (SELECT 1 FROM secret_stores WHERE "
                        "id = $2::uuid AND org_id = $1::uuid AND deleted_at IS NULL) "
                        "ON CONFLICT (store_id, name) DO UPDATE SET "
                        "allowed_hosts = EXCLUDED.allowed_hosts, version = EXCLUDED.version, "
                        "nonce = EXCLUDED.nonce, ciphertext = EXCLUDED.ciphertext, "
                        "updated_at = EXCLUDED.updated_at, "
                        "created_at = CASE WHEN s.deleted_at IS NULL THEN s.created_at "
                        "ELSE EXCLUDED.created_at END, "
                        "use_count = CASE WHEN s.deleted_at IS NULL THEN s.use_count ELSE 0 END, "
                        "last_used_at = CASE WHEN s.deleted_at IS NULL THEN s.last_used_at END, "
                        "deleted_at = NULL "
                        "WHERE s.version < EXCLUDED.version RETURNING " SECRET_COLS(
                            "s.") ", "
                                  "s.created_at = s.updated_at",
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
                         "AND s.deleted_at IS NULL RETURNING s.id, s.version, st.id",
                         3},
    /* The layers of a new sandbox as they stand: the base layers still alive (in order), then
     * the store named on top (position 2^31-1), each with its live secrets' names; and the
     * snapshot's id. Always at least one row. */
    [Q_SANDBOX_RESOLVE] =
        {"sandbox_resolve",
         "WITH layers AS ("
         "SELECT l.pos, st.id, st.name FROM unnest($2::uuid[]) WITH ORDINALITY AS l(id, pos) "
         "JOIN secret_stores st ON st.id = l.id AND st.org_id = $1::uuid "
         "AND st.deleted_at IS NULL "
         "UNION ALL SELECT 2147483647, st.id, st.name FROM secret_stores st "
         "WHERE $3 <> '' AND st.org_id = $1::uuid AND st.name = $3 AND st.deleted_at IS NULL) "
         "SELECT la.pos, la.id, la.name, s.name, (SELECT sn.id FROM snapshots sn "
         "WHERE $4 <> '' AND sn.org_id = $1::uuid AND sn.name = $4 AND sn.deleted_at IS NULL) "
         "FROM (SELECT 1) AS one LEFT JOIN (layers la LEFT JOIN secrets s "
         "ON s.store_id = la.id AND s.deleted_at IS NULL) ON true ORDER BY la.pos, s.name",
         4},
    /* $1 id, $2 org, $3 store ids, $4 store names, $5 snapshot, $6 snapshot id, $7 checkpoint
     * id, $8 proxy credential digest (hex), $9 nonce, $10 sealed env (binary), $11 lifetime in
     * seconds, $12 token digests (hex), $13 their stores, $14 their names. One statement: the
     * sandbox and its tokens exist together or not at all. */
    [Q_SANDBOX_CREATE] =
        {"sandbox_create",
         "WITH sb AS (INSERT INTO sandboxes (id, org_id, store_ids, store_names, snapshot, "
         "snapshot_id, checkpoint_id, proxy_digest, nonce, sealed, expires_at) VALUES "
         "($1::uuid, $2::uuid, $3::uuid[], $4::text[], $5, nullif($6, '')::uuid, "
         "nullif($7, '')::uuid, decode($8, 'hex'), $9::bytea, $10::bytea, "
         "clock_timestamp() + make_interval(secs => $11::int)) RETURNING " SANDBOX_COLS "), "
         "tk AS (INSERT INTO sandbox_tokens (digest, sandbox_id, org_id, store_id, name) "
         "SELECT decode(t.d, 'hex'), $1::uuid, $2::uuid, t.s, t.n "
         "FROM unnest($12::text[], $13::uuid[], $14::text[]) AS t(d, s, n)) "
         "SELECT * FROM sb",
         14},
    [Q_SANDBOX_GET] = {"sandbox_get",
                       "SELECT " SANDBOX_COLS " FROM sandboxes WHERE id = $1 AND org_id = $2", 2},
    [Q_SANDBOX_LIST] = {"sandbox_list",
                        "SELECT " SANDBOX_COLS " FROM sandboxes WHERE org_id = $1 "
                        "AND (created_at, id) > ($2::timestamp AT TIME ZONE 'UTC', $3::uuid) "
                        "ORDER BY created_at, id LIMIT $4",
                        4},
    /* Deleting twice is not an error: the sandbox is stopped either way. The second column
     * says whether this statement stopped it (the audit trail records one deletion). The
     * outer SELECT sees the row as before the UPDATE, so a sandbox stopped already (or by a
     * concurrent delete, whose lock the UPDATE waited for) comes back as false. */
    [Q_SANDBOX_STOP] = {"sandbox_stop",
                        "WITH stop AS (UPDATE sandboxes SET stopped_at = clock_timestamp() "
                        "WHERE id = $1 AND org_id = $2 AND stopped_at IS NULL RETURNING id) "
                        "SELECT id, true FROM stop UNION ALL SELECT id, false FROM sandboxes "
                        "WHERE id = $1 AND org_id = $2 AND NOT EXISTS (SELECT 1 FROM stop)",
                        2},
    /* Kind 0: the sandbox (exists); 1: one row per layer with its store's current allowlist
     * (a deleted store's too: its sandboxes keep working); 2: one row per token whose secret
     * still exists, with its current allowed_hosts and its own store's allowlist. */
    [Q_SANDBOX_HOSTS] =
        {"sandbox_hosts",
         "SELECT 0, '', NULL::text[], NULL::text[] FROM sandboxes "
         "WHERE id = $1 AND org_id = $2 "
         "UNION ALL SELECT 1, st.name, st.egress_allowlist, NULL FROM sandboxes sb "
         "CROSS JOIN unnest(sb.store_ids) AS l(id) JOIN secret_stores st ON st.id = l.id "
         "WHERE sb.id = $1 AND sb.org_id = $2 "
         "UNION ALL SELECT 2, t.name, s.allowed_hosts, st.egress_allowlist "
         "FROM sandbox_tokens t JOIN secrets s ON s.store_id = t.store_id AND s.name = t.name "
         "AND s.deleted_at IS NULL JOIN secret_stores st ON st.id = t.store_id "
         "WHERE t.sandbox_id = $1 AND t.org_id = $2 ORDER BY 1, 2",
         2},
    /* Any organization's: the local runtime's sweep of its directories. */
    [Q_SANDBOX_ENDED] = {"sandbox_ended",
                         "SELECT id FROM sandboxes WHERE id = ANY($1::uuid[]) "
                         "AND (stopped_at IS NOT NULL OR expires_at <= clock_timestamp())",
                         1},
    /* Any organization's (the proxy knows a sandbox by its credential, not by an API key).
     * Kind 0: the sandbox: org, proxy credential digest, whether it is live, seconds left;
     * 1: one row per layer with its store's current allowlist (a deleted store's too);
     * 2: one row per token whose secret still exists: digest, store, name, version, nonce,
     * ciphertext, allowed_hosts and its own store's allowlist. Text columns throughout. */
    [Q_PROXY_VIEW] =
        {"proxy_view",
         "SELECT 0, sb.org_id::text, encode(sb.proxy_digest, 'hex'), "
         "(sb.stopped_at IS NULL AND sb.expires_at > clock_timestamp())::int::text, "
         "greatest(0, ceil(extract(epoch FROM sb.expires_at - clock_timestamp())))::bigint, "
         "NULL::text, NULL::text, NULL::text[], NULL::text[] FROM sandboxes sb WHERE sb.id = $1 "
         "UNION ALL SELECT 1, st.id::text, NULL, NULL, NULL, NULL, NULL, st.egress_allowlist, "
         "NULL FROM sandboxes sb CROSS JOIN unnest(sb.store_ids) AS l(id) "
         "JOIN secret_stores st ON st.id = l.id WHERE sb.id = $1 "
         "UNION ALL SELECT 2, encode(t.digest, 'hex'), t.store_id::text, t.name, s.version, "
         "encode(s.nonce, 'hex'), encode(s.ciphertext, 'hex'), s.allowed_hosts, "
         "st.egress_allowlist FROM sandbox_tokens t JOIN sandboxes sb ON sb.id = t.sandbox_id "
         "AND sb.org_id = t.org_id JOIN secrets s ON s.store_id = t.store_id "
         "AND s.name = t.name AND s.deleted_at IS NULL JOIN secret_stores st "
         "ON st.id = t.store_id WHERE t.sandbox_id = $1 ORDER BY 1",
         1},
    /* Only from a running sandbox: the first column is the sandbox's status (no row: no such
     * sandbox), the rest the checkpoint made (NULLs when it was not running). */
    [Q_CHECKPOINT_CREATE] =
        {"checkpoint_create",
         "WITH sb AS (SELECT id, org_id, store_ids, store_names, snapshot, " SANDBOX_STATUS_SQL
         " AS status FROM sandboxes WHERE id = $2 AND org_id = $3), "
         "cp AS (INSERT INTO checkpoints (id, org_id, sandbox_id, name, store_ids, store_names, "
         "snapshot) SELECT $1::uuid, org_id, id, $4, store_ids, store_names, snapshot FROM sb "
         "WHERE status = 'running' RETURNING " CHECKPOINT_COLS(
             "") ") "
                 "SELECT sb.status, cp.* FROM sb LEFT JOIN cp ON true",
         4},
    [Q_CHECKPOINT_GET] = {"checkpoint_get",
                          "SELECT " CHECKPOINT_COLS("") " FROM checkpoints "
                                                        "WHERE id = $1 AND org_id = $2",
                          2},
    [Q_SNAPSHOT_CREATE] = {"snapshot_create",
                           "INSERT INTO snapshots (id, org_id, name, base, apt_packages, "
                           "pip_packages, run_commands) VALUES ($1, $2, $3, $4, $5, $6, $7) "
                           "RETURNING " SNAPSHOT_COLS,
                           7},
    [Q_SNAPSHOT_GET] = {"snapshot_get",
                        "SELECT " SNAPSHOT_COLS " FROM snapshots "
                        "WHERE name = $1 AND org_id = $2 AND deleted_at IS NULL",
                        2},
    [Q_SNAPSHOT_LIST] = {"snapshot_list",
                         "SELECT " SNAPSHOT_COLS " FROM snapshots "
                         "WHERE org_id = $1 AND deleted_at IS NULL ORDER BY name",
                         1},
    [Q_SNAPSHOT_DELETE] = {"snapshot_delete",
                           "UPDATE snapshots SET deleted_at = clock_timestamp() "
                           "WHERE name = $1 AND org_id = $2 AND deleted_at IS NULL RETURNING id",
                           2},
    /* Oldest first by (time, id): pages are stable and `since` reads a trail forward. */
    AUDIT_LISTS(proxy),
    AUDIT_LISTS(mgmt),
    AUDIT_LISTS(all),
};
