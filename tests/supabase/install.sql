-- saas_core on a database built like self-hosted Supabase (tests/supabase/run.sh): installed by
-- postgres, a database owner who is not a superuser, next to the "Managing user data" guide's
-- trigger, before or after GoTrue's migrations (which ran as supabase_auth_admin either way).
-- Run by supabase_admin; every step that matters switches to the role that would do it.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(43);

CREATE TEMP VIEW ext_members AS
SELECT d.classid, d.objid FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid
WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e' AND e.extname = 'saas_core';
GRANT SELECT ON ext_members TO PUBLIC;

-- ================================================================ who owns what
SELECT is((SELECT extowner::regrole::text FROM pg_extension WHERE extname = 'saas_core'), 'postgres',
          'postgres (no superuser) installed saas_core as a trusted extension');
SELECT is_empty($$ SELECT c.oid::regclass::text FROM pg_class c JOIN ext_members m ON m.classid = 'pg_class'::regclass AND m.objid = c.oid
                   WHERE c.relowner <> 'postgres'::regrole $$,
                'every saas_core table belongs to postgres');
SELECT is_empty($$ SELECT p.oid::regprocedure::text FROM pg_proc p JOIN ext_members m ON m.classid = 'pg_proc'::regclass AND m.objid = p.oid
                   WHERE p.proowner <> 'postgres'::regrole $$,
                'every saas_core function belongs to postgres (SECURITY DEFINER runs as postgres, never a superuser)');
SELECT is((SELECT count(*)::int FROM ext_members m
           WHERE (m.classid = 'pg_class'::regclass AND (SELECT relnamespace FROM pg_class WHERE oid = m.objid) = 'auth'::regnamespace)
              OR (m.classid = 'pg_proc'::regclass AND (SELECT pronamespace FROM pg_proc WHERE oid = m.objid) = 'auth'::regnamespace)),
          0, 'saas_core owns nothing in auth');
SELECT is((SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = 'auth.users'::regclass), 'supabase_auth_admin',
          'auth.users is still GoTrue''s');
SELECT is((SELECT pg_get_userbyid(proowner) FROM pg_proc WHERE oid = 'auth.jwt()'::regprocedure), 'supabase_auth_admin',
          'auth.jwt() was created by GoTrue''s own migration, as supabase_auth_admin');
SELECT is((SELECT pg_get_userbyid(proowner) FROM pg_proc WHERE oid = 'auth.uid()'::regprocedure), 'supabase_auth_admin',
          'auth.uid() is still GoTrue''s');

-- ================================================================ next to the guide's trigger
SELECT is((SELECT tgfoid::regprocedure::text FROM pg_trigger
           WHERE tgrelid = 'auth.users'::regclass AND tgname = 'on_auth_user_created'),
          'handle_new_user()', 'the guide''s on_auth_user_created still calls its own public.handle_new_user()');
SELECT set_eq($$ SELECT tgname::text FROM pg_trigger WHERE tgrelid = 'auth.users'::regclass AND tgname LIKE 'saas_core%' $$,
              ARRAY['saas_core_provision_user', 'saas_core_sync_user', 'saas_core_delete_user'],
              'saas_core''s own triggers on auth.users have names of their own');

-- ================================================================ postgres manages saas_core's tables
SET LOCAL ROLE postgres;
SELECT lives_ok($$ ALTER TABLE users ADD COLUMN favourite_color text $$, 'postgres adds a column to users');
SELECT lives_ok($$ CREATE INDEX users_favourite_color_idx ON users (favourite_color) $$, 'postgres adds an index');
SELECT lives_ok($$ CREATE POLICY users_select_colleagues ON users FOR SELECT TO authenticated USING (false) $$,
                'postgres adds a policy');
RESET ROLE;

-- ================================================================ existing account, and the defaults
SELECT is((SELECT display_name FROM users WHERE id = '11111111-1111-1111-1111-111111111111'), 'Early Bird',
          'an account that predates saas_core has a profile');
SELECT is((SELECT count(*)::int FROM organizations o JOIN organization_members m ON m.organization_id = o.id AND m.role = 'owner'
           WHERE o.owner_id = '11111111-1111-1111-1111-111111111111' AND o.is_personal), 1,
          'and a personal organization it owns');
SELECT is((SELECT count(*)::int FROM organizations WHERE owner_id = '11111111-1111-1111-1111-111111111112' AND is_personal), 1,
          'an existing account whose metadata a JSON parser would refuse (1e400, 300 levels deep) was provisioned too');
