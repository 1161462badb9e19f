-- Billing benchmark set-up (scripts/bench_billing.sh): :orgs organizations, each with a Stripe
-- customer and subscription; two prices; the event generator; and the floor: a hand-written
-- webhook handler doing the same writes without ordering, mapping rules or failure logging.
\set ON_ERROR_STOP 1
SET client_min_messages = warning;
DROP SCHEMA IF EXISTS bench_billing CASCADE;
CREATE SCHEMA bench_billing;
GRANT USAGE ON SCHEMA bench_billing TO service_role;

CREATE FUNCTION bench_billing.org_id(n int) RETURNS uuid LANGUAGE sql IMMUTABLE
AS $$ SELECT ('00000000-0000-4000-8005-' || lpad(n::text, 12, '0'))::uuid $$;
INSERT INTO auth.users (id, email)
SELECT ('00000000-0000-4000-8006-' || lpad(n::text, 12, '0'))::uuid, format('billing%s@bench.example', n)
FROM generate_series(1, :orgs) n;
INSERT INTO organizations (id, name, slug, owner_id, org_type)
SELECT bench_billing.org_id(n), format('Billing %s', n), format('billing-%s', n),
       ('00000000-0000-4000-8006-' || lpad(n::text, 12, '0'))::uuid, 'business'
FROM generate_series(1, :orgs) n;
INSERT INTO org_subscriptions (organization_id, plan, status, provider, provider_customer_id, provider_subscription_id)
SELECT bench_billing.org_id(n), 'pro', 'active', 'stripe', 'cus_bench_' || n, 'sub_bench_' || n FROM generate_series(1, :orgs) n;
INSERT INTO billing_customers (organization_id, provider, provider_customer_id)
SELECT bench_billing.org_id(n), 'stripe', 'cus_bench_' || n FROM generate_series(1, :orgs) n;
INSERT INTO plan_prices (provider, provider_price_id, plan, billing_interval) VALUES
    ('stripe', 'price_bench_pro', 'pro', 'month'), ('stripe', 'price_bench_business', 'business', 'year');

-- A realistic mix, by kind (1-10): 7 in 10 a new customer.subscription.updated (price and
-- quantity vary), 1 a redelivery, 1 an older event arriving late (stale), 1 an invoice.paid
-- with a proration line (written to invoices and invoice_line_items).
CREATE FUNCTION bench_billing.event(org int, kind int) RETURNS jsonb LANGUAGE sql VOLATILE AS $$
    SELECT jsonb_build_object(
        'id', CASE WHEN kind = 8 THEN 'evt_again_' || org ELSE 'evt_' || gen_random_uuid() END,
        'object', 'event',
        'type', CASE WHEN kind = 10 THEN 'invoice.paid' ELSE 'customer.subscription.updated' END,
        'created', CASE WHEN kind IN (8, 9) THEN 1700000000 ELSE extract(epoch FROM clock_timestamp())::bigint END,
        'data', jsonb_build_object('object', CASE WHEN kind = 10 THEN jsonb_build_object(
            'id', 'in_' || gen_random_uuid(), 'object', 'invoice', 'customer', 'cus_bench_' || org,
            'subscription', 'sub_bench_' || org, 'status', 'paid', 'currency', 'usd', 'subtotal', 2000, 'tax', 0,
            'total', 2000, 'amount_due', 2000, 'amount_paid', 2000, 'amount_remaining', 0,
            'created', extract(epoch FROM now())::bigint,
            'lines', jsonb_build_object('data', jsonb_build_array(jsonb_build_object(
                'id', 'il_' || gen_random_uuid(), 'amount', 2000, 'currency', 'usd', 'quantity', 1, 'proration', true,
                'price', jsonb_build_object('id', 'price_bench_pro'),
                'period', jsonb_build_object('start', extract(epoch FROM now())::bigint,
                                             'end', extract(epoch FROM now() + interval '30 days')::bigint)))))
        ELSE jsonb_build_object(
            'id', 'sub_bench_' || org, 'object', 'subscription', 'customer', 'cus_bench_' || org,
            'status', 'active', 'cancel_at_period_end', false,
            'metadata', jsonb_build_object('organization_id', bench_billing.org_id(org)),
            'items', jsonb_build_object('data', jsonb_build_array(jsonb_build_object(
                'price', jsonb_build_object('id', CASE WHEN kind % 2 = 0 THEN 'price_bench_pro' ELSE 'price_bench_business' END),
                'quantity', 1 + kind,
                'current_period_start', extract(epoch FROM now())::bigint,
                'current_period_end', extract(epoch FROM now() + interval '30 days')::bigint)))) END))
$$;

-- The floor: log the event once, then write the subscription, as a hand-written handler would.
CREATE TABLE bench_billing.events (event_id text PRIMARY KEY, payload jsonb NOT NULL, received_at timestamptz DEFAULT now());
CREATE FUNCTION bench_billing.naive_apply(event jsonb) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    o jsonb := event -> 'data' -> 'object';
BEGIN
    INSERT INTO bench_billing.events (event_id, payload) VALUES (event ->> 'id', event) ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    IF event ->> 'type' = 'invoice.paid' THEN
        INSERT INTO public.invoices (organization_id, provider, provider_invoice_id, provider_subscription_id, status,
                                     currency, subtotal, tax, total, amount_due, amount_paid, amount_remaining)
        SELECT c.organization_id, 'stripe', o ->> 'id', o ->> 'subscription', o ->> 'status', o ->> 'currency',
               (o ->> 'subtotal')::bigint, (o ->> 'tax')::bigint, (o ->> 'total')::bigint, (o ->> 'amount_due')::bigint,
               (o ->> 'amount_paid')::bigint, (o ->> 'amount_remaining')::bigint
        FROM public.billing_customers c WHERE c.provider = 'stripe' AND c.provider_customer_id = o ->> 'customer'
        ON CONFLICT (provider, provider_invoice_id) DO UPDATE SET status = excluded.status;
        INSERT INTO public.invoice_line_items (invoice_id, organization_id, provider_line_item_id, amount, currency,
                                               quantity, proration, provider_price_id)
        SELECT i.id, i.organization_id, l ->> 'id', (l ->> 'amount')::bigint, l ->> 'currency', (l ->> 'quantity')::int,
               (l ->> 'proration')::boolean, l -> 'price' ->> 'id'
        FROM public.invoices i, jsonb_array_elements(o -> 'lines' -> 'data') l
        WHERE i.provider = 'stripe' AND i.provider_invoice_id = o ->> 'id';
        RETURN;
    END IF;
    UPDATE public.org_subscriptions s
    SET plan = p.plan, billing_type = p.billing_type, status = o ->> 'status',
        seats = (o -> 'items' -> 'data' -> 0 ->> 'quantity')::int, provider_price_id = p.provider_price_id,
        current_period_start = to_timestamp((o -> 'items' -> 'data' -> 0 ->> 'current_period_start')::float8),
        current_period_end = to_timestamp((o -> 'items' -> 'data' -> 0 ->> 'current_period_end')::float8),
        cancel_at_period_end = (o ->> 'cancel_at_period_end')::boolean
    FROM public.plan_prices p
    WHERE p.provider = 'stripe' AND p.provider_price_id = o -> 'items' -> 'data' -> 0 -> 'price' ->> 'id'
      AND s.organization_id = (o -> 'metadata' ->> 'organization_id')::uuid;
END
$$;
GRANT ALL ON ALL TABLES IN SCHEMA bench_billing TO service_role;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA bench_billing TO service_role;
ANALYZE;
