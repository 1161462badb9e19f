-- 06_rls_entitlements: plan_features and feature_definitions are public reading and
-- service-role writing; check_feature_access reads the current limits on every call.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(20);

\set a '00000000-0000-4000-8000-000000000601'
INSERT INTO auth.users (id, email, raw_user_meta_data) VALUES (:'a', 'a@ent.example', '{"username":"ent_a"}');
SELECT id AS pa FROM organizations WHERE owner_id = :'a' AND is_personal \gset

-- ================================================================ anon reads, cannot write
SET LOCAL ROLE anon;
SELECT set_config('request.jwt.claims', '{"role":"anon"}', true);
SELECT is((SELECT count(*) FROM plan_features)::int, 36, 'anon reads all 36 plan_features rows');
SELECT is((SELECT count(*) FROM feature_definitions)::int, 9, 'anon reads all 9 feature_definitions');
SELECT throws_ok($$ UPDATE plan_features SET limit_value = 999999 WHERE feature_key = 'max_records' $$,
                 '42501', 'permission denied for table plan_features', 'anon cannot UPDATE plan_features');
SELECT throws_ok($$ DELETE FROM feature_definitions $$,
                 '42501', 'permission denied for table feature_definitions', 'anon cannot DELETE feature_definitions');

-- ================================================================ authenticated reads, cannot write
RESET ROLE;
SET LOCAL ROLE authenticated;
SELECT set_config('request.jwt.claims', format('{"sub":"%s","role":"authenticated"}', :'a'), true);
SELECT is((SELECT count(*) FROM plan_features)::int, 36, 'authenticated reads all 36 plan_features rows');
SELECT is((SELECT count(*) FROM feature_definitions)::int, 9, 'authenticated reads all 9 feature_definitions');
SELECT is((SELECT limit_value FROM plan_features WHERE plan = 'pro' AND feature_key = 'max_seats'), 5::bigint,
          'authenticated reads the pro plan''s seat limit');
SELECT throws_ok($$ UPDATE plan_features SET limit_value = -1 WHERE plan = 'free' $$,
                 '42501', 'permission denied for table plan_features', 'authenticated cannot UPDATE plan_features');
SELECT throws_ok($$ INSERT INTO plan_features (plan, feature_key, limit_value) VALUES ('free', 'max_records', 5) $$,
                 '42501', 'permission denied for table plan_features', 'authenticated cannot INSERT plan_features');
SELECT throws_ok($$ DELETE FROM plan_features WHERE plan = 'free' $$,
                 '42501', 'permission denied for table plan_features', 'authenticated cannot DELETE plan_features');
SELECT throws_ok($$ UPDATE feature_definitions SET usage_event_type = 'nothing' WHERE feature_key = 'max_records' $$,
                 '42501', 'permission denied for table feature_definitions', 'authenticated cannot UPDATE feature_definitions');
SELECT throws_ok($$ INSERT INTO feature_definitions (feature_key, kind, description) VALUES ('max_free_lunch', 'limit', 'x') $$,
                 '42501', 'permission denied for table feature_definitions', 'authenticated cannot INSERT feature_definitions');
SELECT is(check_feature_access(:'a', 'max_records', :'pa') ->> 'limit', '100',
          'before the change: free max_records limit is 100');

-- ================================================================ service role changes a limit
RESET ROLE;
SET LOCAL ROLE service_role;
SELECT set_config('request.jwt.claims', '{"role":"service_role"}', true);
WITH u AS (UPDATE plan_features SET limit_value = 250 WHERE plan = 'free' AND feature_key = 'max_records' RETURNING 1)
SELECT is(count(*)::int, 1, 'service_role updates the free max_records limit (1 row)') FROM u;
WITH u AS (UPDATE plan_features SET flags = flags || '{"api_access": true}'
           WHERE plan = 'free' AND feature_key = 'features' RETURNING 1)
SELECT is(count(*)::int, 1, 'service_role turns on api_access for the free plan (1 row)') FROM u;
SELECT is(check_feature_access(:'a', 'max_records', :'pa') ->> 'limit', '250',
          'service_role asking for A sees the new limit');

RESET ROLE;
SET LOCAL ROLE authenticated;
SELECT set_config('request.jwt.claims', format('{"sub":"%s","role":"authenticated"}', :'a'), true);
SELECT is(check_feature_access(:'a', 'max_records', :'pa') ->> 'limit', '250',
          'check_feature_access reflects the new limit for the user');
SELECT is(check_feature_access(:'a', 'max_records', :'pa') ->> 'remaining', '250',
          'remaining follows the new limit');
SELECT is(check_feature_access(:'a', 'api_access', :'pa') ->> 'enabled', 'true',
          'check_feature_access reflects the new flag');
SELECT is((SELECT limit_value FROM plan_features WHERE plan = 'pro' AND feature_key = 'max_records'), 10000::bigint,
          'other plans are untouched');

SELECT * FROM finish();
ROLLBACK;
