-- The 0.2.0 library serving a database still on the 0.1.0 SQL (between installing the new
-- package and ALTER EXTENSION saas_core UPDATE): 0.1.0's functions, bound to 0.1.0's
-- symbols, keep working on 0.1.0's tables.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(9);

\set u '00000000-0000-4000-8000-0000000e0001'
\set v '00000000-0000-4000-8000-0000000e0002'

SELECT is(extversion, '0.1.0', 'the database is on 0.1.0') FROM pg_extension WHERE extname = 'saas_core';
SELECT is((SELECT prosrc FROM pg_proc WHERE oid = 'check_feature_access(uuid,text,uuid)'::regprocedure),
          'check_feature_access_wrapper', 'its functions are bound to 0.1.0''s symbols');

INSERT INTO auth.users (id, email, raw_user_meta_data) VALUES
    (:'u', 'u@serves.example', '{"user_name": "serves-u", "full_name": "Serves U"}'),
    (:'v', 'v@serves.example', '{}');
SELECT is((SELECT username || '/' || display_name FROM users WHERE id = :'u'), 'serves_u/Serves U',
          'a signup gets a profile');
SELECT is((SELECT count(*)::int FROM organizations o JOIN organization_members m ON m.organization_id = o.id
           JOIN org_subscriptions s ON s.organization_id = o.id WHERE o.owner_id = :'u' AND o.is_personal), 1,
          'and a personal organization with its owner and free plan');

SET LOCAL ROLE authenticated;
SELECT set_config('request.jwt.claims', format('{"sub":"%s"}', :'u'), true);
SELECT create_organization('Served Team', 'business', 'served-team') AS team \gset
SELECT is(check_feature_access(:'u', 'max_seats', :'team') ->> 'usage', '1', 'check_feature_access answers');
RESET ROLE;

INSERT INTO usage_events (organization_id, user_id, event_type, quantity, created_at)
VALUES (:'team', :'u', 'api_call', 7, now());
SELECT is((SELECT total_quantity FROM usage_aggregations WHERE organization_id = :'team' AND period = 'monthly'),
          7::numeric, 'the live rollup counts events');
UPDATE usage_aggregations SET total_quantity = 0 WHERE organization_id = :'team';
SELECT cmp_ok(aggregate_usage('monthly', now() - interval '1 day', now() + interval '1 day'), '>=', 1::bigint,
              'aggregate_usage recomputes');
SELECT is((SELECT total_quantity FROM usage_aggregations WHERE organization_id = :'team' AND period = 'monthly'),
          7::numeric, 'to the right total');
-- 0.1.0's own seat trigger still holds the free plan's single seat.
SELECT throws_ok(format($$ INSERT INTO organization_members (organization_id, user_id) VALUES (%L, %L) $$, :'team', :'v'),
                 '54000', NULL, 'the seat limit holds');

SELECT * FROM finish();
ROLLBACK;
