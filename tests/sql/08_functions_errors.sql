-- 08_functions_errors: bad input to the extension's functions gets a clear error with the
-- right SQLSTATE and leaves no partial rows; username availability and collisions.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(51);

\set a '00000000-0000-4000-8000-000000000801'
\set b '00000000-0000-4000-8000-000000000802'

INSERT INTO auth.users (id, email, raw_user_meta_data) VALUES
    (:'a', 'a@fn.example', '{"username":"Alice_Fn"}'),
    (:'b', 'b@fn.example', '{"username":"bob_fn"}');
SELECT id AS pa FROM organizations WHERE owner_id = :'a' AND is_personal \gset
SELECT id AS pb FROM organizations WHERE owner_id = :'b' AND is_personal \gset

-- ================================================================ check_feature_access (as postgres = service)
SELECT throws_ok(format($$ SELECT check_feature_access(NULL, 'max_records', %L) $$, :'pa'),
                 '22004', 'user_id must not be NULL', 'check_feature_access: NULL user_id is 22004');
SELECT throws_ok(format($$ SELECT check_feature_access(%L, NULL, %L) $$, :'a', :'pa'),
                 '22004', 'feature_key must not be NULL', 'check_feature_access: NULL feature_key is 22004');
SELECT throws_ok(format($$ SELECT check_feature_access(%L, 'max_records', NULL) $$, :'a'),
                 '22004', 'org_id must not be NULL', 'check_feature_access: NULL org_id is 22004');
SELECT throws_ok(format($$ SELECT check_feature_access(%L, 'max_unicorns', %L) $$, :'a', :'pa'),
                 '22023', 'check_feature_access: unknown feature key "max_unicorns"',
                 'check_feature_access: unknown key is 22023');
SELECT throws_ok(format($$ SELECT check_feature_access(%L, 'max_records', %L) $$, :'b', :'pa'),
                 '42501', 'check_feature_access: the user is not a member of this organization',
                 'check_feature_access: non-member is 42501');
SELECT is(check_feature_access(:'a', 'max_records', :'pa') ->> 'limit', '100',
          'check_feature_access answers for a member');

SET LOCAL ROLE authenticated;
SELECT set_config('request.jwt.claims', format('{"sub":"%s","role":"authenticated"}', :'a'), true);
SELECT throws_ok(format($$ SELECT check_feature_access(%L, 'max_records', %L) $$, :'b', :'pb'),
                 '42501', 'check_feature_access: a user may only act for themself',
                 'check_feature_access: authenticated asking about another user is 42501');
SELECT throws_ok(format($$ SELECT check_feature_access(%L, 'max_records', %L) $$, :'a', :'pb'),
                 '42501', 'check_feature_access: the user is not a member of this organization',
                 'check_feature_access: authenticated asking about a foreign org is 42501');
SELECT is(check_feature_access(:'a', 'max_seats', :'pa') ->> 'usage', '1',
          'check_feature_access answers the caller about themself');

RESET ROLE;
SET LOCAL ROLE anon;
SELECT set_config('request.jwt.claims', '{"role":"anon"}', true);
SELECT throws_ok(format($$ SELECT check_feature_access(%L, 'max_records', %L) $$, :'a', :'pa'),
                 '42501', 'permission denied for function check_feature_access',
                 'check_feature_access: anon cannot execute it');

-- ================================================================ aggregate_usage
RESET ROLE;
SELECT throws_ok($$ SELECT aggregate_usage('hourly', now() - interval '1 day', now()) $$,
                 '22023', 'aggregate_usage: period must be ''daily'' or ''monthly'', not "hourly"',
                 'aggregate_usage: period hourly is 22023');
SELECT throws_ok($$ SELECT aggregate_usage('daily', now(), now()) $$,
                 '22023', 'aggregate_usage: start_time must be before end_time', 'aggregate_usage: empty window is 22023');
SELECT throws_ok($$ SELECT aggregate_usage('daily', now(), now() - interval '1 day') $$,
                 '22023', 'aggregate_usage: start_time must be before end_time', 'aggregate_usage: reversed window is 22023');