SELECT ok(NOT has_table_privilege('anon', 'users', 'SELECT'), 'anon has no SELECT on users despite Supabase''s default privileges');
SELECT ok(NOT has_column_privilege('authenticated', 'users', 'account_type', 'UPDATE'), 'authenticated cannot update account_type');
SELECT ok(NOT has_function_privilege('anon', 'check_feature_access(uuid,text,uuid)', 'EXECUTE'), 'anon cannot execute check_feature_access');
SELECT ok(NOT has_function_privilege('authenticated', 'aggregate_usage(text,timestamptz,timestamptz)', 'EXECUTE'),
          'authenticated cannot execute aggregate_usage');

-- ================================================================ GoTrue signs people up
SET LOCAL ROLE supabase_auth_admin;
INSERT INTO auth.users (id, aud, role, email, raw_user_meta_data, created_at) VALUES
    ('22222222-2222-2222-2222-222222222221', 'authenticated', 'authenticated', 'ada@example.com',
     '{"first_name": "Ada", "last_name": "Lovelace"}', now()),
    ('22222222-2222-2222-2222-222222222222', 'authenticated', 'authenticated', 'mona@example.com',
     '{"user_name": "mona-lisa", "name": "Mona Lisa", "avatar_url": "https://avatars.example/mona"}', now());
INSERT INTO auth.users (id, aud, role, phone, raw_user_meta_data, created_at) VALUES
    ('22222222-2222-2222-2222-222222222223', 'authenticated', 'authenticated', '15551230000', '{}', now());
INSERT INTO auth.users (id, aud, role, is_anonymous, raw_user_meta_data, created_at) VALUES
    ('22222222-2222-2222-2222-222222222224', 'authenticated', 'authenticated', true, '{}', now());
RESET ROLE;
SELECT is((SELECT first_name || ' ' || last_name FROM public.profiles WHERE id = '22222222-2222-2222-2222-222222222221'),
          'Ada Lovelace', 'the guide''s trigger still fills public.profiles');
SELECT is((SELECT display_name FROM users WHERE id = '22222222-2222-2222-2222-222222222221'), 'Ada Lovelace',
          'saas_core''s trigger fills its own profile');
SELECT is((SELECT username FROM users WHERE id = '22222222-2222-2222-2222-222222222222'), 'mona_lisa',
          'a GitHub login mona-lisa becomes the username mona_lisa');
SELECT is((SELECT phone || '/' || coalesce(email, '-') FROM users WHERE id = '22222222-2222-2222-2222-222222222223'),
          '15551230000/-', 'a phone signup has a profile with its phone');
SELECT is((SELECT count(*)::int FROM organizations WHERE owner_id = '22222222-2222-2222-2222-222222222223' AND is_personal), 1,
          'and a personal organization');
SELECT ok((SELECT is_anonymous FROM users WHERE id = '22222222-2222-2222-2222-222222222224'),
          'an anonymous sign-in has a profile marked anonymous');

-- An anonymous user works in their personal organization but needs an account for teams.
SET LOCAL ROLE authenticated;
SELECT set_config('request.jwt.claims', '{"sub":"22222222-2222-2222-2222-222222222224","role":"authenticated","is_anonymous":true}', true);
SELECT is(check_feature_access('22222222-2222-2222-2222-222222222224', 'max_records',
          (SELECT id FROM organizations WHERE owner_id = '22222222-2222-2222-2222-222222222224')) ->> 'allowed', 'true',
          'an anonymous user uses their personal organization');
SELECT throws_ok($$ SELECT create_organization('Guests Inc') $$, '42501', NULL,
                 'an anonymous user cannot create a team organization');
RESET ROLE;

-- GoTrue converts the anonymous account, then changes Ada's email.
SET LOCAL ROLE supabase_auth_admin;
UPDATE auth.users SET is_anonymous = false, email = 'was.anon@example.com',
       raw_user_meta_data = '{"full_name": "Was Anon"}'
WHERE id = '22222222-2222-2222-2222-222222222224';
UPDATE auth.users SET email = 'ada.lovelace@example.com', email_change = '' WHERE id = '22222222-2222-2222-2222-222222222221';
RESET ROLE;
SELECT is((SELECT email || '/' || display_name || '/' || is_anonymous FROM users WHERE id = '22222222-2222-2222-2222-222222222224'),
          'was.anon@example.com/Was Anon/false', 'converting an anonymous account reaches its profile');
SELECT is((SELECT email FROM users WHERE id = '22222222-2222-2222-2222-222222222221'), 'ada.lovelace@example.com',
          'an email change reaches the profile');
