-- Audit log (seed 004 activity_logs, seed 002 activities): src/audit.rs.
--
-- Every privileged change is recorded by the database itself, in the transaction that makes
-- it: memberships, ownership, invitations, the organization's name, slug and deletion, roles
-- and their permissions, platform role grants, the subscription's plan and status, teams and
-- workspaces and who is in them. Statement
-- triggers read each statement's transition tables, so a bulk change costs one INSERT.
--
-- Append-only: no API role may write, update or delete entries (the trigger functions write
-- as the table's owner), and nobody may UPDATE one. Entries outlive what they describe (no
-- foreign keys): an organization's deletion stays on record. The key includes occurred_at,
-- so the table can be range-partitioned by time without changing its shape.

-- The changed keys of two objects, as {"key": {"before": …, "after": …}} (either side may be
-- NULL: a creation or a deletion).
CREATE FUNCTION @extschema@.audit_diff(jsonb, jsonb)
RETURNS jsonb
LANGUAGE sql IMMUTABLE
AS $$
    SELECT coalesce(pg_catalog.jsonb_object_agg(k, pg_catalog.jsonb_build_object('before', $1 -> k, 'after', $2 -> k)),
                    '{}'::jsonb)
    FROM pg_catalog.jsonb_object_keys(coalesce($1, '{}'::jsonb) || coalesce($2, '{}'::jsonb)) AS k
    WHERE ($1 -> k) IS DISTINCT FROM ($2 -> k)
$$;
REVOKE ALL ON FUNCTION @extschema@.audit_diff(jsonb, jsonb) FROM PUBLIC, anon, authenticated, service_role;

CREATE TABLE @extschema@.audit_log (
    id               uuid NOT NULL DEFAULT gen_random_uuid(),
    -- The clock, not the transaction's start: entries of one transaction keep their order.
    occurred_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- NULL for platform-wide changes (system roles, platform role grants).
    organization_id  uuid,
    -- auth.uid() of the request, if any, and their name at the time.
    actor_id         uuid,
    actor_name       text,
    -- The database role the change was made as: authenticated, service_role, a DBA's role…
    actor_role       text NOT NULL,
    action           text NOT NULL CONSTRAINT audit_log_action_check CHECK (action ~ '^[a-z_]+\.[a-z_]+$'),
    resource_type    text NOT NULL,
    resource_id      uuid,
    resource_name    text,
    -- Changed fields: {"field": {"before": …, "after": …}}.
    changes          jsonb NOT NULL DEFAULT '{}'::jsonb,
    -- The client's address from PostgREST's request.headers (x-forwarded-for, x-real-ip).
    ip_address       inet,
    PRIMARY KEY (id, occurred_at)
);
COMMENT ON TABLE @extschema@.audit_log IS
    'Append-only record of privileged changes, written by saas_core''s triggers. Read with audit.read in the organization.';

CREATE INDEX audit_log_organization_idx ON @extschema@.audit_log (organization_id, occurred_at DESC);
CREATE INDEX audit_log_resource_idx ON @extschema@.audit_log (resource_type, resource_id, occurred_at DESC);
CREATE INDEX audit_log_actor_idx ON @extschema@.audit_log (actor_id, occurred_at DESC) WHERE actor_id IS NOT NULL;

CREATE TRIGGER refuse_audit_update
    BEFORE UPDATE ON @extschema@.audit_log
    FOR EACH ROW EXECUTE FUNCTION @extschema@.refuse_audit_update();

-- What is recorded. One trigger per event: a trigger with transition tables takes one event.
CREATE TRIGGER audit_insert AFTER INSERT ON @extschema@.organizations
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.audit_changes();
CREATE TRIGGER audit_update AFTER UPDATE ON @extschema@.organizations
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.audit_changes();
CREATE TRIGGER audit_delete AFTER DELETE ON @extschema@.organizations
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.audit_changes();

