-- 15_billing_ledger: invoices with their line items, payment methods (one default), payments and
-- refunds, as Stripe's and Lemon Squeezy's events fill them (fixtures: tests/fixtures); who reads
-- them (billing.read) and who cannot; the billing page's payment method and open invoices;
-- coupons (validity, plans, once per organization, the cap); usage records from the rollups.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(121);
\ir include/callers.psql

\set o '00000000-0000-4000-8000-000000001501'
\set m '00000000-0000-4000-8000-000000001502'
\set p '00000000-0000-4000-8000-000000001503'
\set event_fixture `cat tests/fixtures/stripe/event.json`
\set invoice_fixture `cat tests/fixtures/stripe/invoice.json`
\set pm_fixture `cat tests/fixtures/stripe/payment_method.json`
\set charge_fixture `cat tests/fixtures/stripe/charge.json`
\set pi_fixture `cat tests/fixtures/stripe/payment_intent.json`
\set customer_fixture `cat tests/fixtures/stripe/customer.json`
\set ls_sub_fixture `cat tests/fixtures/lemon_squeezy/subscription_created.json`
\set ls_invoice_fixture `cat tests/fixtures/lemon_squeezy/subscription_payment_success.json`
\set ls_order_fixture `cat tests/fixtures/lemon_squeezy/order_created.json`

-- psql does not expand variables inside function bodies: the fixtures go into a table.
CREATE TEMP TABLE fixture (name text PRIMARY KEY, body jsonb);
INSERT INTO fixture VALUES ('event', :'event_fixture'), ('invoice', :'invoice_fixture'), ('pm', :'pm_fixture'),
    ('charge', :'charge_fixture'), ('pi', :'pi_fixture'), ('customer', :'customer_fixture'),
    ('ls_sub', :'ls_sub_fixture'), ('ls_invoice', :'ls_invoice_fixture'), ('ls_order', :'ls_order_fixture');
GRANT SELECT ON fixture TO service_role;

INSERT INTO auth.users (id, email) VALUES (:'o', 'owner@ledger15.example'), (:'m', 'member@ledger15.example'),
                                          (:'p', 'outsider@ledger15.example');
SELECT pg_temp.act_as(:'o');
SELECT create_organization('Ledger A', 'business', 'ledger-15-a') AS org_a \gset
SELECT create_organization('Ledger C', 'business', 'ledger-15-c') AS org_c \gset
SELECT create_organization('Ledger LS', 'business', 'ledger-15-ls') AS org_ls \gset
SELECT create_organization('Ledger U', 'business', 'ledger-15-u') AS org_u \gset
SELECT create_organization('Replay 1', 'business', 'ledger-15-r1') AS r1 \gset
SELECT create_organization('Replay 2', 'business', 'ledger-15-r2') AS r2 \gset
SELECT pg_temp.act_as(:'p');
SELECT create_organization('Ledger B', 'business', 'ledger-15-b') AS org_b \gset
RESET ROLE;
INSERT INTO plan_prices (provider, provider_price_id, plan, billing_interval, amount, currency) VALUES
    ('stripe', 'price_ledger_pro', 'pro', 'month', 2000, 'usd'),
    ('stripe', 'price_ledger_business', 'business', 'year', 60000, 'usd'),
    ('lemon_squeezy', '1', 'pro', 'month', 999, 'usd');

CREATE FUNCTION pg_temp.stripe_event(id text, type text, created bigint, object jsonb) RETURNS jsonb
LANGUAGE sql AS $$
    SELECT (SELECT body FROM fixture WHERE name = 'event')
           || jsonb_build_object('id', id, 'type', type, 'created', created, 'data', jsonb_build_object('object', object))
$$;
CREATE FUNCTION pg_temp.apply(event jsonb) RETURNS text LANGUAGE sql AS $$
    SELECT apply_billing_event('stripe', event) ->> 'outcome'
$$;
-- Stripe's example invoice (newer API shape: subscription under parent, proration under each
-- line's parent, price under pricing), for a customer, with a status, amounts and one line.
CREATE FUNCTION pg_temp.invoice(id text, customer text, status text, due bigint, paid bigint, created bigint,
                                proration boolean DEFAULT true) RETURNS jsonb LANGUAGE sql AS $$
    SELECT jsonb_set(jsonb_set(jsonb_set(jsonb_set(jsonb_set(jsonb_set(
           (SELECT body FROM fixture WHERE name = 'invoice') || jsonb_build_object(
               'id', id, 'customer', customer, 'status', status, 'number', upper(id), 'created', created,
               'amount_due', due, 'amount_paid', paid, 'amount_remaining', due - paid, 'total', due,
               'subtotal', due, 'total_excluding_tax', due, 'status_transitions',
               jsonb_build_object('paid_at', CASE WHEN status = 'paid' THEN created END),
               'parent', jsonb_build_object('type', 'subscription_details',
                                            'subscription_details', jsonb_build_object('subscription', 'sub_ledger'))),
           '{lines,data,0,id}', to_jsonb('il_' || id)),
           '{lines,data,0,amount}', to_jsonb(due)),
           '{lines,data,0,invoice}', to_jsonb(id)),
           '{lines,data,0,pricing}', jsonb_build_object('type', 'price_details',
                                                        'price_details', jsonb_build_object('price', 'price_ledger_pro'))),
           '{lines,data,0,parent,invoice_item_details,proration}', to_jsonb(proration)),
           '{lines,data,0,parent,subscription_item_details,proration}', to_jsonb(proration))
