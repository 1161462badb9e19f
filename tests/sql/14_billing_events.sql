-- 14_billing_events: plans as data, and apply_billing_event() on Stripe events built from Stripe's
-- own example objects (tests/fixtures/stripe) and Lemon Squeezy webhooks: each handled type,
-- redelivery, stale events, unknown types, unmapped and failed events tried again, and a
-- shuffled, duplicated replay of a subscription's life ending where the ordered one does.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(61);

\set o '00000000-0000-4000-8000-000000001401'
\set p '00000000-0000-4000-8000-000000001402'
\set event_fixture `cat tests/fixtures/stripe/event.json`
\set sub_fixture `cat tests/fixtures/stripe/subscription.json`
\set customer_fixture `cat tests/fixtures/stripe/customer.json`
\set checkout_fixture `cat tests/fixtures/stripe/checkout_session.json`
\set ls_fixture `cat tests/fixtures/lemon_squeezy/subscription_created.json`

-- psql does not expand variables inside function bodies: the fixtures go into a table.
CREATE TEMP TABLE fixture (name text PRIMARY KEY, body jsonb);
INSERT INTO fixture VALUES ('event', :'event_fixture'), ('subscription', :'sub_fixture'),
    ('customer', :'customer_fixture'), ('checkout', :'checkout_fixture'), ('ls', :'ls_fixture');
GRANT SELECT ON fixture TO service_role;

INSERT INTO auth.users (id, email) VALUES (:'o', 'owner@billing14.example'), (:'p', 'other@billing14.example');
SELECT set_config('request.jwt.claims', format('{"sub":"%s","role":"authenticated"}', :'o'), true);
SELECT create_organization('Billing A', 'business', 'billing-14-a') AS org_a \gset
SELECT create_organization('Billing B', 'business', 'billing-14-b') AS org_b \gset
SELECT set_config('request.jwt.claims', '', true);

-- ================================================================ plans are rows
SELECT lives_ok($$ INSERT INTO plans (key, name, sort_order) VALUES ('starter', 'Starter', 1) $$, 'a plan is an INSERT');
SELECT lives_ok($$ INSERT INTO plan_features (plan, feature_key, limit_value, flags)
                   SELECT 'starter', feature_key, limit_value, flags FROM plan_features WHERE plan = 'pro' $$, 'with its limits');
INSERT INTO plan_prices (provider, provider_price_id, plan, billing_interval, amount, currency) VALUES
    ('stripe', 'price_starter_month', 'starter', 'month', 900, 'usd'),
    ('stripe', 'price_pro_month', 'pro', 'month', 2000, 'usd'),
    ('stripe', 'price_business_year', 'business', 'year', 60000, 'usd'),
    ('lemon_squeezy', '77', 'pro', 'month', 2000, 'usd');
SELECT is((SELECT billing_type FROM plan_prices WHERE provider_price_id = 'price_business_year'), 'quantity_based',
          'a yearly price implies quantity_based billing (seed 003)');
SELECT throws_ok($$ DELETE FROM plans WHERE key = 'free' $$, '42501', NULL, 'the free plan stays');
SELECT throws_ok($$ UPDATE org_subscriptions SET plan = 'platinum' WHERE plan = 'free' $$, '23503', NULL,
                 'a subscription names an existing plan');

-- Stripe events from Stripe's example objects, with the fields a scenario sets.
CREATE FUNCTION pg_temp.stripe_event(id text, type text, created bigint, object jsonb) RETURNS jsonb
LANGUAGE sql AS $$
    SELECT jsonb_set(jsonb_set(jsonb_set(jsonb_set((SELECT body FROM fixture WHERE name = 'event'), '{id}', to_jsonb(id)),
                                         '{type}', to_jsonb(type)), '{created}', to_jsonb(created)),
                     '{data}', jsonb_build_object('object', object))
$$;
CREATE FUNCTION pg_temp.subscription(org uuid, sub text, customer text, status text, price text, quantity int,
                                     period_start bigint, cancel_at_period_end boolean DEFAULT false) RETURNS jsonb
