-- Entitlements: database-driven plan limits and feature flags (seed 000 §5).

-- What each feature key measures. A limit without a meter is reported without usage.
CREATE TABLE @extschema@.feature_definitions (
    feature_key       text PRIMARY KEY CHECK (feature_key ~ '^[a-z][a-z0-9_]{0,62}$'),
    kind              text NOT NULL CHECK (kind IN ('limit', 'flags')),
    -- For limits: which usage_events.event_type counts against it, over which window, and how.
    usage_event_type  text,
    usage_window      text CHECK (usage_window IN ('month', 'lifetime')),
    usage_measure     text CHECK (usage_measure IN ('sum', 'unique_users', 'members')),
    description       text NOT NULL,
    CONSTRAINT feature_definitions_meter_check CHECK (
        (kind = 'flags' AND usage_measure IS NULL)
        OR (kind = 'limit' AND (usage_measure IS NULL
                                OR usage_measure = 'members'
                                OR (usage_event_type IS NOT NULL AND usage_window IS NOT NULL)))
    ),
    CONSTRAINT feature_definitions_unique_users_window_check
        CHECK (usage_measure IS DISTINCT FROM 'unique_users' OR usage_window = 'month')
);

CREATE TABLE @extschema@.plan_features (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    plan         text NOT NULL REFERENCES @extschema@.plans (key) ON UPDATE CASCADE ON DELETE CASCADE,
    feature_key  text NOT NULL REFERENCES @extschema@.feature_definitions (feature_key) ON UPDATE CASCADE,
    -- Numeric limit; -1 means unlimited. NULL for the flags row.
    limit_value  bigint CHECK (limit_value >= -1),
    -- Boolean feature flags, only on the 'features' row: {"api_access": true, ...}.
    flags        jsonb CHECK (flags IS NULL OR jsonb_typeof(flags) = 'object'),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    -- since 0.2.0: 'hard' limits refuse usage beyond them; 'soft' ones record it as overage.
    enforcement  text NOT NULL DEFAULT 'hard' CONSTRAINT plan_features_enforcement_check CHECK (enforcement IN ('hard', 'soft')),
    UNIQUE (plan, feature_key),
    CONSTRAINT plan_features_value_check CHECK ((limit_value IS NULL) <> (flags IS NULL))
);

COMMENT ON TABLE @extschema@.plan_features IS
    'Limits and flags per plan. Change them with UPDATE; check_feature_access reads them on every call.';

CREATE INDEX plan_features_feature_key_idx ON @extschema@.plan_features (feature_key);

-- check_feature_access caches both tables per backend; any write makes every backend reload.
CREATE TRIGGER invalidate_plan_catalog
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON @extschema@.feature_definitions
    FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.invalidate_plan_catalog();
CREATE TRIGGER invalidate_plan_catalog
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON @extschema@.plan_features
    FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.invalidate_plan_catalog();

CREATE TRIGGER update_plan_features_updated_at
    BEFORE UPDATE ON @extschema@.plan_features
    FOR EACH ROW EXECUTE FUNCTION @extschema@.update_updated_at_column();

INSERT INTO @extschema@.feature_definitions
    (feature_key, kind, usage_event_type, usage_window, usage_measure, description) VALUES
    ('max_records',             'limit', 'record_created',    'lifetime', 'sum',          'Records stored (record_created events, net of negative corrections)'),
    ('max_api_calls_per_month', 'limit', 'api_call',          'month',    'sum',          'API calls per calendar month (UTC)'),
    ('max_automations',         'limit', 'automation_run',    'month',    'sum',          'Automation runs per calendar month (UTC)'),
    ('max_storage_gb',          'limit', 'storage_used',      'lifetime', 'sum',          'Storage in GB (storage_used events are deltas in GB)'),
    ('max_mau',                 'limit', 'user_active',       'month',    'unique_users', 'Distinct active users per calendar month (UTC)'),
    ('max_schedules',           'limit', 'schedule_executed', 'month',    'sum',          'Scheduled executions per calendar month (UTC)'),
    ('max_ai_tokens_per_month', 'limit', 'ai_tokens_used',    'month',    'sum',          'AI tokens per calendar month (UTC)'),
    ('max_seats',               'limit', NULL,                NULL,       'members',      'Members of the organization'),
    ('features',                'flags', NULL,                NULL,       NULL,           'Boolean feature flags of the plan');

