-- Every statement here fails. Run with VERBOSITY verbose against a server started with
-- RUST_BACKTRACE=1 (tests/errors/run.sh): no error may carry a backtrace, a Rust source
-- location or a Rust panic text, only a message and a SQLSTATE.
\set VERBOSITY verbose
\set u '00000000-0000-4000-8000-0000000f0001'
INSERT INTO auth.users (id, email) VALUES (:'u', 'errors@example.com');
SELECT id AS org FROM organizations WHERE owner_id = :'u' \gset
-- A malformed JWT sub, through auth.uid() inside a Rust function.
SET ROLE authenticated;
SELECT set_config('request.jwt.claims', '{"sub":"not-a-uuid"}', false);
SELECT check_feature_access(:'u', 'max_records', :'org');
SELECT create_organization('Broken Claims');
SELECT set_config('request.jwt.claims', format('{"sub":"%s"}', :'u'), false);
-- Refusals raised by the Rust code.
SELECT check_feature_access(:'u', 'max_unicorns', :'org');
SELECT check_feature_access(NULL, 'max_records', :'org');
SELECT create_organization('Reserved', 'business', 'admin');
SELECT create_organization('Taken', 'business', 'taken-slug');
SELECT create_organization('Taken Again', 'business', 'taken-slug');
UPDATE users SET username = 'no spaces' WHERE id = :'u';
SELECT transfer_ownership(:'org', :'u');
-- Teams: tokens, membership rules, notifications.
SELECT accept_invitation('not-a-token');
SELECT lookup_invitation(repeat('0', 64));
SELECT remove_member(:'org', :'u');
SELECT update_member_role(:'org', :'u', 'superuser');
SELECT create_team(:'org', 'Hidden', 'hidden');
SELECT mark_notification_read(gen_random_uuid());
-- Billing: a coupon refused, a webhook from a member.
SELECT redeem_coupon(:'org', 'NOPE');
SELECT apply_billing_event('stripe', '{}');
-- A PostgreSQL error raised inside a Rust trigger (the quantity check inside the rollup path
-- is SQL; the seat limit is Rust).
RESET ROLE;
INSERT INTO auth.users (id, email) VALUES ('00000000-0000-4000-8000-0000000f0002', 'second@example.com');
INSERT INTO organization_members (organization_id, user_id) VALUES (:'org', '00000000-0000-4000-8000-0000000f0002');
INSERT INTO usage_events (organization_id, event_type, quantity) VALUES (:'org', 'api_call', 'NaN');
SELECT aggregate_usage('hourly', now() - interval '1 day', now());
SET ROLE authenticated;
SELECT sync_auth_users();
RESET ROLE;