SET LOCAL ROLE authenticated;
SELECT set_config('request.jwt.claims', '{"sub":"22222222-2222-2222-2222-222222222224","role":"authenticated"}', true);
SELECT lives_ok($$ SELECT create_organization('No Longer Guests', 'business', 'no-longer-guests') $$,
                'once permanent, the user creates a team');
-- The RPC path: PostgREST's role switch and claims, GoTrue's auth.uid().
SELECT is(check_feature_access('22222222-2222-2222-2222-222222222224', 'max_seats',
          (SELECT id FROM organizations WHERE slug = 'no-longer-guests')) ->> 'usage', '1',
          'check_feature_access works through Supabase''s auth.uid()');
RESET ROLE;

-- Ada joins the team; then its owner's account is soft-deleted, then Mona's hard-deleted.
UPDATE org_subscriptions SET plan = 'pro' WHERE organization_id = (SELECT id FROM organizations WHERE slug = 'no-longer-guests');
INSERT INTO organization_members (organization_id, user_id, role)
SELECT id, '22222222-2222-2222-2222-222222222221', 'admin' FROM organizations WHERE slug = 'no-longer-guests';
INSERT INTO organization_members (organization_id, user_id, role)
SELECT id, '22222222-2222-2222-2222-222222222222', 'member' FROM organizations WHERE slug = 'no-longer-guests';
SET LOCAL ROLE supabase_auth_admin;
-- GoTrue's soft delete: obfuscated email and phone, cleared metadata, deleted_at.
UPDATE auth.users SET deleted_at = now(), email = 'obfuscated-1@deleted.invalid', phone = NULL,
       raw_user_meta_data = '{}', encrypted_password = NULL
WHERE id = '22222222-2222-2222-2222-222222222224';
RESET ROLE;
SELECT is((SELECT count(*)::int FROM users WHERE id = '22222222-2222-2222-2222-222222222224'
           AND deleted_at IS NOT NULL AND email IS NULL AND display_name IS NULL AND username IS NULL), 1,
          'a soft-deleted account''s profile keeps no personal data');
SELECT is((SELECT owner_id FROM organizations WHERE slug = 'no-longer-guests'), '22222222-2222-2222-2222-222222222221'::uuid,
          'its team passed to the admin');
SELECT is((SELECT role FROM organization_members m JOIN organizations o ON o.id = m.organization_id
           WHERE o.slug = 'no-longer-guests' AND m.user_id = '22222222-2222-2222-2222-222222222221'), 'owner',
          'who is now an owner');
SELECT is((SELECT count(*)::int FROM organization_members m JOIN organizations o ON o.id = m.organization_id
           WHERE o.slug = 'no-longer-guests' AND m.user_id = '22222222-2222-2222-2222-222222222224'), 0,
          'the soft-deleted account left the team');
SET LOCAL ROLE supabase_auth_admin;
DELETE FROM auth.users WHERE id = '22222222-2222-2222-2222-222222222222';
RESET ROLE;
SELECT is((SELECT count(*)::int FROM users WHERE id = '22222222-2222-2222-2222-222222222222'), 0,
          'a deleted account''s profile goes');
SELECT is((SELECT count(*)::int FROM organizations WHERE owner_id = '22222222-2222-2222-2222-222222222222'), 0,
          'with its personal organization');
SELECT is((SELECT member_count FROM organizations WHERE slug = 'no-longer-guests'), 1,
          'the team it was in keeps its other member');

-- ================================================================ GoTrue's later migrations
-- (run by tests/supabase/run.sh after this file where saas_core came first) and DROP
SELECT ok(has_function_privilege('supabase_auth_admin', 'auth.jwt()', 'EXECUTE'), 'GoTrue can use its own auth.jwt()');
SELECT count(*) AS accounts FROM auth.users \gset
SELECT throws_ok($$ DROP EXTENSION saas_core $$, '2BP01', NULL,
                 'DROP EXTENSION without CASCADE refuses: its triggers on auth.users depend on it');
SELECT lives_ok($$ DROP EXTENSION saas_core CASCADE $$, 'DROP EXTENSION saas_core CASCADE');
SELECT is((SELECT count(*)::int FROM auth.users), :accounts, 'every sign-in account is still there');
SELECT ok(to_regprocedure('auth.uid()') IS NOT NULL AND EXISTS (SELECT 1 FROM pg_trigger
          WHERE tgrelid = 'auth.users'::regclass AND tgname = 'on_auth_user_created'),
          'and so are GoTrue''s functions and the guide''s trigger');

SELECT * FROM finish();
ROLLBACK;
