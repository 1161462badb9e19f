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

-- How metering behaves, in one row the service role edits (sql/retention.sql reads it too).
CREATE TABLE @extschema@.usage_settings (
    id                         boolean PRIMARY KEY DEFAULT true CONSTRAINT usage_settings_singleton_check CHECK (id),
    -- How far back the service role may date an event (members record for now).
    late_event_window          interval NOT NULL DEFAULT interval '35 days'
                               CONSTRAINT usage_settings_late_event_window_check
                               CHECK (late_event_window >= interval '0' AND late_event_window <= interval '1 year'),
    -- Raw events older than this are dropped by apply_usage_retention(), a month partition at a
    -- time; NULL keeps them forever. Rollups and idempotency keys are not affected.
    event_retention            interval DEFAULT NULL,
    -- How long a recorded idempotency key keeps deduplicating (at least the late-event window).
    idempotency_key_retention  interval NOT NULL DEFAULT interval '45 days',
    -- How many months of partitions create_usage_partitions() keeps ahead of now.
    partitions_ahead           integer NOT NULL DEFAULT 3
                               CONSTRAINT usage_settings_partitions_ahead_check CHECK (partitions_ahead BETWEEN 1 AND 24),
    updated_at                 timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT usage_settings_retention_check
        CHECK (event_retention IS NULL OR event_retention >= late_event_window + interval '1 month'),
    CONSTRAINT usage_settings_key_retention_check CHECK (idempotency_key_retention >= late_event_window)
);
INSERT INTO @extschema@.usage_settings DEFAULT VALUES;

COMMENT ON TABLE @extschema@.usage_settings IS
    'Metering configuration (one row): late-event window, retention of raw events and idempotency keys, partitions kept ahead.';

-- The raw usage log, partitioned by month of occurred_at. Partitions are ordinary tables the
-- extension creates as time goes (create_usage_partitions) and drops (apply_usage_retention);
-- pg_dump dumps them like any table.
CREATE TABLE @extschema@.usage_events (
    id               uuid NOT NULL DEFAULT gen_random_uuid(),
    organization_id  uuid NOT NULL CONSTRAINT usage_events_organization_id_fkey
                     REFERENCES @extschema@.organizations (id) ON DELETE CASCADE,
    user_id          uuid DEFAULT auth.uid() CONSTRAINT usage_events_user_id_fkey
                     REFERENCES @extschema@.users (id) ON DELETE SET NULL,
    -- record_created, api_call, automation_run, storage_used, schedule_executed,
    -- ai_tokens_used, user_active, or an application's own.
    event_type       text NOT NULL CONSTRAINT usage_events_event_type_check CHECK (event_type ~ '^[a-z][a-z0-9_]{0,62}$'),
    -- A delta in the unit of the limit it counts against; negative only as a service-role
    -- correction. Finite and at most 1e12 in magnitude: NaN and Infinity are numerics, and
    -- one of them would poison every sum of the organization's meters.
    quantity         numeric NOT NULL DEFAULT 1
                     CONSTRAINT usage_events_quantity_finite_check
                     CHECK (quantity <> 0 AND quantity BETWEEN -1e12 AND 1e12),
    metadata         jsonb NOT NULL DEFAULT '{}'::jsonb CONSTRAINT usage_events_metadata_check CHECK (jsonb_typeof(metadata) = 'object'),
    -- When it happened (its buckets) and when it was recorded. Only the service role dates
    -- an event, within usage_settings.late_event_window.
    occurred_at      timestamptz NOT NULL DEFAULT now(),
    received_at      timestamptz NOT NULL DEFAULT now(),
    -- A caller's request key: unique per organization (usage_idempotency_keys), kept longer
    -- than the event itself.
    idempotency_key  text CONSTRAINT usage_events_idempotency_key_check CHECK (char_length(idempotency_key) BETWEEN 1 AND 255),
    -- Recorded beyond a soft limit (overage, for usage-based billing).
    over_limit       boolean NOT NULL DEFAULT false
) PARTITION BY RANGE (occurred_at);

COMMENT ON TABLE @extschema@.usage_events IS
    'Raw usage events, partitioned by month of occurred_at. Record with record_usage() (limits, idempotency) or INSERT.';

-- Keys and indexes live on each partition (create_usage_partition), not on this parent: a
-- restore re-attaches the dumped partitions, and indexes inherited from the parent would be
-- created twice.

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
    'Daily and monthly rollups. Recent counts wait in usage_counters until aggregate_usage() folds them in; check_feature_access reads both.';

