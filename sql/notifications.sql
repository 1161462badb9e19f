-- Notifications (seed 004 §4) and user preferences (seed 002 §1): src/notifications.rs.
--
-- The database notifies people of what happened to them, from the audit log's entries (one
-- rule per type, in notify_from_audit): an invitation for an existing account's email, an
-- invitation accepted (to the inviter), a role changed, a removal from an organization, an
-- ownership received. Nobody is notified of their own action; a preference with
-- in_app_enabled = false turns a type off. Each new notification is also sent with pg_notify
-- on the channel saas_core_notifications ({"id", "user_id", "organization_id", "type"}).

CREATE TABLE @extschema@.notifications (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id          uuid NOT NULL REFERENCES @extschema@.users (id) ON DELETE CASCADE,
    organization_id  uuid REFERENCES @extschema@.organizations (id) ON DELETE CASCADE,
    type             text NOT NULL CONSTRAINT notifications_type_check CHECK (type ~ '^[a-z_]+(\.[a-z_]+)*$'),
    title            text NOT NULL CONSTRAINT notifications_title_check CHECK (char_length(title) <= 255),
    body             text NOT NULL,
    data             jsonb NOT NULL DEFAULT '{}'::jsonb CONSTRAINT notifications_data_check CHECK (jsonb_typeof(data) = 'object'),
    link             text,
    read_at          timestamptz,
    archived_at      timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE @extschema@.notifications IS
    'In-app notifications, created by the database. A user reads their own and sets only read_at and archived_at.';

CREATE INDEX notifications_user_idx ON @extschema@.notifications (user_id, created_at DESC);
CREATE INDEX notifications_unread_idx ON @extschema@.notifications (user_id)
    WHERE read_at IS NULL AND archived_at IS NULL;
CREATE INDEX notifications_organization_idx ON @extschema@.notifications (organization_id);

CREATE TABLE @extschema@.notification_preferences (
    user_id            uuid NOT NULL REFERENCES @extschema@.users (id) ON DELETE CASCADE,
    notification_type  text NOT NULL
                       CONSTRAINT notification_preferences_type_check CHECK (notification_type ~ '^[a-z_]+(\.[a-z_]+)*$'),
    in_app_enabled     boolean NOT NULL DEFAULT true,
    -- For the application's mailer: saas_core sends no email.
    email_enabled      boolean NOT NULL DEFAULT true,
    email_frequency    text NOT NULL DEFAULT 'immediate'
                       CONSTRAINT notification_preferences_frequency_check
                       CHECK (email_frequency IN ('immediate', 'daily', 'weekly', 'never')),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, notification_type)
);

CREATE TABLE @extschema@.user_preferences (
    user_id     uuid NOT NULL REFERENCES @extschema@.users (id) ON DELETE CASCADE,
    category    text NOT NULL DEFAULT 'general'
                CONSTRAINT user_preferences_category_check CHECK (category ~ '^[a-z][a-z0-9_]{0,62}$'),
    key         text NOT NULL CONSTRAINT user_preferences_key_check CHECK (key ~ '^[a-z][a-z0-9_.]{0,126}$'),
    value       jsonb NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, category, key)
);
COMMENT ON TABLE @extschema@.user_preferences IS
    'Per-user settings as key/value (theme, language, …), read and written by the user.';

CREATE TRIGGER update_notification_preferences_updated_at
    BEFORE UPDATE ON @extschema@.notification_preferences
    FOR EACH ROW EXECUTE FUNCTION @extschema@.update_updated_at_column();
CREATE TRIGGER update_user_preferences_updated_at
    BEFORE UPDATE ON @extschema@.user_preferences
    FOR EACH ROW EXECUTE FUNCTION @extschema@.update_updated_at_column();

CREATE TRIGGER notify_from_audit
    AFTER INSERT ON @extschema@.audit_log
    REFERENCING NEW TABLE AS new_entries
    FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.notify_from_audit();

SELECT pg_catalog.pg_extension_config_dump('@extschema@.notifications', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.notification_preferences', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.user_preferences', '');

REVOKE ALL ON @extschema@.notifications, @extschema@.notification_preferences, @extschema@.user_preferences
    FROM PUBLIC, anon, authenticated, service_role;
GRANT SELECT ON @extschema@.notifications TO authenticated;
GRANT UPDATE (read_at, archived_at) ON @extschema@.notifications TO authenticated;
GRANT SELECT, INSERT, UPDATE, DELETE ON @extschema@.notification_preferences, @extschema@.user_preferences TO authenticated;
GRANT SELECT, INSERT, UPDATE, DELETE ON @extschema@.notifications, @extschema@.notification_preferences,
    @extschema@.user_preferences TO service_role;

ALTER TABLE @extschema@.notifications ENABLE ROW LEVEL SECURITY;
ALTER TABLE @extschema@.notification_preferences ENABLE ROW LEVEL SECURITY;
ALTER TABLE @extschema@.user_preferences ENABLE ROW LEVEL SECURITY;

CREATE POLICY notifications_select_own ON @extschema@.notifications
    FOR SELECT TO authenticated USING (user_id = (SELECT auth.uid()));
CREATE POLICY notifications_update_own ON @extschema@.notifications
    FOR UPDATE TO authenticated
    USING (user_id = (SELECT auth.uid())) WITH CHECK (user_id = (SELECT auth.uid()));
CREATE POLICY notifications_service_role_all ON @extschema@.notifications
    FOR ALL TO service_role USING (true) WITH CHECK (true);

CREATE POLICY notification_preferences_own ON @extschema@.notification_preferences
    FOR ALL TO authenticated
    USING (user_id = (SELECT auth.uid())) WITH CHECK (user_id = (SELECT auth.uid()));
CREATE POLICY notification_preferences_service_role_all ON @extschema@.notification_preferences
    FOR ALL TO service_role USING (true) WITH CHECK (true);

CREATE POLICY user_preferences_own ON @extschema@.user_preferences
    FOR ALL TO authenticated
    USING (user_id = (SELECT auth.uid())) WITH CHECK (user_id = (SELECT auth.uid()));
CREATE POLICY user_preferences_service_role_all ON @extschema@.user_preferences
    FOR ALL TO service_role USING (true) WITH CHECK (true);

REVOKE ALL ON FUNCTION @extschema@.notify_from_audit() FROM PUBLIC, anon, authenticated, service_role;
ALTER FUNCTION @extschema@.notify_from_audit()
    SECURITY DEFINER SET search_path = pg_catalog, @extschema@, pg_temp;

REVOKE ALL ON FUNCTION @extschema@.get_notifications(integer, timestamptz, boolean) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.get_notifications(integer, timestamptz, boolean) TO authenticated;
REVOKE ALL ON FUNCTION @extschema@.get_unread_notification_count() FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.get_unread_notification_count() TO authenticated;
REVOKE ALL ON FUNCTION @extschema@.mark_notification_read(uuid) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.mark_notification_read(uuid) TO authenticated;
REVOKE ALL ON FUNCTION @extschema@.mark_all_notifications_read(uuid) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.mark_all_notifications_read(uuid) TO authenticated;
REVOKE ALL ON FUNCTION @extschema@.archive_notification(uuid) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.archive_notification(uuid) TO authenticated;
