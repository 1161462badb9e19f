-- Invitations (seed 002 `invitations`, seed 004 `team_invitations`): src/invitations.rs.
--
-- An invitation is to an organization, and optionally to one of its teams and/or workspaces
-- (accepting joins those too). It is bound to an email address (stored lower-cased) and a role no higher than
-- the inviter's. Only the SHA-256 of its token is stored: the token itself is returned once,
-- to the inviter, and is what the invitee's link carries. A pending invitation past expires_at
-- reads as expired (no job needed).

CREATE TABLE @extschema@.invitation_settings (
    id                    boolean PRIMARY KEY DEFAULT true CONSTRAINT invitation_settings_singleton_check CHECK (id),
    -- How long an invitation stays valid when create_invitation is not told otherwise.
    default_expiry        interval NOT NULL DEFAULT interval '7 days',
    -- The longest expiry an inviter may ask for.
    max_expiry            interval NOT NULL DEFAULT interval '30 days',
    -- Pending (unexpired) invitations an organization may have at once.
    max_pending_per_org   integer NOT NULL DEFAULT 100
                          CONSTRAINT invitation_settings_max_pending_check CHECK (max_pending_per_org BETWEEN 1 AND 100000),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT invitation_settings_expiry_check
        CHECK (default_expiry >= interval '5 minutes' AND default_expiry <= max_expiry AND max_expiry <= interval '1 year')
);
INSERT INTO @extschema@.invitation_settings DEFAULT VALUES;
COMMENT ON TABLE @extschema@.invitation_settings IS
    'Invitation configuration (one row): default and longest expiry, pending invitations per organization.';

CREATE TRIGGER update_invitation_settings_updated_at
    BEFORE UPDATE ON @extschema@.invitation_settings
    FOR EACH ROW EXECUTE FUNCTION @extschema@.update_updated_at_column();
-- A restore's COPY replaces the seeded row (backup.sql).
CREATE TRIGGER replace_seeded_rows
    BEFORE INSERT ON @extschema@.invitation_settings
    FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.replace_seeded_rows();
SELECT pg_catalog.pg_extension_config_dump('@extschema@.invitation_settings', '');
REVOKE ALL ON @extschema@.invitation_settings FROM PUBLIC, anon, authenticated, service_role;
GRANT SELECT ON @extschema@.invitation_settings TO authenticated;
GRANT SELECT, UPDATE ON @extschema@.invitation_settings TO service_role;
ALTER TABLE @extschema@.invitation_settings ENABLE ROW LEVEL SECURITY;
CREATE POLICY invitation_settings_select ON @extschema@.invitation_settings
    FOR SELECT TO authenticated USING (true);
CREATE POLICY invitation_settings_service_role_all ON @extschema@.invitation_settings
    FOR ALL TO service_role USING (true) WITH CHECK (true);

CREATE TABLE @extschema@.invitations (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id  uuid NOT NULL REFERENCES @extschema@.organizations (id) ON DELETE CASCADE,
    email            text NOT NULL
                     CONSTRAINT invitations_email_check CHECK (email = lower(btrim(email)) AND email LIKE '_%@_%'),
    role             text NOT NULL,
    -- Optionally also to one of the organization's teams and/or workspaces.
    team_id          uuid,
    workspace_id     uuid,
    token_hash       bytea NOT NULL UNIQUE CONSTRAINT invitations_token_hash_check CHECK (octet_length(token_hash) = 32),
    status           text NOT NULL DEFAULT 'pending'
                     CONSTRAINT invitations_status_check
                     CHECK (status IN ('pending', 'accepted', 'declined', 'revoked', 'expired')),
    invited_by       uuid REFERENCES @extschema@.users (id) ON DELETE SET NULL,
    expires_at       timestamptz NOT NULL,
    responded_at     timestamptz,
    accepted_by      uuid REFERENCES @extschema@.users (id) ON DELETE SET NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT invitations_response_check CHECK ((status = 'pending') = (responded_at IS NULL)),
    CONSTRAINT invitations_team_fkey FOREIGN KEY (team_id, organization_id)
        REFERENCES @extschema@.teams (id, organization_id) ON DELETE CASCADE,
    CONSTRAINT invitations_workspace_fkey FOREIGN KEY (workspace_id, organization_id)
        REFERENCES @extschema@.workspaces (id, organization_id) ON DELETE CASCADE
);
COMMENT ON TABLE @extschema@.invitations IS
    'Invitations to an organization by email. Created, accepted, declined and revoked through RPCs (create_invitation, …).';