$$;
CREATE FUNCTION pg_temp.card(id text, customer text, last4 text, exp_year int DEFAULT 2030) RETURNS jsonb LANGUAGE sql AS $$
    SELECT jsonb_set(jsonb_set((SELECT body FROM fixture WHERE name = 'pm') || jsonb_build_object('id', id, 'customer', customer),
                               '{card,last4}', to_jsonb(last4)), '{card,exp_year}', to_jsonb(exp_year))
$$;
CREATE FUNCTION pg_temp.defaults(org uuid) RETURNS text LANGUAGE sql AS $$
    SELECT string_agg(provider_payment_method_id, ',' ORDER BY provider_payment_method_id)
    FROM payment_methods WHERE organization_id = org AND is_default
$$;
CREATE FUNCTION pg_temp.payment(txn text) RETURNS text LANGUAGE sql AS $$
    SELECT concat_ws('/', status, amount, amount_refunded, currency, payment_method_brand, payment_method_last4, failure_code)
    FROM payment_transactions WHERE provider_transaction_id = txn
$$;
CREATE FUNCTION pg_temp.ls(fixture_name text, event_name text, org uuid, id text, updated_at text, attributes jsonb)
RETURNS jsonb LANGUAGE sql AS $$
    SELECT jsonb_set(jsonb_set(jsonb_set(jsonb_set((SELECT body FROM fixture WHERE name = fixture_name),
           '{meta,event_name}', to_jsonb(event_name)),
           '{meta,custom_data}', CASE WHEN org IS NULL THEN '{}' ELSE jsonb_build_object('organization_id', org) END),
           '{data,id}', to_jsonb(id)),
           '{data,attributes}', (SELECT body FROM fixture WHERE name = fixture_name) -> 'data' -> 'attributes'
                                || jsonb_build_object('updated_at', updated_at) || attributes)
$$;

-- ================================================================ Stripe invoices
SELECT pg_temp.as_service();
SELECT is(pg_temp.apply(pg_temp.stripe_event('evt_l1', 'customer.subscription.created', 1767225600,
              jsonb_build_object('id', 'sub_ledger', 'object', 'subscription', 'customer', 'cus_ledger', 'status', 'active',
                                 'metadata', jsonb_build_object('organization_id', :'org_a'),
                                 'items', jsonb_build_object('data', jsonb_build_array(jsonb_build_object(
                                     'price', jsonb_build_object('id', 'price_ledger_pro'), 'quantity', 1,
                                     'current_period_start', 1767225600, 'current_period_end', 1769904000)))))),
          'applied', 'the subscription links cus_ledger to organization A');
RESET ROLE;
INSERT INTO organization_members (organization_id, user_id, role) VALUES (:'org_a', :'m', 'member');
SELECT pg_temp.as_service();
SELECT is(pg_temp.apply(pg_temp.stripe_event('evt_i1', 'invoice.created', 1767225700,
              pg_temp.invoice('in_l1', 'cus_ledger', 'draft', 2000, 0, 1767225700))),
          'applied', 'invoice.created (Stripe''s example invoice) is applied');
SELECT is((SELECT concat_ws('/', organization_id = :'org_a', status, total, amount_due, currency, provider_subscription_id, number)
           FROM invoices WHERE provider_invoice_id = 'in_l1'),
          't/draft/2000/2000/usd/sub_ledger/IN_L1', 'the invoice: organization, status, amounts, subscription (newer API shape)');
SELECT is((SELECT concat_ws('/', count(*), bool_and(proration), min(plan), min(amount), min(provider_price_id))
           FROM invoice_line_items WHERE invoice_id = (SELECT id FROM invoices WHERE provider_invoice_id = 'in_l1')),
          '1/t/pro/2000/price_ledger_pro', 'its line: a proration, its price and the plan it buys');
SELECT is(pg_temp.apply(pg_temp.stripe_event('evt_i2', 'invoice.finalized', 1767225800,
              pg_temp.invoice('in_l1', 'cus_ledger', 'open', 2000, 0, 1767225700))),
          'applied', 'invoice.finalized is applied');
SELECT is(apply_billing_event('stripe', pg_temp.stripe_event('evt_i2', 'invoice.finalized', 1767225800,
              pg_temp.invoice('in_l1', 'cus_ledger', 'open', 2000, 0, 1767225700))) ->> 'duplicate',
          'true', 'a redelivered invoice event is a duplicate');
SELECT is((SELECT count(*)::int FROM invoice_line_items WHERE provider_line_item_id = 'il_in_l1'), 1,
          'and its lines are not doubled');

SELECT pg_temp.act_as(:'o');
SELECT is(get_billing_status(:'org_a') -> 'open_invoices' -> 0 ->> 'number', 'IN_L1',
          'the billing page lists the open invoice for the owner');
SELECT is((get_billing_status(:'org_a') -> 'open_invoices' -> 0 ->> 'amount_remaining')::int, 2000, 'with what remains due');
SELECT pg_temp.act_as(:'m');
SELECT ok(NOT get_billing_status(:'org_a') ? 'open_invoices', 'a member''s billing page has no invoices');

SELECT pg_temp.as_service();
SELECT is(pg_temp.apply(pg_temp.stripe_event('evt_i3', 'invoice.paid', 1767225900,
              pg_temp.invoice('in_l1', 'cus_ledger', 'paid', 2000, 2000, 1767225700))),
          'applied', 'invoice.paid is applied');
SELECT is((SELECT concat_ws('/', status, amount_paid, amount_remaining, paid_at IS NOT NULL) FROM invoices WHERE provider_invoice_id = 'in_l1'),
          'paid/2000/0/t', 'the invoice is paid');
SELECT is(pg_temp.apply(pg_temp.stripe_event('evt_i2b', 'invoice.updated', 1767225850,
              pg_temp.invoice('in_l1', 'cus_ledger', 'open', 2000, 0, 1767225700))),
          'stale', 'an older invoice event delivered late is stale');
