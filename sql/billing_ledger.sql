-- The billing ledger (seed 002 §4, seed 004 §1): invoices with their line items, payment
-- methods and payment transactions, as the provider's webhooks report them
-- (apply_billing_event, src/billing_ledger.rs). Owners and admins (billing.read) read their
-- organization's rows; only the service role writes. Amounts are in the currency's minor unit
-- (cents), as the providers send them.

CREATE TABLE @extschema@.invoices (
    id                        uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id           uuid NOT NULL REFERENCES @extschema@.organizations (id) ON DELETE CASCADE,
    provider                  text NOT NULL CONSTRAINT invoices_provider_check CHECK (provider IN ('stripe', 'lemon_squeezy')),
    provider_invoice_id       text NOT NULL CONSTRAINT invoices_provider_invoice_id_check CHECK (provider_invoice_id <> ''),
    provider_subscription_id  text,
    number                    text,
    -- Stripe's invoice statuses; Lemon Squeezy's map onto them (pending: open; refunded: paid).
    status                    text NOT NULL CONSTRAINT invoices_status_check
                              CHECK (status IN ('draft', 'open', 'paid', 'void', 'uncollectible')),
    billing_reason            text,
    currency                  text CONSTRAINT invoices_currency_check CHECK (currency ~ '^[a-z]{3}$'),
    subtotal                  bigint,
    tax                       bigint,
    total                     bigint,
    amount_due                bigint,
    amount_paid               bigint,
    amount_remaining          bigint,
    period_start              timestamptz,
    period_end                timestamptz,
    due_at                    timestamptz,
    paid_at                   timestamptz,
    hosted_invoice_url        text,
    invoice_pdf_url           text,
    -- When the provider created the invoice, and the provider time of the newest event applied.
    provider_created_at       timestamptz,
    provider_synced_at        timestamptz,
    created_at                timestamptz NOT NULL DEFAULT now(),
    updated_at                timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT invoices_provider_invoice_key UNIQUE (provider, provider_invoice_id)
);
COMMENT ON TABLE @extschema@.invoices IS
    'Provider invoices of an organization, kept in step by apply_billing_event().';
CREATE INDEX invoices_organization_idx ON @extschema@.invoices (organization_id, provider_created_at DESC);
-- The billing page's "open invoices".
CREATE INDEX invoices_open_idx ON @extschema@.invoices (organization_id) WHERE status = 'open';

CREATE TABLE @extschema@.invoice_line_items (
    id                     uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    invoice_id             uuid NOT NULL REFERENCES @extschema@.invoices (id) ON DELETE CASCADE,
    -- The invoice's organization, for row level security on an indexed column.
    organization_id        uuid NOT NULL REFERENCES @extschema@.organizations (id) ON DELETE CASCADE,
    provider_line_item_id  text NOT NULL,
    description            text,
    amount                 bigint NOT NULL,
    currency               text CONSTRAINT invoice_line_items_currency_check CHECK (currency ~ '^[a-z]{3}$'),
    quantity               integer,
    -- A proration: the credit or charge for a plan or quantity change mid-period (seed 003).
    proration              boolean NOT NULL DEFAULT false,
    period_start           timestamptz,
    period_end             timestamptz,
    provider_price_id      text,
    -- The plan the price buys, when plan_prices knows it.
    plan                   text REFERENCES @extschema@.plans (key) ON UPDATE CASCADE ON DELETE SET NULL,
    CONSTRAINT invoice_line_items_line_key UNIQUE (invoice_id, provider_line_item_id)
);
CREATE INDEX invoice_line_items_organization_idx ON @extschema@.invoice_line_items (organization_id);
CREATE INDEX invoice_line_items_plan_idx ON @extschema@.invoice_line_items (plan);

