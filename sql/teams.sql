-- Teams and workspaces inside an organization (seed 002 §2): src/teams.rs.
--
-- A team's privacy says who knows about it: public (every member of the organization sees the
-- team and who is in it), private (members see that it exists, only its own members and team
-- managers see who is in it), secret (only its own members and team managers know it exists).
-- A workspace's visibility: organization (every member), team (the members of its team),
-- private (its own members). Holders of teams.manage (owners, admins) see and manage all of
-- them. Team and workspace members are always members of the organization: the composite
-- foreign keys below make a removal from the organization take its team and workspace
-- memberships along.

CREATE TABLE @extschema@.teams (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id  uuid NOT NULL REFERENCES @extschema@.organizations (id) ON DELETE CASCADE,
    name             text NOT NULL CONSTRAINT teams_name_check CHECK (char_length(btrim(name)) BETWEEN 1 AND 100),
    description      text CONSTRAINT teams_description_check CHECK (char_length(description) <= 2000),
    privacy          text NOT NULL DEFAULT 'private'
                     CONSTRAINT teams_privacy_check CHECK (privacy IN ('public', 'private', 'secret')),
    settings         jsonb NOT NULL DEFAULT '{}'::jsonb CONSTRAINT teams_settings_check CHECK (jsonb_typeof(settings) = 'object'),
    archived_at      timestamptz,
    created_by       uuid DEFAULT auth.uid() REFERENCES @extschema@.users (id) ON DELETE SET NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT teams_id_organization_key UNIQUE (id, organization_id)
);
CREATE UNIQUE INDEX teams_organization_name_key ON @extschema@.teams (organization_id, lower(name));

CREATE TABLE @extschema@.team_members (
    team_id          uuid NOT NULL,
    organization_id  uuid NOT NULL,
    user_id          uuid NOT NULL,
    role             text NOT NULL DEFAULT 'member' CONSTRAINT team_members_role_check CHECK (role IN ('lead', 'member')),
    added_by         uuid DEFAULT auth.uid() REFERENCES @extschema@.users (id) ON DELETE SET NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (team_id, user_id),
    CONSTRAINT team_members_team_fkey FOREIGN KEY (team_id, organization_id)
        REFERENCES @extschema@.teams (id, organization_id) ON DELETE CASCADE,
    CONSTRAINT team_members_member_fkey FOREIGN KEY (organization_id, user_id)
        REFERENCES @extschema@.organization_members (organization_id, user_id) ON DELETE CASCADE
);
CREATE INDEX team_members_user_idx ON @extschema@.team_members (user_id, team_id, role);
CREATE INDEX team_members_member_idx ON @extschema@.team_members (organization_id, user_id);

CREATE TABLE @extschema@.workspaces (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id  uuid NOT NULL REFERENCES @extschema@.organizations (id) ON DELETE CASCADE,
    -- The team it belongs to, if any. When the team is deleted the workspace stays; if it was
    -- visible to the team, only its own members (and team managers) see it from then on.
    team_id          uuid,
    name             text NOT NULL CONSTRAINT workspaces_name_check CHECK (char_length(btrim(name)) BETWEEN 1 AND 100),
    slug             text NOT NULL CONSTRAINT workspaces_slug_check CHECK (@extschema@.is_valid_slug(slug)),
    visibility       text NOT NULL DEFAULT 'organization'
                     CONSTRAINT workspaces_visibility_check CHECK (visibility IN ('organization', 'team', 'private')),
    settings         jsonb NOT NULL DEFAULT '{}'::jsonb CONSTRAINT workspaces_settings_check CHECK (jsonb_typeof(settings) = 'object'),
    archived_at      timestamptz,
    created_by       uuid DEFAULT auth.uid() REFERENCES @extschema@.users (id) ON DELETE SET NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT workspaces_id_organization_key UNIQUE (id, organization_id),
    CONSTRAINT workspaces_organization_slug_key UNIQUE (organization_id, slug),
    CONSTRAINT workspaces_team_fkey FOREIGN KEY (team_id, organization_id)
        REFERENCES @extschema@.teams (id, organization_id) ON DELETE SET NULL (team_id)
);
CREATE INDEX workspaces_team_idx ON @extschema@.workspaces (team_id) WHERE team_id IS NOT NULL;