SELECT is(pg_temp.apply(pg_temp.stripe_event('evt_i2c', 'invoice.updated', 1767225900,
              pg_temp.invoice('in_l1', 'cus_ledger', 'open', 2000, 0, 1767225700))),
          'stale', 'one of the same second does not take a paid invoice back to open');
SELECT is((SELECT status FROM invoices WHERE provider_invoice_id = 'in_l1'), 'paid', 'it stays paid');

-- The older API shape: subscription and proration on the invoice and line, price as an object.
SELECT is(pg_temp.apply(pg_temp.stripe_event('evt_i4', 'invoice.payment_failed', 1767226000,
              (pg_temp.invoice('in_l2', 'cus_ledger', 'open', 1500, 0, 1767226000) - 'parent')
              || jsonb_build_object('subscription', 'sub_ledger', 'tax', 100,
                                    'lines', jsonb_build_object('data', jsonb_build_array(jsonb_build_object(
                                        'id', 'il_old', 'amount', -500, 'currency', 'usd', 'quantity', 1, 'proration', true,
                                        'price', jsonb_build_object('id', 'price_ledger_pro'),
                                        'period', jsonb_build_object('start', 1767226000, 'end', 1769904000))))))),
          'applied', 'invoice.payment_failed in the older API shape is applied');
SELECT is((SELECT concat_ws('/', i.status, i.tax, i.provider_subscription_id, l.proration, l.amount, l.plan)
           FROM invoices i JOIN invoice_line_items l ON l.invoice_id = i.id WHERE i.provider_invoice_id = 'in_l2'),
          'open/100/sub_ledger/t/-500/pro', 'subscription, tax and a credit proration line read from the older shape');
SELECT is(pg_temp.apply(pg_temp.stripe_event('evt_i5', 'invoice.marked_uncollectible', 1767226100,
              pg_temp.invoice('in_l2', 'cus_ledger', 'uncollectible', 1500, 0, 1767226000))),
          'applied', 'invoice.marked_uncollectible is applied');
SELECT is(pg_temp.apply(pg_temp.stripe_event('evt_i6', 'invoice.voided', 1767226200,
              pg_temp.invoice('in_l2', 'cus_ledger', 'void', 1500, 0, 1767226000))),
          'applied', 'invoice.voided is applied');
SELECT is((SELECT status FROM invoices WHERE provider_invoice_id = 'in_l2'), 'void', 'the invoice is void');
SELECT is(pg_temp.apply(pg_temp.stripe_event('evt_i7', 'invoice.created', 1767226300,
              pg_temp.invoice('in_l3', 'cus_nobody', 'draft', 100, 0, 1767226300) - 'parent')),
          'unmapped', 'an invoice of an unknown customer is not guessed');
SELECT is((SELECT count(*)::int FROM invoices WHERE provider_invoice_id = 'in_l3'), 0, 'and leaves no row');
SELECT is(pg_temp.apply(pg_temp.stripe_event('evt_i8', 'invoice.created', 1767226400,
              pg_temp.invoice('in_l4', 'cus_ledger', 'bogus', 100, 0, 1767226400))),
          'failed', 'an invoice status Stripe does not have fails the event');
SELECT is((SELECT count(*)::int FROM invoices WHERE provider_invoice_id = 'in_l4'), 0, 'with nothing half-applied');

-- ================================================================ payment methods: exactly one default
SELECT is(pg_temp.apply(pg_temp.stripe_event('evt_p1', 'payment_method.attached', 1767300000, pg_temp.card('pm_1', 'cus_ledger', '4242'))),
          'applied', 'payment_method.attached (Stripe''s example card) is applied');
SELECT is((SELECT concat_ws('/', type, brand, last4, exp_month, exp_year) FROM payment_methods WHERE provider_payment_method_id = 'pm_1'),
          'card/visa/4242/8/2030', 'type, brand, last4 and expiry; no card number');
SELECT is(pg_temp.defaults(:'org_a'), 'pm_1', 'the first method of an organization is its default');
SELECT is(pg_temp.apply(pg_temp.stripe_event('evt_p2', 'payment_method.attached', 1767300100, pg_temp.card('pm_2', 'cus_ledger', '1881'))),
          'applied', 'a second method is attached');
SELECT is(pg_temp.defaults(:'org_a'), 'pm_1', 'the default stays');
SELECT is(pg_temp.apply(pg_temp.stripe_event('evt_p3', 'customer.updated', 1767300200,
              (SELECT body FROM fixture WHERE name = 'customer')
              || jsonb_build_object('id', 'cus_ledger', 'invoice_settings', jsonb_build_object('default_payment_method', 'pm_2')))),
          'applied', 'customer.updated names pm_2 the default');
SELECT is(pg_temp.defaults(:'org_a'), 'pm_2', 'pm_2 is the one default');
SELECT is(pg_temp.apply(pg_temp.stripe_event('evt_p4', 'customer.updated', 1767300300,
              (SELECT body FROM fixture WHERE name = 'customer')
              || jsonb_build_object('id', 'cus_ledger', 'invoice_settings', jsonb_build_object('default_payment_method', 'pm_3')))),
          'applied', 'customer.updated names pm_3, not attached yet');
SELECT is(pg_temp.defaults(:'org_a'), 'pm_2', 'the default waits for it');
SELECT is(pg_temp.apply(pg_temp.stripe_event('evt_p5', 'payment_method.attached', 1767300250, pg_temp.card('pm_3', 'cus_ledger', '0005'))),
          'applied', 'pm_3 arrives');
