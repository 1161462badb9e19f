-- Organizations: personal and team workspaces, and who belongs to them with which role (seed 000 §2).

CREATE TABLE @extschema@.organizations (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name         text NOT NULL CHECK (char_length(btrim(name)) BETWEEN 1 AND 100),
    slug         text NOT NULL UNIQUE CONSTRAINT organizations_slug_check CHECK (@extschema@.is_valid_slug(slug)),
    -- Always a member with the role owner. When the owner's profile is deleted its teams pass
    -- to a successor first (hand_over_organizations); what is left (the personal
    -- organization, teams nobody else is in) goes with it.
    owner_id     uuid NOT NULL REFERENCES @extschema@.users (id) ON DELETE CASCADE,
    is_personal  boolean NOT NULL DEFAULT false,
    org_type     text NOT NULL DEFAULT 'business'
                 CHECK (org_type IN ('personal', 'business', 'family', 'education', 'other')),
    description  text CHECK (char_length(description) <= 2000),
    avatar_url   text,
    settings     jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(settings) = 'object'),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    -- since 0.2.0: maintained by track_membership; the seat limit counts it
    member_count integer NOT NULL DEFAULT 0 CONSTRAINT organizations_member_count_check CHECK (member_count >= 0),
    CONSTRAINT organizations_personal_type_check CHECK (is_personal = (org_type = 'personal'))
);

COMMENT ON TABLE @extschema@.organizations IS
    'Workspaces. Every user has exactly one personal organization; team organizations are created with create_organization().';
COMMENT ON COLUMN @extschema@.organizations.member_count IS
    'Members of the organization, kept by the track_membership trigger. The seat limit (plan max_seats) counts it.';

-- One personal organization per user: also what makes the signup trigger idempotent.
CREATE UNIQUE INDEX organizations_one_personal_per_owner ON @extschema@.organizations (owner_id)
    WHERE is_personal;
CREATE INDEX organizations_owner_id_idx ON @extschema@.organizations (owner_id);

CREATE TABLE @extschema@.organization_members (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id  uuid NOT NULL REFERENCES @extschema@.organizations (id) ON DELETE CASCADE,
    user_id          uuid NOT NULL REFERENCES @extschema@.users (id) ON DELETE CASCADE,
    -- A system role or a custom role of this organization (roles.sql, check_member_role).
    role             text NOT NULL DEFAULT 'member',
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (organization_id, user_id)
);

-- (organization_id, user_id) is covered by the unique constraint; policies also look up by user.
CREATE INDEX organization_members_user_id_idx ON @extschema@.organization_members (user_id, organization_id, role);

CREATE TRIGGER update_organizations_updated_at
    BEFORE UPDATE ON @extschema@.organizations
    FOR EACH ROW EXECUTE FUNCTION @extschema@.update_updated_at_column();
CREATE TRIGGER update_organization_members_updated_at
    BEFORE UPDATE ON @extschema@.organization_members
    FOR EACH ROW EXECUTE FUNCTION @extschema@.update_updated_at_column();

-- Slugs being chosen: the rule, not reserved, not taken, with errors that say which.
CREATE TRIGGER check_organization
    BEFORE INSERT OR UPDATE OF slug ON @extschema@.organizations
    FOR EACH ROW EXECUTE FUNCTION @extschema@.check_organization();

-- member_count and the seat limit. AFTER, so it only sees additions that passed RLS.
CREATE TRIGGER track_membership
    AFTER INSERT OR DELETE OR UPDATE OF organization_id, user_id ON @extschema@.organization_members
    FOR EACH ROW EXECUTE FUNCTION @extschema@.track_membership();

-- The owner's membership stays while the organization and the owner's account do.
CREATE TRIGGER protect_owner_membership
    BEFORE DELETE OR UPDATE ON @extschema@.organization_members
    FOR EACH ROW EXECUTE FUNCTION @extschema@.protect_owner_membership();

-- Teams pass to a successor before a deleted profile's foreign keys remove what it owns.
CREATE TRIGGER hand_over_organizations
    BEFORE DELETE ON @extschema@.users
    FOR EACH ROW EXECUTE FUNCTION @extschema@.hand_over_organizations();

