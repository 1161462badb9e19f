-- 12_teams: roles and permissions as data, member RPCs, invitations, the audit log,
-- notifications and preferences, for every role: anon, outsider, viewer, member, admin, owner,
-- platform support staff and the service role. Each rule is tested from both sides.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(102);

\set o   '00000000-0000-4000-8000-000000001201'
\set ad  '00000000-0000-4000-8000-000000001202'
\set m   '00000000-0000-4000-8000-000000001203'
\set v   '00000000-0000-4000-8000-000000001204'
\set x   '00000000-0000-4000-8000-000000001205'
\set sup '00000000-0000-4000-8000-000000001206'
\set nb  '00000000-0000-4000-8000-000000001207'

INSERT INTO auth.users (id, email, raw_user_meta_data) VALUES
    (:'o',   'owner@teams.example',   '{"full_name":"Olga Owner"}'),
    (:'ad',  'admin@teams.example',   '{"full_name":"Adam Admin"}'),
    (:'m',   'member@teams.example',  '{}'),
    (:'v',   'viewer@teams.example',  '{}'),
    (:'x',   'x@teams.example',       '{}'),
    (:'sup', 'support@teams.example', '{}'),
    (:'nb',  'Newbie@Teams.example',  '{}');
SELECT id AS o_personal FROM organizations WHERE owner_id = :'o' AND is_personal \gset

\ir include/callers.psql

SELECT pg_temp.act_as(:'o');
SELECT create_organization('Teams', 'business', 'teams-12') AS org \gset
RESET ROLE;
UPDATE org_subscriptions SET plan = 'business' WHERE organization_id = :'org';
INSERT INTO organization_members (organization_id, user_id, role) VALUES
    (:'org', :'ad', 'admin'), (:'org', :'m', 'member'), (:'org', :'v', 'viewer');

-- ================================================================ has_permission
SELECT pg_temp.act_as(:'o');
SELECT ok(has_permission(:'org', 'org.delete'), 'owner: org.delete');
SELECT pg_temp.act_as(:'ad');
SELECT ok(has_permission(:'org', 'members.invite') AND NOT has_permission(:'org', 'org.delete'),
          'admin: members.invite, not org.delete');
SELECT pg_temp.act_as(:'m');
SELECT ok(NOT has_permission(:'org', 'members.invite') AND NOT has_permission(:'org', 'audit.read'),
          'member: neither members.invite nor audit.read');
SELECT pg_temp.act_as(:'x');
SELECT ok(NOT has_permission(:'org', 'audit.read'), 'outsider: nothing in an organization they are not in');
SELECT pg_temp.act_as(NULL);
SELECT throws_ok(format($$ SELECT has_permission(%L, 'audit.read') $$, :'org'), '42501', NULL,
                 'anon: has_permission is not theirs to call');
SELECT pg_temp.act_as(:'o');
SELECT throws_ok($$ SELECT has_permission(NULL, 'audit.read') $$, '22004', 'org_id must not be NULL',
                 'has_permission: NULL org is 22004');

-- ================================================================ roles and role_permissions
SELECT pg_temp.act_as(:'o');
SELECT lives_ok(format($$ INSERT INTO roles (organization_id, key, name, hierarchy_level) VALUES (%L, 'auditor', 'Auditor', 20) $$, :'org'),
                'owner creates a custom role');
SELECT id AS auditor FROM roles WHERE organization_id = :'org' AND key = 'auditor' \gset
SELECT lives_ok(format($$ INSERT INTO role_permissions (role_id, permission) VALUES (%L, 'audit.read') $$, :'auditor'),
                'owner grants it audit.read');
SELECT throws_ok(format($$ INSERT INTO roles (organization_id, key, name, hierarchy_level) VALUES (%L, 'cofounder', 'Co', 100) $$, :'org'),
                 '42501', NULL, 'a custom role ranks below its creator');
