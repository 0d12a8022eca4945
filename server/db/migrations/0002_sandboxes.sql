-- sealgate schema, version 2: sandboxes, their sealed tokens, checkpoints and snapshots.
--
-- A sandbox's env (sealed tokens, plain entries) and its proxy credential are kept only as
-- AES-256-GCM ciphertext under the organization's data key (sealed), so GetSandbox can return
-- them again; what the egress proxy looks things up by is a SHA-256 digest. The proxy
-- resolves a token to the current value with one primary-key lookup on sandbox_tokens and
-- two unique-key joins (sandboxes, secrets).

CREATE TABLE snapshots (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  org_id uuid NOT NULL REFERENCES organizations (id),
  name text NOT NULL,
  base text NOT NULL DEFAULT '',
  apt_packages text[] NOT NULL DEFAULT '{}',
  pip_packages text[] NOT NULL DEFAULT '{}',
  run_commands text[] NOT NULL DEFAULT '{}',
  created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
  deleted_at timestamptz
);
CREATE UNIQUE INDEX snapshots_org_name ON snapshots (org_id, name) WHERE deleted_at IS NULL;

-- Layers are recorded as they were resolved at creation, base layer first: store ids (what
-- the proxy follows, also after a store is deleted) and the names the API shows.
CREATE TABLE sandboxes (
  id uuid PRIMARY KEY,
  org_id uuid NOT NULL REFERENCES organizations (id),
  store_ids uuid[] NOT NULL DEFAULT '{}',
  store_names text[] NOT NULL DEFAULT '{}',
  snapshot text NOT NULL DEFAULT '',
  snapshot_id uuid,
  checkpoint_id uuid,
  proxy_digest bytea NOT NULL CHECK (length(proxy_digest) = 32),
  nonce bytea NOT NULL CHECK (length(nonce) = 12),
  sealed bytea NOT NULL,
  created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
  expires_at timestamptz NOT NULL,
  stopped_at timestamptz
);
CREATE INDEX sandboxes_org_page ON sandboxes (org_id, created_at, id);
-- The runtime's sweep of sandboxes that have expired but still hold a directory.
CREATE INDEX sandboxes_running ON sandboxes (expires_at) WHERE stopped_at IS NULL;

-- One row per (sandbox, secret name): the layer whose secret won the name.
CREATE TABLE sandbox_tokens (
  digest bytea PRIMARY KEY CHECK (length(digest) = 32),
  sandbox_id uuid NOT NULL REFERENCES sandboxes (id),
  org_id uuid NOT NULL,
  store_id uuid NOT NULL REFERENCES secret_stores (id),
  name text NOT NULL,
  UNIQUE (sandbox_id, name)
);

CREATE TABLE checkpoints (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  org_id uuid NOT NULL REFERENCES organizations (id),
  sandbox_id uuid NOT NULL REFERENCES sandboxes (id),
  name text NOT NULL,
  store_ids uuid[] NOT NULL,
  store_names text[] NOT NULL,
  snapshot text NOT NULL DEFAULT '',
  created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX checkpoints_sandbox ON checkpoints (sandbox_id);

-- Cross-node cache invalidation: every change to what a cache may hold (API keys, stores,
-- secrets, sandboxes) is announced on channel "sealgate_invalidate" as "<table>:<id>",
-- delivered to every listening node when the transaction commits. Counters the proxy keeps
-- (use_count, last_used_at) are not announced.
CREATE FUNCTION sealgate_notify_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'DELETE' THEN
    PERFORM pg_notify('sealgate_invalidate', TG_TABLE_NAME || ':' || OLD.id::text);
    RETURN OLD;
  END IF;
  PERFORM pg_notify('sealgate_invalidate', TG_TABLE_NAME || ':' || NEW.id::text);
  RETURN NEW;
END $$;
CREATE TRIGGER api_keys_notify AFTER INSERT OR DELETE OR UPDATE OF revoked_at, org_id, digest
  ON api_keys
  FOR EACH ROW EXECUTE FUNCTION sealgate_notify_change();
CREATE TRIGGER secret_stores_notify AFTER DELETE OR UPDATE OF name, egress_allowlist, deleted_at
  ON secret_stores
  FOR EACH ROW EXECUTE FUNCTION sealgate_notify_change();
CREATE TRIGGER secrets_notify AFTER INSERT OR DELETE
  OR UPDATE OF allowed_hosts, version, nonce, ciphertext, deleted_at ON secrets
  FOR EACH ROW EXECUTE FUNCTION sealgate_notify_change();
CREATE TRIGGER sandboxes_notify AFTER DELETE OR UPDATE OF stopped_at, expires_at
  ON sandboxes
  FOR EACH ROW EXECUTE FUNCTION sealgate_notify_change();
