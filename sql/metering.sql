-- Metering: the raw usage log and its daily/monthly rollups (seed 000 §4).

-- The advisory lock that orders live rollups (shared) against aggregate_usage() (exclusive).
CREATE FUNCTION @extschema@.usage_rollup_lock_key()
RETURNS bigint
LANGUAGE sql IMMUTABLE
AS $$ SELECT 7305916244011522048::bigint $$;

CREATE TABLE @extschema@.usage_events (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id  uuid NOT NULL REFERENCES @extschema@.organizations (id) ON DELETE CASCADE,
    user_id          uuid DEFAULT auth.uid() REFERENCES @extschema@.users (id) ON DELETE SET NULL,
    -- record_created, api_call, automation_run, storage_used, schedule_executed,
    -- ai_tokens_used, user_active, or an application's own.
    event_type       text NOT NULL CHECK (event_type ~ '^[a-z][a-z0-9_]{0,62}$'),
    -- A delta in the unit of the limit it counts against; negative only as a service-role correction.
    quantity         numeric NOT NULL DEFAULT 1 CHECK (quantity <> 0),
    metadata         jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(metadata) = 'object'),
    created_at       timestamptz NOT NULL DEFAULT now()
);

-- Per-org/type/user lookups (live distinct-user counting, per-user history) and window scans.
CREATE INDEX usage_events_org_type_user_created_idx
    ON @extschema@.usage_events (organization_id, event_type, user_id, created_at);
CREATE INDEX usage_events_user_id_idx ON @extschema@.usage_events (user_id);
CREATE INDEX usage_events_created_at_idx ON @extschema@.usage_events (created_at);

CREATE TABLE @extschema@.usage_aggregations (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id  uuid NOT NULL REFERENCES @extschema@.organizations (id) ON DELETE CASCADE,
    event_type       text NOT NULL,
    period           text NOT NULL CHECK (period IN ('daily', 'monthly')),
    -- Buckets are calendar days / months in UTC: [period_start, period_end).
    period_start     timestamptz NOT NULL,
    period_end       timestamptz NOT NULL,
    total_quantity   numeric NOT NULL DEFAULT 0,
    event_count      bigint NOT NULL DEFAULT 0,
    unique_users     bigint NOT NULL DEFAULT 0,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT usage_aggregations_bucket_key UNIQUE (organization_id, event_type, period, period_start),
    CONSTRAINT usage_aggregations_bucket_order_check CHECK (period_end > period_start)
);

COMMENT ON TABLE @extschema@.usage_aggregations IS
    'Daily and monthly rollups of usage_events, kept current on insert and recomputed exactly by aggregate_usage().';

CREATE INDEX usage_aggregations_period_start_idx ON @extschema@.usage_aggregations (period, period_start);

CREATE TRIGGER update_usage_aggregations_updated_at
    BEFORE UPDATE ON @extschema@.usage_aggregations
    FOR EACH ROW EXECUTE FUNCTION @extschema@.update_updated_at_column();

