-- The raw usage log over time (src/retention.rs): month partitions, retention, schedule.

-- The months of the late-event window and a few ahead. During a restore the dump brings the
-- source's partitions instead.
SELECT @extschema@.create_usage_partitions();

-- A restore re-creates the partitions as ordinary tables, and the target's default privileges
-- (Supabase grants anon, authenticated and service_role everything on new tables in public)
-- apply to them; the dump cannot revoke what the source never had. Once the restore brings
-- the rollup state (after every table exists), the partitions are sealed again.
CREATE FUNCTION @extschema@.seal_usage_partitions()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, @extschema@, pg_temp
AS $$
DECLARE
    part regclass;
BEGIN
    FOR part IN SELECT i.inhrelid::regclass FROM pg_catalog.pg_inherits i
                WHERE i.inhparent = '@extschema@.usage_events'::regclass
    LOOP
        EXECUTE format('REVOKE ALL ON %s FROM PUBLIC, anon, authenticated, service_role', part);
    END LOOP;
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION @extschema@.seal_usage_partitions() FROM PUBLIC, anon, authenticated, service_role;

CREATE TRIGGER seal_usage_partitions
    AFTER INSERT ON @extschema@.usage_rollup_state
    FOR EACH STATEMENT WHEN (@extschema@.restore_in_progress())
    EXECUTE FUNCTION @extschema@.seal_usage_partitions();

REVOKE ALL ON FUNCTION @extschema@.create_usage_partition(timestamptz) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.create_usage_partition(timestamptz) TO service_role;
REVOKE ALL ON FUNCTION @extschema@.create_usage_partitions(integer) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.create_usage_partitions(integer) TO service_role;
REVOKE ALL ON FUNCTION @extschema@.apply_usage_retention() FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.apply_usage_retention() TO service_role;
REVOKE ALL ON FUNCTION @extschema@.schedule_usage_maintenance(text, text) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.schedule_usage_maintenance(text, text) TO service_role;
REVOKE ALL ON FUNCTION @extschema@.unschedule_usage_maintenance() FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.unschedule_usage_maintenance() TO service_role;