-- Tokenized payment methods only: the provider's id and what a billing page shows.
CREATE TABLE @extschema@.payment_methods (
    id                          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id             uuid NOT NULL REFERENCES @extschema@.organizations (id) ON DELETE CASCADE,
    provider                    text NOT NULL CONSTRAINT payment_methods_provider_check CHECK (provider IN ('stripe', 'lemon_squeezy')),
    provider_payment_method_id  text NOT NULL CONSTRAINT payment_methods_provider_id_check CHECK (provider_payment_method_id <> ''),
    type                        text NOT NULL DEFAULT 'card',
    brand                       text,
    last4                       text CONSTRAINT payment_methods_last4_check CHECK (last4 ~ '^[0-9]{4}$'),
    exp_month                   integer CONSTRAINT payment_methods_exp_month_check CHECK (exp_month BETWEEN 1 AND 12),
    exp_year                    integer CONSTRAINT payment_methods_exp_year_check CHECK (exp_year BETWEEN 2000 AND 2200),
    is_default                  boolean NOT NULL DEFAULT false,
    provider_synced_at          timestamptz,
    created_at                  timestamptz NOT NULL DEFAULT now(),
    updated_at                  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT payment_methods_provider_key UNIQUE (provider, provider_payment_method_id),
    -- At most one default per organization, checked at the end of each statement (so that one
    -- UPDATE can move the default); keep_one_default_payment_method() makes it at least one.
    CONSTRAINT payment_methods_one_default EXCLUDE USING btree (organization_id WITH =) WHERE (is_default)
        DEFERRABLE INITIALLY IMMEDIATE
);
COMMENT ON TABLE @extschema@.payment_methods IS
    'Tokenized payment methods (no card numbers): exactly one default per organization that has any.';
CREATE INDEX payment_methods_organization_idx ON @extschema@.payment_methods (organization_id);

-- An organization with payment methods has a default: when none is left (the default was
-- detached or unset), the one the provider reported most recently becomes it. Not during a
-- restore, which brings the flags.
CREATE FUNCTION @extschema@.keep_one_default_payment_method()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, @extschema@, pg_temp
AS $$
DECLARE
    org uuid := CASE TG_OP WHEN 'DELETE' THEN OLD.organization_id ELSE NEW.organization_id END;
BEGIN
    IF @extschema@.restore_in_progress() THEN
        RETURN NULL;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM @extschema@.payment_methods m WHERE m.organization_id = org AND m.is_default) THEN
        UPDATE @extschema@.payment_methods SET is_default = true
        WHERE id = (SELECT m.id FROM @extschema@.payment_methods m WHERE m.organization_id = org
                    ORDER BY m.provider_synced_at DESC NULLS LAST, m.created_at DESC, m.id LIMIT 1);
    END IF;
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION @extschema@.keep_one_default_payment_method() FROM PUBLIC, anon, authenticated, service_role;
CREATE TRIGGER keep_one_default_payment_method
    AFTER INSERT OR DELETE OR UPDATE OF is_default, organization_id ON @extschema@.payment_methods
    FOR EACH ROW EXECUTE FUNCTION @extschema@.keep_one_default_payment_method();

-- Payments and refunds. Stripe: one row per payment intent (its charge's and its own events
-- update the same row), or per charge without one; Lemon Squeezy: per subscription invoice
-- ("subscription_invoice:<id>") or order ("order:<id>").
CREATE TABLE @extschema@.payment_transactions (
    id                          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id             uuid NOT NULL REFERENCES @extschema@.organizations (id) ON DELETE CASCADE,
    provider                    text NOT NULL CONSTRAINT payment_transactions_provider_check CHECK (provider IN ('stripe', 'lemon_squeezy')),
    provider_transaction_id     text NOT NULL CONSTRAINT payment_transactions_provider_id_check CHECK (provider_transaction_id <> ''),
    provider_invoice_id         text,
    status                      text NOT NULL CONSTRAINT payment_transactions_status_check
                                CHECK (status IN ('pending', 'succeeded', 'failed', 'partially_refunded', 'refunded')),
    amount                      bigint NOT NULL CONSTRAINT payment_transactions_amount_check CHECK (amount >= 0),
    amount_refunded             bigint NOT NULL DEFAULT 0,
    currency                    text CONSTRAINT payment_transactions_currency_check CHECK (currency ~ '^[a-z]{3}$'),
    payment_method_brand        text,
    payment_method_last4        text,
    failure_code                text,
    failure_message             text,
    provider_created_at         timestamptz,
    provider_synced_at          timestamptz,
    created_at                  timestamptz NOT NULL DEFAULT now(),
    updated_at                  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT payment_transactions_provider_key UNIQUE (provider, provider_transaction_id),
    CONSTRAINT payment_transactions_refund_check CHECK (amount_refunded BETWEEN 0 AND amount)
);
COMMENT ON TABLE @extschema@.payment_transactions IS
    'Payments and refunds reported by the provider, one row per payment.';
