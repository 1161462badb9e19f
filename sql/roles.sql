-- Roles and permissions as data (seed 002 §3): src/roles.rs.
--
-- A member's role (organization_members.role) names a role by its key: one of the system roles
-- (owner, admin, member, viewer), or a custom role of that organization. What a role may do is
-- the set of permissions granted to it in role_permissions; who ranks above whom is its
-- hierarchy_level. Platform roles (support staff, say) are granted to users in user_roles, for
-- a time if expires_at is set.

CREATE TABLE @extschema@.permissions (
    key          text PRIMARY KEY
                 CONSTRAINT permissions_key_check CHECK (key ~ '^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$'),
    description  text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE @extschema@.permissions IS
    'What a role can be allowed to do. An application adds its own (projects.create, …) with an INSERT.';

CREATE TABLE @extschema@.roles (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    -- organization: held by members (system roles, or an organization's custom roles);
    -- platform: granted to users in user_roles, across organizations.
    scope            text NOT NULL DEFAULT 'organization'
                     CONSTRAINT roles_scope_check CHECK (scope IN ('organization', 'platform')),
    -- NULL for system and platform roles; the organization of a custom role.
    organization_id  uuid REFERENCES @extschema@.organizations (id) ON DELETE CASCADE,
    key              text NOT NULL CONSTRAINT roles_key_check CHECK (key ~ '^[a-z][a-z0-9_]{0,39}$'),
    name             text NOT NULL CONSTRAINT roles_name_check CHECK (char_length(btrim(name)) BETWEEN 1 AND 100),
    description      text CONSTRAINT roles_description_check CHECK (char_length(description) <= 1000),
    -- Who outranks whom: owner 100, admin 80, member 50, viewer 10. Nobody grants a role
    -- ranked above their own; custom roles rank below owner.
    hierarchy_level  integer NOT NULL CONSTRAINT roles_hierarchy_level_check CHECK (hierarchy_level BETWEEN 0 AND 100),
    is_system        boolean NOT NULL DEFAULT false,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT roles_owner_check CHECK (
        (is_system OR scope = 'platform' OR (organization_id IS NOT NULL AND hierarchy_level < 100))
        AND NOT (is_system AND organization_id IS NOT NULL)
        AND NOT (scope = 'platform' AND organization_id IS NOT NULL)),
    -- user_roles references (id, scope) so that only platform roles can be granted there.
    CONSTRAINT roles_id_scope_key UNIQUE (id, scope)
);
COMMENT ON TABLE @extschema@.roles IS
    'System roles (owner, admin, member, viewer), custom roles of an organization, and platform roles.';

-- One key per organization, and custom keys never shadow a system or platform key (check_role).
CREATE UNIQUE INDEX roles_global_key ON @extschema@.roles (key) WHERE organization_id IS NULL;
CREATE UNIQUE INDEX roles_organization_key ON @extschema@.roles (organization_id, key)
    WHERE organization_id IS NOT NULL;

CREATE TABLE @extschema@.role_permissions (
    role_id     uuid NOT NULL REFERENCES @extschema@.roles (id) ON DELETE CASCADE,
    permission  text NOT NULL REFERENCES @extschema@.permissions (key) ON DELETE CASCADE ON UPDATE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (role_id, permission)
);
CREATE INDEX role_permissions_permission_idx ON @extschema@.role_permissions (permission, role_id);

CREATE TABLE @extschema@.user_roles (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id      uuid NOT NULL REFERENCES @extschema@.users (id) ON DELETE CASCADE,
    role_id      uuid NOT NULL,
    role_scope   text NOT NULL DEFAULT 'platform' CONSTRAINT user_roles_role_scope_check CHECK (role_scope = 'platform'),
    assigned_by  uuid REFERENCES @extschema@.users (id) ON DELETE SET NULL,
    assigned_at  timestamptz NOT NULL DEFAULT now(),
    -- The grant stops granting at this instant (no job: every check compares it with the clock).
    expires_at   timestamptz,
    CONSTRAINT user_roles_role_fkey FOREIGN KEY (role_id, role_scope)
        REFERENCES @extschema@.roles (id, scope) ON DELETE CASCADE,
    CONSTRAINT user_roles_expiry_check CHECK (expires_at IS NULL OR expires_at > assigned_at),
    UNIQUE (user_id, role_id)
);
CREATE INDEX user_roles_role_id_idx ON @extschema@.user_roles (role_id);
COMMENT ON TABLE @extschema@.user_roles IS
    'Platform roles granted to users, by whom, until when. Written by the service role.';

-- The one place a member's role key is resolved: a system role, or a custom role of the
-- member's own organization. Internal (no API role reads it).
CREATE VIEW @extschema@.member_roles AS
SELECT m.organization_id, m.user_id, m.role, r.id AS role_id, r.hierarchy_level, m.created_at AS joined_at
FROM @extschema@.organization_members m
JOIN @extschema@.roles r
  ON r.key = m.role AND r.scope = 'organization'
 AND (r.organization_id IS NULL OR r.organization_id = m.organization_id);

-- The one place a platform grant's expiry is applied.
CREATE VIEW @extschema@.active_user_roles AS
SELECT ur.user_id, ur.role_id
FROM @extschema@.user_roles ur
WHERE ur.expires_at IS NULL OR ur.expires_at > pg_catalog.statement_timestamp();

CREATE FUNCTION @extschema@.has_platform_permission(permission text)
RETURNS boolean
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, @extschema@, pg_temp
AS $$
BEGIN
    RETURN EXISTS (
        SELECT 1
        FROM @extschema@.active_user_roles ur
        JOIN @extschema@.role_permissions rp ON rp.role_id = ur.role_id AND rp.permission = $1
        WHERE ur.user_id = auth.uid());
END
$$;
COMMENT ON FUNCTION @extschema@.has_platform_permission(text) IS
    'True when an unexpired platform role of the caller grants permission.';

-- Organizations where the caller's role grants permission, or every organization when an
-- unexpired platform role does: the one answer has_permission and the policies share. One set
-- (not an OR of two policies) keeps "organization_id IN (...)" an index semi-join.
-- PL/pgSQL, not SQL: a SECURITY DEFINER SQL function is planned again on every call, and
-- every RLS read of these tables runs it once; PL/pgSQL plans once per backend.
CREATE FUNCTION @extschema@.current_user_permitted_org_ids(permission text)
RETURNS SETOF uuid
LANGUAGE plpgsql STABLE SECURITY DEFINER ROWS 10
SET search_path = pg_catalog, @extschema@, pg_temp
AS $$
BEGIN
    IF @extschema@.has_platform_permission($1) THEN
        RETURN QUERY SELECT o.id FROM @extschema@.organizations o;
        RETURN;
    END IF;
    RETURN QUERY
    SELECT mr.organization_id
    FROM @extschema@.member_roles mr
    JOIN @extschema@.role_permissions rp ON rp.role_id = mr.role_id AND rp.permission = $1
    WHERE mr.user_id = auth.uid();
END
$$;
COMMENT ON FUNCTION @extschema@.current_user_permitted_org_ids(text) IS
    'Organizations in which the caller''s role (or an unexpired platform role) grants permission.';

-- The caller's rank (their role's hierarchy_level) in an organization; NULL for non-members.
CREATE FUNCTION @extschema@.current_user_rank(org_id uuid)
RETURNS integer
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, @extschema@, pg_temp
AS $$
BEGIN
    RETURN (SELECT mr.hierarchy_level FROM @extschema@.member_roles mr
            WHERE mr.organization_id = $1 AND mr.user_id = auth.uid());
END
$$;

CREATE TRIGGER update_roles_updated_at
    BEFORE UPDATE ON @extschema@.roles
    FOR EACH ROW EXECUTE FUNCTION @extschema@.update_updated_at_column();

-- Keys never collide across scopes; system roles keep their key and rank; a role in use stays.
CREATE TRIGGER check_role
    BEFORE INSERT OR UPDATE OR DELETE ON @extschema@.roles
    FOR EACH ROW EXECUTE FUNCTION @extschema@.check_role();

-- A member's role exists for their organization (replaces 0.1.0's CHECK list).
CREATE TRIGGER check_member_role
    BEFORE INSERT OR UPDATE OF role, organization_id ON @extschema@.organization_members
    FOR EACH ROW EXECUTE FUNCTION @extschema@.check_member_role();