SELECT is(pg_temp.defaults(:'org_a'), 'pm_3', 'and becomes the default the customer named');
SELECT is(pg_temp.apply(pg_temp.stripe_event('evt_p6', 'payment_method.updated', 1767300400, pg_temp.card('pm_3', 'cus_ledger', '0005', 2031))),
          'applied', 'payment_method.updated is applied');
SELECT is((SELECT exp_year FROM payment_methods WHERE provider_payment_method_id = 'pm_3'), 2031, 'with the new expiry');
SELECT is(pg_temp.apply(pg_temp.stripe_event('evt_p7', 'payment_method.detached', 1767300500, pg_temp.card('pm_3', NULL, '0005'))),
          'applied', 'payment_method.detached is applied');
SELECT is((SELECT string_agg(provider_payment_method_id, ',' ORDER BY provider_payment_method_id) FROM payment_methods
           WHERE organization_id = :'org_a'), 'pm_1,pm_2', 'the method is gone');
SELECT is(pg_temp.defaults(:'org_a'), 'pm_2', 'and the one the provider reported last becomes the default');
SELECT throws_ok(format($$ INSERT INTO payment_methods (organization_id, provider, provider_payment_method_id, is_default)
                           VALUES (%L, 'stripe', 'pm_x', true) $$, :'org_a'),
                 '23P01', NULL, 'a second default is refused, even to the service role');
SELECT throws_ok(format($$ INSERT INTO payment_methods (organization_id, provider, provider_payment_method_id, last4)
                           VALUES (%L, 'stripe', 'pm_y', '4242424242424242') $$, :'org_a'),
                 '23514', NULL, 'a card number is not a last4');
SELECT pg_temp.act_as(:'o');
SELECT is(get_billing_status(:'org_a') -> 'payment_method', '{"type": "card", "brand": "visa", "last4": "1881", "exp_year": 2030, "exp_month": 8}'::jsonb,
          'the billing page shows the default payment method');

-- ================================================================ payments: Stripe charges and payment intents
SELECT pg_temp.as_service();
SELECT is(pg_temp.apply(pg_temp.stripe_event('evt_c1', 'payment_intent.succeeded', 1767400000,
              (SELECT body FROM fixture WHERE name = 'pi') || '{"id": "pi_l1", "customer": "cus_ledger", "amount": 2000, "status": "succeeded"}')),
          'applied', 'payment_intent.succeeded (Stripe''s example) is applied');
SELECT is(pg_temp.payment('pi_l1'), 'succeeded/2000/0/usd', 'a payment of 2000');
SELECT is(pg_temp.apply(pg_temp.stripe_event('evt_c2', 'charge.succeeded', 1767400001,
              (SELECT body FROM fixture WHERE name = 'charge')
              || '{"id": "ch_l1", "payment_intent": "pi_l1", "customer": "cus_ledger", "amount": 2000, "status": "succeeded"}')),
          'applied', 'its charge.succeeded is applied');
SELECT is(pg_temp.payment('pi_l1'), 'succeeded/2000/0/usd/visa/4242', 'to the same payment, with the card');
SELECT is((SELECT count(*)::int FROM payment_transactions WHERE provider_transaction_id IN ('pi_l1', 'ch_l1')), 1,
          'one payment, not two');
SELECT is(pg_temp.apply(pg_temp.stripe_event('evt_c3', 'charge.refunded', 1767500000,
              (SELECT body FROM fixture WHERE name = 'charge')
              || '{"id": "ch_l1", "payment_intent": "pi_l1", "customer": "cus_ledger", "amount": 2000, "amount_refunded": 500, "status": "succeeded"}')),
          'applied', 'charge.refunded (in part) is applied');
SELECT is(pg_temp.payment('pi_l1'), 'partially_refunded/2000/500/usd/visa/4242', 'partially refunded');
SELECT is(pg_temp.apply(pg_temp.stripe_event('evt_c4', 'charge.refunded', 1767500100,
              (SELECT body FROM fixture WHERE name = 'charge')
              || '{"id": "ch_l1", "payment_intent": "pi_l1", "customer": "cus_ledger", "amount": 2000, "amount_refunded": 2000, "status": "succeeded", "refunded": true}')),
          'applied', 'the rest is refunded');
SELECT is(pg_temp.payment('pi_l1'), 'refunded/2000/2000/usd/visa/4242', 'refunded');
SELECT is(pg_temp.apply(pg_temp.stripe_event('evt_c1b', 'payment_intent.succeeded', 1767400050,
              (SELECT body FROM fixture WHERE name = 'pi') || '{"id": "pi_l1", "customer": "cus_ledger", "amount": 2000, "status": "succeeded"}')),
          'stale', 'an older payment event delivered late is stale');
