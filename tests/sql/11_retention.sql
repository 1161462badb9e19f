-- 11_retention: month partitions created ahead, expired ones dropped whole once folded while
-- rollups and idempotency keys stay, retention as configuration, and who may do it.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(28);

\set u '00000000-0000-4000-8000-000000001101'
INSERT INTO auth.users (id, email, raw_user_meta_data) VALUES (:'u', 'u@ret.example', '{"username":"ret_u"}');
SELECT id AS org FROM organizations WHERE owner_id = :'u' AND is_personal \gset
SELECT usage_bucket_start('monthly', now() - interval '9 months') AS old_month \gset
SELECT 'usage_events_' || to_char(:'old_month'::timestamptz AT TIME ZONE 'UTC', 'YYYY_MM') AS old_part \gset
SELECT format('%I.%I', n.nspname, :'old_part') AS old_qualified
FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'saas_core' \gset

-- ================================================================ partitions
SELECT is(create_usage_partition(:'old_month'::timestamptz + interval '10 days'), :'old_qualified',
          'create_usage_partition names the partition of the UTC month');
SELECT is(create_usage_partition(:'old_month'), :'old_qualified', 'creating it again is a no-op');
SELECT is((SELECT pg_get_expr(c.relpartbound, c.oid) FROM pg_class c WHERE c.relname = :'old_part'),
          format('FOR VALUES FROM (%L) TO (%L)', :'old_month'::timestamptz, usage_bucket_end('monthly', :'old_month')),
          'it covers the whole UTC month');
SELECT is(create_usage_partitions(), 0, 'the install created every partition the window and partitions_ahead need');
SELECT is(create_usage_partitions(6), 3, 'asking for 6 months ahead creates 3 more');
SELECT throws_ok($$ SELECT create_usage_partitions(121) $$, '22023',
                 'create_usage_partitions: months_ahead must be 0 to 120, not 121', 'months_ahead is bounded');
SELECT throws_ok($$ SELECT create_usage_partition('infinity') $$, '22023',
                 'create_usage_partition: month must be finite', 'an infinite month is 22023');

-- Old events, as an import that bypasses triggers would bring them: uncounted, so that
-- recomputing their month is the repair.
SET LOCAL session_replication_role = replica;
INSERT INTO usage_events (organization_id, user_id, event_type, quantity, occurred_at, received_at)
VALUES (:'org', :'u', 'api_call', 7, :'old_month'::timestamptz + interval '3 days', :'old_month'::timestamptz + interval '3 days');
RESET session_replication_role;
SELECT is((SELECT count(*) FROM usage_aggregations WHERE organization_id = :'org' AND period_start = :'old_month'), 0::bigint,
          'events loaded without triggers are not counted');
SELECT cmp_ok(aggregate_usage('monthly', :'old_month', :'old_month'::timestamptz + interval '1 day'), '>', 0::bigint,
              'recomputing their month counts them');
INSERT INTO usage_idempotency_keys (organization_id, idempotency_key, event_id, created_at)
VALUES (:'org', 'old-key', gen_random_uuid(), now() - interval '60 days'),
       (:'org', 'new-key', gen_random_uuid(), now() - interval '10 days');

-- ================================================================ retention
SELECT is(apply_usage_retention() -> 'dropped_partitions', '[]'::jsonb,
          'with event_retention NULL (the default) nothing is dropped');
SELECT ok(to_regclass(:'old_qualified') IS NOT NULL, 'the old partition is still there');
SELECT is((SELECT array_agg(idempotency_key ORDER BY 1) FROM usage_idempotency_keys WHERE organization_id = :'org'),
          ARRAY['new-key'], 'keys older than idempotency_key_retention are pruned, newer ones kept');

SELECT throws_ok($$ UPDATE usage_settings SET event_retention = interval '40 days' $$, '23514', NULL,
                 'event_retention shorter than the late-event window plus a month is refused');
SELECT throws_ok($$ UPDATE usage_settings SET idempotency_key_retention = interval '30 days' $$, '23514', NULL,
                 'keys cannot be kept for less than the late-event window');
UPDATE usage_settings SET event_retention = interval '6 months';

SELECT is((SELECT events_kept_since FROM usage_rollup_state), NULL, 'before retention runs, every month can be recomputed');
SELECT apply_usage_retention() AS r2 \gset
SELECT ok((:'r2'::jsonb) -> 'dropped_partitions' ? :'old_part', 'the expired partition is dropped');
SELECT ok(to_regclass(:'old_qualified') IS NULL, 'and is gone');
SELECT is((SELECT total_quantity FROM usage_aggregations WHERE organization_id = :'org' AND event_type = 'api_call'
             AND period = 'monthly' AND period_start = :'old_month'), 7::numeric,
          'its monthly rollup stays');
SELECT is((SELECT total_quantity FROM usage_aggregations WHERE organization_id = :'org' AND event_type = 'api_call'
             AND period = 'daily' AND period_start = :'old_month'::timestamptz + interval '3 days'), 7::numeric,
          'and its daily rollup');
SELECT is((SELECT events_kept_since FROM usage_rollup_state), usage_bucket_start('monthly', now() - interval '6 months'),
          'the horizon moved to the retention cutoff');
SELECT ok(to_regclass('usage_events_' || to_char(now() AT TIME ZONE 'UTC', 'YYYY_MM')) IS NOT NULL,
          'this month''s partition is kept');
SELECT is((SELECT count(*) FROM usage_idempotency_keys WHERE organization_id = :'org' AND idempotency_key = 'new-key'),
          1::bigint, 'keys stay when their events'' partitions go');
SELECT throws_ok(format($$ SELECT aggregate_usage('monthly', %L, %L) $$, :'old_month', usage_bucket_end('monthly', :'old_month')),
                 '22023', NULL, 'a recompute of months retention dropped is refused (it would erase their rollups)');
SELECT is((SELECT total_quantity FROM usage_aggregations WHERE organization_id = :'org' AND event_type = 'api_call'
             AND period = 'monthly' AND period_start = :'old_month'), 7::numeric,
          'and the refused recompute left the rollup alone');

-- ================================================================ who may
SET LOCAL ROLE authenticated;
SELECT set_config('request.jwt.claims', format('{"sub":"%s","role":"authenticated"}', :'u'), true);
SELECT throws_ok($$ SELECT apply_usage_retention() $$, '42501', NULL, 'a member cannot apply retention');
SELECT throws_ok($$ SELECT create_usage_partition(now()) $$, '42501', NULL, 'a member cannot create partitions');
SELECT throws_ok($$ UPDATE usage_settings SET event_retention = NULL $$, '42501', NULL, 'a member cannot change the settings');
RESET ROLE;

-- ================================================================ scheduling without pg_cron
SELECT throws_ok($$ SELECT schedule_usage_maintenance() $$, '0A000',
                 'schedule_usage_maintenance: pg_cron is not installed in this database',
                 'without pg_cron, scheduling says so (the hint shows what to run elsewhere)');

SELECT * FROM finish();
ROLLBACK;