-- The one place expiry is read: a pending invitation past expires_at is expired.
CREATE FUNCTION @extschema@.effective_invitation_status(status text, expires_at timestamptz)
RETURNS text
LANGUAGE sql STABLE
AS $$
    SELECT CASE WHEN status = 'pending' AND expires_at <= now() THEN 'expired' ELSE status END
$$;
REVOKE ALL ON FUNCTION @extschema@.effective_invitation_status(text, timestamptz) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.effective_invitation_status(text, timestamptz) TO authenticated, service_role;

-- One pending invitation per email and organization: re-inviting replaces it.
CREATE UNIQUE INDEX invitations_one_pending_per_email ON @extschema@.invitations (organization_id, email)
    WHERE status = 'pending';
CREATE INDEX invitations_organization_idx ON @extschema@.invitations (organization_id, created_at DESC);
CREATE INDEX invitations_email_idx ON @extschema@.invitations (email) WHERE status = 'pending';
CREATE INDEX invitations_team_idx ON @extschema@.invitations (team_id) WHERE team_id IS NOT NULL;
CREATE INDEX invitations_workspace_idx ON @extschema@.invitations (workspace_id) WHERE workspace_id IS NOT NULL;

CREATE TRIGGER update_invitations_updated_at
    BEFORE UPDATE ON @extschema@.invitations
    FOR EACH ROW EXECUTE FUNCTION @extschema@.update_updated_at_column();

SELECT pg_catalog.pg_extension_config_dump('@extschema@.invitations', '');

-- Read by those who may invite; written only through the RPCs (and by the service role).
REVOKE ALL ON @extschema@.invitations FROM PUBLIC, anon, authenticated, service_role;
GRANT SELECT ON @extschema@.invitations TO authenticated;
GRANT SELECT, INSERT, UPDATE, DELETE ON @extschema@.invitations TO service_role;
ALTER TABLE @extschema@.invitations ENABLE ROW LEVEL SECURITY;
CREATE POLICY invitations_select_inviter ON @extschema@.invitations
    FOR SELECT TO authenticated
    USING (organization_id = ANY (ARRAY(SELECT @extschema@.current_user_permitted_org_ids('members.invite'))));
CREATE POLICY invitations_service_role_all ON @extschema@.invitations
    FOR ALL TO service_role USING (true) WITH CHECK (true);

REVOKE ALL ON FUNCTION @extschema@.create_invitation(uuid, text, text, interval, uuid, uuid) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.create_invitation(uuid, text, text, interval, uuid, uuid) TO authenticated, service_role;
REVOKE ALL ON FUNCTION @extschema@.create_invitations(uuid, text[], text, interval, uuid, uuid) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.create_invitations(uuid, text[], text, interval, uuid, uuid) TO authenticated, service_role;
-- The accept page may be shown before the invitee signs in.
REVOKE ALL ON FUNCTION @extschema@.lookup_invitation(text) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.lookup_invitation(text) TO anon, authenticated, service_role;
REVOKE ALL ON FUNCTION @extschema@.accept_invitation(text) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.accept_invitation(text) TO authenticated;
REVOKE ALL ON FUNCTION @extschema@.decline_invitation(text) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.decline_invitation(text) TO authenticated;
REVOKE ALL ON FUNCTION @extschema@.revoke_invitation(uuid) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.revoke_invitation(uuid) TO authenticated, service_role;
REVOKE ALL ON FUNCTION @extschema@.get_organization_invitations(uuid) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.get_organization_invitations(uuid) TO authenticated, service_role;