SELECT is(pg_temp.payment('pi_l1'), 'refunded/2000/2000/usd/visa/4242', 'the refund stands');
SELECT is(pg_temp.apply(pg_temp.stripe_event('evt_c5', 'payment_intent.payment_failed', 1767600000,
              (SELECT body FROM fixture WHERE name = 'pi')
              || '{"id": "pi_l2", "customer": "cus_ledger", "amount": 2000, "status": "requires_payment_method",
                   "last_payment_error": {"code": "card_declined", "message": "Your card was declined."}}')),
          'applied', 'payment_intent.payment_failed is applied');
SELECT is(pg_temp.payment('pi_l2'), 'failed/2000/0/usd/card_declined', 'a failed payment with its reason');
SELECT is(pg_temp.apply(pg_temp.stripe_event('evt_c6', 'charge.succeeded', 1767600100,
              (SELECT body FROM fixture WHERE name = 'charge') || '{"id": "ch_l3", "customer": "cus_ledger", "amount": 700}')),
          'applied', 'a charge without a payment intent');
SELECT is(pg_temp.payment('ch_l3'), 'succeeded/700/0/usd/visa/4242', 'is a payment of its own');

-- ================================================================ Lemon Squeezy payments, orders and the card
SELECT is(apply_billing_event('lemon_squeezy', jsonb_set(jsonb_set(jsonb_set(:'ls_sub_fixture'::jsonb,
              '{meta,custom_data}', jsonb_build_object('organization_id', :'org_ls')), '{data,id}', '"901"'),
              '{data,attributes,card_last_four}', '"4444"')) ->> 'outcome',
          'applied', 'a Lemon Squeezy subscription with a card');
SELECT is((SELECT concat_ws('/', provider, provider_payment_method_id, brand, last4, is_default) FROM payment_methods
           WHERE organization_id = :'org_ls'), 'lemon_squeezy/subscription:901/visa/4444/t',
          'its card is the organization''s default payment method');
SELECT is(apply_billing_event('lemon_squeezy', pg_temp.ls('ls_invoice', 'subscription_payment_success', :'org_ls', '71',
              '2023-01-18T12:16:24Z', '{"subscription_id": 901}')) ->> 'outcome',
          'applied', 'subscription_payment_success (the documented subscription invoice) is applied');
SELECT is((SELECT concat_ws('/', status, total, amount_paid, currency, billing_reason, provider_subscription_id, paid_at IS NOT NULL)
           FROM invoices WHERE provider = 'lemon_squeezy' AND provider_invoice_id = '71'),
          'paid/999/999/usd/initial/901/t', 'a paid invoice');
SELECT is(pg_temp.payment('subscription_invoice:71'), 'succeeded/999/0/usd/visa/4242', 'and its payment');
SELECT is(apply_billing_event('lemon_squeezy', pg_temp.ls('ls_invoice', 'subscription_payment_failed', NULL, '72',
              '2023-02-18T12:16:24Z', '{"subscription_id": 901, "status": "pending", "billing_reason": "renewal"}')) ->> 'outcome',
          'applied', 'subscription_payment_failed maps through the subscription already known');
SELECT is((SELECT status FROM invoices WHERE provider = 'lemon_squeezy' AND provider_invoice_id = '72') || '/'
          || pg_temp.payment('subscription_invoice:72'), 'open/failed/999/0/usd/visa/4242', 'an open invoice, a failed payment');
SELECT is(apply_billing_event('lemon_squeezy', pg_temp.ls('ls_invoice', 'subscription_payment_recovered', NULL, '72',
              '2023-02-20T12:16:24Z', '{"subscription_id": 901, "status": "paid", "billing_reason": "renewal"}')) ->> 'outcome',
          'applied', 'subscription_payment_recovered is applied');
SELECT is((SELECT status FROM invoices WHERE provider = 'lemon_squeezy' AND provider_invoice_id = '72') || '/'
          || pg_temp.payment('subscription_invoice:72'), 'paid/succeeded/999/0/usd/visa/4242', 'paid after all');
SELECT is(apply_billing_event('lemon_squeezy', pg_temp.ls('ls_invoice', 'subscription_payment_refunded', NULL, '72',
              '2023-03-01T00:00:00Z', '{"subscription_id": 901, "status": "refunded", "refunded": true}')) ->> 'outcome',
          'applied', 'subscription_payment_refunded is applied');
SELECT is(pg_temp.payment('subscription_invoice:72'), 'refunded/999/999/usd/visa/4242', 'refunded in full');
SELECT is(apply_billing_event('lemon_squeezy', pg_temp.ls('ls_invoice', 'subscription_payment_failed', NULL, '72',
              '2023-02-19T12:16:24Z', '{"subscription_id": 901, "status": "pending"}')) ->> 'outcome',
          'stale', 'a payment event older than the refund is stale (no event id: the update time orders them)');
SELECT is(apply_billing_event('lemon_squeezy', pg_temp.ls('ls_order', 'order_created', :'org_ls', '55',
              '2023-01-18T12:00:00Z', '{}')) ->> 'outcome',
          'applied', 'order_created (the documented order) is applied');
SELECT is(pg_temp.payment('order:55'), 'succeeded/1199/0/usd', 'a payment of the order''s total');
SELECT is(apply_billing_event('lemon_squeezy', pg_temp.ls('ls_order', 'order_refunded', :'org_ls', '55',
              '2023-01-19T12:00:00Z', '{"status": "partial_refund", "refunded": true, "refunded_amount": 500}')) ->> 'outcome',
          'applied', 'order_refunded is applied');
SELECT is(pg_temp.payment('order:55'), 'partially_refunded/1199/500/usd', 'refunded in part');

-- ================================================================ who reads the ledger
SELECT pg_temp.act_as(:'o');
SELECT is((SELECT count(*)::int FROM invoices WHERE organization_id = :'org_a'), 2, 'the owner reads the organization''s invoices');
SELECT is((SELECT count(*)::int FROM invoice_line_items WHERE organization_id = :'org_a'), 2, 'their lines');
SELECT is((SELECT count(*)::int FROM payment_methods WHERE organization_id = :'org_a'), 2, 'payment methods');
SELECT is((SELECT count(*)::int FROM payment_transactions WHERE organization_id = :'org_a'), 3, 'and payments');
SELECT throws_ok(format($$ UPDATE invoices SET status = 'paid' WHERE organization_id = %L $$, :'org_a'),
                 '42501', NULL, 'but cannot write them');
SELECT throws_ok(format($$ DELETE FROM payment_methods WHERE organization_id = %L $$, :'org_a'),
                 '42501', NULL, 'nor remove a payment method');
SELECT pg_temp.act_as(:'m');
SELECT is((SELECT count(*)::int FROM invoices) + (SELECT count(*)::int FROM invoice_line_items)
          + (SELECT count(*)::int FROM payment_methods) + (SELECT count(*)::int FROM payment_transactions), 0,
          'a member (no billing.read) reads none of it');
SELECT is(get_billing_status(:'org_a') ->> 'plan', 'pro', 'but sees the plan');
SELECT pg_temp.act_as(:'p');
SELECT is((SELECT count(*)::int FROM invoices) + (SELECT count(*)::int FROM payment_methods)
          + (SELECT count(*)::int FROM payment_transactions), 0, 'an outsider reads none of it');
SELECT pg_temp.act_as(NULL);
SELECT throws_ok($$ SELECT 1 FROM invoices $$, '42501', NULL, 'anon cannot read invoices');

-- ================================================================ coupons
SELECT pg_temp.as_service();
INSERT INTO coupons (code, name, discount_type, percent_off, max_redemptions, provider, provider_coupon_id)
VALUES ('launch', 'Launch', 'percent', 20, 2, 'stripe', 'promo_launch');
INSERT INTO coupons (code, discount_type, amount_off, currency, duration, duration_in_months)
VALUES ('PROONLY', 'fixed', 500, 'usd', 'repeating', 3);
INSERT INTO coupon_plans (coupon_id, plan) SELECT id, 'pro' FROM coupons WHERE code = 'PROONLY';
INSERT INTO coupons (code, discount_type, percent_off, valid_until) VALUES ('OLD', 'percent', 10, now() - interval '1 day');
INSERT INTO coupons (code, discount_type, percent_off, valid_from) VALUES ('SOON', 'percent', 10, now() + interval '1 day');
INSERT INTO coupons (code, discount_type, percent_off, active) VALUES ('OFF', 'percent', 10, false);
SELECT throws_ok($$ INSERT INTO coupons (code, discount_type, percent_off) VALUES ('NAN', 'percent', 'NaN') $$,
                 '23514', NULL, 'a NaN discount is refused');
SELECT throws_ok($$ INSERT INTO coupons (code, discount_type, percent_off, amount_off) VALUES ('BOTH', 'percent', 10, 100) $$,
                 '23514', NULL, 'a percent coupon has no amount');
SELECT pg_temp.act_as(:'m');
SELECT throws_ok(format($$ SELECT redeem_coupon(%L, 'LAUNCH') $$, :'org_a'), '42501', NULL, 'a member cannot redeem coupons');
SELECT throws_ok($$ SELECT 1 FROM coupons $$, '42501', NULL, 'nor list the codes');
SELECT pg_temp.act_as(:'o');
SELECT is(redeem_coupon(:'org_a', ' launch ') - '{redemption_id,organization_id}'::text[],
          '{"code": "LAUNCH", "name": "Launch", "plan": "pro", "currency": null, "duration": "once", "provider": "stripe",
            "amount_off": null, "percent_off": 20.00, "discount_type": "percent", "duration_in_months": null,
            "provider_coupon_id": "promo_launch"}'::jsonb,
          'the owner redeems a code (any case): the discount and the provider coupon to apply at checkout');