CREATE INDEX usage_aggregations_period_start_idx ON @extschema@.usage_aggregations (period, period_start);

CREATE TRIGGER replace_seeded_rows
    BEFORE INSERT ON @extschema@.usage_settings
    FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.replace_seeded_rows();
CREATE TRIGGER update_usage_settings_updated_at
    BEFORE UPDATE ON @extschema@.usage_settings
    FOR EACH ROW EXECUTE FUNCTION @extschema@.update_updated_at_column();

-- Rollup maintenance: held (FOR UPDATE) by aggregate_usage while it folds or recomputes.
CREATE TABLE @extschema@.usage_rollup_state (
    id               boolean PRIMARY KEY DEFAULT true CONSTRAINT usage_rollup_state_singleton_check CHECK (id),
    folded_at        timestamptz,
    -- The oldest month whose raw events are kept (apply_usage_retention moves it forward).
    events_kept_since timestamptz
);
INSERT INTO @extschema@.usage_rollup_state DEFAULT VALUES;
CREATE TRIGGER replace_seeded_rows
    BEFORE INSERT ON @extschema@.usage_rollup_state
    FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.replace_seeded_rows();

-- Who was active in a bucket (the distinct users behind usage_aggregations.unique_users), so
-- that each user counts once per bucket, whoever writes their events.
CREATE TABLE @extschema@.usage_active_users (
    organization_id  uuid NOT NULL REFERENCES @extschema@.organizations (id) ON DELETE CASCADE,
    event_type       text NOT NULL,
    -- 'daily' or 'monthly', as written by counting.rs alone: no CHECK here, PostgreSQL would
    -- re-read its expression on every counting statement (about a tenth of an insert's cost).
    period           text NOT NULL,
    period_start     timestamptz NOT NULL,
    user_id          uuid NOT NULL,
    CONSTRAINT usage_active_users_pkey PRIMARY KEY (organization_id, event_type, period, period_start, user_id)
);

-- Buckets whose distinct-user count a correction (UPDATE or DELETE of events) made stale;
-- the next aggregate_usage() recounts them.
CREATE TABLE @extschema@.usage_dirty_buckets (
    organization_id  uuid NOT NULL REFERENCES @extschema@.organizations (id) ON DELETE CASCADE,
    event_type       text NOT NULL,
    period           text NOT NULL CONSTRAINT usage_dirty_buckets_period_check CHECK (period IN ('daily', 'monthly')),
    period_start     timestamptz NOT NULL,
    CONSTRAINT usage_dirty_buckets_pkey PRIMARY KEY (organization_id, event_type, period, period_start)
);

-- Live counts. Every INSERT into usage_events adds its events to the counter rows of its
-- buckets, in the same transaction, one row per writing backend ("writer"): concurrent writers
-- of one organization never update the same row, so none waits for another's commit.
-- aggregate_usage() folds these rows into usage_aggregations; readers add the two.
CREATE TABLE @extschema@.usage_counters (
    organization_id  uuid NOT NULL REFERENCES @extschema@.organizations (id) ON DELETE CASCADE,
    event_type       text NOT NULL,
    period           text NOT NULL,  -- 'daily' or 'monthly'; no CHECK, as in usage_active_users
    period_start     timestamptz NOT NULL,
    writer           integer NOT NULL,
    total_quantity   numeric NOT NULL DEFAULT 0,
    event_count      bigint NOT NULL DEFAULT 0,
    unique_users     bigint NOT NULL DEFAULT 0,
    CONSTRAINT usage_counters_pkey PRIMARY KEY (organization_id, event_type, period, period_start, writer)
);

COMMENT ON TABLE @extschema@.usage_counters IS
    'Counts not folded into usage_aggregations yet, one row per bucket and writing backend.';

-- Counting at write (src/counting.rs): the end of each INSERT adds its events to their
-- buckets' counter rows and its users to usage_active_users (which decides who is new to a
-- bucket, once, whoever writes concurrently).
CREATE TRIGGER count_usage_events
    AFTER INSERT ON @extschema@.usage_events
    REFERENCING NEW TABLE AS new_events
    FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.count_usage_events();
-- Backends remember users they saw counted in a bucket and skip probing usage_active_users for
-- their next events; any deletion there makes every backend forget (at its commit).
CREATE TRIGGER forget_active_users
    AFTER DELETE OR TRUNCATE ON @extschema@.usage_active_users
    FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.forget_active_users();

CREATE TRIGGER update_usage_aggregations_updated_at
    BEFORE UPDATE ON @extschema@.usage_aggregations
    FOR EACH ROW EXECUTE FUNCTION @extschema@.update_updated_at_column();