SELECT pg_temp.as_service();
SELECT throws_ok(format($$ INSERT INTO roles (organization_id, key, name, hierarchy_level) VALUES (%L, 'cofounder', 'Co', 100) $$, :'org'),
                 '23514', NULL, 'a custom role never ranks with an owner, even made by the service role');
SELECT pg_temp.act_as(:'o');
SELECT throws_ok(format($$ INSERT INTO roles (organization_id, key, name, hierarchy_level) VALUES (%L, 'member', 'Shadow', 40) $$, :'org'),
                 '23505', NULL, 'a custom role cannot shadow a system role''s key');
SELECT throws_ok($$ INSERT INTO role_permissions (role_id, permission) SELECT id, 'org.delete' FROM roles WHERE key = 'member' $$,
                 '42501', NULL, 'owner cannot grant permissions to a system role (that would reach every organization)');

SELECT pg_temp.act_as(:'ad');
SELECT throws_ok(format($$ INSERT INTO roles (organization_id, key, name, hierarchy_level) VALUES (%L, 'helper', 'Helper', 10) $$, :'org'),
                 '42501', NULL, 'admin (no roles.manage) cannot create roles');
SELECT throws_ok(format($$ INSERT INTO role_permissions (role_id, permission) VALUES (%L, 'org.delete') $$, :'auditor'),
                 '42501', NULL, 'admin cannot grant permissions');
WITH u AS (UPDATE roles SET name = 'Boss' WHERE key = 'admin' RETURNING 1)
SELECT is(count(*)::int, 0, 'admin cannot rename a system role') FROM u;

SELECT pg_temp.act_as(:'m');
SELECT ok(EXISTS (SELECT 1 FROM roles WHERE id = :'auditor'), 'member sees their organization''s custom roles');
SELECT ok(EXISTS (SELECT 1 FROM role_permissions WHERE role_id = :'auditor'), 'and what they grant');
SELECT pg_temp.act_as(:'x');
SELECT is_empty(format($$ SELECT 1 FROM roles WHERE id = %L $$, :'auditor'), 'outsider does not see another organization''s custom roles');
SELECT is((SELECT count(*)::int FROM roles WHERE organization_id IS NULL AND key IN ('owner', 'admin', 'member', 'viewer')), 4,
          'everyone signed in sees the system roles');
SELECT pg_temp.act_as(NULL);
SELECT throws_ok($$ SELECT 1 FROM roles $$, '42501', NULL, 'anon reads no roles');

-- A custom role held by a member: permissions follow it, and the role stays while held.
SELECT pg_temp.act_as(:'o');
SELECT lives_ok(format($$ SELECT update_member_role(%L, %L, 'auditor') $$, :'org', :'v'), 'owner gives the viewer the custom role');
SELECT pg_temp.act_as(:'v');
SELECT ok(has_permission(:'org', 'audit.read'), 'the custom role grants audit.read');
SELECT pg_temp.act_as(:'o');
SELECT throws_ok(format($$ DELETE FROM roles WHERE id = %L $$, :'auditor'), '23503', NULL,
                 'a custom role held by a member cannot be deleted');
SELECT throws_ok(format($$ SELECT update_member_role(%L, %L, 'superuser') $$, :'org', :'v'), '22023', NULL,
                 'update_member_role: an unknown role is 22023');

-- ================================================================ member RPCs
SELECT pg_temp.act_as(:'v');
SELECT is((SELECT count(*)::int FROM get_organization_members(:'org') WHERE email IS NOT NULL), 4,
          'any member lists the members with their emails');
SELECT is((SELECT role FROM get_organization(:'org')), 'auditor', 'get_organization: with the caller''s role');
SELECT is((SELECT id FROM get_organization_by_slug('teams-12')), :'org'::uuid, 'get_organization_by_slug');
SELECT pg_temp.act_as(:'x');
SELECT throws_ok(format($$ SELECT * FROM get_organization_members(%L) $$, :'org'), '42501', NULL,
                 'outsider cannot list the members');
