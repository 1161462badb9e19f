-- 04_rls_organizations: organizations and organization_members under RLS: who sees which
-- workspaces, who adds, promotes and removes members, what nobody may change, seat limits.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(55);

\set o  '00000000-0000-4000-8000-000000000401'
\set ad '00000000-0000-4000-8000-000000000402'
\set m  '00000000-0000-4000-8000-000000000403'
\set v  '00000000-0000-4000-8000-000000000404'
\set x  '00000000-0000-4000-8000-000000000405'

INSERT INTO auth.users (id, email, raw_user_meta_data) VALUES
    (:'o',  'owner@example.com',  '{"username":"owner_404"}'),
    (:'ad', 'admin@example.com',  '{"username":"admin_404"}'),
    (:'m',  'member@example.com', '{"username":"member_404"}'),
    (:'v',  'viewer@example.com', '{"username":"viewer_404"}'),
    (:'x',  'x@example.com',      '{"username":"outsider_404"}');
SELECT id AS o_personal FROM organizations WHERE owner_id = :'o' AND is_personal \gset
SELECT id AS m_personal FROM organizations WHERE owner_id = :'m' AND is_personal \gset
SELECT id AS x_personal FROM organizations WHERE owner_id = :'x' AND is_personal \gset

-- ================================================================ owner creates a team org
SET LOCAL ROLE authenticated;
SELECT set_config('request.jwt.claims', format('{"sub":"%s","role":"authenticated"}', :'o'), true);
SELECT create_organization('Acme', 'business') AS acme \gset

SELECT is((SELECT name || '/' || org_type || '/' || is_personal || '/' || owner_id FROM organizations WHERE id = :'acme'),
          'Acme/business/false/' || :'o', 'create_organization returns the id of the new team org, visible to its owner');
SELECT results_eq(format($$ SELECT user_id, role FROM organization_members WHERE organization_id = %L $$, :'acme'),
                  format($$ VALUES (%L::uuid, 'owner'::text) $$, :'o'),
                  'the creator is the only member, as owner');

-- Upgrade to business (50 seats) as the billing backend would.
RESET ROLE;
UPDATE org_subscriptions SET plan = 'business' WHERE organization_id = :'acme';

SET LOCAL ROLE authenticated;
SELECT set_config('request.jwt.claims', format('{"sub":"%s","role":"authenticated"}', :'o'), true);
SELECT lives_ok(format($$ INSERT INTO organization_members (organization_id, user_id, role) VALUES (%L, %L, 'admin') $$,
                       :'acme', :'ad'), 'owner adds an admin');
SELECT lives_ok(format($$ INSERT INTO organization_members (organization_id, user_id, role)
                          VALUES (%L, %L, 'member'), (%L, %L, 'viewer') $$, :'acme', :'m', :'acme', :'v'),
                'owner adds a member and a viewer');

-- ================================================================ visibility
RESET ROLE;
SET LOCAL ROLE authenticated;
SELECT set_config('request.jwt.claims', format('{"sub":"%s","role":"authenticated"}', :'m'), true);
SELECT set_eq($$ SELECT id FROM organizations $$, ARRAY[:'acme', :'m_personal']::uuid[],
              'member sees exactly the team org and their personal org');
SELECT is((SELECT count(*) FROM organization_members WHERE organization_id = :'acme')::int, 4,
          'member sees all 4 memberships of the team org');
SELECT is_empty(format($$ SELECT 1 FROM organization_members WHERE organization_id NOT IN (%L, %L) $$,
                       :'acme', :'m_personal'), 'member sees no membership of other orgs');

RESET ROLE;
SET LOCAL ROLE authenticated;
SELECT set_config('request.jwt.claims', format('{"sub":"%s","role":"authenticated"}', :'x'), true);
SELECT results_eq($$ SELECT id FROM organizations $$, ARRAY[:'x_personal']::uuid[],
                  'non-member sees only their own personal org');
SELECT is_empty(format($$ SELECT 1 FROM organizations WHERE id = %L $$, :'acme'),
                'non-member cannot see the team org');
SELECT is_empty(format($$ SELECT 1 FROM organization_members WHERE organization_id = %L $$, :'acme'),
                'non-member cannot see the team org''s members');
SELECT throws_ok(format($$ INSERT INTO organization_members (organization_id, user_id, role) VALUES (%L, %L, 'member') $$,
                        :'acme', :'x'),
                 '42501', 'new row violates row-level security policy for table "organization_members"',
                 'non-member cannot add themself to the team org');