INSERT INTO @extschema@.permissions (key, description) VALUES
    ('members.invite',      'Invite people to the organization and revoke invitations'),
    ('members.remove',      'Remove members ranked below oneself'),
    ('members.change_role', 'Change the role of members ranked below oneself'),
    ('billing.read',        'See the organization''s subscription and invoices'),
    ('billing.manage',      'Change the organization''s plan and payment details'),
    ('settings.update',     'Rename the organization, change its slug and settings'),
    ('org.delete',          'Delete the organization'),
    ('ownership.transfer',  'Hand the organization to another member'),
    ('roles.manage',        'Create, change and delete custom roles'),
    ('teams.manage',        'Create and manage every team and workspace, secret ones included'),
    ('audit.read',          'Read the organization''s audit log');

INSERT INTO @extschema@.roles (scope, key, name, description, hierarchy_level, is_system) VALUES
    ('organization', 'owner',   'Owner',   'Everything, including deleting the organization', 100, true),
    ('organization', 'admin',   'Admin',   'Manages members, settings and billing visibility', 80, true),
    ('organization', 'member',  'Member',  'Works in the organization',                        50, true),
    ('organization', 'viewer',  'Viewer',  'Reads the organization''s data',                   10, true),
    ('platform',     'support', 'Support', 'Platform staff: reads audit logs and billing of every organization', 0, false);

