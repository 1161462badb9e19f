-- 07_rls_metering: usage_events (members record their own usage) and usage_aggregations
-- (read-only rollups) under RLS; check_feature_access counts events at once, aggregate_usage()
-- folds them into the rollups members read.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(49);

\set o '00000000-0000-4000-8000-000000000701'
\set m '00000000-0000-4000-8000-000000000702'
\set v '00000000-0000-4000-8000-000000000703'
\set x '00000000-0000-4000-8000-000000000704'

INSERT INTO auth.users (id, email, raw_user_meta_data) VALUES
    (:'o', 'o@meter.example', '{"username":"meter_o"}'),
    (:'m', 'm@meter.example', '{"username":"meter_m"}'),
    (:'v', 'v@meter.example', '{"username":"meter_v"}'),
    (:'x', 'x@meter.example', '{"username":"meter_x"}');
SELECT id AS px FROM organizations WHERE owner_id = :'x' AND is_personal \gset

SET LOCAL ROLE authenticated;
SELECT set_config('request.jwt.claims', format('{"sub":"%s","role":"authenticated"}', :'o'), true);
SELECT create_organization('Meter Team', 'business') AS t \gset
RESET ROLE;
UPDATE org_subscriptions SET plan = 'business' WHERE organization_id = :'t';
INSERT INTO organization_members (organization_id, user_id, role) VALUES (:'t', :'m', 'member'), (:'t', :'v', 'viewer');
-- Usage of X's own org, recorded by the service side.
INSERT INTO usage_events (organization_id, user_id, event_type, quantity) VALUES (:'px', :'x', 'api_call', 11);

-- ================================================================ member
SET LOCAL ROLE authenticated;
SELECT set_config('request.jwt.claims', format('{"sub":"%s","role":"authenticated"}', :'m'), true);
SELECT (check_feature_access(:'m', 'max_api_calls_per_month', :'t') ->> 'usage')::numeric AS usage_before \gset

SELECT lives_ok(format($$ INSERT INTO usage_events (organization_id, event_type, quantity, metadata)
                          VALUES (%L, 'api_call', 5, '{"endpoint":"/things"}') $$, :'t'),
                'member records an event in their org without naming user_id');
SELECT is((SELECT user_id FROM usage_events WHERE organization_id = :'t' AND quantity = 5), :'m'::uuid,
          'user_id defaulted to auth.uid()');
SELECT lives_ok(format($$ INSERT INTO usage_events (organization_id, user_id, event_type, quantity)
                          VALUES (%L, %L, 'api_call', 7) $$, :'t', :'m'),
                'member records an event naming their own user_id');
SELECT is((check_feature_access(:'m', 'max_api_calls_per_month', :'t') ->> 'usage')::numeric, (:usage_before + 12)::numeric,
          'check_feature_access usage went up by the inserted 5 + 7 before any fold');
RESET ROLE;
SELECT aggregate_usage() IS NOT NULL AS folded \gset
SET LOCAL ROLE authenticated;
SELECT is((SELECT total_quantity FROM usage_aggregations
           WHERE organization_id = :'t' AND event_type = 'api_call' AND period = 'daily'
             AND period_start = date_trunc('day', now(), 'UTC')), 12::numeric,
          'after aggregate_usage(), today''s daily rollup holds the 12 calls');

SELECT throws_ok(format($$ INSERT INTO usage_events (organization_id, user_id, event_type) VALUES (%L, %L, 'api_call') $$, :'t', :'o'),
                 '42501', 'new row violates row-level security policy for table "usage_events"',
                 'member cannot record an event as another user');
SELECT throws_ok(format($$ INSERT INTO usage_events (organization_id, user_id, event_type) VALUES (%L, NULL, 'api_call') $$, :'t'),
                 '42501', 'new row violates row-level security policy for table "usage_events"',
                 'member cannot record an event without a user');
SELECT throws_ok(format($$ INSERT INTO usage_events (organization_id, event_type) VALUES (%L, 'api_call') $$, :'px'),
                 '42501', 'new row violates row-level security policy for table "usage_events"',
                 'member cannot record an event in an org they do not belong to');