SELECT throws_ok(format($$ SELECT redeem_coupon(%L, 'LAUNCH') $$, :'org_a'), '23505', NULL, 'once per organization');
SELECT throws_ok(format($$ SELECT redeem_coupon(%L, 'OLD') $$, :'org_a'), '22023', 'redeem_coupon: coupon "OLD" has expired', 'an expired coupon is 22023');
SELECT throws_ok(format($$ SELECT redeem_coupon(%L, 'SOON') $$, :'org_a'), '22023', 'redeem_coupon: coupon "SOON" is not valid yet', 'one not valid yet');
SELECT throws_ok(format($$ SELECT redeem_coupon(%L, 'OFF') $$, :'org_a'), '22023', 'redeem_coupon: coupon "OFF" is not active', 'an inactive one');
SELECT throws_ok(format($$ SELECT redeem_coupon(%L, 'NOPE') $$, :'org_a'), '22023', 'redeem_coupon: no coupon "NOPE"', 'an unknown one');
SELECT throws_ok(format($$ SELECT redeem_coupon(%L, 'PROONLY', 'business') $$, :'org_c'), '22023',
                 'redeem_coupon: coupon "PROONLY" applies to the plans pro only, not "business"', 'one for other plans');
SELECT is(redeem_coupon(:'org_c', 'PROONLY', 'pro') ->> 'amount_off', '500', 'and for its plan');
SELECT is(redeem_coupon(:'org_c', 'LAUNCH') ->> 'code', 'LAUNCH', 'a second organization redeems LAUNCH');
SELECT throws_ok(format($$ SELECT redeem_coupon(%L, 'LAUNCH') $$, :'org_ls'), '54000', NULL,
                 'a third is refused: max_redemptions is 2');
SELECT is((SELECT count(*)::int FROM coupon_redemptions WHERE organization_id = :'org_c'), 2, 'the owner sees the redemptions');
SELECT pg_temp.act_as(:'p');
SELECT is((SELECT count(*)::int FROM coupon_redemptions), 0, 'an outsider sees none');

