-- Provisioning (src/provisioning.rs): profiles follow the sign-in accounts in auth.users.
--
-- The triggers are named saas_core_* so that they never collide with an application's own
-- (Supabase's "Managing user data" guide creates on_auth_user_created). They are ordinary
-- triggers on a table saas_core does not own, so pg_dump dumps them with auth.users. When a
-- restore is recreating auth.users in this same session (it has no primary key yet: the dump
-- adds it, and these triggers, after the data), the dump's own CREATE TRIGGER statements
-- bring them back and creating them here would collide.
DO $triggers$
BEGIN
    IF @extschema@.restore_in_progress()
       AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_index i
                       WHERE i.indrelid = 'auth.users'::pg_catalog.regclass
                         AND i.indisunique AND i.indnatts = 1
                         AND i.indkey[0] = (SELECT a.attnum FROM pg_catalog.pg_attribute a
                                            WHERE a.attrelid = 'auth.users'::pg_catalog.regclass
                                              AND a.attname = 'id')) THEN
        RETURN;
    END IF;
    CREATE TRIGGER saas_core_provision_user
        AFTER INSERT ON auth.users
        FOR EACH ROW EXECUTE FUNCTION @extschema@.provision_auth_user();
    CREATE TRIGGER saas_core_sync_user
        AFTER UPDATE ON auth.users
        FOR EACH ROW EXECUTE FUNCTION @extschema@.sync_auth_user();
    CREATE TRIGGER saas_core_delete_user
        AFTER DELETE ON auth.users
        FOR EACH ROW EXECUTE FUNCTION @extschema@.remove_auth_user();
END
$triggers$;

-- They write profiles, organizations and subscriptions whoever changes auth.users.
ALTER FUNCTION @extschema@.provision_auth_user()
    SECURITY DEFINER SET search_path = pg_catalog, @extschema@, pg_temp;
ALTER FUNCTION @extschema@.sync_auth_user()
    SECURITY DEFINER SET search_path = pg_catalog, @extschema@, pg_temp;
ALTER FUNCTION @extschema@.remove_auth_user()
    SECURITY DEFINER SET search_path = pg_catalog, @extschema@, pg_temp;
REVOKE ALL ON FUNCTION @extschema@.provision_auth_user() FROM PUBLIC, anon, authenticated, service_role;
REVOKE ALL ON FUNCTION @extschema@.sync_auth_user() FROM PUBLIC, anon, authenticated, service_role;
REVOKE ALL ON FUNCTION @extschema@.remove_auth_user() FROM PUBLIC, anon, authenticated, service_role;

REVOKE ALL ON FUNCTION @extschema@.sync_auth_users() FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.sync_auth_users() TO service_role;
REVOKE ALL ON FUNCTION @extschema@.provision_existing_accounts_at_install() FROM PUBLIC, anon, authenticated, service_role;