SELECT throws_ok($$ SELECT * FROM get_organization_by_slug('teams-12') $$, '42501', NULL,
                 'outsider cannot read the organization by slug');
SELECT throws_ok($$ SELECT * FROM get_organization_by_slug('no-such-team-12') $$, '42501', NULL,
                 'nor tell a missing slug from a foreign one');
SELECT is((SELECT count(*)::int FROM get_my_organizations()), 1, 'get_my_organizations: the outsider has only their own');
SELECT pg_temp.act_as(NULL);
SELECT throws_ok(format($$ SELECT * FROM get_organization_members(%L) $$, :'org'), '42501', NULL,
                 'anon cannot list members');

SELECT pg_temp.act_as(:'m');
SELECT throws_ok(format($$ SELECT update_member_role(%L, %L, 'viewer') $$, :'org', :'v'), '42501', NULL,
                 'member cannot change roles');
SELECT throws_ok(format($$ SELECT remove_member(%L, %L) $$, :'org', :'v'), '42501', NULL,
                 'member cannot remove members');
SELECT pg_temp.act_as(:'ad');
SELECT lives_ok(format($$ SELECT update_member_role(%L, %L, 'viewer') $$, :'org', :'v'), 'admin changes a lower role');
SELECT throws_ok(format($$ SELECT update_member_role(%L, %L, 'member') $$, :'org', :'o'), '42501',
                 'update_member_role: only owners touch owners', 'admin cannot touch the owner');
SELECT throws_ok(format($$ SELECT update_member_role(%L, %L, 'owner') $$, :'org', :'m'), '42501',
                 'update_member_role: the role "owner" ranks above your own', 'admin cannot grant a role above their own');
SELECT throws_ok(format($$ SELECT update_member_role(%L, %L, 'owner') $$, :'org', :'ad'), '42501',
                 'update_member_role: nobody changes their own role', 'nobody promotes themself');
SELECT throws_ok(format($$ SELECT remove_member(%L, %L) $$, :'org', :'o'), '42501', NULL, 'admin cannot remove the owner');
SELECT throws_ok(format($$ SELECT remove_member(%L, %L) $$, :'org', :'x'), '22023', NULL, 'removing a non-member is 22023');
SELECT throws_ok(format($$ SELECT delete_organization(%L) $$, :'org'), '42501', NULL, 'admin cannot delete the organization');
SELECT pg_temp.act_as(:'o');
SELECT throws_ok(format($$ SELECT leave_organization(%L) $$, :'org'), '55000', NULL, 'the owner cannot leave');
SELECT throws_ok(format($$ SELECT update_member_role(%L, %L, 'admin') $$, :'org', :'o'), '42501', NULL,
                 'the owner cannot demote themself either');
SELECT throws_ok(format($$ SELECT delete_organization(%L) $$, :'o_personal'), '22023', NULL,
                 'a personal organization cannot be deleted');

-- ================================================================ invitations
SELECT pg_temp.act_as(:'ad');
SELECT create_invitation(:'org', ' newbie@TEAMS.example ', 'member') AS token \gset
SELECT is(length(:'token'), 64, 'create_invitation returns a 64-hex-digit token');
SELECT is((SELECT email FROM invitations WHERE organization_id = :'org'), 'newbie@teams.example',
          'admin sees the invitation, its email lower-cased');
SELECT is((SELECT count(*)::int FROM invitations WHERE token_hash = convert_to(:'token', 'UTF8')
                                                   OR encode(token_hash, 'hex') = :'token'), 0,
          'the token itself is stored nowhere');
SELECT throws_ok(format($$ SELECT create_invitation(%L, 'boss@teams.example', 'owner') $$, :'org'), '42501', NULL,
                 'admin cannot invite an owner');
SELECT throws_ok(format($$ SELECT create_invitation(%L, 'not an email', 'member') $$, :'org'), '22023', NULL,
                 'a malformed email is 22023');