-- ================================================================ a subscription's whole life, shuffled
-- Checkout, trial, its invoice, active and paid, an upgrade with a proration invoice, a failed renewal
-- (past_due, open invoice, failed payment), recovered, cancel at period end, deleted: once in
-- order, once shuffled with every event delivered twice. Stripe retries what was unmapped (a
-- payment delivered before anything linked its customer): so does the replay, once at the end.
CREATE FUNCTION pg_temp.ledger_life(org uuid, tag text) RETURNS TABLE (n int, event jsonb) LANGUAGE sql AS $$
    SELECT 1, pg_temp.stripe_event(format('evt_%s_1', tag), 'checkout.session.completed', 1767225500,
               jsonb_build_object('id', 'cs_' || tag, 'object', 'checkout.session', 'mode', 'subscription',
                                  'client_reference_id', org, 'customer', 'cus_' || tag, 'subscription', 'sub_' || tag,
                                  'customer_details', jsonb_build_object('email', tag || '@billing.example')))
    UNION ALL
    SELECT s.n, pg_temp.stripe_event(format('evt_%s_%s', tag, s.n),
               CASE s.status WHEN 'canceled' THEN 'customer.subscription.deleted'
                             ELSE CASE s.n WHEN 2 THEN 'customer.subscription.created' ELSE 'customer.subscription.updated' END END,
               s.at, jsonb_build_object('id', 'sub_' || tag, 'object', 'subscription', 'customer', 'cus_' || tag,
                   'status', s.status, 'cancel_at_period_end', s.cancel,
                   'metadata', jsonb_build_object('organization_id', org),
                   'items', jsonb_build_object('data', jsonb_build_array(jsonb_build_object(
                       'price', jsonb_build_object('id', s.price), 'quantity', s.quantity,
                       'current_period_start', s.at, 'current_period_end', s.at + 30 * 86400)))))
    FROM (VALUES (2, 1767225600, 'trialing', 'price_ledger_pro', 1, false),
                 (4, 1768435200, 'active', 'price_ledger_pro', 1, false),
                 (6, 1768953600, 'active', 'price_ledger_business', 8, false),
                 (8, 1771545600, 'past_due', 'price_ledger_business', 8, false),
                 (12, 1771718700, 'active', 'price_ledger_business', 8, false),
                 (13, 1772409600, 'active', 'price_ledger_business', 8, true),
                 (14, 1775001600, 'canceled', 'price_ledger_business', 8, true)) s (n, at, status, price, quantity, cancel)
    UNION ALL
    SELECT i.n, pg_temp.stripe_event(format('evt_%s_%s', tag, i.n), i.type, i.at,
               pg_temp.invoice(format('in_%s_%s', tag, i.invoice), 'cus_' || tag, i.status, i.due, i.paid, i.at, i.proration)
               || jsonb_build_object('parent', jsonb_build_object('type', 'subscription_details',
                      'subscription_details', jsonb_build_object('subscription', 'sub_' || tag,
                                                                 'metadata', jsonb_build_object('organization_id', org)))))
    FROM (VALUES (3, 1767225700, 'invoice.paid', 1, 'paid', 0, 0, false),
                 (5, 1768435300, 'invoice.paid', 2, 'paid', 2000, 2000, false),
                 (7, 1768953700, 'invoice.paid', 3, 'paid', 52000, 52000, true),
                 (9, 1771545700, 'invoice.payment_failed', 4, 'open', 60000, 0, false),
                 (11, 1771718600, 'invoice.paid', 4, 'paid', 60000, 60000, false)) i (n, at, type, invoice, status, due, paid, proration)
    UNION ALL
    SELECT p.n, pg_temp.stripe_event(format('evt_%s_%s', tag, p.n), p.type, p.at,
               (SELECT body FROM fixture WHERE name = 'pi')
               || jsonb_build_object('id', format('pi_%s_%s', tag, p.invoice), 'customer', 'cus_' || tag, 'amount', p.amount,
                                     'status', p.status))
    FROM (VALUES (15, 1768435400, 'payment_intent.succeeded', 2, 2000, 'succeeded'),
                 (10, 1771545800, 'payment_intent.payment_failed', 4, 60000, 'requires_payment_method'),
                 (16, 1771718650, 'payment_intent.succeeded', 4, 60000, 'succeeded')) p (n, at, type, invoice, amount, status)
$$;
CREATE FUNCTION pg_temp.ledger_state(org uuid, tag text) RETURNS text LANGUAGE sql AS $$
    SELECT replace(concat_ws(' | ',
        (SELECT concat_ws('/', plan, status, seats, cancel_at_period_end) FROM org_subscriptions WHERE organization_id = org),
        (SELECT string_agg(concat_ws('/', i.provider_invoice_id, i.status, i.amount_paid,
                                     (SELECT count(*) FROM invoice_line_items l WHERE l.invoice_id = i.id AND l.proration)),
                           ',' ORDER BY i.provider_invoice_id)
         FROM invoices i WHERE i.organization_id = org),
        (SELECT string_agg(concat_ws('/', provider_transaction_id, status, amount), ',' ORDER BY provider_transaction_id)
         FROM payment_transactions WHERE organization_id = org)), tag, 'T')
$$;
SELECT pg_temp.as_service();
-- Deliveries one after another, in the order given (a loop, not a set: mapping depends on it),
-- then the provider's retry of what was not applied.
CREATE FUNCTION pg_temp.replay(org uuid, tag text, shuffled boolean) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    e jsonb;
BEGIN
    FOR e IN SELECT l.event FROM pg_temp.ledger_life(org, tag) l, generate_series(1, CASE WHEN shuffled THEN 2 ELSE 1 END) copy
             ORDER BY CASE WHEN shuffled THEN md5(l.n::text || copy::text) ELSE lpad(l.n::text, 3, '0') END LOOP
        PERFORM pg_temp.apply(e);
    END LOOP;
    FOR e IN SELECT l.event FROM pg_temp.ledger_life(org, tag) l
             JOIN billing_events b ON b.event_key = l.event ->> 'id' AND b.outcome IN ('unmapped', 'failed') LOOP
        PERFORM pg_temp.apply(e);
    END LOOP;