LANGUAGE sql AS $$
    SELECT jsonb_set(jsonb_set(jsonb_set(jsonb_set(jsonb_set(jsonb_set(
           (SELECT body FROM fixture WHERE name = 'subscription') || jsonb_build_object(
               'id', sub, 'customer', customer, 'status', status, 'cancel_at_period_end', cancel_at_period_end,
               'canceled_at', CASE WHEN status = 'canceled' THEN period_start END, 'ended_at', NULL, 'cancel_at', NULL,
               'trial_start', CASE WHEN status = 'trialing' THEN period_start END,
               'trial_end', CASE WHEN status = 'trialing' THEN period_start + 14 * 86400 END,
               'metadata', CASE WHEN org IS NULL THEN '{}'::jsonb ELSE jsonb_build_object('organization_id', org) END),
           '{items,data,0,price,id}', to_jsonb(price)),
           '{items,data,0,quantity}', to_jsonb(quantity)),
           '{items,data,0,current_period_start}', to_jsonb(period_start)),
           '{items,data,0,current_period_end}', to_jsonb(period_start + 30 * 86400)),
           '{items,data,0,subscription}', to_jsonb(sub)),
           '{items,data,0,id}', to_jsonb('si_' || sub))
$$;
CREATE FUNCTION pg_temp.apply(event jsonb) RETURNS jsonb LANGUAGE sql AS $$ SELECT apply_billing_event('stripe', event) $$;
CREATE FUNCTION pg_temp.state(org uuid) RETURNS text LANGUAGE sql AS $$
    SELECT concat_ws('/', plan, status, billing_type, seats, cancel_at_period_end::text, provider_price_id,
                     to_char(current_period_end AT TIME ZONE 'UTC', 'YYYY-MM-DD'))
    FROM org_subscriptions WHERE organization_id = org
$$;

-- ================================================================ who may apply
SET LOCAL ROLE authenticated;
SELECT throws_ok($$ SELECT apply_billing_event('stripe', '{}') $$, '42501', NULL, 'members cannot apply billing events');
SELECT throws_ok($$ SELECT 1 FROM billing_events $$, '42501', NULL, 'nor read the log');
RESET ROLE;
SET LOCAL ROLE service_role;
SELECT throws_ok($$ SELECT apply_billing_event('paypal', '{}') $$, '22023', NULL, 'an unknown provider is 22023');
SELECT throws_ok($$ SELECT apply_billing_event('stripe', '{"hello": "world"}') $$, '22023', NULL,
                 'a body that is not a Stripe Event is 22023');

-- ================================================================ a subscription's first events
SELECT is(pg_temp.apply(pg_temp.stripe_event('evt_a1', 'customer.subscription.created', 1767225600,
              pg_temp.subscription(:'org_a', 'sub_a', 'cus_a', 'trialing', 'price_pro_month', 1, 1767225600))) ->> 'outcome',
          'applied', 'customer.subscription.created is applied');
SELECT is(pg_temp.state(:'org_a'), 'pro/trialing/usage_based/1/false/price_pro_month/2026-01-31',
          'plan, status, billing type, seats and the period (from the items) follow');
SELECT is((check_feature_access((SELECT owner_id FROM organizations WHERE id = :'org_a'), 'max_seats', :'org_a') ->> 'limit')::int,
          5, 'entitlements follow in the same transaction (pro: 5 seats)');
SELECT is((SELECT provider_customer_id FROM billing_customers WHERE organization_id = :'org_a'), 'cus_a',
          'the customer is linked to the organization');
SELECT is(pg_temp.apply(pg_temp.stripe_event('evt_a1', 'customer.subscription.created', 1767225600,
              pg_temp.subscription(:'org_a', 'sub_a', 'cus_a', 'trialing', 'price_pro_month', 1, 1767225600))) ->> 'duplicate',
          'true', 'a redelivery is a duplicate');
SELECT is((SELECT attempts FROM billing_events WHERE event_key = 'evt_a1'), 1, 'and is applied once');

