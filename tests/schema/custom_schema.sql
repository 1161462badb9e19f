-- CREATE EXTENSION saas_core SCHEMA app: everything lands in app, search_path-independent.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap SCHEMA public;
SET LOCAL search_path = public;
SELECT plan(6);

SELECT is((SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = 'saas_core'), 'app', 'installed in app');
SELECT ok(to_regclass('public.users') IS NULL AND to_regclass('app.users') IS NOT NULL, 'tables are in app, not public');
SELECT is((SELECT count(*)::int FROM app.plan_features), 36, 'plan features seeded in app');

-- Signup with public-only search_path: the trigger still finds its tables.
INSERT INTO auth.users (id, email) VALUES ('33333333-3333-3333-3333-333333333333', 's@example.com');
SELECT is((SELECT count(*)::int FROM app.organizations WHERE owner_id = '33333333-3333-3333-3333-333333333333' AND is_personal), 1,
          'signup provisions into app');
SELECT is(app.check_feature_access('33333333-3333-3333-3333-333333333333', 'max_records',
          (SELECT id FROM app.organizations WHERE owner_id = '33333333-3333-3333-3333-333333333333')) ->> 'limit',
          '100', 'check_feature_access works from another search_path');
SELECT ok(has_schema_privilege('authenticated', 'app', 'USAGE'), 'API roles can reach the schema');

SELECT * FROM finish();
ROLLBACK;
