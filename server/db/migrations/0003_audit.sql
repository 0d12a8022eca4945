-- sealgate schema, version 3: the audit trail of the egress proxy (SPEC §5).
--
-- One row per decision of the proxy about a secret or a request: a token substituted, a token
-- withheld (its secret does not allow the host), a request denied (the allowlist does not
-- admit the host), a value redacted from a response. Rows are written in batches by each
-- node's audit writer (server/db/audit_writer.c) and read by AuditService.ListAuditEvents,
-- oldest first by (time, id).
--
-- Never a value: no column holds a secret's value, and path never holds a query string (the
-- proxy cuts the path at '?', and the writer again: a query may carry tokens or credentials).
--
-- No foreign keys: an event must be written even when its sandbox, store or secret row has
-- gone meanwhile (or never existed, for a denied request naming no store), and the trail of a
-- deleted store stays readable. The writer draws ids itself, so a batch retried after a lost
-- answer inserts nothing twice.

CREATE TABLE audit_events (
  id uuid PRIMARY KEY,
  org_id uuid NOT NULL,
  time timestamptz NOT NULL,
  sandbox_id uuid,
  store_id uuid,
  secret_name text NOT NULL DEFAULT '',
  secret_version bigint NOT NULL DEFAULT 0,
  host text NOT NULL DEFAULT '',
  method text NOT NULL DEFAULT '',
  path text NOT NULL DEFAULT '',
  decision text NOT NULL
    CHECK (decision IN ('substituted', 'withheld', 'denied', 'redacted')),
  reason text NOT NULL DEFAULT ''
);

-- Keyset pagination: (time, id) within an organization, with or without a filter. A filter on
-- both store and secret name uses the store index.
CREATE INDEX audit_events_org_page ON audit_events (org_id, time, id);
CREATE INDEX audit_events_sandbox ON audit_events (org_id, sandbox_id, time, id)
  WHERE sandbox_id IS NOT NULL;
CREATE INDEX audit_events_store ON audit_events (org_id, store_id, time, id)
  WHERE store_id IS NOT NULL;
CREATE INDEX audit_events_secret ON audit_events (org_id, secret_name, time, id)
  WHERE secret_name <> '';