SELECT throws_ok(format($$ SELECT create_invitation(%L, 'member@teams.example', 'member') $$, :'org'), '23505', NULL,
                 'inviting a member is 23505');
SELECT throws_ok(format($$ SELECT create_invitation(%L, 'late@teams.example', 'member', interval '1 minute') $$, :'org'),
                 '22023', NULL, 'an expiry under 5 minutes is refused');
SELECT throws_ok(format($$ INSERT INTO invitations (organization_id, email, role, token_hash, expires_at)
                           VALUES (%L, 'sneak@teams.example', 'admin', sha256('x'), now() + interval '1 day') $$, :'org'),
                 '42501', NULL, 'invitations are not written directly');
SELECT throws_ok($$ UPDATE invitations SET status = 'accepted' $$, '42501', NULL, 'nor updated directly');
SELECT pg_temp.act_as(:'m');
SELECT is_empty(format($$ SELECT 1 FROM invitations WHERE organization_id = %L $$, :'org'), 'a member does not see invitations');
SELECT throws_ok(format($$ SELECT create_invitation(%L, 'friend@teams.example', 'viewer') $$, :'org'), '42501', NULL,
                 'a member cannot invite');
SELECT throws_ok(format($$ SELECT * FROM get_organization_invitations(%L) $$, :'org'), '42501', NULL,
                 'nor list invitations');
SELECT pg_temp.act_as(:'o');
SELECT throws_ok(format($$ SELECT create_invitation(%L, 'friend@teams.example', 'member') $$, :'o_personal'), '22023', NULL,
                 'nobody is invited to a personal organization');

SELECT pg_temp.act_as(NULL);
SELECT is((SELECT organization_name || '/' || role || '/' || status || '/' || invited_by_name FROM lookup_invitation(:'token')),
          'Teams/member/pending/Adam Admin', 'anon looks the token up for an accept page');
SELECT throws_ok(format($$ SELECT accept_invitation(%L) $$, :'token'), '42501', NULL, 'anon cannot accept');
SELECT throws_ok($$ SELECT * FROM lookup_invitation(repeat('0', 64)) $$, 'P0002', NULL, 'an unknown token is P0002');
SELECT pg_temp.act_as(:'x');
SELECT throws_ok(format($$ SELECT accept_invitation(%L) $$, :'token'), '42501',
                 'accept_invitation: this invitation was sent to another email address', 'someone else cannot accept');
SELECT pg_temp.act_as(:'nb');
SELECT is(accept_invitation(:'token'), :'org'::uuid, 'the invitee accepts (email compared case-insensitively)');
SELECT is((SELECT role FROM organization_members WHERE organization_id = :'org' AND user_id = :'nb'), 'member',
          'and joins with the invited role');
SELECT throws_ok(format($$ SELECT accept_invitation(%L) $$, :'token'), '55000', NULL, 'a token works once');

SELECT pg_temp.act_as(:'ad');
SELECT create_invitation(:'org', 'later@teams.example', 'viewer') AS token2 \gset
SELECT id AS inv2 FROM invitations WHERE email = 'later@teams.example' \gset
SELECT lives_ok(format($$ SELECT revoke_invitation(%L) $$, :'inv2'), 'admin revokes a pending invitation');
SELECT is((SELECT string_agg(email || ':' || status, ',' ORDER BY email) FROM get_organization_invitations(:'org')),
          'later@teams.example:revoked,newbie@teams.example:accepted', 'get_organization_invitations with statuses');

-- ================================================================ audit log
SELECT pg_temp.act_as(:'ad');
SELECT ok((SELECT count(*) FROM audit_log WHERE organization_id = :'org') >= 8, 'admin (audit.read) reads the organization''s log');
SELECT is((SELECT actor_name || ':' || (changes -> 'role' ->> 'before') || '>' || (changes -> 'role' ->> 'after')
           FROM audit_log WHERE organization_id = :'org' AND action = 'member.role_changed' AND actor_id = :'ad'),
          'Adam Admin:auditor>viewer', 'a role change is recorded with its actor, before and after');
