-- 05_rls_billing: billing_customers and org_subscriptions are read by members of the org,
-- written only by the service role (payment webhooks).
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(27);

\set a '00000000-0000-4000-8000-000000000501'
\set b '00000000-0000-4000-8000-000000000502'
\set c '00000000-0000-4000-8000-000000000503'

INSERT INTO auth.users (id, email, raw_user_meta_data) VALUES
    (:'a', 'a@billing.example', '{"username":"billing_a"}'),
    (:'b', 'b@billing.example', '{"username":"billing_b"}'),
    (:'c', 'c@billing.example', '{"username":"billing_c"}');
SELECT id AS pa FROM organizations WHERE owner_id = :'a' AND is_personal \gset
SELECT id AS pb FROM organizations WHERE owner_id = :'b' AND is_personal \gset
SELECT id AS pc FROM organizations WHERE owner_id = :'c' AND is_personal \gset

-- A team org of A's on the pro plan, with B as a member.
SET LOCAL ROLE authenticated;
SELECT set_config('request.jwt.claims', format('{"sub":"%s","role":"authenticated"}', :'a'), true);
SELECT create_organization('Billing Team', 'business') AS team \gset
RESET ROLE;
UPDATE org_subscriptions SET plan = 'pro', seats = 5 WHERE organization_id = :'team';
INSERT INTO organization_members (organization_id, user_id, role) VALUES (:'team', :'b', 'member');
INSERT INTO billing_customers (organization_id, provider_customer_id, billing_email) VALUES
    (:'pa', 'cus_a', 'a@billing.example'),
    (:'pb', 'cus_b', 'b@billing.example'),
    (:'team', 'cus_team', 'team@billing.example');

SELECT count(*) AS customers_before FROM billing_customers \gset

-- ================================================================ reads
SET LOCAL ROLE authenticated;
SELECT set_config('request.jwt.claims', format('{"sub":"%s","role":"authenticated"}', :'a'), true);
SELECT set_eq($$ SELECT organization_id FROM billing_customers $$, ARRAY[:'pa', :'team']::uuid[],
              'A reads the billing customers of A''s orgs only');
SELECT set_eq($$ SELECT organization_id FROM org_subscriptions $$, ARRAY[:'pa', :'team']::uuid[],
              'A reads the subscriptions of A''s orgs only');
SELECT is_empty(format($$ SELECT 1 FROM billing_customers WHERE organization_id = %L $$, :'pb'),
                'A cannot read B''s billing customer');
SELECT is_empty(format($$ SELECT 1 FROM org_subscriptions WHERE organization_id = %L $$, :'pb'),
                'A cannot read B''s subscription');

RESET ROLE;
SET LOCAL ROLE authenticated;
SELECT set_config('request.jwt.claims', format('{"sub":"%s","role":"authenticated"}', :'b'), true);
SELECT set_eq($$ SELECT organization_id FROM billing_customers $$, ARRAY[:'pb', :'team']::uuid[],
              'B (member of the team) reads the team''s billing customer and their own');
SELECT is((SELECT plan FROM org_subscriptions WHERE organization_id = :'team'), 'pro',
          'B reads the team''s subscription');

RESET ROLE;
SET LOCAL ROLE authenticated;
SELECT set_config('request.jwt.claims', format('{"sub":"%s","role":"authenticated"}', :'c'), true);
SELECT is_empty($$ SELECT 1 FROM billing_customers $$, 'C (no customer, no team) reads no billing customer');
SELECT results_eq($$ SELECT organization_id FROM org_subscriptions $$, ARRAY[:'pc']::uuid[],
                  'C reads only the subscription of C''s personal org');

RESET ROLE;
SET LOCAL ROLE anon;
SELECT set_config('request.jwt.claims', '{"role":"anon"}', true);
SELECT throws_ok($$ SELECT 1 FROM billing_customers $$, '42501', 'permission denied for table billing_customers',
                 'anon cannot read billing_customers');
SELECT throws_ok($$ SELECT 1 FROM org_subscriptions $$, '42501', 'permission denied for table org_subscriptions',
                 'anon cannot read org_subscriptions');