SELECT is(pg_temp.apply(pg_temp.stripe_event('evt_a3', 'customer.subscription.updated', 1767830400,
              pg_temp.subscription(:'org_a', 'sub_a', 'cus_a', 'active', 'price_business_year', 12, 1767830400))) ->> 'outcome',
          'applied', 'an upgrade to a yearly plan is applied');
SELECT is(pg_temp.state(:'org_a'), 'business/active/quantity_based/12/false/price_business_year/2026-02-07',
          'business, quantity_based, 12 seats');
SELECT is(pg_temp.apply(pg_temp.stripe_event('evt_a2', 'customer.subscription.updated', 1767484800,
              pg_temp.subscription(:'org_a', 'sub_a', 'cus_a', 'active', 'price_pro_month', 1, 1767484800))) ->> 'outcome',
          'stale', 'an older event delivered late is stale');
SELECT is(pg_temp.state(:'org_a'), 'business/active/quantity_based/12/false/price_business_year/2026-02-07',
          'and changes nothing');
SELECT is(pg_temp.apply(pg_temp.stripe_event('evt_a2b', 'customer.subscription.updated', 1767484900,
              pg_temp.subscription(:'org_a', 'sub_a', 'cus_a', 'active', 'price_gone', 1, 1767484900))) ->> 'outcome',
          'stale', 'an older event is stale even when its price is no longer known');
SELECT is(pg_temp.apply(pg_temp.stripe_event('evt_a4', 'radar.early_fraud_warning.created', 1767830500, :'event_fixture'::jsonb -> 'data' -> 'object')) ->> 'outcome',
          'unknown_type', 'an unhandled type is logged and ignored');

-- ================================================================ unmapped, then mapped by checkout
SELECT is(pg_temp.apply(pg_temp.stripe_event('evt_b1', 'customer.subscription.created', 1767225600,
              pg_temp.subscription(NULL, 'sub_b', 'cus_b', 'active', 'price_starter_month', 1, 1767225600))) ->> 'outcome',
          'unmapped', 'a subscription of an unknown customer without metadata is not guessed');
SELECT is(pg_temp.apply(pg_temp.stripe_event('evt_b0', 'checkout.session.completed', 1767225500,
              :'checkout_fixture'::jsonb || jsonb_build_object('mode', 'subscription', 'client_reference_id', :'org_b',
                                                               'customer', 'cus_b', 'subscription', 'sub_b'))) ->> 'outcome',
          'applied', 'checkout.session.completed maps the customer through client_reference_id');
SELECT is(pg_temp.apply(pg_temp.stripe_event('evt_b1', 'customer.subscription.created', 1767225600,
              pg_temp.subscription(NULL, 'sub_b', 'cus_b', 'active', 'price_starter_month', 1, 1767225600))) ->> 'outcome',
          'applied', 'the redelivered subscription event is applied this time');
SELECT is((SELECT attempts FROM billing_events WHERE event_key = 'evt_b1'), 2, 'after two attempts');
SELECT is(pg_temp.state(:'org_b'), 'starter/active/usage_based/1/false/price_starter_month/2026-01-31',
          'a plan added with INSERTs alone is subscribed to');

-- ================================================================ failed, then fixed
SELECT is(pg_temp.apply(pg_temp.stripe_event('evt_b2', 'customer.subscription.updated', 1767400000,
              pg_temp.subscription(NULL, 'sub_b', 'cus_b', 'active', 'price_team_month', 3, 1767400000))) ->> 'outcome',
          'failed', 'an unknown price fails the event');
SELECT matches((SELECT error FROM billing_events WHERE event_key = 'evt_b2'), '^22023: unknown stripe price "price_team_month"',
               'with the error logged');
SELECT is(pg_temp.state(:'org_b'), 'starter/active/usage_based/1/false/price_starter_month/2026-01-31',
          'and nothing of it applied');
