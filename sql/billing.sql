-- Billing: organization-level customers and subscriptions (seed 000 §3, billing_type from seed 003).
-- Rows are written by the service role (payment provider webhooks) and by the signup trigger.

-- Plans are rows: a new plan is an INSERT here (and its limits in plan_features).
CREATE TABLE @extschema@.plans (
    key          text PRIMARY KEY CONSTRAINT plans_key_check CHECK (key ~ '^[a-z][a-z0-9_]{0,39}$'),
    name         text NOT NULL CONSTRAINT plans_name_check CHECK (char_length(btrim(name)) BETWEEN 1 AND 100),
    description  text,
    -- Inactive plans are kept for their subscribers but no longer sold.
    active       boolean NOT NULL DEFAULT true,
    -- Shown on pricing pages (anon and authenticated read public, active plans).
    public       boolean NOT NULL DEFAULT true,
    sort_order   integer NOT NULL DEFAULT 0,
    trial_days   integer NOT NULL DEFAULT 0 CONSTRAINT plans_trial_days_check CHECK (trial_days BETWEEN 0 AND 365),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE @extschema@.plans IS
    'Subscription plans. The free plan is what every organization falls back to; it cannot be deleted.';
INSERT INTO @extschema@.plans (key, name, sort_order, trial_days, public) VALUES
    ('free', 'Free', 0, 0, true),
    ('pro', 'Pro', 1, 14, true),
    ('business', 'Business', 2, 14, true),
    ('enterprise', 'Enterprise', 3, 0, false);

-- A provider's price (Stripe price, Lemon Squeezy variant) and the plan it buys. The billing
-- model follows the interval (seed 003): yearly prices are quantity_based (seats pushed with
-- immediate proration), monthly ones usage_based (usage reported in arrears).
CREATE TABLE @extschema@.plan_prices (
    id                 uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    provider           text NOT NULL CONSTRAINT plan_prices_provider_check CHECK (provider IN ('stripe', 'lemon_squeezy')),
    provider_price_id  text NOT NULL CONSTRAINT plan_prices_provider_price_id_check CHECK (provider_price_id <> ''),
    plan               text NOT NULL REFERENCES @extschema@.plans (key) ON UPDATE CASCADE ON DELETE CASCADE,
    billing_interval   text NOT NULL CONSTRAINT plan_prices_interval_check CHECK (billing_interval IN ('month', 'year')),
    -- In the currency's minor unit (cents), as the providers send it.
    amount             bigint CONSTRAINT plan_prices_amount_check CHECK (amount >= 0),
    currency           text CONSTRAINT plan_prices_currency_check CHECK (currency ~ '^[a-z]{3}$'),
    billing_type       text NOT NULL GENERATED ALWAYS AS
                       (CASE billing_interval WHEN 'year' THEN 'quantity_based' ELSE 'usage_based' END) STORED,
    active             boolean NOT NULL DEFAULT true,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    UNIQUE (provider, provider_price_id)
);
CREATE INDEX plan_prices_plan_idx ON @extschema@.plan_prices (plan);

-- The free plan is every organization's fallback (plan_in_effect): it is neither deleted nor
-- renamed. A restore replaces the seeded plans wholesale and may.
CREATE FUNCTION @extschema@.keep_free_plan()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, @extschema@, pg_temp
AS $$
BEGIN
    IF OLD.key = 'free' AND NOT @extschema@.restore_in_progress() THEN
        RAISE EXCEPTION 'the free plan is every organization''s fallback: it cannot be deleted or renamed'
            USING ERRCODE = '42501';
    END IF;
    RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
END
$$;
REVOKE ALL ON FUNCTION @extschema@.keep_free_plan() FROM PUBLIC, anon, authenticated, service_role;

CREATE TRIGGER update_plans_updated_at
    BEFORE UPDATE ON @extschema@.plans
    FOR EACH ROW EXECUTE FUNCTION @extschema@.update_updated_at_column();
CREATE TRIGGER update_plan_prices_updated_at
    BEFORE UPDATE ON @extschema@.plan_prices
    FOR EACH ROW EXECUTE FUNCTION @extschema@.update_updated_at_column();
-- Every organization falls back to the free plan: it stays, under its key.
CREATE TRIGGER keep_free_plan
    BEFORE DELETE OR UPDATE OF key ON @extschema@.plans
    FOR EACH ROW EXECUTE FUNCTION @extschema@.keep_free_plan();
-- pg_dump dumps every row; a restore's COPY replaces the seeded ones (backup.sql).
CREATE TRIGGER replace_seeded_rows
    BEFORE INSERT ON @extschema@.plans
    FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.replace_seeded_rows();
SELECT pg_catalog.pg_extension_config_dump('@extschema@.plans', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.plan_prices', '');

REVOKE ALL ON @extschema@.plans, @extschema@.plan_prices FROM PUBLIC, anon, authenticated, service_role;
GRANT SELECT ON @extschema@.plans, @extschema@.plan_prices TO anon, authenticated;
GRANT SELECT, INSERT, UPDATE, DELETE ON @extschema@.plans, @extschema@.plan_prices TO service_role;
ALTER TABLE @extschema@.plans ENABLE ROW LEVEL SECURITY;
ALTER TABLE @extschema@.plan_prices ENABLE ROW LEVEL SECURITY;
CREATE TABLE @extschema@.billing_customers (
    id                    uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id       uuid NOT NULL UNIQUE REFERENCES @extschema@.organizations (id) ON DELETE CASCADE,
    provider              text NOT NULL DEFAULT 'stripe' CHECK (provider IN ('stripe', 'lemon_squeezy')),
    provider_customer_id  text NOT NULL,
    billing_email         text,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    -- since 0.2.0: the provider's time of the newest event applied (older ones are stale).
    provider_synced_at    timestamptz,
    -- since 0.2.0: the customer's default payment method at the provider (payment_methods follows it).
    default_payment_method_id text,
    UNIQUE (provider, provider_customer_id)
);

CREATE TABLE @extschema@.org_subscriptions (
    id                        uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id           uuid NOT NULL UNIQUE REFERENCES @extschema@.organizations (id) ON DELETE CASCADE,
    plan                      text NOT NULL DEFAULT 'free'
                              REFERENCES @extschema@.plans (key) ON UPDATE CASCADE,
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
    -- since 0.2.0: the provider's time of the newest event applied (older ones are stale).
    provider_synced_at        timestamptz,
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

-- Pricing pages: public, active plans and their active prices; members also see the plan
-- their organization is on.
CREATE POLICY plans_select_public ON @extschema@.plans
    FOR SELECT TO anon, authenticated
    USING (public AND active);
CREATE POLICY plans_select_subscribed ON @extschema@.plans
    FOR SELECT TO authenticated
    USING (key IN (SELECT s.plan FROM @extschema@.org_subscriptions s));
CREATE POLICY plans_service_role_all ON @extschema@.plans
    FOR ALL TO service_role USING (true) WITH CHECK (true);
CREATE POLICY plan_prices_select_public ON @extschema@.plan_prices
    FOR SELECT TO anon, authenticated
    USING (active AND plan IN (SELECT p.key FROM @extschema@.plans p WHERE p.public AND p.active));
CREATE POLICY plan_prices_service_role_all ON @extschema@.plan_prices
    FOR ALL TO service_role USING (true) WITH CHECK (true);

REVOKE ALL ON FUNCTION @extschema@.get_billing_status(uuid) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.get_billing_status(uuid) TO authenticated, service_role;