WITH u AS (UPDATE organizations SET name = 'Owned by X' WHERE id = :'acme' RETURNING 1)
SELECT is(count(*)::int, 0, 'non-member renaming the team org affects 0 rows') FROM u;

-- ================================================================ admin
RESET ROLE;
SET LOCAL ROLE authenticated;
SELECT set_config('request.jwt.claims', format('{"sub":"%s","role":"authenticated"}', :'ad'), true);
SELECT throws_ok(format($$ INSERT INTO organization_members (organization_id, user_id, role) VALUES (%L, %L, 'owner') $$,
                        :'acme', :'x'),
                 '42501', 'new row violates row-level security policy for table "organization_members"',
                 'admin cannot add an owner');
SELECT throws_ok(format($$ UPDATE organization_members SET role = 'owner' WHERE organization_id = %L AND user_id = %L $$,
                        :'acme', :'m'),
                 '42501', 'new row violates row-level security policy for table "organization_members"',
                 'admin cannot make a member owner');
WITH u AS (UPDATE organization_members SET role = 'member'
           WHERE organization_id = :'acme' AND user_id = :'o' RETURNING 1)
SELECT is(count(*)::int, 0, 'admin cannot change the owner''s role (0 rows)') FROM u;
WITH u AS (DELETE FROM organization_members WHERE organization_id = :'acme' AND user_id = :'o' RETURNING 1)
SELECT is(count(*)::int, 0, 'admin cannot remove the owner (0 rows)') FROM u;
WITH u AS (UPDATE organization_members SET role = 'member'
           WHERE organization_id = :'acme' AND user_id = :'ad' RETURNING 1)
SELECT is(count(*)::int, 0, 'admin cannot change their own role (0 rows)') FROM u;
WITH u AS (UPDATE organization_members SET role = 'member'
           WHERE organization_id = :'acme' AND user_id = :'v' RETURNING 1)
SELECT is(count(*)::int, 1, 'admin promotes the viewer to member (1 row)') FROM u;
WITH u AS (UPDATE organization_members SET role = 'viewer'
           WHERE organization_id = :'acme' AND user_id = :'v' RETURNING 1)
SELECT is(count(*)::int, 1, 'admin demotes them back to viewer (1 row)') FROM u;
SELECT lives_ok(format($$ INSERT INTO organization_members (organization_id, user_id, role) VALUES (%L, %L, 'member') $$,
                       :'acme', :'x'), 'admin adds a member');
WITH u AS (DELETE FROM organization_members WHERE organization_id = :'acme' AND user_id = :'x' RETURNING 1)
SELECT is(count(*)::int, 1, 'admin removes that member again (1 row)') FROM u;
WITH u AS (UPDATE organizations SET name = 'Acme Inc' WHERE id = :'acme' RETURNING 1)
SELECT is(count(*)::int, 1, 'admin renames the org (1 row)') FROM u;
WITH u AS (DELETE FROM organizations WHERE id = :'acme' RETURNING 1)
SELECT is(count(*)::int, 0, 'admin cannot delete the org (0 rows)') FROM u;
SELECT throws_ok(format($$ UPDATE organizations SET owner_id = %L WHERE id = %L $$, :'ad', :'acme'),
                 '42501', 'permission denied for table organizations', 'admin cannot change owner_id');

-- ================================================================ member and viewer
RESET ROLE;
SET LOCAL ROLE authenticated;
SELECT set_config('request.jwt.claims', format('{"sub":"%s","role":"authenticated"}', :'m'), true);
WITH u AS (UPDATE organization_members SET role = 'admin'
           WHERE organization_id = :'acme' AND user_id = :'m' RETURNING 1)
SELECT is(count(*)::int, 0, 'member cannot change their own role (0 rows)') FROM u;
WITH u AS (UPDATE organization_members SET role = 'member'
           WHERE organization_id = :'acme' AND user_id = :'v' RETURNING 1)
SELECT is(count(*)::int, 0, 'member cannot change someone else''s role (0 rows)') FROM u;
SELECT throws_ok(format($$ INSERT INTO organization_members (organization_id, user_id, role) VALUES (%L, %L, 'viewer') $$,
                        :'acme', :'x'),
                 '42501', 'new row violates row-level security policy for table "organization_members"',
                 'member cannot add members');
WITH u AS (UPDATE organizations SET name = 'Renamed by member' WHERE id = :'acme' RETURNING 1)
SELECT is(count(*)::int, 0, 'member cannot rename the org (0 rows)') FROM u;