END $$;
SELECT pg_temp.replay(:'r1', 'r1', false);
SELECT pg_temp.replay(:'r2', 'r2', true);
-- attempts counts deliveries that were tried again: the retry pass would hide an unmapped
-- first delivery from the outcome alone.
SELECT is((SELECT count(*)::int FROM billing_events WHERE event_key LIKE 'evt_r1_%'
           AND (attempts > 1 OR outcome IN ('unmapped', 'failed'))), 0,
          'in order, every event is applied (or stale) at its first delivery');
SELECT is(pg_temp.ledger_state(:'r2', 'r2'), pg_temp.ledger_state(:'r1', 'r1'),
          'a shuffled, duplicated replay of invoices, payments and the subscription ends where the ordered one does');
SELECT is(pg_temp.ledger_state(:'r1', 'r1'),
          'business/canceled/8/t | in_T_1/paid/0/0,in_T_2/paid/2000/0,in_T_3/paid/52000/1,in_T_4/paid/60000/0'
          || ' | pi_T_2/succeeded/2000,pi_T_4/succeeded/60000',
          'the right state: deleted, every invoice paid (one with a proration line), the failed payment recovered');
SELECT is(org_effective_plan(:'r1'), 'free', 'and the organization back on the free plan');

-- ================================================================ usage records
SELECT pg_temp.as_service();
SELECT is(pg_temp.apply(pg_temp.stripe_event('evt_u1', 'customer.subscription.created', 1767225600,
              jsonb_build_object('id', 'sub_usage', 'object', 'subscription', 'customer', 'cus_usage', 'status', 'active',
                                 'metadata', jsonb_build_object('organization_id', :'org_u'),
                                 'items', jsonb_build_object('data', jsonb_build_array(jsonb_build_object(
                                     'price', jsonb_build_object('id', 'price_ledger_pro'), 'quantity', 1)))))),
          'applied', 'organization U is on a usage-based (monthly) paid plan');
SELECT record_usage(:'org_u', 'api_call', 3, NULL, usage_bucket_start('monthly', now()) - interval '2 hours') IS NOT NULL AS r1;
SELECT record_usage(:'org_u', 'api_call', 2, NULL, usage_bucket_start('monthly', now()) - interval '1 hour') IS NOT NULL AS r2;
SELECT record_usage(:'org_u', 'api_call', 100) IS NOT NULL AS this_month;
SELECT record_usage(:'org_b', 'api_call', 9, NULL, usage_bucket_start('monthly', now()) - interval '1 hour') IS NOT NULL AS free_org;
SELECT prepare_usage_records() AS prepared \gset
SELECT is((:'prepared'::jsonb ->> 'period_start')::timestamptz, usage_bucket_start('monthly', now() - interval '1 month'),
          'prepare_usage_records() prepares the month that ended');
SELECT is((SELECT string_agg(concat_ws('/', r ->> 'event_type', r ->> 'quantity', r ->> 'provider_subscription_id'), ',')
           FROM jsonb_array_elements(:'prepared'::jsonb -> 'records') r WHERE (r ->> 'organization_id')::uuid = :'org_u'),
          'api_call/5/sub_usage', 'with the month''s usage of a usage-based subscriber (this month''s not counted)');
SELECT is((SELECT count(*)::int FROM usage_records WHERE organization_id = :'org_b'), 0, 'a free organization has no records');
SELECT is((prepare_usage_records(now() - interval '1 month') -> 'records' -> 0 ->> 'quantity'), '5',
          'preparing the month again gives the same record');
SELECT is((SELECT count(*)::int FROM usage_records WHERE organization_id = :'org_u'), 1, 'not a second one');
SELECT record_usage(:'org_u', 'api_call', 4, NULL, usage_bucket_start('monthly', now()) - interval '30 minutes') IS NOT NULL AS late;
SELECT aggregate_usage() IS NOT NULL AS folded;
SELECT is((SELECT quantity FROM usage_records WHERE organization_id = :'org_u'), 5::numeric, '(a late event waits)');
SELECT is((prepare_usage_records() -> 'records' -> 0 ->> 'quantity'), '9',
          'a late event, folded or not, is in the pending record once prepared again');
SELECT id AS record FROM usage_records WHERE organization_id = :'org_u' \gset
SELECT lives_ok(format($$ SELECT mark_usage_record_reported(%L, 'mbur_1') $$, :'record'), 'the billing job marks it reported');
SELECT lives_ok(format($$ SELECT mark_usage_record_reported(%L, 'mbur_1') $$, :'record'), 'again: a no-op');
SELECT throws_ok(format($$ SELECT mark_usage_record_reported(%L, 'mbur_2') $$, :'record'), '55000', NULL,
                 'as something else: 55000');
SELECT record_usage(:'org_u', 'api_call', 1, NULL, usage_bucket_start('monthly', now()) - interval '10 minutes') IS NOT NULL AS later;
SELECT is(jsonb_array_length(prepare_usage_records() -> 'records'), 0, 'a reported record is not prepared again');
SELECT is((SELECT quantity || '/' || status FROM usage_records WHERE id = :'record'), '9/reported', 'nor changed');
SELECT throws_ok($$ SELECT prepare_usage_records(now()) $$, '22023', NULL, 'a month that has not ended is 22023');
SELECT pg_temp.act_as(:'o');
SELECT throws_ok($$ SELECT prepare_usage_records() $$, '42501', NULL, 'only the service role prepares usage records');
SELECT is((SELECT count(*)::int FROM usage_records WHERE organization_id = :'org_u'), 1, 'the owner reads them');
SELECT pg_temp.act_as(:'p');
SELECT is((SELECT count(*)::int FROM usage_records), 0, 'an outsider does not');

SELECT * FROM finish();
ROLLBACK;
