-- 09_ownership: who owns a team, how ownership moves (transfer_ownership, deleted accounts),
-- and who sees a team (membership only: a creator who was removed sees nothing).
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(23);

\set c  '00000000-0000-4000-8000-000000000901'
\set co '00000000-0000-4000-8000-000000000902'
\set ad '00000000-0000-4000-8000-000000000903'
\set m  '00000000-0000-4000-8000-000000000904'
\set x  '00000000-0000-4000-8000-000000000905'
\set an '00000000-0000-4000-8000-000000000906'

INSERT INTO auth.users (id, email, raw_user_meta_data) VALUES
    (:'c',  'creator@own.example', '{}'), (:'co', 'coowner@own.example', '{}'),
    (:'ad', 'admin@own.example', '{}'),   (:'m',  'member@own.example', '{}'),
    (:'x',  'outsider@own.example', '{}');
INSERT INTO auth.users (id, is_anonymous) VALUES (:'an', true);

SET LOCAL ROLE authenticated;
SELECT set_config('request.jwt.claims', format('{"sub":"%s"}', :'c'), true);
SELECT create_organization('Owned', 'business', 'owned-team') AS team \gset
RESET ROLE;
UPDATE org_subscriptions SET plan = 'business' WHERE organization_id = :'team';
SET LOCAL ROLE authenticated;
SELECT set_config('request.jwt.claims', format('{"sub":"%s"}', :'c'), true);
INSERT INTO organization_members (organization_id, user_id, role) VALUES
    (:'team', :'co', 'owner'), (:'team', :'ad', 'admin'), (:'team', :'m', 'member');
SELECT is((SELECT member_count FROM organizations WHERE id = :'team'), 4, 'member_count counts the four members');
SELECT throws_ok(format($$ INSERT INTO organization_members (organization_id, user_id) VALUES (%L, %L) $$, :'team', :'an'),
                 '42501', 'anonymous users cannot join team organizations: they need a permanent account first',
                 'an anonymous account cannot be added to a team');

-- ================================================================ the creator cannot be removed
RESET ROLE;
SET LOCAL ROLE authenticated;
SELECT set_config('request.jwt.claims', format('{"sub":"%s"}', :'co'), true);
SELECT throws_ok(format($$ DELETE FROM organization_members WHERE organization_id = %L AND user_id = %L $$, :'team', :'c'),
                 '55000', 'the organization''s owner must stay a member with the role owner',
                 'a co-owner cannot remove the owner: the error says why');
SELECT throws_ok(format($$ UPDATE organization_members SET role = 'admin' WHERE organization_id = %L AND user_id = %L $$, :'team', :'c'),
                 '55000', NULL, 'nor demote them');
RESET ROLE;
SET LOCAL ROLE authenticated;
SELECT set_config('request.jwt.claims', format('{"sub":"%s"}', :'ad'), true);
SELECT throws_ok(format($$ SELECT transfer_ownership(%L, %L) $$, :'team', :'ad'),
                 '42501', 'transfer_ownership: only an owner of the organization may transfer it',
                 'an admin cannot take ownership');
RESET ROLE;
SET LOCAL ROLE authenticated;
SELECT set_config('request.jwt.claims', format('{"sub":"%s"}', :'x'), true);
SELECT throws_ok(format($$ SELECT transfer_ownership(%L, %L) $$, :'team', :'x'),
                 '42501', NULL, 'an outsider cannot take ownership');
SELECT is_empty(format($$ SELECT 1 FROM organizations WHERE id = %L $$, :'team'), 'an outsider does not see the team');

-- ================================================================ a co-owner takes over
RESET ROLE;
SET LOCAL ROLE authenticated;
SELECT set_config('request.jwt.claims', format('{"sub":"%s"}', :'co'), true);
SELECT throws_ok(format($$ SELECT transfer_ownership(%L, %L) $$, :'team', :'x'),
                 '22023', 'transfer_ownership: the new owner must be a member of the organization',
                 'ownership goes to members only');
SELECT throws_ok(format($$ SELECT transfer_ownership(id, %L) FROM organizations WHERE owner_id = %L AND is_personal $$, :'co', :'co'),
                 '22023', 'transfer_ownership: a personal organization belongs to its user',
                 'a personal organization cannot be transferred');
SELECT lives_ok(format($$ SELECT transfer_ownership(%L, %L) $$, :'team', :'co'), 'a co-owner takes over the team');
SELECT is((SELECT owner_id FROM organizations WHERE id = :'team'), :'co'::uuid, 'owner_id moved');
SELECT is((SELECT role FROM organization_members WHERE organization_id = :'team' AND user_id = :'c'), 'admin',
          'the previous owner is an admin now');
SELECT lives_ok(format($$ DELETE FROM organization_members WHERE organization_id = %L AND user_id = %L $$, :'team', :'c'),
                'the new owner removes the creator');

RESET ROLE;
SET LOCAL ROLE authenticated;
SELECT set_config('request.jwt.claims', format('{"sub":"%s"}', :'c'), true);
SELECT is_empty(format($$ SELECT 1 FROM organizations WHERE id = %L $$, :'team'),
                'the removed creator no longer sees the team');
SELECT is_empty(format($$ SELECT 1 FROM organization_members WHERE organization_id = %L $$, :'team'),
                'nor its members');
RESET ROLE;
SET LOCAL ROLE authenticated;
SELECT set_config('request.jwt.claims', format('{"sub":"%s"}', :'m'), true);
SELECT is((SELECT owner_id FROM organizations WHERE id = :'team'), :'co'::uuid, 'a member sees the team and its new owner');

-- ================================================================ the owner's account goes
RESET ROLE;
DELETE FROM auth.users WHERE id = :'co';
SELECT is((SELECT owner_id FROM organizations WHERE id = :'team'), :'ad'::uuid,
          'when the owner''s account is deleted, the admin (the highest role left) owns the team');
SELECT is((SELECT role FROM organization_members WHERE organization_id = :'team' AND user_id = :'ad'), 'owner',
          'with the role owner');
SELECT is((SELECT member_count FROM organizations WHERE id = :'team'), 2, 'and the team counts its two members');
DELETE FROM auth.users WHERE id = :'ad';
SELECT is((SELECT owner_id FROM organizations WHERE id = :'team'), :'m'::uuid, 'then the member');
DELETE FROM auth.users WHERE id = :'m';
SELECT is_empty(format($$ SELECT 1 FROM organizations WHERE id = %L $$, :'team'),
                'a team with nobody left goes with its last owner');
SELECT is_empty(format($$ SELECT 1 FROM org_subscriptions WHERE organization_id = %L $$, :'team'),
                'and so does its subscription');
SELECT is((SELECT count(*)::int FROM organizations WHERE owner_id = :'c' AND is_personal), 1,
          'the creator''s personal organization is untouched');

SELECT * FROM finish();
ROLLBACK;