SELECT throws_ok($$ SELECT aggregate_usage('daily', NULL, now()) $$,
                 '22004', 'start_time must not be NULL', 'aggregate_usage: NULL start_time is 22004');
SELECT throws_ok($$ SELECT aggregate_usage(NULL, now() - interval '1 day', now()) $$,
                 '22004', 'period must not be NULL', 'aggregate_usage: NULL period is 22004');
SELECT lives_ok($$ SELECT aggregate_usage('monthly', now() - interval '1 day', now()) $$,
                'aggregate_usage runs for postgres with a valid window');

SET LOCAL ROLE authenticated;
SELECT set_config('request.jwt.claims', format('{"sub":"%s","role":"authenticated"}', :'a'), true);
SELECT throws_ok($$ SELECT aggregate_usage('daily', now() - interval '1 day', now()) $$,
                 '42501', 'permission denied for function aggregate_usage', 'aggregate_usage: authenticated cannot run it');

RESET ROLE;
SET LOCAL ROLE service_role;
SELECT set_config('request.jwt.claims', '{"role":"service_role"}', true);
SELECT lives_ok($$ SELECT aggregate_usage('daily', now() - interval '1 day', now()) $$,
                'aggregate_usage runs for the service role');

-- ================================================================ complete_onboarding
RESET ROLE;
SET LOCAL ROLE authenticated;
SELECT set_config('request.jwt.claims', format('{"sub":"%s","role":"authenticated"}', :'a'), true);
SELECT throws_ok(format($$ SELECT complete_onboarding(%L) $$, :'b'),
                 '42501', 'complete_onboarding: a user may only act for themself',
                 'complete_onboarding for another user is 42501');
SELECT throws_ok($$ SELECT complete_onboarding(NULL) $$,
                 '22004', 'user_id must not be NULL', 'complete_onboarding(NULL) is 22004');
SELECT lives_ok(format($$ SELECT complete_onboarding(%L) $$, :'a'), 'complete_onboarding for oneself works');

RESET ROLE;
SET LOCAL ROLE service_role;
SELECT set_config('request.jwt.claims', '{"role":"service_role"}', true);
SELECT throws_ok($$ SELECT complete_onboarding('00000000-0000-4000-8000-000000000899') $$,
                 'P0002', 'complete_onboarding: no user 00000000-0000-4000-8000-000000000899',
                 'complete_onboarding for an unknown user (service role) is P0002');

RESET ROLE;
SELECT results_eq(format($$ SELECT id, onboarding_completed, onboarding_completed_at IS NOT NULL
                            FROM users WHERE id IN (%L, %L) ORDER BY id $$, :'a', :'b'),
                  format($$ VALUES (%L::uuid, true, true), (%L::uuid, false, false) $$, :'a', :'b'),
                  'only A is onboarded; the refused call left B untouched');

-- ================================================================ create_organization
SELECT count(*) AS orgs_before FROM organizations \gset
SET LOCAL ROLE authenticated;
SELECT set_config('request.jwt.claims', format('{"sub":"%s","role":"authenticated"}', :'a'), true);
SELECT throws_ok($$ SELECT create_organization('Mine', 'personal') $$,
                 '22023', 'create_organization: org_type must be one of business, family, education, other, not "personal"',
                 'create_organization: org_type personal is 22023');
SELECT throws_ok($$ SELECT create_organization('Mine', 'galactic') $$,
                 '22023', NULL, 'create_organization: unknown org_type is 22023');
SELECT throws_ok($$ SELECT create_organization('') $$,
                 '22023', 'create_organization: name must be 1 to 100 characters', 'create_organization: empty name is 22023');
SELECT throws_ok($$ SELECT create_organization('   ') $$,
                 '22023', 'create_organization: name must be 1 to 100 characters', 'create_organization: blank name is 22023');
SELECT throws_ok(format($$ SELECT create_organization(%L) $$, repeat('n', 101)),
                 '22023', 'create_organization: name must be 1 to 100 characters', 'create_organization: 101-character name is 22023');