INSERT INTO plan_prices (provider, provider_price_id, plan, billing_interval) VALUES ('stripe', 'price_team_month', 'pro', 'month');
SELECT is(pg_temp.apply(pg_temp.stripe_event('evt_b2', 'customer.subscription.updated', 1767400000,
              pg_temp.subscription(NULL, 'sub_b', 'cus_b', 'active', 'price_team_month', 3, 1767400000))) ->> 'outcome',
          'applied', 'once the price is known, the redelivery applies');

-- ================================================================ customers
SELECT is(pg_temp.apply(pg_temp.stripe_event('evt_c1', 'customer.updated', 1767900000,
              :'customer_fixture'::jsonb || '{"id": "cus_a", "email": "billing@a.example"}')) ->> 'outcome',
          'applied', 'customer.updated is applied to the linked organization');
SELECT is((SELECT billing_email FROM billing_customers WHERE organization_id = :'org_a'), 'billing@a.example', 'its billing email');
SELECT is(pg_temp.apply(pg_temp.stripe_event('evt_c0', 'customer.updated', 1767800000,
              :'customer_fixture'::jsonb || '{"id": "cus_a", "email": "old@a.example"}')) ->> 'outcome',
          'stale', 'an older customer event is stale');
SELECT is(pg_temp.apply(pg_temp.stripe_event('evt_c2', 'customer.deleted', 1767900100,
              :'customer_fixture'::jsonb || '{"id": "cus_b"}')) ->> 'outcome',
          'applied', 'customer.deleted unlinks the customer');
SELECT is((SELECT count(*)::int FROM billing_customers WHERE organization_id = :'org_b'), 0, 'its row is gone');

-- ================================================================ deletion falls back to free
SELECT is(pg_temp.apply(pg_temp.stripe_event('evt_a9', 'customer.subscription.deleted', 1768000000,
              pg_temp.subscription(:'org_a', 'sub_a', 'cus_a', 'canceled', 'price_business_year', 12, 1767830400))) ->> 'outcome',
          'applied', 'customer.subscription.deleted is applied');
SELECT is(org_effective_plan(:'org_a'), 'free', 'a canceled subscription falls back to the free plan');

-- ================================================================ a shuffled, duplicated replay converges
-- The same life for two fresh organizations: checkout, trial, active, upgrade, payment failed,
-- recovered, cancel at period end; once in order, once shuffled with duplicates.
RESET ROLE;
SELECT set_config('request.jwt.claims', format('{"sub":"%s","role":"authenticated"}', :'p'), true);
SELECT create_organization('Replay 1', 'business', 'billing-14-r1') AS r1 \gset
SELECT create_organization('Replay 2', 'business', 'billing-14-r2') AS r2 \gset
SELECT create_organization('Lemon', 'business', 'billing-14-ls') AS r3 \gset
SELECT set_config('request.jwt.claims', '', true);
SET LOCAL ROLE service_role;
CREATE TEMP TABLE life (n int, type text, created bigint, status text, price text, quantity int, cancel boolean);
INSERT INTO life VALUES
    (1, 'customer.subscription.created', 1767225600, 'trialing', 'price_pro_month', 1, false),
    (2, 'customer.subscription.updated', 1768435200, 'active', 'price_pro_month', 1, false),
    (3, 'customer.subscription.updated', 1768521600, 'active', 'price_business_year', 8, false),
    (4, 'customer.subscription.updated', 1770000000, 'past_due', 'price_business_year', 8, false),
    (5, 'customer.subscription.updated', 1770100000, 'active', 'price_business_year', 8, false),
    (6, 'customer.subscription.updated', 1770200000, 'active', 'price_business_year', 9, true);
CREATE FUNCTION pg_temp.life_event(org uuid, tag text, l life) RETURNS jsonb LANGUAGE sql AS $$
    SELECT pg_temp.stripe_event('evt_' || tag || '_' || l.n, l.type, l.created,
                                pg_temp.subscription(org, 'sub_' || tag, 'cus_' || tag, l.status, l.price, l.quantity,
                                                     l.created, l.cancel))
