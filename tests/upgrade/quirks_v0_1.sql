-- States that 0.1.0 allowed and 0.2.0 repairs during the update (tests/upgrade/rows_survive.sql
-- checks each repair). Loaded after tests/fixtures/data.sql on a database still on 0.1.0.
\set ON_ERROR_STOP 1

-- A team whose creator was removed by a co-owner: owner_id points at a non-member.
INSERT INTO auth.users (id, email, raw_user_meta_data)
VALUES ('00000000-0000-4000-8000-0000000d0007', 'cora@fixture.example', '{"username": "cora"}');
SET ROLE authenticated;
SELECT set_config('request.jwt.claims', '{"sub":"00000000-0000-4000-8000-0000000d0007","role":"authenticated"}', false);
SELECT create_organization('Abandoned Team', 'business', 'abandoned-team') IS NOT NULL AS created;
RESET ROLE;
UPDATE org_subscriptions SET plan = 'pro' WHERE organization_id = (SELECT id FROM organizations WHERE slug = 'abandoned-team');
INSERT INTO organization_members (organization_id, user_id, role)
SELECT id, '00000000-0000-4000-8000-0000000d0002', 'owner' FROM organizations WHERE slug = 'abandoned-team';
SET ROLE authenticated;
SELECT set_config('request.jwt.claims', '{"sub":"00000000-0000-4000-8000-0000000d0002","role":"authenticated"}', false);
DELETE FROM organization_members
WHERE user_id = '00000000-0000-4000-8000-0000000d0007'
  AND organization_id = (SELECT id FROM organizations WHERE slug = 'abandoned-team');
RESET ROLE;
SELECT set_config('request.jwt.claims', '', false);

-- An email changed in auth.users after signup: 0.1.0 did not follow it.
UPDATE auth.users SET email = 'olivia.new@fixture.example' WHERE id = '00000000-0000-4000-8000-0000000d0001';

-- Where auth.users has GoTrue's columns: an anonymous sign-in, and a soft-deleted account
-- whose profile 0.1.0 left full of personal data.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM information_schema.columns
               WHERE table_schema = 'auth' AND table_name = 'users' AND column_name = 'deleted_at') THEN
        INSERT INTO auth.users (id, is_anonymous) VALUES ('00000000-0000-4000-8000-0000000d0008', true);
        UPDATE auth.users SET deleted_at = '2026-03-01 00:00+00', email = NULL, raw_user_meta_data = '{}'
        WHERE id = '00000000-0000-4000-8000-0000000d0004';
    END IF;
END
$$;