SELECT ok(EXISTS (SELECT 1 FROM audit_log WHERE organization_id = :'org' AND action = 'invitation.accepted' AND actor_id = :'nb'),
          'an acceptance is recorded with the invitee as actor');
SELECT ok(EXISTS (SELECT 1 FROM audit_log WHERE organization_id = :'org' AND action = 'role.permission_granted'
                  AND resource_name = 'auditor' AND changes -> 'permission' ->> 'after' = 'audit.read'),
          'a permission granted to a role is recorded');
SELECT is_empty($$ SELECT 1 FROM audit_log WHERE organization_id IS NULL OR organization_id NOT IN
                     (SELECT organization_id FROM organization_members WHERE user_id = auth.uid()) $$,
                'admin reads no log of an organization they are not in');
SELECT throws_ok($$ UPDATE audit_log SET actor_name = 'nobody' $$, '42501', NULL, 'the log cannot be edited');
SELECT throws_ok($$ DELETE FROM audit_log $$, '42501', NULL, 'nor deleted');
SELECT throws_ok($$ INSERT INTO audit_log (actor_role, action, resource_type) VALUES ('x', 'fake.entry', 'x') $$, '42501', NULL,
                 'nor written by hand');
SELECT pg_temp.act_as(:'m');
SELECT is_empty(format($$ SELECT 1 FROM audit_log WHERE organization_id = %L $$, :'org'), 'a member (no audit.read) reads nothing');
SELECT pg_temp.act_as(:'x');
SELECT is_empty(format($$ SELECT 1 FROM audit_log WHERE organization_id = %L $$, :'org'), 'an outsider reads nothing of the team');
SELECT ok(EXISTS (SELECT 1 FROM audit_log), 'but reads their personal organization''s (they own it)');
SELECT pg_temp.act_as(NULL);
SELECT throws_ok($$ SELECT 1 FROM audit_log $$, '42501', NULL, 'anon reads nothing');
SELECT pg_temp.as_service();
SELECT ok((SELECT count(*) FROM audit_log WHERE organization_id = :'org') >= 8, 'the service role reads the log');
SELECT throws_ok($$ DELETE FROM audit_log $$, '42501', NULL, 'but cannot delete from it');

-- ================================================================ platform roles (user_roles)
SELECT pg_temp.act_as(:'sup');
SELECT throws_ok(format($$ INSERT INTO user_roles (user_id, role_id) SELECT %L, id FROM roles WHERE key = 'support' $$, :'sup'),
                 '42501', NULL, 'nobody grants themself a platform role');
SELECT pg_temp.as_service();
INSERT INTO user_roles (user_id, role_id, assigned_at, expires_at)
SELECT :'sup', id, now() - interval '1 day', now() + interval '1 day' FROM roles WHERE key = 'support';
SELECT pg_temp.act_as(:'sup');
SELECT ok((SELECT count(*) FROM audit_log WHERE organization_id = :'org') >= 8, 'support staff read every organization''s log');
SELECT is((SELECT count(*)::int FROM user_roles), 1, 'and see their own grant');
SELECT pg_temp.act_as(:'x');
SELECT is_empty($$ SELECT 1 FROM user_roles $$, 'nobody else sees it');
SELECT pg_temp.as_service();
UPDATE user_roles SET expires_at = now() - interval '1 second' WHERE user_id = :'sup';
SELECT pg_temp.act_as(:'sup');
SELECT is_empty(format($$ SELECT 1 FROM audit_log WHERE organization_id = %L $$, :'org'), 'an expired grant grants nothing');