CREATE TABLE @extschema@.workspace_members (
    workspace_id     uuid NOT NULL,
    organization_id  uuid NOT NULL,
    user_id          uuid NOT NULL,
    role             text NOT NULL DEFAULT 'editor'
                     CONSTRAINT workspace_members_role_check CHECK (role IN ('admin', 'editor', 'viewer')),
    added_by         uuid DEFAULT auth.uid() REFERENCES @extschema@.users (id) ON DELETE SET NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, user_id),
    CONSTRAINT workspace_members_workspace_fkey FOREIGN KEY (workspace_id, organization_id)
        REFERENCES @extschema@.workspaces (id, organization_id) ON DELETE CASCADE,
    CONSTRAINT workspace_members_member_fkey FOREIGN KEY (organization_id, user_id)
        REFERENCES @extschema@.organization_members (organization_id, user_id) ON DELETE CASCADE
);
CREATE INDEX workspace_members_user_idx ON @extschema@.workspace_members (user_id, workspace_id, role);
CREATE INDEX workspace_members_member_idx ON @extschema@.workspace_members (organization_id, user_id);

CREATE TRIGGER update_teams_updated_at
    BEFORE UPDATE ON @extschema@.teams
    FOR EACH ROW EXECUTE FUNCTION @extschema@.update_updated_at_column();
CREATE TRIGGER update_workspaces_updated_at
    BEFORE UPDATE ON @extschema@.workspaces
    FOR EACH ROW EXECUTE FUNCTION @extschema@.update_updated_at_column();

-- Policy helpers: the caller's teams and workspaces (optionally only where they hold role).
CREATE FUNCTION @extschema@.current_user_team_ids(role text DEFAULT NULL)
RETURNS SETOF uuid
LANGUAGE plpgsql STABLE SECURITY DEFINER ROWS 10
SET search_path = pg_catalog, @extschema@, pg_temp
AS $$
BEGIN
    RETURN QUERY
    SELECT tm.team_id FROM @extschema@.team_members tm
    WHERE tm.user_id = auth.uid() AND ($1 IS NULL OR tm.role = $1);
END
$$;
CREATE FUNCTION @extschema@.current_user_workspace_ids(role text DEFAULT NULL)
RETURNS SETOF uuid
LANGUAGE plpgsql STABLE SECURITY DEFINER ROWS 10
SET search_path = pg_catalog, @extschema@, pg_temp
AS $$
BEGIN
    RETURN QUERY
    SELECT wm.workspace_id FROM @extschema@.workspace_members wm
    WHERE wm.user_id = auth.uid() AND ($1 IS NULL OR wm.role = $1);
END
$$;

