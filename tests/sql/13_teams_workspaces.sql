-- 13_teams_workspaces: teams (public / private / secret) and workspaces (organization / team /
-- private) under RLS, for anon, outsider, viewer, member, team lead, admin, owner and the
-- service role: who knows a team exists, who sees who is in it, who manages it.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(45);

\set o  '00000000-0000-4000-8000-000000001301'
\set ad '00000000-0000-4000-8000-000000001302'
\set m  '00000000-0000-4000-8000-000000001303'
\set v  '00000000-0000-4000-8000-000000001304'
\set x  '00000000-0000-4000-8000-000000001305'
\set l  '00000000-0000-4000-8000-000000001306'

INSERT INTO auth.users (id, email) VALUES
    (:'o', 'owner@tw.example'), (:'ad', 'admin@tw.example'), (:'m', 'member@tw.example'),
    (:'v', 'viewer@tw.example'), (:'x', 'x@tw.example'), (:'l', 'lead@tw.example');

\ir include/callers.psql

SELECT pg_temp.act_as(:'o');
SELECT create_organization('TW', 'business', 'tw-13') AS org \gset
RESET ROLE;
UPDATE org_subscriptions SET plan = 'business' WHERE organization_id = :'org';
INSERT INTO organization_members (organization_id, user_id, role) VALUES
    (:'org', :'ad', 'admin'), (:'org', :'m', 'member'), (:'org', :'v', 'viewer'), (:'org', :'l', 'member');

SELECT pg_temp.act_as(:'o');
SELECT create_team(:'org', 'Public', 'public') AS pub \gset
SELECT create_team(:'org', 'Private', 'private') AS priv \gset
SELECT create_team(:'org', 'Secret', 'secret') AS sec \gset
INSERT INTO team_members (team_id, organization_id, user_id, role) VALUES
    (:'pub', :'org', :'m', 'member'), (:'priv', :'org', :'l', 'member'), (:'sec', :'org', :'l', 'lead');
SELECT create_workspace(:'org', 'Everyone', 'everyone') AS ws_org \gset
SELECT create_workspace(:'org', 'Secret docs', 'secret-docs', 'team', :'sec') AS ws_team \gset
SELECT create_workspace(:'org', 'Drafts', 'drafts', 'private') AS ws_priv \gset
INSERT INTO workspace_members (workspace_id, organization_id, user_id, role) VALUES (:'ws_priv', :'org', :'l', 'admin');
SELECT is((SELECT role FROM team_members WHERE team_id = :'sec' AND user_id = :'o'), 'lead', 'create_team makes its creator lead');

-- ================================================================ who knows which teams exist
SELECT pg_temp.act_as(NULL);
SELECT throws_ok($$ SELECT 1 FROM teams $$, '42501', NULL, 'anon: no teams');
SELECT pg_temp.act_as(:'x');
SELECT is_empty(format($$ SELECT 1 FROM teams WHERE organization_id = %L $$, :'org'), 'outsider: no team of the organization');
SELECT is_empty(format($$ SELECT 1 FROM team_members WHERE organization_id = %L $$, :'org'), 'outsider: nobody in them');
SELECT is_empty(format($$ SELECT 1 FROM workspaces WHERE organization_id = %L $$, :'org'), 'outsider: no workspace');
SELECT pg_temp.act_as(:'v');
SELECT set_eq($$ SELECT name FROM teams $$, ARRAY['Public', 'Private'], 'viewer: public and private teams, not the secret one');
SELECT set_eq($$ SELECT user_id FROM team_members $$, ARRAY[:'m', :'o']::uuid[],
              'viewer: who is in the public team (its creator and member) only');
SELECT set_eq($$ SELECT slug FROM workspaces $$, ARRAY['everyone'], 'viewer: the organization-wide workspace only');
SELECT pg_temp.act_as(:'m');
SELECT set_eq($$ SELECT name FROM teams $$, ARRAY['Public', 'Private'], 'member: the same');
SELECT is_empty(format($$ SELECT 1 FROM team_members WHERE team_id = %L $$, :'priv'), 'member: a private team''s members stay hidden');
SELECT pg_temp.act_as(:'l');
SELECT set_eq($$ SELECT name FROM teams $$, ARRAY['Public', 'Private', 'Secret'], 'lead: their secret team too');
SELECT ok(EXISTS (SELECT 1 FROM team_members WHERE team_id = :'priv'), 'lead: members of a private team they are in');
SELECT set_eq($$ SELECT slug FROM workspaces $$, ARRAY['everyone', 'secret-docs', 'drafts'],
              'lead: the team''s workspace and the private one they administer');
SELECT set_eq(format($$ SELECT user_id FROM workspace_members WHERE workspace_id = %L $$, :'ws_priv'), ARRAY[:'l', :'o']::uuid[],
              'lead: who is in the private workspace');
SELECT pg_temp.act_as(:'ad');
SELECT set_eq($$ SELECT name FROM teams $$, ARRAY['Public', 'Private', 'Secret'], 'admin (teams.manage): every team');
SELECT set_eq($$ SELECT slug FROM workspaces $$, ARRAY['everyone', 'secret-docs', 'drafts'], 'admin: every workspace');
SELECT pg_temp.act_as(:'o');
SELECT is((SELECT count(*)::int FROM teams), 3, 'owner: every team');
RESET ROLE;
SET LOCAL ROLE service_role;
SELECT is((SELECT count(*)::int FROM teams WHERE organization_id = :'org'), 3, 'service role: every team');

