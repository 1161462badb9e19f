-- Billing: organization-level customers and subscriptions (seed 000 §3, billing_type from seed 003).
-- Rows are written by the service role (payment provider webhooks) and by the signup trigger.

CREATE TABLE @extschema@.billing_customers (
    id                    uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id       uuid NOT NULL UNIQUE REFERENCES @extschema@.organizations (id) ON DELETE CASCADE,
    provider              text NOT NULL DEFAULT 'stripe' CHECK (provider IN ('stripe', 'lemon_squeezy')),
    provider_customer_id  text NOT NULL,
    billing_email         text,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    UNIQUE (provider, provider_customer_id)
);

CREATE TABLE @extschema@.org_subscriptions (
    id                        uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id           uuid NOT NULL UNIQUE REFERENCES @extschema@.organizations (id) ON DELETE CASCADE,
    plan                      text NOT NULL DEFAULT 'free'
                              CHECK (plan IN ('free', 'pro', 'business', 'enterprise')),
    status                    text NOT NULL DEFAULT 'active'
                              CHECK (status IN ('trialing', 'active', 'past_due', 'canceled', 'unpaid',
                                                'incomplete', 'incomplete_expired', 'paused')),
    billing_type              text NOT NULL DEFAULT 'usage_based',
    seats                     integer NOT NULL DEFAULT 1 CHECK (seats >= 1),
    provider                  text CHECK (provider IN ('stripe', 'lemon_squeezy')),
    provider_customer_id      text,
    provider_subscription_id  text,
    provider_price_id         text,
    current_period_start      timestamptz,
    current_period_end        timestamptz,
    trial_start               timestamptz,
    trial_ends_at             timestamptz,
    cancel_at_period_end      boolean NOT NULL DEFAULT false,
    canceled_at               timestamptz,
    created_at                timestamptz NOT NULL DEFAULT now(),
    updated_at                timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT org_subscriptions_billing_type_check
        CHECK (billing_type IN ('volume', 'usage_based', 'quantity_based')),
    CONSTRAINT org_subscriptions_period_check
        CHECK (current_period_end IS NULL OR current_period_start IS NULL
               OR current_period_end > current_period_start),
    CONSTRAINT org_subscriptions_provider_ids_check
        CHECK (provider_subscription_id IS NULL OR provider IS NOT NULL),
    UNIQUE (provider, provider_subscription_id)
);

COMMENT ON COLUMN @extschema@.org_subscriptions.billing_type IS
    'Billing model: "volume" (legacy, deprecated), "usage_based" (monthly subscriptions using usage records API, charged in arrears), "quantity_based" (yearly subscriptions using quantity updates with immediate proration). Determines which billing logic to apply.';
COMMENT ON COLUMN @extschema@.org_subscriptions.seats IS
    'Seat quantity billed by the provider. The membership limit itself is the plan''s max_seats feature.';
COMMENT ON COLUMN @extschema@.org_subscriptions.status IS
    'Provider status. trialing, active and past_due keep the plan''s features; any other status falls back to the free plan.';

CREATE INDEX org_subscriptions_status_idx ON @extschema@.org_subscriptions (status);
CREATE INDEX org_subscriptions_plan_idx ON @extschema@.org_subscriptions (plan);

CREATE TRIGGER update_billing_customers_updated_at
    BEFORE UPDATE ON @extschema@.billing_customers
    FOR EACH ROW EXECUTE FUNCTION @extschema@.update_updated_at_column();
CREATE TRIGGER update_org_subscriptions_updated_at
    BEFORE UPDATE ON @extschema@.org_subscriptions
    FOR EACH ROW EXECUTE FUNCTION @extschema@.update_updated_at_column();

REVOKE ALL ON @extschema@.billing_customers, @extschema@.org_subscriptions
    FROM PUBLIC, anon, authenticated, service_role;
GRANT SELECT ON @extschema@.billing_customers, @extschema@.org_subscriptions TO authenticated;
GRANT SELECT, INSERT, UPDATE, DELETE ON @extschema@.billing_customers, @extschema@.org_subscriptions
    TO service_role;

ALTER TABLE @extschema@.billing_customers ENABLE ROW LEVEL SECURITY;
ALTER TABLE @extschema@.org_subscriptions ENABLE ROW LEVEL SECURITY;

CREATE POLICY billing_customers_select_member ON @extschema@.billing_customers
    FOR SELECT TO authenticated
    USING (organization_id IN (SELECT @extschema@.current_user_org_ids()));
CREATE POLICY billing_customers_service_role_all ON @extschema@.billing_customers
    FOR ALL TO service_role USING (true) WITH CHECK (true);

CREATE POLICY org_subscriptions_select_member ON @extschema@.org_subscriptions
    FOR SELECT TO authenticated
    USING (organization_id IN (SELECT @extschema@.current_user_org_ids()));
CREATE POLICY org_subscriptions_service_role_all ON @extschema@.org_subscriptions
    FOR ALL TO service_role USING (true) WITH CHECK (true);

SELECT pg_catalog.pg_extension_config_dump('@extschema@.billing_customers', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.org_subscriptions', '');