SELECT pg_catalog.pg_extension_config_dump('@extschema@.teams', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.team_members', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.workspaces', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.workspace_members', '');

REVOKE ALL ON @extschema@.teams, @extschema@.team_members, @extschema@.workspaces, @extschema@.workspace_members
    FROM PUBLIC, anon, authenticated, service_role;
GRANT SELECT, INSERT, DELETE ON @extschema@.teams, @extschema@.team_members, @extschema@.workspaces,
    @extschema@.workspace_members TO authenticated;
GRANT UPDATE (name, description, privacy, settings, archived_at) ON @extschema@.teams TO authenticated;
GRANT UPDATE (role) ON @extschema@.team_members, @extschema@.workspace_members TO authenticated;
GRANT UPDATE (name, slug, visibility, settings, archived_at, team_id) ON @extschema@.workspaces TO authenticated;
GRANT SELECT, INSERT, UPDATE, DELETE ON @extschema@.teams, @extschema@.team_members, @extschema@.workspaces,
    @extschema@.workspace_members TO service_role;

ALTER TABLE @extschema@.teams ENABLE ROW LEVEL SECURITY;
ALTER TABLE @extschema@.team_members ENABLE ROW LEVEL SECURITY;
ALTER TABLE @extschema@.workspaces ENABLE ROW LEVEL SECURITY;
ALTER TABLE @extschema@.workspace_members ENABLE ROW LEVEL SECURITY;

-- Teams: public and private ones are known to the organization; secret ones to their members.
CREATE POLICY teams_select ON @extschema@.teams
    FOR SELECT TO authenticated
    USING (organization_id IN (SELECT @extschema@.current_user_org_ids())
           AND (privacy <> 'secret'
                OR id IN (SELECT @extschema@.current_user_team_ids())
                OR organization_id IN (SELECT @extschema@.current_user_permitted_org_ids('teams.manage'))));
CREATE POLICY teams_write_manager ON @extschema@.teams
    FOR ALL TO authenticated
    USING (organization_id IN (SELECT @extschema@.current_user_permitted_org_ids('teams.manage')))
    WITH CHECK (organization_id IN (SELECT @extschema@.current_user_permitted_org_ids('teams.manage')));
-- Leads edit their own team (not delete it).
CREATE POLICY teams_update_lead ON @extschema@.teams
    FOR UPDATE TO authenticated
    USING (id IN (SELECT @extschema@.current_user_team_ids('lead')))
    WITH CHECK (id IN (SELECT @extschema@.current_user_team_ids('lead')));
CREATE POLICY teams_service_role_all ON @extschema@.teams
    FOR ALL TO service_role USING (true) WITH CHECK (true);

-- Who is in a team: everyone in the organization for public teams; the team's own members and
-- team managers otherwise.
CREATE POLICY team_members_select ON @extschema@.team_members
    FOR SELECT TO authenticated
    USING (team_id IN (SELECT @extschema@.current_user_team_ids())
           OR organization_id IN (SELECT @extschema@.current_user_permitted_org_ids('teams.manage'))
           OR team_id IN (SELECT t.id FROM @extschema@.teams t WHERE t.privacy = 'public'));
-- Team managers and the team's leads add, change and remove; anyone may leave.
CREATE POLICY team_members_write_manager ON @extschema@.team_members
    FOR ALL TO authenticated
    USING (organization_id IN (SELECT @extschema@.current_user_permitted_org_ids('teams.manage'))
           OR team_id IN (SELECT @extschema@.current_user_team_ids('lead')))
    WITH CHECK (organization_id IN (SELECT @extschema@.current_user_permitted_org_ids('teams.manage'))
                OR team_id IN (SELECT @extschema@.current_user_team_ids('lead')));
CREATE POLICY team_members_leave ON @extschema@.team_members
    FOR DELETE TO authenticated USING (user_id = (SELECT auth.uid()));
CREATE POLICY team_members_service_role_all ON @extschema@.team_members
    FOR ALL TO service_role USING (true) WITH CHECK (true);

CREATE POLICY workspaces_select ON @extschema@.workspaces
    FOR SELECT TO authenticated
    USING (organization_id IN (SELECT @extschema@.current_user_org_ids())
           AND (visibility = 'organization'
                OR (visibility = 'team' AND team_id IN (SELECT @extschema@.current_user_team_ids()))
                OR id IN (SELECT @extschema@.current_user_workspace_ids())
                OR organization_id IN (SELECT @extschema@.current_user_permitted_org_ids('teams.manage'))));
CREATE POLICY workspaces_write_manager ON @extschema@.workspaces
    FOR ALL TO authenticated
    USING (organization_id IN (SELECT @extschema@.current_user_permitted_org_ids('teams.manage')))
    WITH CHECK (organization_id IN (SELECT @extschema@.current_user_permitted_org_ids('teams.manage')));
CREATE POLICY workspaces_update_admin ON @extschema@.workspaces
    FOR UPDATE TO authenticated
    USING (id IN (SELECT @extschema@.current_user_workspace_ids('admin')))
    WITH CHECK (id IN (SELECT @extschema@.current_user_workspace_ids('admin')));
CREATE POLICY workspaces_service_role_all ON @extschema@.workspaces
    FOR ALL TO service_role USING (true) WITH CHECK (true);

-- Who is in a workspace: whoever can see the workspace.
CREATE POLICY workspace_members_select ON @extschema@.workspace_members
    FOR SELECT TO authenticated
    USING (workspace_id IN (SELECT w.id FROM @extschema@.workspaces w));
CREATE POLICY workspace_members_write_manager ON @extschema@.workspace_members
    FOR ALL TO authenticated
    USING (organization_id IN (SELECT @extschema@.current_user_permitted_org_ids('teams.manage'))
           OR workspace_id IN (SELECT @extschema@.current_user_workspace_ids('admin')))
    WITH CHECK (organization_id IN (SELECT @extschema@.current_user_permitted_org_ids('teams.manage'))
                OR workspace_id IN (SELECT @extschema@.current_user_workspace_ids('admin')));
CREATE POLICY workspace_members_leave ON @extschema@.workspace_members
    FOR DELETE TO authenticated USING (user_id = (SELECT auth.uid()));
CREATE POLICY workspace_members_service_role_all ON @extschema@.workspace_members
    FOR ALL TO service_role USING (true) WITH CHECK (true);

REVOKE ALL ON FUNCTION @extschema@.current_user_team_ids(text) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.current_user_team_ids(text) TO authenticated, service_role;
REVOKE ALL ON FUNCTION @extschema@.current_user_workspace_ids(text) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.current_user_workspace_ids(text) TO authenticated, service_role;

REVOKE ALL ON FUNCTION @extschema@.create_team(uuid, text, text, text) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.create_team(uuid, text, text, text) TO authenticated, service_role;
REVOKE ALL ON FUNCTION @extschema@.create_workspace(uuid, text, text, text, uuid) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.create_workspace(uuid, text, text, text, uuid) TO authenticated, service_role;