-- ================================================================ who manages them
SELECT pg_temp.act_as(:'m');
SELECT throws_ok(format($$ INSERT INTO teams (organization_id, name) VALUES (%L, 'Mine') $$, :'org'), '42501', NULL,
                 'member: cannot create a team');
SELECT throws_ok(format($$ SELECT create_team(%L, 'Mine') $$, :'org'), '42501', NULL, 'member: nor through create_team');
SELECT throws_ok(format($$ INSERT INTO team_members (team_id, organization_id, user_id) VALUES (%L, %L, %L) $$, :'pub', :'org', :'v'),
                 '42501', NULL, 'member: cannot add people to a team');
SELECT throws_ok(format($$ INSERT INTO workspaces (organization_id, name, slug) VALUES (%L, 'W', 'w-13') $$, :'org'), '42501', NULL,
                 'member: cannot create a workspace');
WITH d AS (DELETE FROM team_members WHERE team_id = :'pub' AND user_id = :'m' RETURNING 1)
SELECT is(count(*)::int, 1, 'member: leaves a team') FROM d;

SELECT pg_temp.act_as(:'l');
SELECT lives_ok(format($$ INSERT INTO team_members (team_id, organization_id, user_id) VALUES (%L, %L, %L) $$, :'sec', :'org', :'v'),
                'lead: adds a member to their team');
WITH u AS (UPDATE teams SET description = 'Shh' WHERE id = :'sec' RETURNING 1)
SELECT is(count(*)::int, 1, 'lead: edits their team') FROM u;
WITH d AS (DELETE FROM teams WHERE id = :'sec' RETURNING 1)
SELECT is(count(*)::int, 0, 'lead: cannot delete it') FROM d;
SELECT throws_ok(format($$ INSERT INTO team_members (team_id, organization_id, user_id) VALUES (%L, %L, %L) $$, :'pub', :'org', :'v'),
                 '42501', NULL, 'lead: cannot add people to a team they do not lead');
SELECT lives_ok(format($$ INSERT INTO workspace_members (workspace_id, organization_id, user_id, role) VALUES (%L, %L, %L, 'viewer') $$,
                       :'ws_priv', :'org', :'m'), 'workspace admin: adds a member');
SELECT pg_temp.act_as(:'v');
SELECT set_eq($$ SELECT name FROM teams $$, ARRAY['Public', 'Private', 'Secret'], 'the viewer, now in the secret team, sees it');

SELECT pg_temp.act_as(:'ad');
SELECT throws_ok(format($$ INSERT INTO team_members (team_id, organization_id, user_id) VALUES (%L, %L, %L) $$, :'pub', :'org', :'x'),
                 '23503', NULL, 'nobody outside the organization joins one of its teams');
SELECT throws_ok(format($$ SELECT create_team(%L, 'public ') $$, :'org'), '23505', NULL, 'team names are unique per organization (case-insensitive)');
SELECT throws_ok(format($$ SELECT create_team(%L, 'Other', 'hidden') $$, :'org'), '22023', NULL, 'privacy is public, private or secret');
SELECT throws_ok(format($$ SELECT create_workspace(%L, 'W', 'w-13', 'team') $$, :'org'), '22023', NULL,
                 'a team-visible workspace needs a team');
SELECT throws_ok(format($$ SELECT create_workspace(%L, 'W', 'everyone') $$, :'org'), '23505', NULL, 'workspace slugs are unique per organization');
SELECT throws_ok(format($$ SELECT create_workspace(%L, 'W', 'Not A Slug') $$, :'org'), '23514', NULL, 'workspace slugs follow the slug rule');
SELECT lives_ok(format($$ UPDATE teams SET privacy = 'public' WHERE id = %L $$, :'priv'), 'admin: changes a team''s privacy');
SELECT ok(EXISTS (SELECT 1 FROM audit_log WHERE organization_id = :'org' AND action = 'team.updated'
                  AND changes -> 'privacy' ->> 'after' = 'public'), 'and the change is on record');
SELECT ok(EXISTS (SELECT 1 FROM audit_log WHERE organization_id = :'org' AND action = 'team.member_added'
                  AND resource_id = :'sec' AND actor_id = :'l'), 'as is the lead adding a member');

-- ================================================================ leaving the organization
SELECT pg_temp.act_as(:'o');
SELECT lives_ok(format($$ SELECT remove_member(%L, %L) $$, :'org', :'l'), 'the lead is removed from the organization');
RESET ROLE;
SELECT is((SELECT count(*)::int FROM team_members WHERE user_id = :'l'), 0, 'their team memberships went with it');
SELECT is((SELECT count(*)::int FROM workspace_members WHERE user_id = :'l'), 0, 'and their workspace memberships');
SELECT pg_temp.act_as(:'o');
SELECT lives_ok(format($$ DELETE FROM teams WHERE id = %L $$, :'sec'), 'the owner deletes the secret team');
RESET ROLE;
SELECT is((SELECT team_id FROM workspaces WHERE id = :'ws_team'), NULL, 'its workspace stays, without a team');
SELECT pg_temp.act_as(:'v');
SELECT is_empty(format($$ SELECT 1 FROM workspaces WHERE id = %L $$, :'ws_team'),
                'and is no longer visible through the team');
SELECT pg_temp.act_as(:'ad');
SELECT ok(EXISTS (SELECT 1 FROM workspaces WHERE id = :'ws_team'), 'team managers still see it');

SELECT * FROM finish();
ROLLBACK;