-- Corrections: an UPDATE or DELETE of events takes their quantities out of (and back into)
-- their buckets' counters at once, and marks the buckets for a distinct-user recount by the
-- next aggregate_usage(). A restore loads counters as they were: nothing to correct then.
CREATE FUNCTION @extschema@.apply_usage_corrections(
    organization_ids uuid[], event_types text[], occurred timestamptz[], quantities numeric[], events integer[])
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, @extschema@, pg_temp
AS $$
    WITH change AS (
        SELECT * FROM unnest(organization_ids, event_types, occurred, quantities, events)
                      AS c (organization_id, event_type, occurred_at, quantity, events)
        -- An organization being deleted takes its counters along.
        WHERE EXISTS (SELECT 1 FROM @extschema@.organizations o WHERE o.id = c.organization_id)
    ), buckets AS (
        SELECT c.organization_id, c.event_type, p.period,
               @extschema@.usage_bucket_start(p.period, c.occurred_at) AS period_start,
               sum(c.quantity) AS quantity, sum(c.events) AS events
        FROM change c CROSS JOIN (VALUES ('daily'), ('monthly')) AS p (period)
        GROUP BY 1, 2, 3, 4
    ), dirty AS (
        INSERT INTO @extschema@.usage_dirty_buckets (organization_id, event_type, period, period_start)
        SELECT organization_id, event_type, period, period_start FROM buckets
        ON CONFLICT DO NOTHING
    )
    INSERT INTO @extschema@.usage_counters AS c
        (organization_id, event_type, period, period_start, writer, total_quantity, event_count, unique_users)
    SELECT organization_id, event_type, period, period_start, @extschema@.usage_writer(), quantity, events, 0
    FROM buckets
    ON CONFLICT (organization_id, event_type, period, period_start, writer) DO UPDATE
        SET total_quantity = c.total_quantity + excluded.total_quantity,
            event_count    = c.event_count + excluded.event_count
$$;

CREATE FUNCTION @extschema@.correct_usage_rollups()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, @extschema@, pg_temp
AS $$
BEGIN
    IF @extschema@.restore_in_progress() THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'UPDATE' THEN
        PERFORM @extschema@.apply_usage_corrections(array_agg(c.organization_id), array_agg(c.event_type),
                                                    array_agg(c.occurred_at), array_agg(c.quantity), array_agg(c.events))
        FROM (SELECT o.organization_id, o.event_type, o.occurred_at, -o.quantity AS quantity, -1 AS events
              FROM old_events o
              UNION ALL
              SELECT n.organization_id, n.event_type, n.occurred_at, n.quantity, 1
              FROM new_events n) c
        HAVING count(*) > 0;
    ELSE
        PERFORM @extschema@.apply_usage_corrections(array_agg(o.organization_id), array_agg(o.event_type),
                                                    array_agg(o.occurred_at), array_agg(-o.quantity), array_agg(-1))
        FROM old_events o
        HAVING count(*) > 0;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER correct_usage_rollups_on_update
    AFTER UPDATE ON @extschema@.usage_events
    REFERENCING OLD TABLE AS old_events NEW TABLE AS new_events
    FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.correct_usage_rollups();
CREATE TRIGGER correct_usage_rollups_on_delete
    AFTER DELETE ON @extschema@.usage_events
    REFERENCING OLD TABLE AS old_events
    FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.correct_usage_rollups();

-- Privileges: members read their organizations' usage and record for themselves (directly
-- or through record_usage); everything else is the service role's.
REVOKE ALL ON @extschema@.usage_events, @extschema@.usage_aggregations, @extschema@.usage_settings,
              @extschema@.usage_rollup_state, @extschema@.usage_active_users, @extschema@.usage_dirty_buckets,
              @extschema@.usage_counters
    FROM PUBLIC, anon, authenticated, service_role;
GRANT SELECT ON @extschema@.usage_events, @extschema@.usage_aggregations TO authenticated;
-- id, occurred_at, received_at and over_limit are not a member's to choose: events are stamped when recorded.
GRANT INSERT (organization_id, user_id, event_type, quantity, metadata, idempotency_key)
    ON @extschema@.usage_events TO authenticated;
GRANT SELECT, INSERT, UPDATE, DELETE ON @extschema@.usage_events, @extschema@.usage_aggregations TO service_role;
GRANT SELECT, UPDATE ON @extschema@.usage_settings TO service_role;
GRANT SELECT ON @extschema@.usage_rollup_state, @extschema@.usage_active_users, @extschema@.usage_dirty_buckets,
                @extschema@.usage_counters
    TO service_role;