SELECT throws_ok(format($$ INSERT INTO usage_events (organization_id, event_type, quantity) VALUES (%L, 'api_call', -3) $$, :'t'),
                 '42501', 'new row violates row-level security policy for table "usage_events"',
                 'member cannot record a negative quantity');
SELECT throws_ok(format($$ INSERT INTO usage_events (organization_id, event_type, occurred_at)
                           VALUES (%L, 'api_call', now() - interval '1 day') $$, :'t'),
                 '42501', 'permission denied for table usage_events', 'member cannot date an event (occurred_at)');
SELECT throws_ok(format($$ INSERT INTO usage_events (organization_id, event_type, received_at)
                           VALUES (%L, 'api_call', now() - interval '1 day') $$, :'t'),
                 '42501', 'permission denied for table usage_events', 'member cannot set received_at');
SELECT throws_ok(format($$ INSERT INTO usage_events (organization_id, event_type, over_limit)
                           VALUES (%L, 'api_call', false) $$, :'t'),
                 '42501', 'permission denied for table usage_events', 'member cannot set over_limit');
SELECT throws_ok(format($$ INSERT INTO usage_events (id, organization_id, event_type)
                           VALUES (gen_random_uuid(), %L, 'api_call') $$, :'t'),
                 '42501', 'permission denied for table usage_events', 'member cannot set id');
SELECT throws_ok($$ UPDATE usage_events SET quantity = 1 $$,
                 '42501', 'permission denied for table usage_events', 'member cannot UPDATE usage_events');
SELECT throws_ok($$ DELETE FROM usage_events $$,
                 '42501', 'permission denied for table usage_events', 'member cannot DELETE usage_events');

SELECT set_eq($$ SELECT DISTINCT organization_id FROM usage_events $$, ARRAY[:'t']::uuid[],
              'member sees the events of their orgs only');
SELECT is((SELECT count(*) FROM usage_events)::int, 2, 'member sees both events of the team');
SELECT cmp_ok((SELECT count(*) FROM usage_aggregations WHERE organization_id = :'t')::int, '>', 0,
              'member reads the team''s rollups');
SELECT is_empty(format($$ SELECT 1 FROM usage_aggregations WHERE organization_id <> %L $$, :'t'),
                'member reads no rollup of other orgs');
SELECT throws_ok(format($$ INSERT INTO usage_aggregations (organization_id, event_type, period, period_start, period_end)
                           VALUES (%L, 'api_call', 'daily', '2020-01-01', '2020-01-02') $$, :'t'),
                 '42501', 'permission denied for table usage_aggregations', 'member cannot INSERT usage_aggregations');
SELECT throws_ok($$ UPDATE usage_aggregations SET total_quantity = 0 $$,
                 '42501', 'permission denied for table usage_aggregations', 'member cannot UPDATE usage_aggregations');
SELECT throws_ok($$ DELETE FROM usage_aggregations $$,
                 '42501', 'permission denied for table usage_aggregations', 'member cannot DELETE usage_aggregations');
-- Metering's own state is nobody's but the service role's to read, and nobody's to write.
SELECT throws_ok(format($$ SELECT 1 FROM %s $$, t), '42501', format('permission denied for table %s', t),
                 format('member cannot read %s', t))
FROM unnest(ARRAY['usage_counters', 'usage_meter_leases', 'usage_meter_locks', 'usage_idempotency_keys',
                  'usage_active_users', 'usage_dirty_buckets', 'usage_rollup_state', 'usage_settings']) AS t;
SELECT throws_ok(format($$ INSERT INTO usage_counters (organization_id, event_type, period, period_start, writer, total_quantity)
                           VALUES (%L, 'api_call', 'monthly', usage_bucket_start('monthly', now()), 0, -1000) $$, :'t'),
                 '42501', 'permission denied for table usage_counters', 'member cannot lower their own counters');
SELECT throws_ok(format($$ INSERT INTO usage_meter_leases (organization_id, feature_key, writer, window_start, limit_value, granted, used)
                           VALUES (%L, 'max_api_calls_per_month', 0, '-infinity', 1, 1e9, 0) $$, :'t'),
                 '42501', 'permission denied for table usage_meter_leases', 'member cannot grant themself a lease');

