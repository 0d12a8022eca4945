-- sealgate schema, version 4: management calls join the audit trail.
--
-- Besides the egress proxy's decisions (version 3), every API call that changes an
-- organization's state leaves one row once it has succeeded: which API key made it (its id,
-- and the prefix an operator sees — never the key), what it did (the method's name, e.g.
-- "SetSecret"), to which resource, and when. decision says whether the resource was
-- created, updated or deleted; store_id, secret_name, secret_version and sandbox_id name it
-- where they apply, and resource names it in full ("stores/<id>/secrets/<name>"), which also
-- covers checkpoints and snapshots. Never a value or a token: no column holds either.
--
-- Rows of version 3 stay valid: they have no actor and no action (''), which is what tells a
-- proxy decision from a management call.

ALTER TABLE audit_events DROP CONSTRAINT audit_events_decision_check;
ALTER TABLE audit_events ADD CONSTRAINT audit_events_decision_check
  CHECK (decision IN ('substituted', 'withheld', 'denied', 'redacted',
                      'created', 'updated', 'deleted'));

ALTER TABLE audit_events
  ADD COLUMN actor_key_id uuid,
  ADD COLUMN actor text NOT NULL DEFAULT '',
  ADD COLUMN action text NOT NULL DEFAULT '',
  ADD COLUMN resource text NOT NULL DEFAULT '';

-- A management row has an action; a proxy row has none.
ALTER TABLE audit_events ADD CONSTRAINT audit_events_kind_check
  CHECK ((action = '') = (decision IN ('substituted', 'withheld', 'denied', 'redacted')));

-- ListAuditEvents with kind "management": the few management rows among many proxy rows.
CREATE INDEX audit_events_changes ON audit_events (org_id, time, id) WHERE action <> '';