RESET ROLE;
SET LOCAL ROLE authenticated;
SELECT set_config('request.jwt.claims', format('{"sub":"%s","role":"authenticated"}', :'v'), true);
WITH u AS (DELETE FROM organization_members WHERE organization_id = :'acme' AND user_id = :'m' RETURNING 1)
SELECT is(count(*)::int, 0, 'viewer cannot remove another member (0 rows)') FROM u;

RESET ROLE;
SET LOCAL ROLE authenticated;
SELECT set_config('request.jwt.claims', format('{"sub":"%s","role":"authenticated"}', :'m'), true);
WITH u AS (DELETE FROM organization_members WHERE organization_id = :'acme' AND user_id = :'m' RETURNING 1)
SELECT is(count(*)::int, 1, 'member leaves the org (1 row)') FROM u;

-- ================================================================ owner: fixed columns, own row, personal org
RESET ROLE;
SET LOCAL ROLE authenticated;
SELECT set_config('request.jwt.claims', format('{"sub":"%s","role":"authenticated"}', :'o'), true);
SELECT throws_ok(format($$ UPDATE organizations SET owner_id = %L WHERE id = %L $$, :'ad', :'acme'),
                 '42501', 'permission denied for table organizations', 'owner cannot change owner_id');
SELECT throws_ok(format($$ UPDATE organizations SET is_personal = true WHERE id = %L $$, :'acme'),
                 '42501', 'permission denied for table organizations', 'owner cannot change is_personal');
SELECT throws_ok(format($$ UPDATE organizations SET org_type = 'family' WHERE id = %L $$, :'acme'),
                 '42501', 'permission denied for table organizations', 'owner cannot change org_type');
WITH u AS (DELETE FROM organization_members WHERE organization_id = :'acme' AND user_id = :'o' RETURNING 1)
SELECT is(count(*)::int, 0, 'owner cannot delete their own owner membership (0 rows)') FROM u;
SELECT throws_ok(format($$ INSERT INTO organization_members (organization_id, user_id, role) VALUES (%L, %L, 'member') $$,
                        :'o_personal', :'x'),
                 NULL, NULL, 'owner cannot add a member to their personal org (free plan)');
WITH u AS (DELETE FROM organizations WHERE id = :'o_personal' RETURNING 1)
SELECT is(count(*)::int, 0, 'owner cannot delete their personal org (0 rows)') FROM u;

-- Even with seats to spare, a personal org takes no members.
RESET ROLE;
UPDATE org_subscriptions SET plan = 'pro' WHERE organization_id = :'o_personal';
SET LOCAL ROLE authenticated;
SELECT set_config('request.jwt.claims', format('{"sub":"%s","role":"authenticated"}', :'o'), true);
SELECT throws_ok(format($$ INSERT INTO organization_members (organization_id, user_id, role) VALUES (%L, %L, 'member') $$,
                        :'o_personal', :'x'),
                 '42501', 'new row violates row-level security policy for table "organization_members"',
                 'owner cannot add a member to their personal org (pro plan, seats available)');

-- ================================================================ what really happened (as postgres)
RESET ROLE;
SELECT is((SELECT name FROM organizations WHERE id = :'acme'), 'Acme Inc',
          'only the admin''s rename took effect');
SELECT results_eq(format($$ SELECT user_id, role FROM organization_members WHERE organization_id = %L ORDER BY user_id $$, :'acme'),
                  format($$ VALUES (%L::uuid, 'owner'::text), (%L::uuid, 'admin'), (%L::uuid, 'viewer') $$, :'o', :'ad', :'v'),
                  'team org members: owner, admin, viewer (member left, outsider removed, roles as set)');
SELECT results_eq(format($$ SELECT user_id, role FROM organization_members WHERE organization_id = %L $$, :'o_personal'),
                  format($$ VALUES (%L::uuid, 'owner'::text) $$, :'o'),
                  'the personal org still exists with its owner as only member');
SELECT is((SELECT owner_id::text || '/' || is_personal || '/' || org_type FROM organizations WHERE id = :'acme'),
          :'o' || '/false/business', 'owner_id, is_personal and org_type of the team org are unchanged');

