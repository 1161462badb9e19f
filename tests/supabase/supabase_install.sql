-- Run after supabase_auth_schema.sql and CREATE EXTENSION saas_core in the same database.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(12);

-- Nothing of saas_core lives in Supabase's auth schema, and Supabase's objects are untouched.
SELECT is(
  (SELECT count(*)::int FROM pg_depend d
   JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'saas_core'
   WHERE d.deptype = 'e' AND (
         (d.classid = 'pg_class'::regclass AND (SELECT relnamespace FROM pg_class WHERE oid = d.objid) = 'auth'::regnamespace)
      OR (d.classid = 'pg_proc'::regclass AND (SELECT pronamespace FROM pg_proc WHERE oid = d.objid) = 'auth'::regnamespace)
      OR (d.classid = 'pg_namespace'::regclass AND d.objid = 'auth'::regnamespace))),
  0, 'the extension owns nothing in the auth schema');
SELECT is((SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = 'auth.users'::regclass),
          'supabase_auth_admin', 'auth.users keeps its owner');
SELECT is((SELECT pg_get_userbyid(proowner) FROM pg_proc WHERE oid = 'auth.uid()'::regprocedure),
          'supabase_auth_admin', 'auth.uid() is still Supabase''s');
SELECT ok(NOT EXISTS (SELECT 1 FROM information_schema.columns
                      WHERE table_schema = 'auth' AND table_name = 'users' AND column_name = 'raw_app_meta_data' AND is_nullable = 'NO'),
          'auth.users was not replaced');

-- The user who predates the extension was migrated (seed 000 §10).
SELECT is((SELECT display_name FROM users WHERE id = '11111111-1111-1111-1111-111111111111'), 'Early Bird', 'existing user has a profile');
SELECT is((SELECT count(*)::int FROM organizations o
           JOIN organization_members m ON m.organization_id = o.id AND m.role = 'owner'
           JOIN org_subscriptions s ON s.organization_id = o.id AND s.plan = 'free'
           WHERE o.owner_id = '11111111-1111-1111-1111-111111111111' AND o.is_personal), 1,
          'existing user has a personal org, owner membership and free subscription');

-- GoTrue signing someone up (as its own role) goes through the trigger.
SET LOCAL ROLE supabase_auth_admin;
INSERT INTO auth.users (id, aud, role, email, raw_user_meta_data, created_at)
VALUES ('22222222-2222-2222-2222-222222222222', 'authenticated', 'authenticated', 'new@example.com', '{"username":"newbie"}', now());
RESET ROLE;
SELECT is((SELECT username FROM users WHERE id = '22222222-2222-2222-2222-222222222222'), 'newbie', 'signup through GoTrue''s role creates a profile');

-- Supabase's default privileges did not leak into saas_core's tables or functions.
SELECT ok(NOT has_table_privilege('anon', 'users', 'SELECT'), 'anon has no SELECT on users despite default privileges');
SELECT ok(NOT has_column_privilege('authenticated', 'users', 'account_type', 'UPDATE'), 'authenticated cannot update account_type');
SELECT ok(NOT has_function_privilege('anon', 'check_feature_access(uuid,text,uuid)', 'EXECUTE'), 'anon cannot execute check_feature_access');
SELECT ok(NOT has_function_privilege('authenticated', 'aggregate_usage(text,timestamptz,timestamptz)', 'EXECUTE'), 'authenticated cannot execute aggregate_usage');

-- The RPC path: PostgREST's role switch and claims, Supabase's auth.uid().
SET LOCAL ROLE authenticated;
SELECT set_config('request.jwt.claims', '{"sub":"22222222-2222-2222-2222-222222222222","role":"authenticated"}', true);
SELECT is(
  check_feature_access('22222222-2222-2222-2222-222222222222', 'max_seats',
                       (SELECT id FROM organizations WHERE owner_id = '22222222-2222-2222-2222-222222222222')) ->> 'usage',
  '1', 'check_feature_access works through Supabase''s auth.uid()');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
