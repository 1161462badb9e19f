-- 02_seed_verification: the seed design document's own verification queries, as written,
-- run against a fresh install plus a few signups.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(14);

-- Users table has all the columns of the seed (>= 41).
SELECT cmp_ok(
    (SELECT COUNT(*) FROM information_schema.columns
     WHERE table_schema = 'public' AND table_name = 'users')::int,
    '>=', 41, 'users has >= 41 columns in public');

-- Plan features are seeded: 4 plans x 9 keys.
SELECT is((SELECT COUNT(*) FROM plan_features)::int, 36, 'SELECT COUNT(*) FROM plan_features = 36');

-- One signup, then the feature check of the seed, exactly as written (it relies on there
-- being exactly one user). On a database that already has accounts (the upgrade test runs
-- the suites on an updated one) start from none; the transaction rolls this back.
DELETE FROM auth.users;
SELECT is((SELECT COUNT(*) FROM users)::int, 0, 'no users before the first signup');
INSERT INTO auth.users (id, email, raw_user_meta_data)
VALUES ('00000000-0000-4000-8000-000000000201', 'first@example.com', '{"full_name":"First User"}');
SELECT is((SELECT COUNT(*) FROM users)::int, 1, 'exactly one user after the first signup');
SELECT is(
    check_feature_access((SELECT id FROM users LIMIT 1), 'max_records',
                         (SELECT id FROM organizations WHERE is_personal = true LIMIT 1)) ->> 'limit',
    '100', 'check_feature_access(first user, max_records, personal org) ->> ''limit'' = ''100''');

-- A few more signups; every user ends up with a personal organization.
INSERT INTO auth.users (id, email, raw_user_meta_data) VALUES
    ('00000000-0000-4000-8000-000000000202', 'second@example.com', '{"username":"second_user"}'),
    ('00000000-0000-4000-8000-000000000203', 'third@example.com', '{}'),
    ('00000000-0000-4000-8000-000000000204', NULL, '{"first_name":"No","last_name":"Email"}');
SELECT is((SELECT COUNT(*) FROM users)::int, 4, 'four users after the signups');
SELECT is(
    (SELECT COUNT(*) FROM users u
     WHERE NOT EXISTS (SELECT 1 FROM organizations o WHERE o.owner_id = u.id AND o.is_personal = true))::int,
    0, 'users without a personal organization = 0');
SELECT is(
    (SELECT COUNT(*) FROM organizations o
     JOIN organization_members m ON m.organization_id = o.id AND m.user_id = o.owner_id AND m.role = 'owner'
     JOIN org_subscriptions s ON s.organization_id = o.id AND s.plan = 'free' AND s.status = 'active'
     WHERE o.is_personal)::int,
    4, 'each personal organization has its owner membership and an active free subscription');

-- billing_type: the three models, nothing else.
SELECT is(
    (SELECT array_agg(v[1] ORDER BY v[1])
     FROM pg_constraint c, regexp_matches(pg_get_constraintdef(c.oid), '''([^'']+)''', 'g') AS v
     WHERE c.conrelid = 'org_subscriptions'::regclass AND c.conname = 'org_subscriptions_billing_type_check'),
    ARRAY['quantity_based', 'usage_based', 'volume'],
    'billing_type CHECK allows exactly volume, usage_based, quantity_based');
SELECT lives_ok($$
    UPDATE org_subscriptions SET billing_type = 'quantity_based'
    WHERE organization_id = (SELECT id FROM organizations
                             WHERE owner_id = '00000000-0000-4000-8000-000000000201' AND is_personal)
$$, 'updating billing_type to quantity_based succeeds');
SELECT is(
    (SELECT billing_type FROM org_subscriptions
     WHERE organization_id = (SELECT id FROM organizations
                              WHERE owner_id = '00000000-0000-4000-8000-000000000201' AND is_personal)),
    'quantity_based', 'billing_type is now quantity_based');
SELECT lives_ok($$
    WITH o AS (
        INSERT INTO organizations (name, slug, owner_id, org_type)
        VALUES ('Billing Test', 'billing-test', '00000000-0000-4000-8000-000000000202', 'business')
        RETURNING id)
    INSERT INTO org_subscriptions (organization_id, plan, billing_type) SELECT id, 'pro', 'quantity_based' FROM o
$$, 'inserting a subscription with billing_type quantity_based succeeds');
SELECT throws_ok($$
    UPDATE org_subscriptions SET billing_type = 'invalid_type'
    WHERE organization_id = (SELECT id FROM organizations
                             WHERE owner_id = '00000000-0000-4000-8000-000000000201' AND is_personal)
$$, '23514', 'new row for relation "org_subscriptions" violates check constraint "org_subscriptions_billing_type_check"',
   'updating billing_type to invalid_type fails with 23514');
SELECT throws_ok($$
    WITH o AS (
        INSERT INTO organizations (name, slug, owner_id, org_type)
        VALUES ('Billing Bad', 'billing-bad', '00000000-0000-4000-8000-000000000203', 'business')
        RETURNING id)
    INSERT INTO org_subscriptions (organization_id, billing_type) SELECT id, 'invalid_type' FROM o
$$, '23514', 'new row for relation "org_subscriptions" violates check constraint "org_subscriptions_billing_type_check"',
   'inserting billing_type invalid_type fails with 23514');

SELECT * FROM finish();
ROLLBACK;