$$;
SELECT count(pg_temp.apply(pg_temp.life_event(:'r1', 'r1', l))) FROM (SELECT * FROM life ORDER BY n) l;
SELECT count(pg_temp.apply(pg_temp.life_event(:'r2', 'r2', l)))
FROM (SELECT l.* FROM life l, generate_series(1, 2) copy ORDER BY md5(l.n::text || copy::text)) l;
SELECT is(pg_temp.state(:'r2'), pg_temp.state(:'r1'), 'a shuffled replay with duplicates ends where the ordered one does');
SELECT is(pg_temp.state(:'r1'), 'business/active/quantity_based/9/true/price_business_year/2026-03-06',
          'the newest event''s state: business, 9 seats, cancelling at period end');

-- ================================================================ Lemon Squeezy
SELECT is(apply_billing_event('lemon_squeezy',
              jsonb_set(jsonb_set(:'ls_fixture'::jsonb, '{meta,custom_data}', jsonb_build_object('organization_id', :'r3')),
                        '{data,attributes,variant_id}', '77')) ->> 'outcome',
          'applied', 'a Lemon Squeezy subscription_created is applied');
SELECT is(pg_temp.state(:'r3'), 'pro/active/usage_based/5/false/77/2022-11-12', 'with its variant''s plan and quantity');
SELECT is(apply_billing_event('lemon_squeezy',
              jsonb_set(jsonb_set(:'ls_fixture'::jsonb, '{meta,custom_data}', jsonb_build_object('organization_id', :'r3')),
                        '{data,attributes,variant_id}', '77')) ->> 'duplicate',
          'true', 'redelivered, it is recognised without an event id');
SELECT is(apply_billing_event('lemon_squeezy',
              jsonb_set(jsonb_set(jsonb_set(jsonb_set(:'ls_fixture'::jsonb, '{meta,event_name}', '"subscription_cancelled"'),
                        '{data,attributes,variant_id}', '77'), '{data,attributes,status}', '"cancelled"'),
                        '{data,attributes,updated_at}', '"2021-09-01T00:00:00Z"')) ->> 'outcome',
          'applied', 'subscription_cancelled maps through the subscription already known');
SELECT is(pg_temp.state(:'r3'), 'pro/active/usage_based/5/true/77/2022-11-12', 'cancelled: active until the period ends');
SELECT is(apply_billing_event('lemon_squeezy',
              jsonb_set(jsonb_set(jsonb_set(jsonb_set(:'ls_fixture'::jsonb, '{meta,event_name}', '"subscription_expired"'),
                        '{data,attributes,variant_id}', '77'), '{data,attributes,status}', '"expired"'),
                        '{data,attributes,updated_at}', '"2022-11-12T00:00:00Z"')) ->> 'outcome',
          'applied', 'subscription_expired is applied');
SELECT is(pg_temp.state(:'r3') || '/' || org_effective_plan(:'r3'), 'pro/canceled/usage_based/5/false/77/2022-11-12/free',
          'expired: canceled, and the organization falls back to free');

-- ================================================================ quantity-based seats
RESET ROLE;
INSERT INTO auth.users (id, email) VALUES
    ('00000000-0000-4000-8000-000000001411', 's1@billing14.example'),
    ('00000000-0000-4000-8000-000000001412', 's2@billing14.example');
SELECT set_config('request.jwt.claims', format('{"sub":"%s","role":"authenticated"}', :'p'), true);
SELECT create_organization('Seats', 'business', 'billing-14-seats') AS seats_org \gset
SET LOCAL ROLE service_role;
SELECT is(pg_temp.apply(pg_temp.stripe_event('evt_s1', 'customer.subscription.created', 1767225600,
              pg_temp.subscription(:'seats_org', 'sub_s1', 'cus_s1', 'active', 'price_business_year', 2, 1767225600))) ->> 'outcome',
          'applied', 'a yearly subscription paying for 2 seats');
RESET ROLE;
SELECT lives_ok(format($$ INSERT INTO organization_members (organization_id, user_id) VALUES (%L, '00000000-0000-4000-8000-000000001411') $$,
                       :'seats_org'), 'the second member takes the second seat');