-- ================================================================ seat limit on the free plan
SET LOCAL ROLE authenticated;
SELECT set_config('request.jwt.claims', format('{"sub":"%s","role":"authenticated"}', :'o'), true);
SELECT create_organization('Solo Team', 'family') AS solo \gset
SELECT throws_ok(format($$ INSERT INTO organization_members (organization_id, user_id, role) VALUES (%L, %L, 'member') $$,
                        :'solo', :'x'),
                 '54000', NULL, 'free plan team org with 1 member: adding a second fails with 54000');
SELECT is((SELECT count(*) FROM organization_members WHERE organization_id = :'solo')::int, 1,
          'the free team org still has 1 member');

-- A non-member learns nothing about someone else's organization, not even that its seats are used up.
RESET ROLE;
SET LOCAL ROLE authenticated;
SELECT set_config('request.jwt.claims', format('{"sub":"%s","role":"authenticated"}', :'x'), true);
SELECT throws_ok(format($$ INSERT INTO organization_members (organization_id, user_id, role) VALUES (%L, %L, 'member') $$,
                        :'solo', :'x'),
                 '42501', 'new row violates row-level security policy for table "organization_members"',
                 'non-member joining a full org is refused by RLS (42501), not told about its seats');

-- ================================================================ current_user_org_ids, the policies' helper
RESET ROLE;
SELECT id AS v_personal FROM organizations WHERE owner_id = :'v' AND is_personal \gset
SELECT is((SELECT prosecdef FROM pg_proc WHERE oid = 'current_user_org_ids(text[])'::regprocedure), false,
          'current_user_org_ids is not SECURITY DEFINER (it reads the membership index itself)');
SELECT ok(NOT has_function_privilege('anon', 'current_user_org_ids(text[])', 'EXECUTE'),
          'anon may not call current_user_org_ids');
SET LOCAL ROLE authenticated;
SELECT set_config('request.jwt.claims', format('{"sub":"%s","role":"authenticated"}', :'v'), true);
SELECT set_eq($$ SELECT current_user_org_ids() $$, ARRAY[:'acme', :'v_personal']::uuid[],
              'current_user_org_ids: exactly the viewer''s organizations');
SELECT set_eq($$ SELECT current_user_org_ids(ARRAY['viewer']) $$, ARRAY[:'acme']::uuid[],
              'current_user_org_ids(roles): only where the caller''s role is one of roles');
-- The same backend and transaction, another JWT: the answer follows the claims at once.
SELECT set_config('request.jwt.claims', format('{"sub":"%s","role":"authenticated"}', :'x'), true);
SELECT set_eq($$ SELECT current_user_org_ids() $$, ARRAY[:'x_personal']::uuid[],
              'another JWT in the same session: that user''s organizations only');
SELECT set_config('request.jwt.claim.sub', :'v', true);
SELECT set_eq($$ SELECT current_user_org_ids() $$, ARRAY[:'acme', :'v_personal']::uuid[],
              'the legacy request.jwt.claim.sub setting wins, as in auth.uid()');
SELECT set_config('request.jwt.claim.sub', '', true);
SELECT set_config('request.jwt.claims', '', true);
SELECT is_empty($$ SELECT current_user_org_ids() $$, 'no JWT: no organizations');
-- A new definition of auth.uid() is followed at once (saas_core remembers answers per JWT).
RESET ROLE;
SELECT set_config('request.jwt.claims', format('{"sub":"%s","role":"authenticated"}', :'v'), true);
SELECT pg_get_functiondef('auth.uid()'::regprocedure) AS uid_definition \gset
SELECT set_eq($$ SELECT current_user_org_ids() $$, ARRAY[:'acme', :'v_personal']::uuid[], 'before: the JWT''s user');
SELECT format('CREATE OR REPLACE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE AS %L', format('SELECT %L::uuid', :'x')) \gexec
SELECT set_eq($$ SELECT current_user_org_ids() $$, ARRAY[:'x_personal']::uuid[],
              'after auth.uid() is redefined: the user it now names');
SELECT :'uid_definition' \gexec


-- ================================================================ the owner deletes the team org
RESET ROLE;
SET LOCAL ROLE authenticated;
SELECT set_config('request.jwt.claims', format('{"sub":"%s","role":"authenticated"}', :'o'), true);
WITH u AS (DELETE FROM organizations WHERE id = :'acme' RETURNING 1)
SELECT is(count(*)::int, 1, 'owner deletes the team org (1 row)') FROM u;
RESET ROLE;
SELECT is((SELECT count(*) FROM organization_members WHERE organization_id = :'acme')::int, 0,
          'its memberships went with it');

SELECT * FROM finish();
ROLLBACK;
