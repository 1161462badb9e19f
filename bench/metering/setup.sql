-- Metering benchmark set-up (scripts/bench_metering.sh): :orgs business organizations with
-- known ids, each with its owner; the two tables an application would otherwise write; the
-- hand-written rollup baseline. Run as a superuser in a database with saas_core installed.
\set ON_ERROR_STOP 1
SET client_min_messages = warning;
DROP SCHEMA IF EXISTS bench_metering CASCADE;
CREATE SCHEMA bench_metering;
GRANT USAGE ON SCHEMA bench_metering TO service_role, authenticated;

-- Organization n and its owner have ids the pgbench scripts compute from n.
CREATE FUNCTION bench_metering.org_id(n int) RETURNS uuid LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT ('00000000-0000-4000-8001-' || lpad(n::text, 12, '0'))::uuid $$;
CREATE FUNCTION bench_metering.user_id(n int) RETURNS uuid LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT ('00000000-0000-4000-8002-' || lpad(n::text, 12, '0'))::uuid $$;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA bench_metering TO service_role, authenticated;

INSERT INTO auth.users (id, email)
SELECT bench_metering.user_id(n), format('owner%s@bench.example', n) FROM generate_series(1, :orgs) n;
INSERT INTO organizations (id, name, slug, owner_id, org_type)
SELECT bench_metering.org_id(n), format('Bench %s', n), format('bench-%s', n), bench_metering.user_id(n), 'business'
FROM generate_series(1, :orgs) n;
INSERT INTO org_subscriptions (organization_id, plan, status)
SELECT bench_metering.org_id(n), 'business', 'active' FROM generate_series(1, :orgs) n;
INSERT INTO organization_members (organization_id, user_id, role)
SELECT bench_metering.org_id(n), bench_metering.user_id(n), 'owner' FROM generate_series(1, :orgs) n;
-- A hard monthly limit record_usage checks (raised so the benchmark never reaches it).
UPDATE plan_features SET limit_value = 1000000000 WHERE plan = 'business' AND feature_key = 'max_api_calls_per_month';

-- The floor: the same columns, nothing else.
CREATE TABLE bench_metering.bare (
    id              uuid DEFAULT gen_random_uuid(),
    organization_id uuid,
    user_id         uuid,
    event_type      text,
    quantity        numeric DEFAULT 1,
    metadata        jsonb DEFAULT '{}',
    idempotency_key text,
    created_at      timestamptz DEFAULT now()
);
-- What an application would write without saas_core (0.1.0's usage_events without its
-- triggers): the same keys, foreign keys, checks and indexes.
CREATE TABLE bench_metering.constrained (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    user_id         uuid REFERENCES users (id) ON DELETE SET NULL,
    event_type      text NOT NULL CHECK (event_type ~ '^[a-z][a-z0-9_]{0,62}$'),
    quantity        numeric NOT NULL DEFAULT 1 CHECK (quantity <> 0 AND quantity BETWEEN -1e12 AND 1e12),
    metadata        jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(metadata) = 'object'),
    idempotency_key text,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ON bench_metering.constrained (organization_id, event_type, created_at);
CREATE INDEX ON bench_metering.constrained (user_id);
GRANT SELECT, INSERT ON bench_metering.bare, bench_metering.constrained TO service_role;

-- The hand-written rollup: INSERT … SELECT … GROUP BY … ON CONFLICT, both periods.
CREATE TABLE bench_metering.hand_rollups (LIKE usage_aggregations INCLUDING DEFAULTS);
ALTER TABLE bench_metering.hand_rollups ADD PRIMARY KEY (organization_id, event_type, period, period_start);
CREATE FUNCTION bench_metering.hand_rollup(since timestamptz) RETURNS bigint LANGUAGE sql AS $$
    WITH done AS (
        INSERT INTO bench_metering.hand_rollups AS a
            (id, organization_id, event_type, period, period_start, period_end, total_quantity, event_count, unique_users)
        SELECT gen_random_uuid(), e.organization_id, e.event_type, p.period,
               usage_bucket_start(p.period, e.created_at), usage_bucket_end(p.period, e.created_at),
               sum(e.quantity), count(*), count(DISTINCT e.user_id)
        FROM bench_metering.constrained e CROSS JOIN (VALUES ('daily'), ('monthly')) AS p (period)
        WHERE e.created_at >= since
        GROUP BY 2, 3, 4, 5, 6
        ON CONFLICT (organization_id, event_type, period, period_start) DO UPDATE
            SET total_quantity = a.total_quantity + excluded.total_quantity,
                event_count = a.event_count + excluded.event_count,
                unique_users = a.unique_users + excluded.unique_users
        RETURNING 1)
    SELECT count(*) FROM done
$$;

-- Seconds an INSERT … SELECT of `n` events into `target` takes (one statement).
CREATE FUNCTION bench_metering.time_batch(target text, n int, orgs int) RETURNS float8 LANGUAGE plpgsql AS $$
DECLARE t0 timestamptz := clock_timestamp();
BEGIN
    EXECUTE format($q$INSERT INTO %s (organization_id, user_id, event_type, quantity)
                      SELECT bench_metering.org_id(1 + g %% %s), bench_metering.user_id(1 + g %% %s), 'api_call', 1
                      FROM generate_series(1, %s) g$q$, target, orgs, orgs, n);
    RETURN extract(epoch FROM clock_timestamp() - t0);
END $$;

-- Seconds a COPY of the file into `target` takes.
CREATE FUNCTION bench_metering.time_copy(target text, path text) RETURNS float8 LANGUAGE plpgsql AS $$
DECLARE t0 timestamptz := clock_timestamp();
BEGIN
    EXECUTE format('COPY %s (organization_id, user_id, event_type, quantity) FROM %L', target, path);
    RETURN extract(epoch FROM clock_timestamp() - t0);
END $$;