-- 4 plans x 9 feature keys = 36 rows.
INSERT INTO @extschema@.plan_features (plan, feature_key, limit_value, flags)
SELECT p.plan, v.feature_key, v.limits[p.n], NULL
FROM (VALUES ('free', 1), ('pro', 2), ('business', 3), ('enterprise', 4)) AS p (plan, n)
CROSS JOIN (VALUES
    ('max_records',             ARRAY[100, 10000, 100000, -1]::bigint[]),
    ('max_api_calls_per_month', ARRAY[1000, 100000, 1000000, -1]::bigint[]),
    ('max_automations',         ARRAY[5, 100, 1000, -1]::bigint[]),
    ('max_storage_gb',          ARRAY[1, 10, 100, -1]::bigint[]),
    ('max_mau',                 ARRAY[100, 1000, 10000, -1]::bigint[]),
    ('max_schedules',           ARRAY[5, 50, 500, -1]::bigint[]),
    ('max_ai_tokens_per_month', ARRAY[10000, 1000000, 10000000, -1]::bigint[]),
    ('max_seats',               ARRAY[1, 5, 50, -1]::bigint[])
) AS v (feature_key, limits)
UNION ALL
SELECT plan, 'features', NULL, flags
FROM (VALUES
    ('free', '{"basic_features": true, "api_access": false, "advanced_analytics": false, "sso": false, "custom_branding": false, "priority_support": false, "dedicated_support": false, "custom_contracts": false}'::jsonb),
    ('pro', '{"basic_features": true, "api_access": true, "advanced_analytics": true, "sso": false, "custom_branding": false, "priority_support": false, "dedicated_support": false, "custom_contracts": false}'::jsonb),
    ('business', '{"basic_features": true, "api_access": true, "advanced_analytics": true, "sso": true, "custom_branding": true, "priority_support": true, "dedicated_support": false, "custom_contracts": false}'::jsonb),
    ('enterprise', '{"basic_features": true, "api_access": true, "advanced_analytics": true, "sso": true, "custom_branding": true, "priority_support": true, "dedicated_support": true, "custom_contracts": true}'::jsonb)
) AS f (plan, flags);

-- The plan whose features a subscription gives: its own while in good standing (trialing,
-- active, past_due during dunning), otherwise free. Plain SQL without sub-selects, so the
-- planner inlines it into the queries that use it.
CREATE FUNCTION @extschema@.plan_in_effect(plan text, status text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT CASE WHEN status IN ('trialing', 'active', 'past_due') THEN plan ELSE 'free' END
$$;

-- The plan an organization gets; free when it has no subscription.
CREATE FUNCTION @extschema@.org_effective_plan(org_id uuid)
RETURNS text
LANGUAGE sql STABLE
AS $$
    SELECT coalesce(
        (SELECT @extschema@.plan_in_effect(s.plan, s.status)
         FROM @extschema@.org_subscriptions s WHERE s.organization_id = org_id),
        'free')
$$;

-- pg_dump dumps every catalog row (operator edits and added features too); a restore's COPY
-- replaces the rows CREATE EXTENSION seeded (backup.sql).
CREATE TRIGGER replace_seeded_rows
    BEFORE INSERT ON @extschema@.feature_definitions
    FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.replace_seeded_rows();
CREATE TRIGGER replace_seeded_rows
    BEFORE INSERT ON @extschema@.plan_features
    FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.replace_seeded_rows();

SELECT pg_catalog.pg_extension_config_dump('@extschema@.feature_definitions', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.plan_features', '');

REVOKE ALL ON @extschema@.feature_definitions, @extschema@.plan_features
    FROM PUBLIC, anon, authenticated, service_role;
GRANT SELECT ON @extschema@.feature_definitions, @extschema@.plan_features TO anon, authenticated;
GRANT SELECT, INSERT, UPDATE, DELETE ON @extschema@.feature_definitions, @extschema@.plan_features
    TO service_role;

ALTER TABLE @extschema@.feature_definitions ENABLE ROW LEVEL SECURITY;
ALTER TABLE @extschema@.plan_features ENABLE ROW LEVEL SECURITY;

CREATE POLICY feature_definitions_select_all ON @extschema@.feature_definitions
    FOR SELECT TO anon, authenticated USING (true);
CREATE POLICY feature_definitions_service_role_all ON @extschema@.feature_definitions
    FOR ALL TO service_role USING (true) WITH CHECK (true);
CREATE POLICY plan_features_select_all ON @extschema@.plan_features
    FOR SELECT TO anon, authenticated USING (true);
CREATE POLICY plan_features_service_role_all ON @extschema@.plan_features
    FOR ALL TO service_role USING (true) WITH CHECK (true);

REVOKE ALL ON FUNCTION @extschema@.plan_in_effect(text, text) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.plan_in_effect(text, text) TO authenticated, service_role;
REVOKE ALL ON FUNCTION @extschema@.org_effective_plan(uuid) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.org_effective_plan(uuid) TO authenticated, service_role;
REVOKE ALL ON FUNCTION @extschema@.invalidate_plan_catalog() FROM PUBLIC, anon, authenticated, service_role;
REVOKE ALL ON FUNCTION @extschema@.check_feature_access(uuid, text, uuid) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.check_feature_access(uuid, text, uuid) TO authenticated, service_role;
REVOKE ALL ON FUNCTION @extschema@.get_usage_summary(uuid) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.get_usage_summary(uuid) TO authenticated, service_role;