-- ================================================================ viewer
RESET ROLE;
SET LOCAL ROLE authenticated;
SELECT set_config('request.jwt.claims', format('{"sub":"%s","role":"authenticated"}', :'v'), true);
SELECT throws_ok(format($$ INSERT INTO usage_events (organization_id, event_type) VALUES (%L, 'api_call') $$, :'t'),
                 '42501', 'new row violates row-level security policy for table "usage_events"',
                 'viewer cannot record events');
SELECT is((SELECT count(*) FROM usage_events WHERE organization_id = :'t')::int, 2,
          'viewer reads the team''s events');

-- ================================================================ outsider
RESET ROLE;
SET LOCAL ROLE authenticated;
SELECT set_config('request.jwt.claims', format('{"sub":"%s","role":"authenticated"}', :'x'), true);
SELECT results_eq($$ SELECT quantity FROM usage_events $$, ARRAY[11::numeric],
                  'outsider sees only the event of their own org');
SELECT is_empty(format($$ SELECT 1 FROM usage_aggregations WHERE organization_id = %L $$, :'t'),
                'outsider reads none of the team''s rollups');
SELECT cmp_ok((SELECT count(*) FROM usage_aggregations WHERE organization_id = :'px')::int, '>', 0,
              'outsider reads their own org''s rollups');

-- ================================================================ anon
RESET ROLE;
SET LOCAL ROLE anon;
SELECT set_config('request.jwt.claims', '{"role":"anon"}', true);
SELECT throws_ok($$ SELECT 1 FROM usage_events $$, '42501', 'permission denied for table usage_events',
                 'anon cannot read usage_events');
SELECT throws_ok(format($$ INSERT INTO usage_events (organization_id, event_type) VALUES (%L, 'api_call') $$, :'t'),
                 '42501', 'permission denied for table usage_events', 'anon cannot record events');
SELECT throws_ok($$ SELECT 1 FROM usage_aggregations $$, '42501', 'permission denied for table usage_aggregations',
                 'anon cannot read usage_aggregations');
SELECT throws_ok($$ SELECT 1 FROM usage_counters $$, '42501', 'permission denied for table usage_counters',
                 'anon cannot read usage_counters');

-- ================================================================ service role corrections
RESET ROLE;
SET LOCAL ROLE service_role;
SELECT set_config('request.jwt.claims', '{"role":"service_role"}', true);
SELECT lives_ok(format($$ INSERT INTO usage_events (organization_id, user_id, event_type, quantity, metadata)
                          VALUES (%L, %L, 'api_call', -2, '{"reason":"refund"}') $$, :'t', :'m'),
                'service_role records a negative correction');
SELECT is((check_feature_access(:'m', 'max_api_calls_per_month', :'t') ->> 'usage')::numeric, (:usage_before + 10)::numeric,
          'the correction lowers usage by 2');
SELECT throws_ok(format($$ INSERT INTO usage_events (organization_id, event_type, quantity) VALUES (%L, 'api_call', 0) $$, :'t'),
                 '23514', NULL, 'a zero quantity is rejected even for the service role');
SELECT cmp_ok((SELECT count(*) FROM usage_counters WHERE organization_id = :'t')::int, '>', 0,
              'service_role reads the live counters');
SELECT throws_ok($$ UPDATE usage_counters SET total_quantity = 0 $$, '42501',
                 'permission denied for table usage_counters',
                 'service_role cannot edit counters: they follow the events (correct events instead)');
SELECT throws_ok($$ UPDATE usage_meter_leases SET granted = 0 $$, '42501',
                 'permission denied for table usage_meter_leases', 'service_role cannot edit leases');

-- ================================================================ what is stored (as postgres)
RESET ROLE;
SELECT aggregate_usage() IS NOT NULL AS folded \gset
SELECT is((SELECT sum(quantity) FROM usage_events WHERE organization_id = :'t'), 10::numeric,
          'the team''s log holds 5 + 7 - 2 and none of the refused events');
SELECT is((SELECT total_quantity::text || '/' || event_count || '/' || unique_users FROM usage_aggregations
           WHERE organization_id = :'t' AND event_type = 'api_call' AND period = 'monthly'
             AND period_start = date_trunc('month', now(), 'UTC')),
          '10/3/1', 'monthly rollup: total 10, 3 events, 1 distinct user');

SELECT * FROM finish();
ROLLBACK;