INSERT INTO @extschema@.role_permissions (role_id, permission)
SELECT r.id, p.key
FROM @extschema@.roles r
JOIN @extschema@.permissions p ON CASE r.key
    WHEN 'owner'   THEN true
    WHEN 'admin'   THEN p.key IN ('members.invite', 'members.remove', 'members.change_role',
                                  'billing.read', 'settings.update', 'audit.read', 'teams.manage')
    WHEN 'support' THEN p.key IN ('audit.read', 'billing.read')
    ELSE false END
WHERE r.organization_id IS NULL;

-- pg_dump dumps every row (operator edits and custom roles too); a restore's COPY replaces the
-- seeded rows (backup.sql).
CREATE TRIGGER replace_seeded_rows
    BEFORE INSERT ON @extschema@.permissions
    FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.replace_seeded_rows();
CREATE TRIGGER replace_seeded_rows
    BEFORE INSERT ON @extschema@.roles
    FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.replace_seeded_rows();
CREATE TRIGGER replace_seeded_rows
    BEFORE INSERT ON @extschema@.role_permissions
    FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.replace_seeded_rows();

SELECT pg_catalog.pg_extension_config_dump('@extschema@.permissions', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.roles', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.role_permissions', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.user_roles', '');

-- Privileges.
REVOKE ALL ON @extschema@.permissions, @extschema@.roles, @extschema@.role_permissions, @extschema@.user_roles
    FROM PUBLIC, anon, authenticated, service_role;
REVOKE ALL ON @extschema@.member_roles, @extschema@.active_user_roles FROM PUBLIC, anon, authenticated, service_role;
GRANT SELECT ON @extschema@.permissions TO authenticated;
GRANT SELECT, INSERT, DELETE ON @extschema@.roles, @extschema@.role_permissions TO authenticated;
-- key and scope are fixed once created: members refer to a role by its key.
GRANT UPDATE (name, description, hierarchy_level) ON @extschema@.roles TO authenticated;
GRANT SELECT ON @extschema@.user_roles TO authenticated;
GRANT SELECT, INSERT, UPDATE, DELETE ON @extschema@.permissions, @extschema@.roles,
    @extschema@.role_permissions, @extschema@.user_roles TO service_role;

ALTER TABLE @extschema@.permissions ENABLE ROW LEVEL SECURITY;
ALTER TABLE @extschema@.roles ENABLE ROW LEVEL SECURITY;
ALTER TABLE @extschema@.role_permissions ENABLE ROW LEVEL SECURITY;
ALTER TABLE @extschema@.user_roles ENABLE ROW LEVEL SECURITY;

CREATE POLICY permissions_select_authenticated ON @extschema@.permissions
    FOR SELECT TO authenticated USING (true);
CREATE POLICY permissions_service_role_all ON @extschema@.permissions
    FOR ALL TO service_role USING (true) WITH CHECK (true);

-- System and platform roles are public knowledge; an organization's custom roles are its members'.
CREATE POLICY roles_select ON @extschema@.roles
    FOR SELECT TO authenticated
    USING (organization_id IS NULL OR organization_id IN (SELECT @extschema@.current_user_org_ids()));

-- Custom roles: by roles.manage, and only below the caller's own rank.
CREATE POLICY roles_insert_manager ON @extschema@.roles
    FOR INSERT TO authenticated
    WITH CHECK (
        organization_id IN (SELECT @extschema@.current_user_permitted_org_ids('roles.manage'))
        AND hierarchy_level < @extschema@.current_user_rank(organization_id));
CREATE POLICY roles_update_manager ON @extschema@.roles
    FOR UPDATE TO authenticated
    USING (
        organization_id IN (SELECT @extschema@.current_user_permitted_org_ids('roles.manage'))
        AND hierarchy_level < @extschema@.current_user_rank(organization_id))
    WITH CHECK (
        organization_id IN (SELECT @extschema@.current_user_permitted_org_ids('roles.manage'))
        AND hierarchy_level < @extschema@.current_user_rank(organization_id));
CREATE POLICY roles_delete_manager ON @extschema@.roles
    FOR DELETE TO authenticated
    USING (
        organization_id IN (SELECT @extschema@.current_user_permitted_org_ids('roles.manage'))
        AND hierarchy_level < @extschema@.current_user_rank(organization_id));
CREATE POLICY roles_service_role_all ON @extschema@.roles
    FOR ALL TO service_role USING (true) WITH CHECK (true);

CREATE POLICY role_permissions_select ON @extschema@.role_permissions
    FOR SELECT TO authenticated
    USING (role_id IN (SELECT r.id FROM @extschema@.roles r));
-- A manager grants a custom role below their rank only what they hold themself.
CREATE POLICY role_permissions_insert_manager ON @extschema@.role_permissions
    FOR INSERT TO authenticated
    WITH CHECK (EXISTS (
        SELECT 1 FROM @extschema@.roles r
        WHERE r.id = role_id
          AND r.organization_id IN (SELECT @extschema@.current_user_permitted_org_ids('roles.manage'))
          AND r.hierarchy_level < @extschema@.current_user_rank(r.organization_id)
          AND r.organization_id IN (SELECT @extschema@.current_user_permitted_org_ids(permission))));
CREATE POLICY role_permissions_delete_manager ON @extschema@.role_permissions
    FOR DELETE TO authenticated
    USING (EXISTS (
        SELECT 1 FROM @extschema@.roles r
        WHERE r.id = role_id
          AND r.organization_id IN (SELECT @extschema@.current_user_permitted_org_ids('roles.manage'))
          AND r.hierarchy_level < @extschema@.current_user_rank(r.organization_id)));
CREATE POLICY role_permissions_service_role_all ON @extschema@.role_permissions
    FOR ALL TO service_role USING (true) WITH CHECK (true);

-- A user sees their own platform grants; only the service role grants them.
CREATE POLICY user_roles_select_own ON @extschema@.user_roles
    FOR SELECT TO authenticated USING (user_id = (SELECT auth.uid()));
CREATE POLICY user_roles_service_role_all ON @extschema@.user_roles
    FOR ALL TO service_role USING (true) WITH CHECK (true);

REVOKE ALL ON FUNCTION @extschema@.current_user_permitted_org_ids(text) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.current_user_permitted_org_ids(text) TO authenticated, service_role;
REVOKE ALL ON FUNCTION @extschema@.has_platform_permission(text) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.has_platform_permission(text) TO authenticated, service_role;
REVOKE ALL ON FUNCTION @extschema@.current_user_rank(uuid) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.current_user_rank(uuid) TO authenticated, service_role;
REVOKE ALL ON FUNCTION @extschema@.has_permission(uuid, text) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.has_permission(uuid, text) TO authenticated, service_role;

REVOKE ALL ON FUNCTION @extschema@.check_role() FROM PUBLIC, anon, authenticated, service_role;
REVOKE ALL ON FUNCTION @extschema@.check_member_role() FROM PUBLIC, anon, authenticated, service_role;
ALTER FUNCTION @extschema@.check_role()
    SECURITY DEFINER SET search_path = pg_catalog, @extschema@, pg_temp;
ALTER FUNCTION @extschema@.check_member_role()
    SECURITY DEFINER SET search_path = pg_catalog, @extschema@, pg_temp;