SELECT throws_ok($$ SELECT create_organization('Bad Slug Inc', 'business', 'Bad Slug') $$,
                 '22023', NULL, 'create_organization: slug with capitals and a space is 22023');
SELECT throws_ok($$ SELECT create_organization('Dash Inc', 'business', 'dash--double') $$,
                 '22023', NULL, 'create_organization: slug with a double hyphen is 22023');
SELECT throws_ok($$ SELECT create_organization('Short Inc', 'business', 'ab') $$,
                 '22023', NULL, 'create_organization: 2-character slug is 22023');
SELECT throws_ok($$ SELECT create_organization(NULL) $$,
                 '22004', 'name must not be NULL', 'create_organization: NULL name is 22004');
SELECT lives_ok($$ SELECT create_organization('Taken Slug Co', 'business', 'taken-slug') $$,
                'create_organization with a free explicit slug works');
SELECT throws_ok($$ SELECT create_organization('Taken Again', 'business', 'taken-slug') $$,
                 '23505', 'organization slug "taken-slug" is already taken',
                 'create_organization: explicit taken slug is 23505');
SELECT throws_ok($$ SELECT create_organization('Steal Bob', 'business', 'bob-fn') $$,
                 '23505', 'organization slug "bob-fn" is already taken',
                 'create_organization: slug of someone else''s personal org is 23505');

RESET ROLE;
SELECT set_config('request.jwt.claims', '', true);
SELECT throws_ok($$ SELECT create_organization('Nobody''s') $$,
                 '42501', 'create_organization: not authenticated', 'create_organization without a user (no claims) is 42501');
SELECT is((SELECT count(*) FROM organizations)::int, :orgs_before + 1,
          'after the failures exactly one organization was added');
SELECT is((SELECT count(*) FROM organization_members m JOIN organizations o ON o.id = m.organization_id
           WHERE o.owner_id = :'a' AND NOT o.is_personal)::int, 1,
          'and exactly one owner membership for it');
SELECT is((SELECT count(*) FROM org_subscriptions s JOIN organizations o ON o.id = s.organization_id
           WHERE o.owner_id = :'a' AND NOT o.is_personal)::int, 1,
          'and exactly one subscription for it');

SET LOCAL ROLE anon;
SELECT set_config('request.jwt.claims', '{"role":"anon"}', true);
SELECT throws_ok($$ SELECT create_organization('Anon Inc') $$,
                 '42501', 'permission denied for function create_organization', 'anon cannot execute create_organization');

-- ================================================================ check_username_available (as anon)
SELECT is(check_username_available('ab'), false, 'too short username is not available');
SELECT is(check_username_available('has space'), false, 'username with a space is not available');
SELECT is(check_username_available('x'' OR 1=1 --'), false, 'SQL-ish username is not available');
SELECT is(check_username_available('admin'), false, 'reserved username is not available');
SELECT is(check_username_available('Support'), false, 'reserved username in another case is not available');
SELECT is(check_username_available('alice_fn'), false, 'taken username (other case) is not available');
SELECT is(check_username_available('ALICE_FN'), false, 'taken username (upper case) is not available');
SELECT is(check_username_available(NULL), false, 'NULL is not available');
SELECT is(check_username_available('free_name_42'), true, 'a free valid username is available');

-- ================================================================ colliding usernames at signup
RESET ROLE;
SELECT lives_ok($$ INSERT INTO auth.users (id, email, raw_user_meta_data) VALUES
                   ('00000000-0000-4000-8000-000000000811', 'sam1@fn.example', '{"username":"sam_fn"}'),
                   ('00000000-0000-4000-8000-000000000812', 'sam2@fn.example', '{"username":"sam_fn"}') $$,
                'two signups requesting the same username both succeed');
SELECT is((SELECT count(DISTINCT lower(username)) FROM users
           WHERE id IN ('00000000-0000-4000-8000-000000000811', '00000000-0000-4000-8000-000000000812')
             AND username ILIKE 'sam_fn%')::int, 2,
          'they get two distinct usernames, both derived from the request');

SELECT * FROM finish();
ROLLBACK;