CREATE TRIGGER audit_insert AFTER INSERT ON @extschema@.organization_members
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.audit_changes();
CREATE TRIGGER audit_update AFTER UPDATE ON @extschema@.organization_members
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.audit_changes();
CREATE TRIGGER audit_delete AFTER DELETE ON @extschema@.organization_members
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.audit_changes();

CREATE TRIGGER audit_insert AFTER INSERT ON @extschema@.invitations
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.audit_changes();
CREATE TRIGGER audit_update AFTER UPDATE ON @extschema@.invitations
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.audit_changes();

CREATE TRIGGER audit_insert AFTER INSERT ON @extschema@.roles
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.audit_changes();
CREATE TRIGGER audit_update AFTER UPDATE ON @extschema@.roles
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.audit_changes();
CREATE TRIGGER audit_delete AFTER DELETE ON @extschema@.roles
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.audit_changes();

CREATE TRIGGER audit_insert AFTER INSERT ON @extschema@.role_permissions
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.audit_changes();
CREATE TRIGGER audit_delete AFTER DELETE ON @extschema@.role_permissions
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.audit_changes();

CREATE TRIGGER audit_insert AFTER INSERT ON @extschema@.user_roles
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.audit_changes();
CREATE TRIGGER audit_update AFTER UPDATE ON @extschema@.user_roles
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.audit_changes();
CREATE TRIGGER audit_delete AFTER DELETE ON @extschema@.user_roles
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.audit_changes();

CREATE TRIGGER audit_insert AFTER INSERT ON @extschema@.teams
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.audit_changes();
CREATE TRIGGER audit_update AFTER UPDATE ON @extschema@.teams
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.audit_changes();
CREATE TRIGGER audit_delete AFTER DELETE ON @extschema@.teams
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.audit_changes();

CREATE TRIGGER audit_insert AFTER INSERT ON @extschema@.team_members
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.audit_changes();
CREATE TRIGGER audit_delete AFTER DELETE ON @extschema@.team_members
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.audit_changes();

CREATE TRIGGER audit_insert AFTER INSERT ON @extschema@.workspaces
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.audit_changes();
CREATE TRIGGER audit_update AFTER UPDATE ON @extschema@.workspaces
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.audit_changes();
CREATE TRIGGER audit_delete AFTER DELETE ON @extschema@.workspaces
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.audit_changes();

CREATE TRIGGER audit_insert AFTER INSERT ON @extschema@.workspace_members
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.audit_changes();
CREATE TRIGGER audit_delete AFTER DELETE ON @extschema@.workspace_members
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.audit_changes();

CREATE TRIGGER audit_update AFTER UPDATE ON @extschema@.org_subscriptions
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.audit_changes();

SELECT pg_catalog.pg_extension_config_dump('@extschema@.audit_log', '');

-- Read only, by permission; written only by the triggers (as the table's owner). The policy
-- compares with an array computed once per query (an InitPlan), which an index scan on
-- (organization_id, occurred_at) uses; "IN (SELECT …)" in a policy is never turned into a
-- join and filters every row of the table.
REVOKE ALL ON @extschema@.audit_log FROM PUBLIC, anon, authenticated, service_role;
GRANT SELECT ON @extschema@.audit_log TO authenticated, service_role;
ALTER TABLE @extschema@.audit_log ENABLE ROW LEVEL SECURITY;
CREATE POLICY audit_log_select_reader ON @extschema@.audit_log
    FOR SELECT TO authenticated
    USING (organization_id = ANY (ARRAY(SELECT @extschema@.current_user_permitted_org_ids('audit.read'))));
CREATE POLICY audit_log_select_service_role ON @extschema@.audit_log
    FOR SELECT TO service_role USING (true);

REVOKE ALL ON FUNCTION @extschema@.audit_changes() FROM PUBLIC, anon, authenticated, service_role;
REVOKE ALL ON FUNCTION @extschema@.refuse_audit_update() FROM PUBLIC, anon, authenticated, service_role;
ALTER FUNCTION @extschema@.audit_changes()
    SECURITY DEFINER SET search_path = pg_catalog, @extschema@, pg_temp;