-- ================================================================ notifications and preferences
SELECT pg_temp.act_as(:'v');
SELECT ok(EXISTS (SELECT 1 FROM notifications WHERE type = 'member.role_changed'), 'the viewer was told of the role change');
SELECT is_empty(format($$ SELECT 1 FROM notifications WHERE user_id <> %L $$, :'v'), 'and sees only their own notifications');
SELECT id AS note FROM notifications WHERE type = 'member.role_changed' LIMIT 1 \gset
SELECT throws_ok(format($$ UPDATE notifications SET title = 'hacked' WHERE id = %L $$, :'note'), '42501', NULL,
                 'a user cannot rewrite a notification');
SELECT lives_ok(format($$ SELECT mark_notification_read(%L) $$, :'note'), 'but marks it read');
SELECT is(get_unread_notification_count(), (SELECT count(*) FROM notifications WHERE read_at IS NULL AND archived_at IS NULL),
          'the unread count follows');
SELECT pg_temp.act_as(:'nb');
SELECT throws_ok(format($$ SELECT archive_notification(%L) $$, :'note'), 'P0002', NULL, 'nobody archives another user''s notification');
SELECT throws_ok(format($$ INSERT INTO user_preferences (user_id, key, value) VALUES (%L, 'theme', '"dark"') $$, :'v'),
                 '42501', NULL, 'nobody writes another user''s preferences');
SELECT lives_ok(format($$ INSERT INTO user_preferences (user_id, key, value) VALUES (%L, 'theme', '"dark"') $$, :'nb'),
                'a user writes their own');
SELECT pg_temp.act_as(:'x');
SELECT is_empty($$ SELECT 1 FROM user_preferences $$, 'and nobody else reads them');
SELECT throws_ok($$ UPDATE invitation_settings SET max_pending_per_org = 100000 $$, '42501', NULL,
                 'users cannot change invitation settings');

-- ================================================================ direct writes follow the same rule
SELECT pg_temp.act_as(:'o');
INSERT INTO roles (organization_id, key, name, hierarchy_level) VALUES (:'org', 'moderator', 'Moderator', 60);
INSERT INTO role_permissions (role_id, permission)
SELECT id, 'members.remove' FROM roles WHERE organization_id = :'org' AND key = 'moderator';
WITH u AS (UPDATE organization_members SET role = 'moderator' WHERE organization_id = :'org' AND user_id = :'m' RETURNING 1)
SELECT is(count(*)::int, 1, 'the owner gives a custom role with a direct UPDATE') FROM u;
SELECT pg_temp.act_as(:'m');
WITH d AS (DELETE FROM organization_members WHERE organization_id = :'org' AND user_id = :'ad' RETURNING 1)
SELECT is(count(*)::int, 0, 'a custom role with members.remove cannot remove someone ranked above it') FROM d;
WITH d AS (DELETE FROM organization_members WHERE organization_id = :'org' AND user_id = :'v' RETURNING 1)
SELECT is(count(*)::int, 1, 'but removes someone ranked below it (direct DELETE)') FROM d;
SELECT throws_ok(format($$ INSERT INTO organization_members (organization_id, user_id, role) VALUES (%L, %L, 'viewer') $$, :'org', :'x'),
                 '42501', NULL, 'and adds nobody without members.invite');
WITH u AS (UPDATE organization_members SET role = 'viewer' WHERE organization_id = :'org' AND user_id = :'nb' RETURNING 1)
SELECT is(count(*)::int, 0, 'nor changes roles without members.change_role') FROM u;
SELECT pg_temp.act_as(:'ad');
WITH u AS (UPDATE organization_members SET role = 'admin' WHERE organization_id = :'org' AND user_id = :'nb' RETURNING 1)
SELECT is(count(*)::int, 1, 'an admin grants a role up to their own with a direct UPDATE') FROM u;
SELECT throws_ok(format($$ UPDATE organization_members SET role = 'owner' WHERE organization_id = %L AND user_id = %L $$, :'org', :'m'),
                 '42501', NULL, 'but not above it');

SELECT * FROM finish();
ROLLBACK;
