-- Metering: the raw usage log and its daily/monthly rollups (seed 000 §4).

-- Rollup buckets are calendar days and months in UTC, whatever the session's TimeZone:
-- [usage_bucket_start(period, t), usage_bucket_end(period, t)). The one place this formula
-- lives; the live rollup, aggregate_usage and check_feature_access all call it. Plain SQL,
-- so the planner inlines it.
CREATE FUNCTION @extschema@.usage_bucket_start(period text, at timestamptz)
RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT pg_catalog.date_trunc(CASE period WHEN 'daily' THEN 'day' WHEN 'monthly' THEN 'month' END,
                                 at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
$$;

CREATE FUNCTION @extschema@.usage_bucket_end(period text, at timestamptz)
RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT (pg_catalog.date_trunc(CASE period WHEN 'daily' THEN 'day' WHEN 'monthly' THEN 'month' END,
                                  at AT TIME ZONE 'UTC')
            + CASE period WHEN 'daily' THEN interval '1 day' WHEN 'monthly' THEN interval '1 month' END)
           AT TIME ZONE 'UTC'
$$;

CREATE TABLE @extschema@.usage_events (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id  uuid NOT NULL REFERENCES @extschema@.organizations (id) ON DELETE CASCADE,
    user_id          uuid DEFAULT auth.uid() REFERENCES @extschema@.users (id) ON DELETE SET NULL,
    -- record_created, api_call, automation_run, storage_used, schedule_executed,
    -- ai_tokens_used, user_active, or an application's own.
    event_type       text NOT NULL CHECK (event_type ~ '^[a-z][a-z0-9_]{0,62}$'),
    -- A delta in the unit of the limit it counts against; negative only as a service-role
    -- correction. Finite and at most 1e12 in magnitude: NaN and Infinity are numerics, and
    -- one of them would poison every sum of the organization's meters.
    quantity         numeric NOT NULL DEFAULT 1
                     CONSTRAINT usage_events_quantity_finite_check
                     CHECK (quantity <> 0 AND quantity BETWEEN -1e12 AND 1e12),
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
-- aggregate_usage() recomputes buckets with the organizations' rows locked FOR UPDATE, which
-- the foreign key check of every new event (FOR KEY SHARE on its organization) waits for: a
-- recompute never races with live writers, and only the organizations it recomputes wait.
-- A restore loads the events and their rollups as they were: nothing to add then.
CREATE FUNCTION @extschema@.rollup_usage_events()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, @extschema@, pg_temp
AS $$
BEGIN
    IF @extschema@.restore_in_progress() THEN
        RETURN NULL;
    END IF;
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
        SELECT n.organization_id, n.event_type, n.user_id, p.period,
               @extschema@.usage_bucket_start(p.period, n.created_at) AS bucket_start,
               @extschema@.usage_bucket_end(p.period, n.created_at) AS bucket_end,
               sum(n.quantity) AS quantity, count(*) AS events
        FROM new_events n
        CROSS JOIN (VALUES ('daily'), ('monthly')) AS p (period)
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
REVOKE ALL ON FUNCTION @extschema@.usage_bucket_start(text, timestamptz) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.usage_bucket_start(text, timestamptz) TO authenticated, service_role;
REVOKE ALL ON FUNCTION @extschema@.usage_bucket_end(text, timestamptz) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.usage_bucket_end(text, timestamptz) TO authenticated, service_role;
REVOKE ALL ON FUNCTION @extschema@.aggregate_usage(text, timestamptz, timestamptz) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.aggregate_usage(text, timestamptz, timestamptz) TO service_role;
