-- 03_rls_users: who sees and changes which profile rows and columns of public.users.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(24);

-- Three signups (as postgres, the auth server's side).
INSERT INTO auth.users (id, email, raw_user_meta_data) VALUES
    ('00000000-0000-4000-8000-000000000301', 'alice@example.com', '{"username":"alice_303"}'),
    ('00000000-0000-4000-8000-000000000302', 'bob@example.com',   '{"username":"bob_303"}'),
    ('00000000-0000-4000-8000-000000000303', 'carol@example.com', '{}');

-- ---------------------------------------------------------------- anon
SET LOCAL ROLE anon;
SELECT set_config('request.jwt.claims', '{"role":"anon"}', true);

SELECT throws_ok($$ SELECT count(*) FROM users $$, '42501', 'permission denied for table users',
                 'anon cannot read users (sees no rows at all)');
SELECT throws_ok($$ UPDATE users SET bio = 'anon was here' $$, '42501', 'permission denied for table users',
                 'anon cannot update users');

-- ---------------------------------------------------------------- user A
RESET ROLE;
SET LOCAL ROLE authenticated;
SELECT set_config('request.jwt.claims',
                  '{"sub":"00000000-0000-4000-8000-000000000301","role":"authenticated"}', true);

SELECT is((SELECT count(*) FROM users)::int, 1, 'A sees exactly one profile');
SELECT is((SELECT id FROM users), '00000000-0000-4000-8000-000000000301'::uuid, 'the profile A sees is A''s own');
SELECT is_empty($$ SELECT 1 FROM users WHERE id = '00000000-0000-4000-8000-000000000302' $$,
                'A cannot see B''s profile');

WITH u AS (UPDATE users SET bio = 'Hello from A' WHERE id = '00000000-0000-4000-8000-000000000301' RETURNING 1)
SELECT is(count(*)::int, 1, 'A updates own bio (1 row)') FROM u;
WITH u AS (UPDATE users SET bio = 'hacked by A' WHERE id = '00000000-0000-4000-8000-000000000302' RETURNING 1)
SELECT is(count(*)::int, 0, 'A updating B''s bio affects 0 rows') FROM u;
SELECT lives_ok($$ UPDATE users SET website = 'https://a.example' $$, 'an unfiltered UPDATE by A runs');

SELECT throws_ok($$ UPDATE users SET account_type = 'super_admin' WHERE id = '00000000-0000-4000-8000-000000000301' $$,
                 '42501', 'permission denied for table users', 'A cannot change own account_type');
SELECT throws_ok($$ UPDATE users SET id = '00000000-0000-4000-8000-000000000399' WHERE id = '00000000-0000-4000-8000-000000000301' $$,
                 '42501', 'permission denied for table users', 'A cannot change own id');
SELECT throws_ok($$ UPDATE users SET email = 'evil@example.com' WHERE id = '00000000-0000-4000-8000-000000000301' $$,
                 '42501', 'permission denied for table users', 'A cannot change own email');
SELECT throws_ok($$ UPDATE users SET onboarding_completed = true WHERE id = '00000000-0000-4000-8000-000000000301' $$,
                 '42501', 'permission denied for table users', 'A cannot change own onboarding_completed');
SELECT throws_ok($$ DELETE FROM users WHERE id = '00000000-0000-4000-8000-000000000301' $$,
                 '42501', 'permission denied for table users', 'A cannot delete profiles');
SELECT throws_ok($$ INSERT INTO users (id) VALUES ('00000000-0000-4000-8000-000000000398') $$,
                 '42501', 'permission denied for table users', 'A cannot insert profiles');

-- ---------------------------------------------------------------- back to postgres: what really changed
RESET ROLE;
SELECT is((SELECT bio FROM users WHERE id = '00000000-0000-4000-8000-000000000301'), 'Hello from A',
          'A''s bio was updated');
SELECT is((SELECT website FROM users WHERE id = '00000000-0000-4000-8000-000000000301'), 'https://a.example',
          'the unfiltered UPDATE reached A''s own row');
SELECT is((SELECT count(*) FROM users WHERE (website IS NOT NULL OR bio IS NOT NULL)
           AND id::text LIKE '00000000-0000-4000-8000-00000000030%')::int, 1,
          'B''s and C''s rows are unchanged (no bio, no website)');
SELECT is((SELECT account_type || '/' || email || '/' || onboarding_completed
           FROM users WHERE id = '00000000-0000-4000-8000-000000000301'),
          'user/alice@example.com/false', 'A''s account_type, email and onboarding flag are unchanged');

-- ---------------------------------------------------------------- user B sees only B
SET LOCAL ROLE authenticated;
SELECT set_config('request.jwt.claims',
                  '{"sub":"00000000-0000-4000-8000-000000000302","role":"authenticated"}', true);
SELECT results_eq($$ SELECT id FROM users $$, ARRAY['00000000-0000-4000-8000-000000000302'::uuid],
                  'B sees only B''s profile');

-- ---------------------------------------------------------------- service role
RESET ROLE;
SELECT count(*) AS all_profiles FROM users \gset
SET LOCAL ROLE service_role;
SELECT set_config('request.jwt.claims', '{"role":"service_role"}', true);
SELECT is((SELECT count(*) FROM users)::int, :all_profiles, 'service_role sees all profiles');
WITH u AS (UPDATE users SET account_type = 'admin' WHERE id = '00000000-0000-4000-8000-000000000302' RETURNING 1)
SELECT is(count(*)::int, 1, 'service_role updates B''s account_type (1 row)') FROM u;
SELECT throws_ok($$ UPDATE users SET account_type = 'god' WHERE id = '00000000-0000-4000-8000-000000000302' $$,
                 '23514', NULL, 'account_type is still limited to super_admin, admin, user');

RESET ROLE;
SELECT is((SELECT account_type FROM users WHERE id = '00000000-0000-4000-8000-000000000302'), 'admin',
          'B''s account_type is admin');
SELECT is((SELECT account_type FROM users WHERE id = '00000000-0000-4000-8000-000000000301'), 'user',
          'A''s account_type is untouched');

SELECT * FROM finish();
ROLLBACK;