SELECT throws_ok(format($$ INSERT INTO organization_members (organization_id, user_id) VALUES (%L, '00000000-0000-4000-8000-000000001412') $$,
                        :'seats_org'), '54000', 'the organization has used all 2 seats its subscription pays for',
                 'a third is refused although the plan allows 50');
SET LOCAL ROLE authenticated;
SELECT set_config('request.jwt.claims', '{"sub":"00000000-0000-4000-8000-000000001411","role":"authenticated"}', true);
SELECT throws_ok(format($$ SELECT request_seats(%L, 3) $$, :'seats_org'), '42501', NULL, 'a member cannot buy seats');
SELECT set_config('request.jwt.claims', format('{"sub":"%s","role":"authenticated"}', :'p'), true);
SELECT throws_ok(format($$ SELECT request_seats(%L, 1) $$, :'seats_org'), '22023', NULL, 'nor can anyone ask for fewer seats than members');
SELECT throws_ok(format($$ SELECT request_seats(%L, 3) $$, :'r3'), '55000', NULL, 'seats are bought on quantity-based subscriptions only');
SELECT lives_ok(format($$ SELECT request_seats(%L, 3) $$, :'seats_org'), 'the owner asks for 3 seats');
SELECT is((SELECT desired_quantity || '/' || reason || '/' || status FROM pending_seat_updates WHERE organization_id = :'seats_org'),
          '3/requested/pending', 'the quantity waits for the seat manager');
RESET ROLE;
SET LOCAL ROLE service_role;
SELECT is(pg_temp.apply(pg_temp.stripe_event('evt_s2', 'customer.subscription.updated', 1767300000,
              pg_temp.subscription(:'seats_org', 'sub_s1', 'cus_s1', 'active', 'price_business_year', 3, 1767225600))) ->> 'outcome',
          'applied', 'the provider echoes 3 seats');
SELECT is((SELECT status FROM pending_seat_updates WHERE organization_id = :'seats_org'), 'done', 'which marks the request done');
RESET ROLE;
SELECT lives_ok(format($$ INSERT INTO organization_members (organization_id, user_id) VALUES (%L, '00000000-0000-4000-8000-000000001412') $$,
                       :'seats_org'), 'the third member now has a seat');
DELETE FROM organization_members WHERE organization_id = :'seats_org' AND user_id = '00000000-0000-4000-8000-000000001411';
SELECT is((SELECT desired_quantity || '/' || reason FROM pending_seat_updates WHERE organization_id = :'seats_org' AND status = 'pending'),
          '2/members_removed', 'a removal asks the provider for fewer seats');

-- ================================================================ the billing page in one call
SET LOCAL ROLE authenticated;
SELECT set_config('request.jwt.claims', format('{"sub":"%s","role":"authenticated"}', :'p'), true);
SELECT is(get_billing_status(:'seats_org') - '{organization_id,current_period_start,current_period_end}'::text[],
          '{"plan": "business", "seats": {"used": 2, "plan_limit": 50, "purchased": 3, "pending_quantity": 2},
            "status": "active", "provider": "stripe", "billing_type": "quantity_based", "billing_email": null,
            "trial_ends_at": null, "subscription_plan": "business", "cancel_at_period_end": false,
            "payment_method": null, "open_invoices": []}'::jsonb,
          'the owner sees plan, status, seats used / purchased / plan limit / pending, and the rest');
SELECT set_config('request.jwt.claims', '{"sub":"00000000-0000-4000-8000-000000001412","role":"authenticated"}', true);
SELECT is(get_billing_status(:'seats_org') - 'organization_id', '{"plan": "business", "status": "active"}'::jsonb,
          'a member sees the plan and status only');
SELECT set_config('request.jwt.claims', format('{"sub":"%s","role":"authenticated"}', :'o'), true);
SELECT throws_ok(format($$ SELECT get_billing_status(%L) $$, :'seats_org'), '42501', NULL, 'an outsider sees nothing');

SELECT * FROM finish();
ROLLBACK;