-- The caller's organizations, read straight from organization_members' index on user_id
-- (src/caller_organizations.rs): no policy recursion, no SECURITY DEFINER switch, no query
-- to plan, for the one call every RLS statement makes.
CREATE FUNCTION @extschema@.current_user_org_ids(roles text[] DEFAULT NULL)
RETURNS SETOF uuid
LANGUAGE c STABLE ROWS 10
AS 'MODULE_PATHNAME', 'current_user_org_ids_wrapper';
COMMENT ON FUNCTION @extschema@.current_user_org_ids(text[]) IS
    'Organizations the caller (auth.uid()) belongs to, optionally only those where their role is one of roles.';
REVOKE ALL ON FUNCTION @extschema@.current_user_org_ids(text[]) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.current_user_org_ids(text[]) TO authenticated, service_role;

-- Privileges.
REVOKE ALL ON @extschema@.organizations FROM PUBLIC, anon, authenticated, service_role;
REVOKE ALL ON @extschema@.organization_members FROM PUBLIC, anon, authenticated, service_role;
GRANT SELECT, DELETE ON @extschema@.organizations TO authenticated;
-- owner_id, is_personal and org_type are not editable through the API.
GRANT UPDATE (name, slug, description, avatar_url, settings) ON @extschema@.organizations TO authenticated;
GRANT SELECT, INSERT, DELETE ON @extschema@.organization_members TO authenticated;
GRANT UPDATE (role) ON @extschema@.organization_members TO authenticated;
GRANT SELECT, INSERT, UPDATE, DELETE ON @extschema@.organizations, @extschema@.organization_members TO service_role;

ALTER TABLE @extschema@.organizations ENABLE ROW LEVEL SECURITY;
ALTER TABLE @extschema@.organization_members ENABLE ROW LEVEL SECURITY;

-- Visibility comes from membership only (an owner is always a member). Who may change an
-- organization or its members is a matter of permissions: those policies are in members.sql.
CREATE POLICY organizations_select_member ON @extschema@.organizations
    FOR SELECT TO authenticated
    USING (id IN (SELECT @extschema@.current_user_org_ids()));

CREATE POLICY organizations_service_role_all ON @extschema@.organizations
    FOR ALL TO service_role USING (true) WITH CHECK (true);

CREATE POLICY organization_members_select_member ON @extschema@.organization_members
    FOR SELECT TO authenticated
    USING (organization_id IN (SELECT @extschema@.current_user_org_ids()));

CREATE POLICY organization_members_service_role_all ON @extschema@.organization_members
    FOR ALL TO service_role USING (true) WITH CHECK (true);

SELECT pg_catalog.pg_extension_config_dump('@extschema@.organizations', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.organization_members', '');

REVOKE ALL ON FUNCTION @extschema@.create_organization(text, text, text) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.create_organization(text, text, text) TO authenticated;
REVOKE ALL ON FUNCTION @extschema@.transfer_ownership(uuid, uuid) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.transfer_ownership(uuid, uuid) TO authenticated, service_role;
REVOKE ALL ON FUNCTION @extschema@.is_valid_slug(text) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.is_valid_slug(text) TO anon, authenticated, service_role;

-- Trigger functions: never called directly; they read and count across organizations.
REVOKE ALL ON FUNCTION @extschema@.check_organization() FROM PUBLIC, anon, authenticated, service_role;
REVOKE ALL ON FUNCTION @extschema@.track_membership() FROM PUBLIC, anon, authenticated, service_role;
REVOKE ALL ON FUNCTION @extschema@.protect_owner_membership() FROM PUBLIC, anon, authenticated, service_role;
REVOKE ALL ON FUNCTION @extschema@.hand_over_organizations() FROM PUBLIC, anon, authenticated, service_role;
ALTER FUNCTION @extschema@.check_organization()
    SECURITY DEFINER SET search_path = pg_catalog, @extschema@, pg_temp;
ALTER FUNCTION @extschema@.track_membership()
    SECURITY DEFINER SET search_path = pg_catalog, @extschema@, pg_temp;
ALTER FUNCTION @extschema@.protect_owner_membership()
    SECURITY DEFINER SET search_path = pg_catalog, @extschema@, pg_temp;
ALTER FUNCTION @extschema@.hand_over_organizations()
    SECURITY DEFINER SET search_path = pg_catalog, @extschema@, pg_temp;
