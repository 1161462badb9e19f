-- Backups (src/backup.rs): the helpers that keep pg_dump / pg_restore exact.

-- pg_dump must create auth.users and auth.uid() (ordinary objects on plain PostgreSQL and on
-- Supabase) before CREATE EXTENSION saas_core, which needs them.
SELECT @extschema@.record_auth_dependencies();

REVOKE ALL ON FUNCTION @extschema@.record_auth_dependencies() FROM PUBLIC, anon, authenticated, service_role;
-- Asked by triggers; harmless to anyone, but not an API.
REVOKE ALL ON FUNCTION @extschema@.restore_in_progress() FROM PUBLIC, anon, authenticated, service_role;

-- A restore loads every row of the tables CREATE EXTENSION seeds (the plan catalog, the
-- metering settings and state): in a restore session the first COPY into one of them starts
-- from empty instead of colliding with the seed. feature_definitions is restored before
-- plan_features (which references it), so it clears both; so are plans.
CREATE FUNCTION @extschema@.replace_seeded_rows()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, @extschema@, pg_temp
AS $$
BEGIN
    IF @extschema@.restore_in_progress() THEN
        IF TG_TABLE_NAME IN ('feature_definitions', 'plans') THEN
            DELETE FROM @extschema@.plan_features;
        END IF;
        EXECUTE pg_catalog.format('DELETE FROM %I.%I', TG_TABLE_SCHEMA, TG_TABLE_NAME);
    END IF;
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION @extschema@.replace_seeded_rows() FROM PUBLIC, anon, authenticated, service_role;
