-- A session listening on saas_core_notifications while an owner changes a member's role:
-- after the commit it receives one notification, whose payload names the notifications row.
-- Run by tests/notify/run.sh, which compares the payload with the row printed at the end.
\set ON_ERROR_STOP 1
INSERT INTO auth.users (id, email) VALUES
    ('00000000-0000-4000-8000-0000000e0001', 'owner@notify.example'),
    ('00000000-0000-4000-8000-0000000e0002', 'member@notify.example');
SET ROLE authenticated;
SELECT set_config('request.jwt.claims', '{"sub":"00000000-0000-4000-8000-0000000e0001","role":"authenticated"}', false);
SELECT create_organization('Notify', 'business', 'notify-team') AS org \gset
RESET ROLE;
UPDATE org_subscriptions SET plan = 'business' WHERE organization_id = :'org';
INSERT INTO organization_members (organization_id, user_id, role)
VALUES (:'org', '00000000-0000-4000-8000-0000000e0002', 'member');
LISTEN saas_core_notifications;
SET ROLE authenticated;
SELECT update_member_role(:'org', '00000000-0000-4000-8000-0000000e0002', 'viewer');
RESET ROLE;
\pset format unaligned
\pset tuples_only on
SELECT 'row: ' || json_build_object('id', id, 'user_id', user_id, 'organization_id', organization_id, 'type', type)::text
FROM notifications;