-- Live rollup: every insert into usage_events adds to its day and month buckets, so that
-- check_feature_access reads one rollup row instead of scanning the log. A user counts toward
-- unique_users when the rows just inserted are all the events of theirs in the bucket (an
-- index range read of at most batch+1 rows, so the cost is linear in the batch).
-- It holds the rollup lock in shared mode: aggregate_usage() takes it exclusively, so a
-- recompute never races with live writers.
CREATE FUNCTION @extschema@.rollup_usage_events()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, @extschema@, pg_temp
AS $$
BEGIN
    PERFORM pg_catalog.pg_advisory_xact_lock_shared(@extschema@.usage_rollup_lock_key());
    INSERT INTO @extschema@.usage_aggregations AS a
        (organization_id, event_type, period, period_start, period_end,
         total_quantity, event_count, unique_users)
    SELECT per_user.organization_id, per_user.event_type, per_user.period,
           per_user.bucket_start, per_user.bucket_end,
           sum(per_user.quantity), sum(per_user.events),
           count(*) FILTER (WHERE per_user.user_id IS NOT NULL AND per_user.events = (
               SELECT count(*) FROM (
                   SELECT 1 FROM @extschema@.usage_events e
                   WHERE e.organization_id = per_user.organization_id
                     AND e.event_type = per_user.event_type
                     AND e.user_id = per_user.user_id
                     AND e.created_at >= per_user.bucket_start AND e.created_at < per_user.bucket_end
                   LIMIT per_user.events + 1) AS seen))
    FROM (
        -- Bucket arithmetic in UTC wall time, whatever the session's TimeZone.
        SELECT n.organization_id, n.event_type, n.user_id, p.period,
               b.utc_start AT TIME ZONE 'UTC' AS bucket_start,
               (b.utc_start + p.step) AT TIME ZONE 'UTC' AS bucket_end,
               sum(n.quantity) AS quantity, count(*) AS events
        FROM new_events n
        CROSS JOIN (VALUES ('daily', 'day', interval '1 day'),
                           ('monthly', 'month', interval '1 month')) AS p (period, unit, step)
        CROSS JOIN LATERAL (SELECT pg_catalog.date_trunc(p.unit, n.created_at AT TIME ZONE 'UTC') AS utc_start) b
        GROUP BY 1, 2, 3, 4, 5, 6
    ) per_user
    GROUP BY 1, 2, 3, 4, 5
    ON CONFLICT (organization_id, event_type, period, period_start) DO UPDATE
        SET total_quantity = a.total_quantity + excluded.total_quantity,
            event_count    = a.event_count + excluded.event_count,
            unique_users   = a.unique_users + excluded.unique_users;
    RETURN NULL;
END
$$;

CREATE TRIGGER rollup_usage_events
    AFTER INSERT ON @extschema@.usage_events
    REFERENCING NEW TABLE AS new_events
    FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.rollup_usage_events();

REVOKE ALL ON @extschema@.usage_events, @extschema@.usage_aggregations
    FROM PUBLIC, anon, authenticated, service_role;
GRANT SELECT ON @extschema@.usage_events, @extschema@.usage_aggregations TO authenticated;
-- id and created_at are not the caller's to choose: events are stamped when recorded.
GRANT INSERT (organization_id, user_id, event_type, quantity, metadata)
    ON @extschema@.usage_events TO authenticated;
GRANT SELECT, INSERT, UPDATE, DELETE ON @extschema@.usage_events, @extschema@.usage_aggregations
    TO service_role;

ALTER TABLE @extschema@.usage_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE @extschema@.usage_aggregations ENABLE ROW LEVEL SECURITY;

CREATE POLICY usage_events_select_member ON @extschema@.usage_events
    FOR SELECT TO authenticated
    USING (organization_id IN (SELECT @extschema@.current_user_org_ids()));

-- Members record their own usage in their organizations; viewers are read-only, and only
-- the service role may record negative corrections.
CREATE POLICY usage_events_insert_member ON @extschema@.usage_events
    FOR INSERT TO authenticated
    WITH CHECK (
        user_id = (SELECT auth.uid())
        AND quantity > 0
        AND organization_id IN (SELECT @extschema@.current_user_org_ids(ARRAY['owner', 'admin', 'member']))
    );

CREATE POLICY usage_events_service_role_all ON @extschema@.usage_events
    FOR ALL TO service_role USING (true) WITH CHECK (true);

CREATE POLICY usage_aggregations_select_member ON @extschema@.usage_aggregations
    FOR SELECT TO authenticated
    USING (organization_id IN (SELECT @extschema@.current_user_org_ids()));
CREATE POLICY usage_aggregations_service_role_all ON @extschema@.usage_aggregations
    FOR ALL TO service_role USING (true) WITH CHECK (true);

SELECT pg_catalog.pg_extension_config_dump('@extschema@.usage_events', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.usage_aggregations', '');

REVOKE ALL ON FUNCTION @extschema@.rollup_usage_events() FROM PUBLIC, anon, authenticated, service_role;
REVOKE ALL ON FUNCTION @extschema@.usage_rollup_lock_key() FROM PUBLIC, anon, authenticated, service_role;
REVOKE ALL ON FUNCTION @extschema@.aggregate_usage(text, timestamptz, timestamptz) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.aggregate_usage(text, timestamptz, timestamptz) TO service_role;
