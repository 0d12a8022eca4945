-- sealgate schema, version 1: organizations, API keys, wrapped data keys, secret stores and
-- secrets. Values are stored only as AES-256-GCM ciphertext sealed by sealgate itself; no
-- plaintext secret and no key ever reaches PostgreSQL.

CREATE TABLE organizations (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  name text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- Only the SHA-256 digest of a key is kept; the prefix ("osk_" + 8 characters) lets an
-- operator name a key to revoke it.
CREATE TABLE api_keys (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  org_id uuid NOT NULL REFERENCES organizations (id),
  digest bytea NOT NULL UNIQUE CHECK (length(digest) = 32),
  prefix text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
  revoked_at timestamptz
);
CREATE INDEX api_keys_prefix ON api_keys (prefix);

-- An organization's data key, wrapped by a root key. During a root-key rotation the same data
-- key (same dek_id) is wrapped by the old and the new root key; each node reads the row of its
-- own root key and never falls back to another.
CREATE TABLE org_keys (
  org_id uuid NOT NULL REFERENCES organizations (id),
  root_key_id text NOT NULL,
  dek_id uuid NOT NULL,
  wrapped bytea NOT NULL CHECK (length(wrapped) = 60),
  created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
  PRIMARY KEY (org_id, root_key_id)
);

-- Deleting a store marks it: it leaves the API's view, while sandboxes created from it keep
-- working until they end (SPEC §2). Names are unique among an organization's live stores.
CREATE TABLE secret_stores (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  org_id uuid NOT NULL REFERENCES organizations (id),
  name text NOT NULL,
  egress_allowlist text[] NOT NULL DEFAULT '{}',
  created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
  updated_at timestamptz NOT NULL DEFAULT clock_timestamp(),
  deleted_at timestamptz
);
CREATE UNIQUE INDEX secret_stores_org_name ON secret_stores (org_id, name)
  WHERE deleted_at IS NULL;
-- Keyset pagination: (created_at, id) within an organization.
CREATE INDEX secret_stores_org_page ON secret_stores (org_id, created_at, id)
  WHERE deleted_at IS NULL;

-- One row per (store, name): the current version's ciphertext. version counts SetSecret calls
-- on the name (1, 2, ...) and never restarts, also across a delete and a re-create, so a
-- (org, store, name, version) AAD is never reused. Numbers come from secret_version_counters.
CREATE TABLE secrets (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  org_id uuid NOT NULL REFERENCES organizations (id),
  store_id uuid NOT NULL REFERENCES secret_stores (id),
  name text NOT NULL,
  allowed_hosts text[] NOT NULL DEFAULT '{}',
  version bigint NOT NULL CHECK (version > 0),
  nonce bytea NOT NULL CHECK (length(nonce) = 12),
  ciphertext bytea NOT NULL,
  created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
  updated_at timestamptz NOT NULL DEFAULT clock_timestamp(),
  deleted_at timestamptz,
  last_used_at timestamptz,
  use_count bigint NOT NULL DEFAULT 0,
  UNIQUE (store_id, name)
);

-- SetSecret first takes the next version number for its (store, name) here: one short
-- statement, so concurrent writers each get a number of their own without retrying. It then
-- seals the value for that number and writes it; the highest version wins. The table is
-- UNLOGGED: taking a number costs no WAL flush, so a SetSecret commits durably once, as a
-- plain upsert does. After a crash or a failover the counters are gone, and the reservation
-- starts again above the version actually stored (GREATEST in the statement), so a number
-- whose value is stored is never handed out again.
CREATE UNLOGGED TABLE secret_version_counters (
  store_id uuid NOT NULL,
  name text NOT NULL,
  last_version bigint NOT NULL,
  PRIMARY KEY (store_id, name)
);