CREATE INDEX payment_transactions_organization_idx
    ON @extschema@.payment_transactions (organization_id, provider_created_at DESC);

CREATE TRIGGER update_invoices_updated_at
    BEFORE UPDATE ON @extschema@.invoices
    FOR EACH ROW EXECUTE FUNCTION @extschema@.update_updated_at_column();
CREATE TRIGGER update_payment_methods_updated_at
    BEFORE UPDATE ON @extschema@.payment_methods
    FOR EACH ROW EXECUTE FUNCTION @extschema@.update_updated_at_column();
CREATE TRIGGER update_payment_transactions_updated_at
    BEFORE UPDATE ON @extschema@.payment_transactions
    FOR EACH ROW EXECUTE FUNCTION @extschema@.update_updated_at_column();

SELECT pg_catalog.pg_extension_config_dump('@extschema@.invoices', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.invoice_line_items', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.payment_methods', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.payment_transactions', '');

REVOKE ALL ON @extschema@.invoices, @extschema@.invoice_line_items, @extschema@.payment_methods,
              @extschema@.payment_transactions
    FROM PUBLIC, anon, authenticated, service_role;
GRANT SELECT ON @extschema@.invoices, @extschema@.invoice_line_items, @extschema@.payment_methods,
                @extschema@.payment_transactions
    TO authenticated;
GRANT SELECT, INSERT, UPDATE, DELETE ON @extschema@.invoices, @extschema@.invoice_line_items,
                                        @extschema@.payment_methods, @extschema@.payment_transactions
    TO service_role;

ALTER TABLE @extschema@.invoices ENABLE ROW LEVEL SECURITY;
ALTER TABLE @extschema@.invoice_line_items ENABLE ROW LEVEL SECURITY;
ALTER TABLE @extschema@.payment_methods ENABLE ROW LEVEL SECURITY;
ALTER TABLE @extschema@.payment_transactions ENABLE ROW LEVEL SECURITY;

CREATE POLICY invoices_select_billing ON @extschema@.invoices
    FOR SELECT TO authenticated
    USING (organization_id = ANY (ARRAY(SELECT @extschema@.current_user_permitted_org_ids('billing.read'))));
CREATE POLICY invoices_service_role_all ON @extschema@.invoices
    FOR ALL TO service_role USING (true) WITH CHECK (true);
CREATE POLICY invoice_line_items_select_billing ON @extschema@.invoice_line_items
    FOR SELECT TO authenticated
    USING (organization_id = ANY (ARRAY(SELECT @extschema@.current_user_permitted_org_ids('billing.read'))));
CREATE POLICY invoice_line_items_service_role_all ON @extschema@.invoice_line_items
    FOR ALL TO service_role USING (true) WITH CHECK (true);
CREATE POLICY payment_methods_select_billing ON @extschema@.payment_methods
    FOR SELECT TO authenticated
    USING (organization_id = ANY (ARRAY(SELECT @extschema@.current_user_permitted_org_ids('billing.read'))));
CREATE POLICY payment_methods_service_role_all ON @extschema@.payment_methods
    FOR ALL TO service_role USING (true) WITH CHECK (true);
CREATE POLICY payment_transactions_select_billing ON @extschema@.payment_transactions
    FOR SELECT TO authenticated
    USING (organization_id = ANY (ARRAY(SELECT @extschema@.current_user_permitted_org_ids('billing.read'))));
CREATE POLICY payment_transactions_service_role_all ON @extschema@.payment_transactions
    FOR ALL TO service_role USING (true) WITH CHECK (true);