ALTER TABLE @extschema@.usage_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE @extschema@.usage_aggregations ENABLE ROW LEVEL SECURITY;
ALTER TABLE @extschema@.usage_settings ENABLE ROW LEVEL SECURITY;
ALTER TABLE @extschema@.usage_rollup_state ENABLE ROW LEVEL SECURITY;
ALTER TABLE @extschema@.usage_active_users ENABLE ROW LEVEL SECURITY;
ALTER TABLE @extschema@.usage_dirty_buckets ENABLE ROW LEVEL SECURITY;
ALTER TABLE @extschema@.usage_counters ENABLE ROW LEVEL SECURITY;

-- "= ANY (ARRAY(...))", not "IN (SELECT ...)": the caller's organizations become one array
-- the planner can use as an index condition, so a read that relies on RLS alone is as fast as
-- one that names its organization.
CREATE POLICY usage_events_select_member ON @extschema@.usage_events
    FOR SELECT TO authenticated
    USING (organization_id = ANY (ARRAY(SELECT @extschema@.current_user_org_ids())));

-- Members record their own usage in their organizations; viewers are read-only, and only
-- the service role may record negative corrections.
CREATE POLICY usage_events_insert_member ON @extschema@.usage_events
    FOR INSERT TO authenticated
    WITH CHECK (
        user_id = (SELECT auth.uid())
        AND quantity > 0
        AND organization_id = ANY (ARRAY(SELECT @extschema@.current_user_org_ids(ARRAY['owner', 'admin', 'member'])))
    );

CREATE POLICY usage_events_service_role_all ON @extschema@.usage_events
    FOR ALL TO service_role USING (true) WITH CHECK (true);

CREATE POLICY usage_aggregations_select_member ON @extschema@.usage_aggregations
    FOR SELECT TO authenticated
    USING (organization_id = ANY (ARRAY(SELECT @extschema@.current_user_org_ids())));
CREATE POLICY usage_aggregations_service_role_all ON @extschema@.usage_aggregations
    FOR ALL TO service_role USING (true) WITH CHECK (true);

CREATE POLICY usage_settings_service_role ON @extschema@.usage_settings
    FOR ALL TO service_role USING (true) WITH CHECK (true);
CREATE POLICY usage_rollup_state_service_role ON @extschema@.usage_rollup_state
    FOR SELECT TO service_role USING (true);
CREATE POLICY usage_active_users_service_role ON @extschema@.usage_active_users
    FOR SELECT TO service_role USING (true);
CREATE POLICY usage_dirty_buckets_service_role ON @extschema@.usage_dirty_buckets
    FOR SELECT TO service_role USING (true);
CREATE POLICY usage_counters_service_role ON @extschema@.usage_counters
    FOR SELECT TO service_role USING (true);

-- The partitions of usage_events are ordinary tables pg_dump dumps by itself.
SELECT pg_catalog.pg_extension_config_dump('@extschema@.usage_aggregations', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.usage_settings', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.usage_rollup_state', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.usage_active_users', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.usage_dirty_buckets', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.usage_counters', '');

REVOKE ALL ON FUNCTION @extschema@.count_usage_events() FROM PUBLIC, anon, authenticated, service_role;
REVOKE ALL ON FUNCTION @extschema@.forget_active_users() FROM PUBLIC, anon, authenticated, service_role;
REVOKE ALL ON FUNCTION @extschema@.usage_writer() FROM PUBLIC, anon, authenticated, service_role;
REVOKE ALL ON FUNCTION @extschema@.apply_usage_corrections(uuid[], text[], timestamptz[], numeric[], integer[])
    FROM PUBLIC, anon, authenticated, service_role;
REVOKE ALL ON FUNCTION @extschema@.correct_usage_rollups() FROM PUBLIC, anon, authenticated, service_role;
REVOKE ALL ON FUNCTION @extschema@.usage_bucket_start(text, timestamptz) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.usage_bucket_start(text, timestamptz) TO authenticated, service_role;
REVOKE ALL ON FUNCTION @extschema@.usage_bucket_end(text, timestamptz) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.usage_bucket_end(text, timestamptz) TO authenticated, service_role;
REVOKE ALL ON FUNCTION @extschema@.aggregate_usage(text, timestamptz, timestamptz) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.aggregate_usage(text, timestamptz, timestamptz) TO service_role;
REVOKE ALL ON FUNCTION @extschema@.aggregate_usage() FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.aggregate_usage() TO service_role;
