-- Coupons and their redemptions (seed 002 §4, seed 004 §1; src/coupons.rs). The service role
-- keeps the catalog; an organization's billing managers redeem a code with redeem_coupon()
-- and the application applies the answer's provider coupon at checkout. One redemption per
-- organization and coupon; max_redemptions holds under concurrency (the redemption count is
-- a column the redeeming transactions update, so concurrent ones queue on the coupon's row).

CREATE TABLE @extschema@.coupons (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    -- Codes are matched case-insensitively and stored upper-case.
    code                text NOT NULL CONSTRAINT coupons_code_check CHECK (code ~ '^[A-Z0-9][A-Z0-9_-]{2,39}$'),
    name                text,
    discount_type       text NOT NULL CONSTRAINT coupons_discount_type_check CHECK (discount_type IN ('percent', 'fixed')),
    percent_off         numeric(5, 2) CONSTRAINT coupons_percent_off_check CHECK (percent_off > 0 AND percent_off <= 100),
    -- In the currency's minor unit.
    amount_off          bigint CONSTRAINT coupons_amount_off_check CHECK (amount_off > 0),
    currency            text CONSTRAINT coupons_currency_check CHECK (currency ~ '^[a-z]{3}$'),
    duration            text NOT NULL DEFAULT 'once' CONSTRAINT coupons_duration_check
                        CHECK (duration IN ('once', 'repeating', 'forever')),
    duration_in_months  integer CONSTRAINT coupons_duration_in_months_check CHECK (duration_in_months BETWEEN 1 AND 120),
    valid_from          timestamptz,
    valid_until         timestamptz,
    max_redemptions     integer CONSTRAINT coupons_max_redemptions_check CHECK (max_redemptions >= 1),
    times_redeemed      integer NOT NULL DEFAULT 0,
    active              boolean NOT NULL DEFAULT true,
    -- The provider's coupon or promotion code the application applies at checkout.
    provider            text CONSTRAINT coupons_provider_check CHECK (provider IN ('stripe', 'lemon_squeezy')),
    provider_coupon_id  text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT coupons_code_key UNIQUE (code),
    CONSTRAINT coupons_discount_check CHECK (CASE discount_type
        WHEN 'percent' THEN percent_off IS NOT NULL AND amount_off IS NULL
        ELSE amount_off IS NOT NULL AND currency IS NOT NULL AND percent_off IS NULL END),
    CONSTRAINT coupons_duration_months_check CHECK ((duration = 'repeating') = (duration_in_months IS NOT NULL)),
    CONSTRAINT coupons_validity_check CHECK (valid_until IS NULL OR valid_from IS NULL OR valid_until > valid_from),
    CONSTRAINT coupons_times_redeemed_check
        CHECK (times_redeemed >= 0 AND (max_redemptions IS NULL OR times_redeemed <= max_redemptions))
);
COMMENT ON TABLE @extschema@.coupons IS
    'Discount codes: percent or fixed, a validity window, a redemption cap, optionally restricted to plans (coupon_plans).';

-- A coupon with rows here applies to these plans only.
CREATE TABLE @extschema@.coupon_plans (
    coupon_id  uuid NOT NULL REFERENCES @extschema@.coupons (id) ON DELETE CASCADE,
    plan       text NOT NULL REFERENCES @extschema@.plans (key) ON UPDATE CASCADE ON DELETE CASCADE,
    PRIMARY KEY (coupon_id, plan)
);
CREATE INDEX coupon_plans_plan_idx ON @extschema@.coupon_plans (plan);

CREATE TABLE @extschema@.coupon_redemptions (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    coupon_id        uuid NOT NULL REFERENCES @extschema@.coupons (id) ON DELETE CASCADE,
    organization_id  uuid NOT NULL REFERENCES @extschema@.organizations (id) ON DELETE CASCADE,
    -- The plan it was redeemed for, and who redeemed it (no foreign key: the record stays).
    plan             text REFERENCES @extschema@.plans (key) ON UPDATE CASCADE ON DELETE SET NULL,
    redeemed_by      uuid,
    redeemed_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT coupon_redemptions_once_per_organization UNIQUE (coupon_id, organization_id)
);
CREATE INDEX coupon_redemptions_organization_idx ON @extschema@.coupon_redemptions (organization_id);

-- Codes are stored upper-case, whoever writes them.
CREATE FUNCTION @extschema@.normalize_coupon_code()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    NEW.code := upper(btrim(NEW.code));
    RETURN NEW;
END
$$;
REVOKE ALL ON FUNCTION @extschema@.normalize_coupon_code() FROM PUBLIC, anon, authenticated, service_role;

-- The count of redemptions, kept by every insert and delete of one (the RPC's or the service
-- role's own): a redemption beyond max_redemptions is refused with 54000. The UPDATE makes
-- concurrent redemptions of one coupon wait for each other (and, under REPEATABLE READ, fail
-- with 40001 to be retried) instead of both reading the last free slot. A restore brings the
-- count with the coupon.
CREATE FUNCTION @extschema@.count_coupon_redemptions()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, @extschema@, pg_temp
AS $$
DECLARE
    redeemed integer;
BEGIN
    IF @extschema@.restore_in_progress() THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'DELETE' THEN
        UPDATE @extschema@.coupons SET times_redeemed = greatest(times_redeemed - 1, 0) WHERE id = OLD.coupon_id;
        RETURN NULL;
    END IF;
    UPDATE @extschema@.coupons c SET times_redeemed = c.times_redeemed + 1
    WHERE c.id = NEW.coupon_id AND (c.max_redemptions IS NULL OR c.times_redeemed < c.max_redemptions)
    RETURNING c.times_redeemed INTO redeemed;
    IF redeemed IS NULL THEN
        RAISE EXCEPTION 'coupon % has been redeemed as often as it may be',
            (SELECT c.code FROM @extschema@.coupons c WHERE c.id = NEW.coupon_id)
            USING ERRCODE = '54000', HINT = 'Its max_redemptions is reached.';
    END IF;
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION @extschema@.count_coupon_redemptions() FROM PUBLIC, anon, authenticated, service_role;

CREATE TRIGGER normalize_coupon_code
    BEFORE INSERT OR UPDATE OF code ON @extschema@.coupons
    FOR EACH ROW EXECUTE FUNCTION @extschema@.normalize_coupon_code();
CREATE TRIGGER update_coupons_updated_at
    BEFORE UPDATE ON @extschema@.coupons
    FOR EACH ROW EXECUTE FUNCTION @extschema@.update_updated_at_column();
CREATE TRIGGER count_coupon_redemptions
    AFTER INSERT OR DELETE ON @extschema@.coupon_redemptions
    FOR EACH ROW EXECUTE FUNCTION @extschema@.count_coupon_redemptions();

SELECT pg_catalog.pg_extension_config_dump('@extschema@.coupons', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.coupon_plans', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.coupon_redemptions', '');

-- Codes are not published: members redeem through redeem_coupon(); billing readers see their
-- organization's redemptions.
REVOKE ALL ON @extschema@.coupons, @extschema@.coupon_plans, @extschema@.coupon_redemptions
    FROM PUBLIC, anon, authenticated, service_role;
GRANT SELECT ON @extschema@.coupon_redemptions TO authenticated;
GRANT SELECT, INSERT, UPDATE, DELETE ON @extschema@.coupons, @extschema@.coupon_plans, @extschema@.coupon_redemptions
    TO service_role;
ALTER TABLE @extschema@.coupons ENABLE ROW LEVEL SECURITY;
ALTER TABLE @extschema@.coupon_plans ENABLE ROW LEVEL SECURITY;
ALTER TABLE @extschema@.coupon_redemptions ENABLE ROW LEVEL SECURITY;
CREATE POLICY coupons_service_role_all ON @extschema@.coupons
    FOR ALL TO service_role USING (true) WITH CHECK (true);
CREATE POLICY coupon_plans_service_role_all ON @extschema@.coupon_plans
    FOR ALL TO service_role USING (true) WITH CHECK (true);
CREATE POLICY coupon_redemptions_select_billing ON @extschema@.coupon_redemptions
    FOR SELECT TO authenticated
    USING (organization_id = ANY (ARRAY(SELECT @extschema@.current_user_permitted_org_ids('billing.read'))));
CREATE POLICY coupon_redemptions_service_role_all ON @extschema@.coupon_redemptions
    FOR ALL TO service_role USING (true) WITH CHECK (true);

REVOKE ALL ON FUNCTION @extschema@.redeem_coupon(uuid, text, text) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.redeem_coupon(uuid, text, text) TO authenticated, service_role;
