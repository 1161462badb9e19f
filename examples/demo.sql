-- The saas_core tour: what a Supabase-style application sees, step by step.
\set ON_ERROR_STOP on
\pset footer off
\echo '\n== 1. CREATE EXTENSION saas_core (plain PostgreSQL: it brings a minimal auth schema)'
CREATE EXTENSION saas_core;
SELECT count(*) AS plan_feature_rows FROM plan_features;

\echo '\n== 2. Two people sign up (the auth server inserts into auth.users)'
INSERT INTO auth.users (id, email, raw_user_meta_data) VALUES
  ('a0000000-0000-0000-0000-000000000001', 'ada@example.com', '{"first_name":"Ada","last_name":"Lovelace","username":"ada"}'),
  ('b0000000-0000-0000-0000-000000000002', 'bob@example.com', '{"username":"ADA"}');  -- wants a taken username
SELECT u.email, u.username, u.display_name, o.slug AS personal_org, s.plan, m.role
FROM users u
JOIN organizations o ON o.owner_id = u.id AND o.is_personal
JOIN org_subscriptions s ON s.organization_id = o.id
JOIN organization_members m ON m.organization_id = o.id AND m.user_id = u.id
ORDER BY u.email;

\echo '\n== 3. Ada, through PostgREST (SET LOCAL ROLE authenticated + JWT claims), creates a team org'
BEGIN;
SET LOCAL ROLE authenticated;
SELECT set_config('request.jwt.claims', '{"sub":"a0000000-0000-0000-0000-000000000001","role":"authenticated"}', true);
SELECT create_organization('Analytical Engines', 'business') IS NOT NULL AS created;
SELECT name, slug, org_type FROM organizations ORDER BY is_personal DESC, name;
SELECT check_username_available('ada') AS "ada available?", check_username_available('grace') AS "grace available?";
COMMIT;

\echo '\n== 4. The billing webhook (service role) upgrades the team to pro'
UPDATE org_subscriptions SET plan = 'pro', billing_type = 'quantity_based', seats = 5,
       provider = 'stripe', provider_subscription_id = 'sub_demo'
WHERE organization_id = (SELECT id FROM organizations WHERE slug = 'analytical-engines');
INSERT INTO organization_members (organization_id, user_id, role)
SELECT id, 'b0000000-0000-0000-0000-000000000002', 'member' FROM organizations WHERE slug = 'analytical-engines';

\echo '\n== 5. Ada records usage and checks her limits'
BEGIN;
SET LOCAL ROLE authenticated;
SELECT set_config('request.jwt.claims', '{"sub":"a0000000-0000-0000-0000-000000000001","role":"authenticated"}', true);
INSERT INTO usage_events (organization_id, event_type, quantity)
SELECT id, 'api_call', 250 FROM organizations WHERE slug = 'analytical-engines';
INSERT INTO usage_events (organization_id, event_type)
SELECT id, 'user_active' FROM organizations WHERE slug = 'analytical-engines';
SELECT f.key AS feature,
       check_feature_access('a0000000-0000-0000-0000-000000000001', f.key,
                            (SELECT id FROM organizations WHERE slug = 'analytical-engines')) AS answer
FROM unnest(ARRAY['max_api_calls_per_month', 'max_seats', 'max_mau', 'api_access', 'sso']) AS f(key);
\echo '-- and what she cannot do: ask about Bob'
SAVEPOINT s;
\set ON_ERROR_STOP off
SELECT check_feature_access('b0000000-0000-0000-0000-000000000002', 'max_records',
                            (SELECT id FROM organizations WHERE slug = 'ada'));
\set ON_ERROR_STOP on
ROLLBACK TO SAVEPOINT s;
COMMIT;

\echo '\n== 6. The nightly job (service role) recomputes the rollups; running it twice changes nothing'
SELECT aggregate_usage('monthly', date_trunc('month', now()), now() + interval '1 second') AS rows_written;
SELECT aggregate_usage('monthly', date_trunc('month', now()), now() + interval '1 second') AS rows_written_again;
SELECT o.slug, a.event_type, a.period, a.period_start::date, a.total_quantity, a.event_count, a.unique_users
FROM usage_aggregations a JOIN organizations o ON o.id = a.organization_id
WHERE a.period = 'monthly' ORDER BY o.slug, a.event_type;

\echo '\n== 7. Ada hands the team to Bob, then deletes her account: the team stays, her personal org goes'
BEGIN;
SET LOCAL ROLE authenticated;
SELECT set_config('request.jwt.claims', '{"sub":"a0000000-0000-0000-0000-000000000001","role":"authenticated"}', true);
UPDATE organization_members SET role = 'owner'
WHERE user_id = 'b0000000-0000-0000-0000-000000000002'
  AND organization_id = (SELECT id FROM organizations WHERE slug = 'analytical-engines');
SELECT transfer_ownership((SELECT id FROM organizations WHERE slug = 'analytical-engines'),
                          'b0000000-0000-0000-0000-000000000002');
COMMIT;
DELETE FROM auth.users WHERE email = 'ada@example.com';
SELECT o.slug, u.username AS owner, o.member_count
FROM organizations o JOIN users u ON u.id = o.owner_id ORDER BY o.slug;

\echo '\n== 8. DROP EXTENSION keeps the sign-in accounts (CASCADE removes saas_core''s triggers on auth.users)'
DROP EXTENSION saas_core CASCADE;
SELECT email FROM auth.users ORDER BY email;