-- ================================================================ authenticated writes nothing
RESET ROLE;
SET LOCAL ROLE authenticated;
SELECT set_config('request.jwt.claims', format('{"sub":"%s","role":"authenticated"}', :'a'), true);
SELECT throws_ok(format($$ INSERT INTO billing_customers (organization_id, provider_customer_id) VALUES (%L, 'cus_fake') $$, :'pc'),
                 '42501', 'permission denied for table billing_customers', 'authenticated cannot INSERT billing_customers');
SELECT throws_ok(format($$ UPDATE billing_customers SET billing_email = 'x@evil.example' WHERE organization_id = %L $$, :'pa'),
                 '42501', 'permission denied for table billing_customers', 'authenticated cannot UPDATE own billing_customers');
SELECT throws_ok(format($$ DELETE FROM billing_customers WHERE organization_id = %L $$, :'pa'),
                 '42501', 'permission denied for table billing_customers', 'authenticated cannot DELETE own billing_customers');
SELECT throws_ok(format($$ INSERT INTO org_subscriptions (organization_id, plan) VALUES (%L, 'enterprise') $$, :'pc'),
                 '42501', 'permission denied for table org_subscriptions', 'authenticated cannot INSERT org_subscriptions');
SELECT throws_ok(format($$ UPDATE org_subscriptions SET plan = 'enterprise' WHERE organization_id = %L $$, :'pa'),
                 '42501', 'permission denied for table org_subscriptions', 'owner cannot upgrade their own subscription');
SELECT throws_ok(format($$ DELETE FROM org_subscriptions WHERE organization_id = %L $$, :'pa'),
                 '42501', 'permission denied for table org_subscriptions', 'authenticated cannot DELETE org_subscriptions');

RESET ROLE;
SET LOCAL ROLE anon;
SELECT set_config('request.jwt.claims', '{"role":"anon"}', true);
SELECT throws_ok($$ UPDATE org_subscriptions SET plan = 'enterprise' $$, '42501', 'permission denied for table org_subscriptions',
                 'anon cannot UPDATE org_subscriptions');

-- Nothing changed.
RESET ROLE;
SELECT is((SELECT plan FROM org_subscriptions WHERE organization_id = :'pa'), 'free', 'A''s plan is still free');
SELECT is((SELECT count(*) FROM billing_customers)::int, :customers_before, 'no billing customer was added');
SELECT is((SELECT billing_email FROM billing_customers WHERE organization_id = :'pa'), 'a@billing.example',
          'A''s billing email is unchanged');

-- ================================================================ service role
SET LOCAL ROLE service_role;
SELECT set_config('request.jwt.claims', '{"role":"service_role"}', true);
SELECT is((SELECT count(*) FROM org_subscriptions WHERE organization_id IN (:'pa', :'pb', :'pc', :'team'))::int, 4,
          'service_role reads every subscription');
SELECT lives_ok(format($$ INSERT INTO billing_customers (organization_id, provider, provider_customer_id, billing_email)
                          VALUES (%L, 'lemon_squeezy', 'ls_c', 'c@billing.example') $$, :'pc'),
                'service_role inserts a billing customer');
WITH u AS (UPDATE org_subscriptions
           SET plan = 'business', status = 'trialing', provider = 'stripe', provider_subscription_id = 'sub_c'
           WHERE organization_id = :'pc' RETURNING 1)
SELECT is(count(*)::int, 1, 'service_role updates a subscription (1 row)') FROM u;

RESET ROLE;
SELECT is((SELECT provider || '/' || provider_customer_id FROM billing_customers WHERE organization_id = :'pc'),
          'lemon_squeezy/ls_c', 'the new billing customer is stored');
SELECT is((SELECT plan || '/' || status FROM org_subscriptions WHERE organization_id = :'pc'),
          'business/trialing', 'the subscription update is stored');

-- C now reads the customer the service role created for C's org.
SET LOCAL ROLE authenticated;
SELECT set_config('request.jwt.claims', format('{"sub":"%s","role":"authenticated"}', :'c'), true);
SELECT results_eq($$ SELECT provider_customer_id FROM billing_customers $$, ARRAY['ls_c'],
                  'C reads their new billing customer');
SELECT is(check_feature_access(:'c', 'sso', :'pc') ->> 'enabled', 'true',
          'the trialing business plan enables sso for C');

SELECT * FROM finish();
ROLLBACK;
