-- Backups (src/backup.rs): the helpers that keep pg_dump / pg_restore exact.

-- pg_dump must create auth.users and auth.uid() (ordinary objects on plain PostgreSQL and on
-- Supabase) before CREATE EXTENSION saas_core, which needs them.
SELECT @extschema@.record_auth_dependencies();

REVOKE ALL ON FUNCTION @extschema@.record_auth_dependencies() FROM PUBLIC, anon, authenticated, service_role;
-- Asked by triggers; harmless to anyone, but not an API.
REVOKE ALL ON FUNCTION @extschema@.restore_in_progress() FROM PUBLIC, anon, authenticated, service_role;
