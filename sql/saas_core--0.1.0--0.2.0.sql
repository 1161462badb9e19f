-- saas_core 0.1.0 → 0.2.0, written by hand. The result must equal a fresh 0.2.0 install
-- (tests/upgrade checks the catalogs against each other) and keep every row.
--
-- Order: refuse data 0.2.0's rules cannot hold; release the plain-PostgreSQL auth schema;
-- add the new functions; then each domain in the install order (identity, organizations,
-- entitlements, metering, provisioning); last, hand objects to the owner and repair profiles.

-- ---------------------------------------------------------------------------------------
-- Data that 0.2.0's constraints refuse. Nothing is changed silently: the operator decides.
-- ---------------------------------------------------------------------------------------
DO $check$
DECLARE
    bad bigint;
BEGIN
    SELECT count(*) INTO bad FROM @extschema@.usage_events
    WHERE NOT (quantity <> 0 AND quantity BETWEEN -1e12 AND 1e12);
    IF bad > 0 THEN
        RAISE EXCEPTION 'saas_core 0.2.0: % usage_events rows have a quantity that is NaN, infinite or beyond ±1e12', bad
            USING ERRCODE = 'check_violation',
                  HINT = 'They poison every sum of their organization''s meters. Inspect them with SELECT * FROM usage_events WHERE NOT (quantity BETWEEN -1e12 AND 1e12); delete or correct them, run aggregate_usage over their months, then update again.';
    END IF;
END
$check$;

-- ---------------------------------------------------------------------------------------
-- auth (sql/auth.sql): on plain PostgreSQL 0.1.0 created auth as part of the extension, so
-- DROP EXTENSION took every sign-in account along. Release it, add the columns 0.2.0's
-- shim has, and hand it to the extension's owner. On Supabase none of this is ours.
-- ---------------------------------------------------------------------------------------
DO $auth$
DECLARE
    ext oid := (SELECT oid FROM pg_catalog.pg_extension WHERE extname = 'saas_core');
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_depend
               WHERE classid = 'pg_catalog.pg_class'::pg_catalog.regclass
                 AND objid = 'auth.users'::pg_catalog.regclass
                 AND refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass
                 AND refobjid = ext AND deptype = 'e') THEN
        ALTER TABLE auth.users
            ADD COLUMN phone_confirmed_at timestamptz,
            ADD COLUMN is_anonymous       boolean NOT NULL DEFAULT false,
            ADD COLUMN deleted_at         timestamptz;
        ALTER EXTENSION saas_core DROP TABLE auth.users;
        ALTER TABLE auth.users OWNER TO @extowner@;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_depend
               WHERE classid = 'pg_catalog.pg_namespace'::pg_catalog.regclass
                 AND objid = 'auth'::pg_catalog.regnamespace
                 AND refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass
                 AND refobjid = ext AND deptype = 'e') THEN
        ALTER EXTENSION saas_core DROP SCHEMA auth;
        ALTER SCHEMA auth OWNER TO @extowner@;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_depend
               WHERE classid = 'pg_catalog.pg_proc'::pg_catalog.regclass
                 AND objid = 'auth.uid()'::pg_catalog.regprocedure
                 AND refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass
                 AND refobjid = ext AND deptype = 'e') THEN
        ALTER EXTENSION saas_core DROP FUNCTION auth.uid();
        ALTER FUNCTION auth.uid() OWNER TO @extowner@;
    END IF;
    IF pg_catalog.to_regprocedure('auth.role()') IS NOT NULL
       AND EXISTS (SELECT 1 FROM pg_catalog.pg_depend
                   WHERE classid = 'pg_catalog.pg_proc'::pg_catalog.regclass
                     AND objid = 'auth.role()'::pg_catalog.regprocedure
                     AND refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass
                     AND refobjid = ext AND deptype = 'e') THEN
        ALTER EXTENSION saas_core DROP FUNCTION auth.role();
        ALTER FUNCTION auth.role() OWNER TO @extowner@;
    END IF;
    IF pg_catalog.to_regprocedure('auth.jwt()') IS NOT NULL
       AND EXISTS (SELECT 1 FROM pg_catalog.pg_depend
                   WHERE classid = 'pg_catalog.pg_proc'::pg_catalog.regclass
                     AND objid = 'auth.jwt()'::pg_catalog.regprocedure
                     AND refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass
                     AND refobjid = ext AND deptype = 'e') THEN
        ALTER EXTENSION saas_core DROP FUNCTION auth.jwt();
        ALTER FUNCTION auth.jwt() OWNER TO @extowner@;
    END IF;
END
$auth$;

-- ---------------------------------------------------------------------------------------
-- New C functions (the library also serves 0.1.0's symbols until this script has run).
-- ---------------------------------------------------------------------------------------
CREATE FUNCTION @extschema@."restore_in_progress"() RETURNS bool
STRICT VOLATILE PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'restore_in_progress_sql_wrapper';

CREATE FUNCTION @extschema@."record_auth_dependencies"() RETURNS void
STRICT VOLATILE
LANGUAGE c
AS 'MODULE_PATHNAME', 'record_auth_dependencies_wrapper';

CREATE FUNCTION @extschema@."is_valid_slug"("slug" TEXT) RETURNS bool
IMMUTABLE PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'is_valid_slug_wrapper';

CREATE FUNCTION @extschema@."check_profile"() RETURNS TRIGGER
LANGUAGE c
AS 'MODULE_PATHNAME', 'check_profile_wrapper';

CREATE FUNCTION @extschema@."check_organization"() RETURNS TRIGGER
LANGUAGE c
AS 'MODULE_PATHNAME', 'check_organization_wrapper';

CREATE FUNCTION @extschema@."track_membership"() RETURNS TRIGGER
LANGUAGE c
AS 'MODULE_PATHNAME', 'track_membership_wrapper';

CREATE FUNCTION @extschema@."protect_owner_membership"() RETURNS TRIGGER
LANGUAGE c
AS 'MODULE_PATHNAME', 'protect_owner_membership_wrapper';

CREATE FUNCTION @extschema@."hand_over_organizations"() RETURNS TRIGGER
LANGUAGE c
AS 'MODULE_PATHNAME', 'hand_over_organizations_wrapper';

CREATE FUNCTION @extschema@."provision_auth_user"() RETURNS TRIGGER
LANGUAGE c
AS 'MODULE_PATHNAME', 'provision_auth_user_wrapper';

CREATE FUNCTION @extschema@."sync_auth_user"() RETURNS TRIGGER
LANGUAGE c
AS 'MODULE_PATHNAME', 'sync_auth_user_wrapper';

CREATE FUNCTION @extschema@."remove_auth_user"() RETURNS TRIGGER
LANGUAGE c
AS 'MODULE_PATHNAME', 'remove_auth_user_wrapper';

CREATE FUNCTION @extschema@."transfer_ownership"("org_id" uuid, "new_owner" uuid) RETURNS void
VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, @extschema@, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'transfer_ownership_wrapper';

CREATE FUNCTION @extschema@."provision_existing_accounts_at_install"() RETURNS bigint
STRICT VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, @extschema@, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'provision_existing_accounts_at_install_wrapper';

CREATE FUNCTION @extschema@."get_usage_summary"("org_id" uuid) RETURNS jsonb
STABLE SECURITY DEFINER
SET search_path TO pg_catalog, @extschema@, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'get_usage_summary_wrapper';

CREATE FUNCTION @extschema@."aggregate_usage"() RETURNS jsonb
STRICT VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, @extschema@, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'fold_usage_wrapper';

CREATE FUNCTION @extschema@."create_usage_partition"("month" timestamp with time zone) RETURNS TEXT
VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, @extschema@, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'create_usage_partition_wrapper';

CREATE FUNCTION @extschema@."create_usage_partitions"("months_ahead" INT DEFAULT NULL) RETURNS INT
VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, @extschema@, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'create_usage_partitions_wrapper';

CREATE FUNCTION @extschema@."apply_usage_retention"() RETURNS jsonb
STRICT VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, @extschema@, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'apply_usage_retention_wrapper';

CREATE FUNCTION @extschema@."schedule_usage_maintenance"(
    "rollups" TEXT DEFAULT '* * * * *', "maintenance" TEXT DEFAULT '17 3 * * *'
) RETURNS jsonb
VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, @extschema@, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'schedule_usage_maintenance_wrapper';

CREATE FUNCTION @extschema@."unschedule_usage_maintenance"() RETURNS bigint
STRICT VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, @extschema@, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'unschedule_usage_maintenance_wrapper';

CREATE FUNCTION @extschema@."record_usage"(
    "org_id" uuid, "event_type" TEXT, "quantity" NUMERIC DEFAULT 1, "idempotency_key" TEXT DEFAULT NULL,
    "occurred_at" timestamp with time zone DEFAULT NULL, "metadata" jsonb DEFAULT '{}', "user_id" uuid DEFAULT NULL
) RETURNS jsonb
VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, @extschema@, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'record_usage_wrapper';

CREATE FUNCTION @extschema@."record_usage_batch"("events" jsonb) RETURNS jsonb
VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, @extschema@, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'record_usage_batch_wrapper';

CREATE FUNCTION @extschema@."usage_writer"() RETURNS INT
STRICT STABLE PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'usage_writer_wrapper';

CREATE FUNCTION @extschema@."admit_usage_event"() RETURNS TRIGGER
LANGUAGE c
AS 'MODULE_PATHNAME', 'admit_usage_event_wrapper';

CREATE FUNCTION @extschema@."start_member_usage_tally"() RETURNS TRIGGER
LANGUAGE c
AS 'MODULE_PATHNAME', 'start_member_usage_tally_wrapper';

CREATE FUNCTION @extschema@."count_usage_events"() RETURNS TRIGGER
LANGUAGE c
AS 'MODULE_PATHNAME', 'count_usage_events_wrapper';

CREATE FUNCTION @extschema@."forget_active_users"() RETURNS TRIGGER
LANGUAGE c
AS 'MODULE_PATHNAME', 'forget_active_users_wrapper';

-- Changed implementations, now bound to their 0.2.0 symbols.
CREATE OR REPLACE FUNCTION @extschema@."sync_auth_users"() RETURNS bigint
STRICT VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, @extschema@, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'provision_missing_auth_users_wrapper';

CREATE OR REPLACE FUNCTION @extschema@."create_organization"(
    "name" TEXT, "org_type" TEXT DEFAULT 'business', "slug" TEXT DEFAULT NULL
) RETURNS uuid
VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, @extschema@, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'create_team_organization_wrapper';

CREATE OR REPLACE FUNCTION @extschema@."check_feature_access"(
    "user_id" uuid, "feature_key" TEXT, "org_id" uuid
) RETURNS jsonb
STABLE SECURITY DEFINER
SET search_path TO pg_catalog, @extschema@, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'feature_access_wrapper';

CREATE OR REPLACE FUNCTION @extschema@."aggregate_usage"(
    "period" TEXT, "start_time" timestamp with time zone, "end_time" timestamp with time zone
) RETURNS bigint
VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, @extschema@, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'recompute_usage_rollups_wrapper';

-- ---------------------------------------------------------------------------------------
-- backup (sql/backup.sql)
-- ---------------------------------------------------------------------------------------
SELECT @extschema@.record_auth_dependencies();
REVOKE ALL ON FUNCTION @extschema@.record_auth_dependencies() FROM PUBLIC, anon, authenticated, service_role;
REVOKE ALL ON FUNCTION @extschema@.restore_in_progress() FROM PUBLIC, anon, authenticated, service_role;

CREATE FUNCTION @extschema@.replace_seeded_rows()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, @extschema@, pg_temp
AS $$
BEGIN
    IF @extschema@.restore_in_progress() THEN
        IF TG_TABLE_NAME IN ('feature_definitions', 'plans') THEN
            DELETE FROM @extschema@.plan_features;
        END IF;
        EXECUTE pg_catalog.format('DELETE FROM %I.%I', TG_TABLE_SCHEMA, TG_TABLE_NAME);
    END IF;
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION @extschema@.replace_seeded_rows() FROM PUBLIC, anon, authenticated, service_role;

-- ---------------------------------------------------------------------------------------
-- identity (sql/identity.sql)
-- ---------------------------------------------------------------------------------------
-- 0.1.0's signup trigger goes; provisioning's saas_core_* triggers replace it below.
DO $old_trigger$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_trigger
               WHERE tgrelid = 'auth.users'::pg_catalog.regclass AND tgname = 'on_auth_user_created'
                 AND tgfoid = '@extschema@.handle_new_user()'::pg_catalog.regprocedure) THEN
        DROP TRIGGER on_auth_user_created ON auth.users;
    END IF;
END
$old_trigger$;
DROP FUNCTION @extschema@.handle_new_user();

-- Profiles no longer reference auth.users with a foreign key (see sql/identity.sql).
ALTER TABLE @extschema@.users DROP CONSTRAINT users_id_fkey;
ALTER TABLE @extschema@.users
    ADD COLUMN phone        text,
    ADD COLUMN is_anonymous boolean NOT NULL DEFAULT false,
    ADD COLUMN deleted_at   timestamptz;

-- The sign-in email and phone as auth.users has them now (0.1.0 copied the email at signup
-- only); soft deletes are applied by sync_auth_users() at the end. updated_at is left as is.
ALTER TABLE @extschema@.users DISABLE TRIGGER update_users_updated_at;
UPDATE @extschema@.users u
SET email = a.j ->> 'email',
    phone = a.j ->> 'phone',
    is_anonymous = coalesce((a.j ->> 'is_anonymous')::boolean, false)
FROM (SELECT x.id, pg_catalog.to_jsonb(x) AS j FROM auth.users x) a
WHERE a.id = u.id
  AND (u.email, u.phone, u.is_anonymous)
      IS DISTINCT FROM (a.j ->> 'email', a.j ->> 'phone', coalesce((a.j ->> 'is_anonymous')::boolean, false));
ALTER TABLE @extschema@.users ENABLE TRIGGER update_users_updated_at;

COMMENT ON COLUMN @extschema@.users.email IS
    'The sign-in email, followed from auth.users (changes arrive through the auth.users update trigger).';
COMMENT ON COLUMN @extschema@.users.phone IS
    'The sign-in phone, followed from auth.users. phone_country_code/phone_number are the user''s own contact details.';
COMMENT ON COLUMN @extschema@.users.is_anonymous IS
    'An anonymous sign-in (Supabase anonymous auth): a personal organization, no team organizations, no username.';
COMMENT ON COLUMN @extschema@.users.deleted_at IS
    'When the account was soft-deleted in auth.users; the profile''s personal data is cleared then.';

CREATE TRIGGER check_profile
    BEFORE INSERT OR UPDATE OF id, username ON @extschema@.users
    FOR EACH ROW EXECUTE FUNCTION @extschema@.check_profile();

REVOKE ALL ON FUNCTION @extschema@.check_profile() FROM PUBLIC, anon, authenticated, service_role;
ALTER FUNCTION @extschema@.check_profile()
    SECURITY DEFINER SET search_path = pg_catalog, @extschema@, pg_temp;

-- ---------------------------------------------------------------------------------------
-- organizations (sql/organizations.sql)
-- ---------------------------------------------------------------------------------------
ALTER TABLE @extschema@.organizations DROP CONSTRAINT organizations_slug_check;
ALTER TABLE @extschema@.organizations
    ADD CONSTRAINT organizations_slug_check CHECK (@extschema@.is_valid_slug(slug));
ALTER TABLE @extschema@.organizations
    ADD COLUMN member_count integer NOT NULL DEFAULT 0
        CONSTRAINT organizations_member_count_check CHECK (member_count >= 0);
COMMENT ON COLUMN @extschema@.organizations.member_count IS
    'Members of the organization, kept by the track_membership trigger. The seat limit (plan max_seats) counts it.';

-- 0.1.0's seat trigger counted members on every insert; track_membership replaces it.
DROP TRIGGER enforce_seat_limit ON @extschema@.organization_members;
DROP FUNCTION @extschema@.enforce_seat_limit();

ALTER TABLE @extschema@.organizations DISABLE TRIGGER update_organizations_updated_at;
ALTER TABLE @extschema@.organization_members DISABLE TRIGGER update_organization_members_updated_at;
-- 0.2.0 keeps the owner a member with the role owner. 0.1.0 let a co-owner remove the
-- creator, or an owner's role change: such teams pass to their longest-standing owner;
-- failing that, the owner's membership gets the role back, or is added again.
WITH broken AS (
    SELECT o.id, o.owner_id,
           (SELECT m.user_id FROM @extschema@.organization_members m
            WHERE m.organization_id = o.id AND m.role = 'owner'
            ORDER BY m.created_at, m.user_id LIMIT 1) AS co_owner
    FROM @extschema@.organizations o
    WHERE NOT EXISTS (SELECT 1 FROM @extschema@.organization_members m
                      WHERE m.organization_id = o.id AND m.user_id = o.owner_id AND m.role = 'owner')
)
UPDATE @extschema@.organizations o SET owner_id = b.co_owner
FROM broken b WHERE o.id = b.id AND b.co_owner IS NOT NULL;
UPDATE @extschema@.organization_members m SET role = 'owner'
FROM @extschema@.organizations o
WHERE o.id = m.organization_id AND m.user_id = o.owner_id AND m.role <> 'owner';
INSERT INTO @extschema@.organization_members (organization_id, user_id, role)
SELECT o.id, o.owner_id, 'owner' FROM @extschema@.organizations o
WHERE NOT EXISTS (SELECT 1 FROM @extschema@.organization_members m
                  WHERE m.organization_id = o.id AND m.user_id = o.owner_id);
UPDATE @extschema@.organizations o
SET member_count = (SELECT count(*) FROM @extschema@.organization_members m WHERE m.organization_id = o.id);
ALTER TABLE @extschema@.organizations ENABLE TRIGGER update_organizations_updated_at;
ALTER TABLE @extschema@.organization_members ENABLE TRIGGER update_organization_members_updated_at;

CREATE TRIGGER check_organization
    BEFORE INSERT OR UPDATE OF slug ON @extschema@.organizations
    FOR EACH ROW EXECUTE FUNCTION @extschema@.check_organization();
CREATE TRIGGER track_membership
    AFTER INSERT OR DELETE OR UPDATE OF organization_id, user_id ON @extschema@.organization_members
    FOR EACH ROW EXECUTE FUNCTION @extschema@.track_membership();
CREATE TRIGGER protect_owner_membership
    BEFORE DELETE OR UPDATE ON @extschema@.organization_members
    FOR EACH ROW EXECUTE FUNCTION @extschema@.protect_owner_membership();
CREATE TRIGGER hand_over_organizations
    BEFORE DELETE ON @extschema@.users
    FOR EACH ROW EXECUTE FUNCTION @extschema@.hand_over_organizations();

-- The caller's organizations, read straight from organization_members' index on user_id
-- (src/caller_organizations.rs): no policy recursion, no SECURITY DEFINER switch, no query
-- to plan, for the one call every RLS statement makes.
CREATE OR REPLACE FUNCTION @extschema@.current_user_org_ids(roles text[] DEFAULT NULL)
RETURNS SETOF uuid
LANGUAGE c STABLE ROWS 10
AS 'MODULE_PATHNAME', 'current_user_org_ids_wrapper';

ALTER POLICY organizations_select_member ON @extschema@.organizations
    USING (id IN (SELECT @extschema@.current_user_org_ids()));

REVOKE ALL ON FUNCTION @extschema@.transfer_ownership(uuid, uuid) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.transfer_ownership(uuid, uuid) TO authenticated, service_role;
REVOKE ALL ON FUNCTION @extschema@.is_valid_slug(text) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.is_valid_slug(text) TO anon, authenticated, service_role;
REVOKE ALL ON FUNCTION @extschema@.check_organization() FROM PUBLIC, anon, authenticated, service_role;
REVOKE ALL ON FUNCTION @extschema@.track_membership() FROM PUBLIC, anon, authenticated, service_role;
REVOKE ALL ON FUNCTION @extschema@.protect_owner_membership() FROM PUBLIC, anon, authenticated, service_role;
REVOKE ALL ON FUNCTION @extschema@.hand_over_organizations() FROM PUBLIC, anon, authenticated, service_role;
ALTER FUNCTION @extschema@.check_organization()
    SECURITY DEFINER SET search_path = pg_catalog, @extschema@, pg_temp;
ALTER FUNCTION @extschema@.track_membership()
    SECURITY DEFINER SET search_path = pg_catalog, @extschema@, pg_temp;
ALTER FUNCTION @extschema@.protect_owner_membership()
    SECURITY DEFINER SET search_path = pg_catalog, @extschema@, pg_temp;
ALTER FUNCTION @extschema@.hand_over_organizations()
    SECURITY DEFINER SET search_path = pg_catalog, @extschema@, pg_temp;

-- ---------------------------------------------------------------------------------------
-- billing (sql/billing.sql): plans and prices as data. 0.1.0 listed the plans in two CHECKs;
-- they become rows, referenced by subscriptions and plan features.
-- ---------------------------------------------------------------------------------------
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


ALTER TABLE @extschema@.billing_customers ADD COLUMN provider_synced_at timestamptz;
ALTER TABLE @extschema@.org_subscriptions ADD COLUMN provider_synced_at timestamptz;
ALTER TABLE @extschema@.billing_customers ADD COLUMN default_payment_method_id text;
ALTER TABLE @extschema@.org_subscriptions DROP CONSTRAINT org_subscriptions_plan_check,
    ADD CONSTRAINT org_subscriptions_plan_fkey FOREIGN KEY (plan) REFERENCES @extschema@.plans (key) ON UPDATE CASCADE;
ALTER TABLE @extschema@.plan_features DROP CONSTRAINT plan_features_plan_check,
    ADD CONSTRAINT plan_features_plan_fkey FOREIGN KEY (plan) REFERENCES @extschema@.plans (key)
        ON UPDATE CASCADE ON DELETE CASCADE;

CREATE FUNCTION @extschema@."get_billing_status"(
	"org_id" uuid
) RETURNS jsonb
STABLE SECURITY DEFINER
SET search_path TO pg_catalog, @extschema@, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'get_billing_status_wrapper';
REVOKE ALL ON FUNCTION @extschema@.get_billing_status(uuid) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.get_billing_status(uuid) TO authenticated, service_role;

-- ---------------------------------------------------------------------------------------
-- entitlements (sql/entitlements.sql)
-- ---------------------------------------------------------------------------------------
ALTER TABLE @extschema@.plan_features
    ADD COLUMN enforcement text NOT NULL DEFAULT 'hard'
        CONSTRAINT plan_features_enforcement_check CHECK (enforcement IN ('hard', 'soft'));

CREATE TRIGGER replace_seeded_rows
    BEFORE INSERT ON @extschema@.feature_definitions
    FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.replace_seeded_rows();
CREATE TRIGGER replace_seeded_rows
    BEFORE INSERT ON @extschema@.plan_features
    FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.replace_seeded_rows();

-- 0.1.0 left the catalog out of pg_dump: operator edits were lost in a backup.
SELECT pg_catalog.pg_extension_config_dump('@extschema@.feature_definitions', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.plan_features', '');

REVOKE ALL ON FUNCTION @extschema@.get_usage_summary(uuid) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.get_usage_summary(uuid) TO authenticated, service_role;

-- ---------------------------------------------------------------------------------------
-- metering (sql/metering.sql)
-- ---------------------------------------------------------------------------------------
CREATE FUNCTION @extschema@.usage_bucket_start(period text, at timestamptz)
RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT pg_catalog.date_trunc(CASE period WHEN 'daily' THEN 'day' WHEN 'monthly' THEN 'month' END,
                                 at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
$$;

CREATE FUNCTION @extschema@.usage_bucket_end(period text, at timestamptz)
RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT (pg_catalog.date_trunc(CASE period WHEN 'daily' THEN 'day' WHEN 'monthly' THEN 'month' END,
                                  at AT TIME ZONE 'UTC')
            + CASE period WHEN 'daily' THEN interval '1 day' WHEN 'monthly' THEN interval '1 month' END)
           AT TIME ZONE 'UTC'
$$;

CREATE TABLE @extschema@.usage_settings (
    id                         boolean PRIMARY KEY DEFAULT true CONSTRAINT usage_settings_singleton_check CHECK (id),
    -- How far back the service role may date an event (members record for now).
    late_event_window          interval NOT NULL DEFAULT interval '35 days'
                               CONSTRAINT usage_settings_late_event_window_check
                               CHECK (late_event_window >= interval '0' AND late_event_window <= interval '1 year'),
    -- Raw events older than this are dropped by apply_usage_retention(), a month partition at a
    -- time; NULL keeps them forever. Rollups and idempotency keys are not affected.
    event_retention            interval DEFAULT NULL,
    -- How long a recorded idempotency key keeps deduplicating (at least the late-event window).
    idempotency_key_retention  interval NOT NULL DEFAULT interval '45 days',
    -- How many months of partitions create_usage_partitions() keeps ahead of now.
    partitions_ahead           integer NOT NULL DEFAULT 3
                               CONSTRAINT usage_settings_partitions_ahead_check CHECK (partitions_ahead BETWEEN 1 AND 24),
    updated_at                 timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT usage_settings_retention_check
        CHECK (event_retention IS NULL OR event_retention >= late_event_window + interval '1 month'),
    CONSTRAINT usage_settings_key_retention_check CHECK (idempotency_key_retention >= late_event_window)
);
INSERT INTO @extschema@.usage_settings DEFAULT VALUES;

COMMENT ON TABLE @extschema@.usage_settings IS
    'Metering configuration (one row): late-event window, retention of raw events and idempotency keys, partitions kept ahead.';

CREATE TRIGGER replace_seeded_rows
    BEFORE INSERT ON @extschema@.usage_settings
    FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.replace_seeded_rows();
CREATE TRIGGER update_usage_settings_updated_at
    BEFORE UPDATE ON @extschema@.usage_settings
    FOR EACH ROW EXECUTE FUNCTION @extschema@.update_updated_at_column();

-- 0.1.0's events move into the partitioned log. Their rollups were kept live by 0.1.0: they
-- stay as they are, and the events are moved before the counting trigger exists.
DROP TRIGGER rollup_usage_events ON @extschema@.usage_events;
DROP FUNCTION @extschema@.rollup_usage_events();
-- The one global advisory lock key any role could hold to stall every tenant's writes.
DROP FUNCTION @extschema@.usage_rollup_lock_key();
ALTER TABLE @extschema@.usage_events RENAME TO usage_events_v0_1;
ALTER EXTENSION saas_core DROP TABLE @extschema@.usage_events_v0_1;

CREATE TABLE @extschema@.usage_events (
    id               uuid NOT NULL DEFAULT gen_random_uuid(),
    organization_id  uuid NOT NULL CONSTRAINT usage_events_organization_id_fkey
                     REFERENCES @extschema@.organizations (id) ON DELETE CASCADE,
    user_id          uuid DEFAULT auth.uid() CONSTRAINT usage_events_user_id_fkey
                     REFERENCES @extschema@.users (id) ON DELETE SET NULL,
    -- record_created, api_call, automation_run, storage_used, schedule_executed,
    -- ai_tokens_used, user_active, or an application's own.
    event_type       text NOT NULL CONSTRAINT usage_events_event_type_check CHECK (event_type ~ '^[a-z][a-z0-9_]{0,62}$'),
    -- A delta in the unit of the limit it counts against; negative only as a service-role
    -- correction. Finite and at most 1e12 in magnitude: NaN and Infinity are numerics, and
    -- one of them would poison every sum of the organization's meters.
    quantity         numeric NOT NULL DEFAULT 1
                     CONSTRAINT usage_events_quantity_finite_check
                     CHECK (quantity <> 0 AND quantity BETWEEN -1e12 AND 1e12),
    metadata         jsonb NOT NULL DEFAULT '{}'::jsonb CONSTRAINT usage_events_metadata_check CHECK (jsonb_typeof(metadata) = 'object'),
    -- When it happened (its buckets) and when it was recorded. Only the service role dates
    -- an event, within usage_settings.late_event_window.
    occurred_at      timestamptz NOT NULL DEFAULT now(),
    received_at      timestamptz NOT NULL DEFAULT now(),
    -- A caller's request key: unique per organization (usage_idempotency_keys), kept longer
    -- than the event itself.
    idempotency_key  text CONSTRAINT usage_events_idempotency_key_check CHECK (char_length(idempotency_key) BETWEEN 1 AND 255),
    -- Recorded beyond a soft limit (overage, for usage-based billing).
    over_limit       boolean NOT NULL DEFAULT false
) PARTITION BY RANGE (occurred_at);

COMMENT ON TABLE @extschema@.usage_events IS
    'Raw usage events, partitioned by month of occurred_at. Record with record_usage() (limits, idempotency) or INSERT.';

-- Keys and indexes live on each partition (create_usage_partition), not on this parent: a
-- restore re-attaches the dumped partitions, and indexes inherited from the parent would be
-- created twice.

COMMENT ON TABLE @extschema@.usage_aggregations IS
    'Daily and monthly rollups. Recent counts wait in usage_counters until aggregate_usage() folds them in; check_feature_access reads both.';

-- Rollup maintenance: held (FOR UPDATE) by aggregate_usage while it folds or recomputes.
CREATE TABLE @extschema@.usage_rollup_state (
    id               boolean PRIMARY KEY DEFAULT true CONSTRAINT usage_rollup_state_singleton_check CHECK (id),
    folded_at        timestamptz,
    -- The oldest month whose raw events are kept (apply_usage_retention moves it forward).
    events_kept_since timestamptz
);
INSERT INTO @extschema@.usage_rollup_state DEFAULT VALUES;
CREATE TRIGGER replace_seeded_rows
    BEFORE INSERT ON @extschema@.usage_rollup_state
    FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.replace_seeded_rows();

-- Who was active in a bucket (the distinct users behind usage_aggregations.unique_users), so
-- that each user counts once per bucket, whoever writes their events.
CREATE TABLE @extschema@.usage_active_users (
    organization_id  uuid NOT NULL REFERENCES @extschema@.organizations (id) ON DELETE CASCADE,
    event_type       text NOT NULL,
    -- 'daily' or 'monthly', as written by counting.rs alone: no CHECK here, PostgreSQL would
    -- re-read its expression on every counting statement (about a tenth of an insert's cost).
    period           text NOT NULL,
    period_start     timestamptz NOT NULL,
    user_id          uuid NOT NULL,
    CONSTRAINT usage_active_users_pkey PRIMARY KEY (organization_id, event_type, period, period_start, user_id)
);

-- Buckets whose distinct-user count a correction (UPDATE or DELETE of events) made stale;
-- the next aggregate_usage() recounts them.
CREATE TABLE @extschema@.usage_dirty_buckets (
    organization_id  uuid NOT NULL REFERENCES @extschema@.organizations (id) ON DELETE CASCADE,
    event_type       text NOT NULL,
    period           text NOT NULL CONSTRAINT usage_dirty_buckets_period_check CHECK (period IN ('daily', 'monthly')),
    period_start     timestamptz NOT NULL,
    CONSTRAINT usage_dirty_buckets_pkey PRIMARY KEY (organization_id, event_type, period, period_start)
);

-- Partitions for every month 0.1.0 has events in, and for the late-event window and ahead.
SELECT @extschema@.create_usage_partition(m)
FROM (SELECT DISTINCT @extschema@.usage_bucket_start('monthly', e.created_at) AS m
      FROM @extschema@.usage_events_v0_1 e) months;
SELECT @extschema@.create_usage_partitions();
-- 0.1.0's created_at was both times.
INSERT INTO @extschema@.usage_events (id, organization_id, user_id, event_type, quantity, metadata, occurred_at, received_at)
SELECT e.id, e.organization_id, e.user_id, e.event_type, e.quantity, e.metadata, e.created_at, e.created_at
FROM @extschema@.usage_events_v0_1 e
ORDER BY e.created_at, e.id;
DROP TABLE @extschema@.usage_events_v0_1;
UPDATE @extschema@.usage_rollup_state SET folded_at = now();
INSERT INTO @extschema@.usage_active_users (organization_id, event_type, period, period_start, user_id)
SELECT DISTINCT e.organization_id, e.event_type, p.period, @extschema@.usage_bucket_start(p.period, e.occurred_at), e.user_id
FROM @extschema@.usage_events e CROSS JOIN (VALUES ('daily'), ('monthly')) AS p (period)
WHERE e.user_id IS NOT NULL;

-- Live counts. Every INSERT into usage_events adds its events to the counter rows of its
-- buckets, in the same transaction, one row per writing backend ("writer"): concurrent writers
-- of one organization never update the same row, so none waits for another's commit.
-- aggregate_usage() folds these rows into usage_aggregations; readers add the two.
CREATE TABLE @extschema@.usage_counters (
    organization_id  uuid NOT NULL REFERENCES @extschema@.organizations (id) ON DELETE CASCADE,
    event_type       text NOT NULL,
    period           text NOT NULL,  -- 'daily' or 'monthly'; no CHECK, as in usage_active_users
    period_start     timestamptz NOT NULL,
    writer           integer NOT NULL,
    total_quantity   numeric NOT NULL DEFAULT 0,
    event_count      bigint NOT NULL DEFAULT 0,
    unique_users     bigint NOT NULL DEFAULT 0,
    CONSTRAINT usage_counters_pkey PRIMARY KEY (organization_id, event_type, period, period_start, writer)
);

COMMENT ON TABLE @extschema@.usage_counters IS
    'Counts not folded into usage_aggregations yet, one row per bucket and writing backend.';

-- Counting at write (src/counting.rs): the end of each INSERT adds its events to their
-- buckets' counter rows and its users to usage_active_users (which decides who is new to a
-- bucket, once, whoever writes concurrently).
CREATE TRIGGER count_usage_events
    AFTER INSERT ON @extschema@.usage_events
    REFERENCING NEW TABLE AS new_events
    FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.count_usage_events();
-- Backends remember users they saw counted in a bucket and skip probing usage_active_users for
-- their next events; any deletion there makes every backend forget (at its commit).
CREATE TRIGGER forget_active_users
    AFTER DELETE OR TRUNCATE ON @extschema@.usage_active_users
    FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.forget_active_users();

-- Corrections: an UPDATE or DELETE of events takes their quantities out of (and back into)
-- their buckets' counters at once, and marks the buckets for a distinct-user recount by the
-- next aggregate_usage(). A restore loads counters as they were: nothing to correct then.
CREATE FUNCTION @extschema@.apply_usage_corrections(
    organization_ids uuid[], event_types text[], occurred timestamptz[], quantities numeric[], events integer[])
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, @extschema@, pg_temp
AS $$
    WITH change AS (
        SELECT * FROM unnest(organization_ids, event_types, occurred, quantities, events)
                      AS c (organization_id, event_type, occurred_at, quantity, events)
        -- An organization being deleted takes its counters along.
        WHERE EXISTS (SELECT 1 FROM @extschema@.organizations o WHERE o.id = c.organization_id)
    ), buckets AS (
        SELECT c.organization_id, c.event_type, p.period,
               @extschema@.usage_bucket_start(p.period, c.occurred_at) AS period_start,
               sum(c.quantity) AS quantity, sum(c.events) AS events
        FROM change c CROSS JOIN (VALUES ('daily'), ('monthly')) AS p (period)
        GROUP BY 1, 2, 3, 4
    ), dirty AS (
        INSERT INTO @extschema@.usage_dirty_buckets (organization_id, event_type, period, period_start)
        SELECT organization_id, event_type, period, period_start FROM buckets
        ON CONFLICT DO NOTHING
    )
    INSERT INTO @extschema@.usage_counters AS c
        (organization_id, event_type, period, period_start, writer, total_quantity, event_count, unique_users)
    SELECT organization_id, event_type, period, period_start, @extschema@.usage_writer(), quantity, events, 0
    FROM buckets
    ON CONFLICT (organization_id, event_type, period, period_start, writer) DO UPDATE
        SET total_quantity = c.total_quantity + excluded.total_quantity,
            event_count    = c.event_count + excluded.event_count
$$;

CREATE FUNCTION @extschema@.correct_usage_rollups()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, @extschema@, pg_temp
AS $$
BEGIN
    IF @extschema@.restore_in_progress() THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'UPDATE' THEN
        PERFORM @extschema@.apply_usage_corrections(array_agg(c.organization_id), array_agg(c.event_type),
                                                    array_agg(c.occurred_at), array_agg(c.quantity), array_agg(c.events))
        FROM (SELECT o.organization_id, o.event_type, o.occurred_at, -o.quantity AS quantity, -1 AS events
              FROM old_events o
              UNION ALL
              SELECT n.organization_id, n.event_type, n.occurred_at, n.quantity, 1
              FROM new_events n) c
        HAVING count(*) > 0;
    ELSE
        PERFORM @extschema@.apply_usage_corrections(array_agg(o.organization_id), array_agg(o.event_type),
                                                    array_agg(o.occurred_at), array_agg(-o.quantity), array_agg(-1))
        FROM old_events o
        HAVING count(*) > 0;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER correct_usage_rollups_on_update
    AFTER UPDATE ON @extschema@.usage_events
    REFERENCING OLD TABLE AS old_events NEW TABLE AS new_events
    FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.correct_usage_rollups();
CREATE TRIGGER correct_usage_rollups_on_delete
    AFTER DELETE ON @extschema@.usage_events
    REFERENCING OLD TABLE AS old_events
    FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.correct_usage_rollups();

-- Privileges: members read their organizations' usage and record for themselves (directly
-- or through record_usage); everything else is the service role's.
REVOKE ALL ON @extschema@.usage_events, @extschema@.usage_aggregations, @extschema@.usage_settings,
              @extschema@.usage_rollup_state, @extschema@.usage_active_users, @extschema@.usage_dirty_buckets,
              @extschema@.usage_counters
    FROM PUBLIC, anon, authenticated, service_role;
GRANT SELECT ON @extschema@.usage_events, @extschema@.usage_aggregations TO authenticated;
-- id, occurred_at, received_at and over_limit are not a member's to choose: events are stamped when recorded.
GRANT INSERT (organization_id, user_id, event_type, quantity, metadata, idempotency_key)
    ON @extschema@.usage_events TO authenticated;
GRANT SELECT, INSERT, UPDATE, DELETE ON @extschema@.usage_events, @extschema@.usage_aggregations TO service_role;
GRANT SELECT, UPDATE ON @extschema@.usage_settings TO service_role;
GRANT SELECT ON @extschema@.usage_rollup_state, @extschema@.usage_active_users, @extschema@.usage_dirty_buckets,
                @extschema@.usage_counters
    TO service_role;

ALTER TABLE @extschema@.usage_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE @extschema@.usage_aggregations ENABLE ROW LEVEL SECURITY;
ALTER TABLE @extschema@.usage_settings ENABLE ROW LEVEL SECURITY;
ALTER TABLE @extschema@.usage_rollup_state ENABLE ROW LEVEL SECURITY;
ALTER TABLE @extschema@.usage_active_users ENABLE ROW LEVEL SECURITY;
ALTER TABLE @extschema@.usage_dirty_buckets ENABLE ROW LEVEL SECURITY;
ALTER TABLE @extschema@.usage_counters ENABLE ROW LEVEL SECURITY;

-- "= ANY (ARRAY(...))", not "IN (SELECT ...)": the caller's organizations become one array
-- the planner can use as an index condition, so a read that relies on RLS alone is as fast as
-- one that names its organization.
CREATE POLICY usage_events_select_member ON @extschema@.usage_events
    FOR SELECT TO authenticated
    USING (organization_id = ANY (ARRAY(SELECT @extschema@.current_user_org_ids())));

-- Members record their own usage in their organizations; viewers are read-only, and only
-- the service role may record negative corrections.
CREATE POLICY usage_events_insert_member ON @extschema@.usage_events
    FOR INSERT TO authenticated
    WITH CHECK (
        user_id = (SELECT auth.uid())
        AND quantity > 0
        AND organization_id = ANY (ARRAY(SELECT @extschema@.current_user_org_ids(ARRAY['owner', 'admin', 'member'])))
    );

CREATE POLICY usage_events_service_role_all ON @extschema@.usage_events
    FOR ALL TO service_role USING (true) WITH CHECK (true);

ALTER POLICY usage_aggregations_select_member ON @extschema@.usage_aggregations
    USING (organization_id = ANY (ARRAY(SELECT @extschema@.current_user_org_ids())));

CREATE POLICY usage_settings_service_role ON @extschema@.usage_settings
    FOR ALL TO service_role USING (true) WITH CHECK (true);
CREATE POLICY usage_rollup_state_service_role ON @extschema@.usage_rollup_state
    FOR SELECT TO service_role USING (true);
CREATE POLICY usage_active_users_service_role ON @extschema@.usage_active_users
    FOR SELECT TO service_role USING (true);
CREATE POLICY usage_dirty_buckets_service_role ON @extschema@.usage_dirty_buckets
    FOR SELECT TO service_role USING (true);
CREATE POLICY usage_counters_service_role ON @extschema@.usage_counters
    FOR SELECT TO service_role USING (true);

-- The partitions of usage_events are ordinary tables pg_dump dumps by itself.
SELECT pg_catalog.pg_extension_config_dump('@extschema@.usage_settings', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.usage_rollup_state', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.usage_active_users', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.usage_dirty_buckets', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.usage_counters', '');

REVOKE ALL ON FUNCTION @extschema@.count_usage_events() FROM PUBLIC, anon, authenticated, service_role;
REVOKE ALL ON FUNCTION @extschema@.forget_active_users() FROM PUBLIC, anon, authenticated, service_role;
REVOKE ALL ON FUNCTION @extschema@.usage_writer() FROM PUBLIC, anon, authenticated, service_role;
REVOKE ALL ON FUNCTION @extschema@.apply_usage_corrections(uuid[], text[], timestamptz[], numeric[], integer[])
    FROM PUBLIC, anon, authenticated, service_role;
REVOKE ALL ON FUNCTION @extschema@.correct_usage_rollups() FROM PUBLIC, anon, authenticated, service_role;
REVOKE ALL ON FUNCTION @extschema@.usage_bucket_start(text, timestamptz) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.usage_bucket_start(text, timestamptz) TO authenticated, service_role;
REVOKE ALL ON FUNCTION @extschema@.usage_bucket_end(text, timestamptz) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.usage_bucket_end(text, timestamptz) TO authenticated, service_role;
REVOKE ALL ON FUNCTION @extschema@.aggregate_usage(text, timestamptz, timestamptz) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.aggregate_usage(text, timestamptz, timestamptz) TO service_role;
REVOKE ALL ON FUNCTION @extschema@.aggregate_usage() FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.aggregate_usage() TO service_role;

-- ---------------------------------------------------------------------------------------
-- retention (sql/retention.sql)
-- ---------------------------------------------------------------------------------------

-- A restore re-creates the partitions as ordinary tables, and the target's default privileges
-- (Supabase grants anon, authenticated and service_role everything on new tables in public)
-- apply to them; the dump cannot revoke what the source never had. Once the restore brings
-- the rollup state (after every table exists), the partitions are sealed again.
CREATE FUNCTION @extschema@.seal_usage_partitions()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, @extschema@, pg_temp
AS $$
DECLARE
    part regclass;
BEGIN
    FOR part IN SELECT i.inhrelid::regclass FROM pg_catalog.pg_inherits i
                WHERE i.inhparent = '@extschema@.usage_events'::regclass
    LOOP
        EXECUTE format('REVOKE ALL ON %s FROM PUBLIC, anon, authenticated, service_role', part);
    END LOOP;
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION @extschema@.seal_usage_partitions() FROM PUBLIC, anon, authenticated, service_role;

CREATE TRIGGER seal_usage_partitions
    AFTER INSERT ON @extschema@.usage_rollup_state
    FOR EACH STATEMENT WHEN (@extschema@.restore_in_progress())
    EXECUTE FUNCTION @extschema@.seal_usage_partitions();

REVOKE ALL ON FUNCTION @extschema@.create_usage_partition(timestamptz) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.create_usage_partition(timestamptz) TO service_role;
REVOKE ALL ON FUNCTION @extschema@.create_usage_partitions(integer) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.create_usage_partitions(integer) TO service_role;
REVOKE ALL ON FUNCTION @extschema@.apply_usage_retention() FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.apply_usage_retention() TO service_role;
REVOKE ALL ON FUNCTION @extschema@.schedule_usage_maintenance(text, text) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.schedule_usage_maintenance(text, text) TO service_role;
REVOKE ALL ON FUNCTION @extschema@.unschedule_usage_maintenance() FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.unschedule_usage_maintenance() TO service_role;

-- ---------------------------------------------------------------------------------------
-- recording (sql/recording.sql)
-- ---------------------------------------------------------------------------------------

-- One key per organization. Kept (with the first call's answer) for
-- usage_settings.idempotency_key_retention, longer than the late-event window and independent
-- of the raw events' retention, so that dropping old events never reopens a duplicate.
CREATE TABLE @extschema@.usage_idempotency_keys (
    organization_id  uuid NOT NULL REFERENCES @extschema@.organizations (id) ON DELETE CASCADE,
    idempotency_key  text NOT NULL CONSTRAINT usage_idempotency_keys_key_check CHECK (char_length(idempotency_key) BETWEEN 1 AND 255),
    event_id         uuid NOT NULL,
    response         jsonb,
    created_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT usage_idempotency_keys_pkey PRIMARY KEY (organization_id, idempotency_key)
);
CREATE INDEX usage_idempotency_keys_created_at_brin ON @extschema@.usage_idempotency_keys USING brin (created_at);

COMMENT ON TABLE @extschema@.usage_idempotency_keys IS
    'Idempotency keys of recorded usage, per organization, with the first call''s answer.';

-- Callers recording against a hard, finite limit of an organization take turns on its row
-- (an UPDATE: under REPEATABLE READ the second caller fails with 40001 rather than passing).
CREATE TABLE @extschema@.usage_meter_locks (
    organization_id  uuid NOT NULL REFERENCES @extschema@.organizations (id) ON DELETE CASCADE,
    event_type       text NOT NULL,
    turns            bigint NOT NULL DEFAULT 0,
    CONSTRAINT usage_meter_locks_pkey PRIMARY KEY (organization_id, event_type)
);

-- Leases on what is left of a hard limit, one row per writing backend (src/quota.rs): a
-- writer records within its lease touching only its own row; the meter's turn-holder grants
-- and reclaims. usage + unused leases <= limit holds at every commit.
CREATE TABLE @extschema@.usage_meter_leases (
    organization_id  uuid NOT NULL REFERENCES @extschema@.organizations (id) ON DELETE CASCADE,
    feature_key      text NOT NULL,
    writer           integer NOT NULL,
    -- The limit's window (this month, or -infinity for all time) and value when granted: a
    -- lease of another window or limit is worth nothing.
    window_start     timestamptz NOT NULL,
    limit_value      bigint NOT NULL,
    granted          numeric NOT NULL,
    used             numeric NOT NULL,
    CONSTRAINT usage_meter_leases_pkey PRIMARY KEY (organization_id, feature_key, writer),
    CONSTRAINT usage_meter_leases_used_check CHECK (used <= granted)
);

-- Only the service role dates an event (members cannot set occurred_at), and only within the
-- late-event window, never in the future. admit_usage_event (src/recording.rs) asks it of
-- dated inserts.
CREATE FUNCTION @extschema@.check_usage_event_time(occurred_at timestamptz, received_at timestamptz)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, @extschema@, pg_temp
AS $$
DECLARE
    window_ interval;
BEGIN
    SELECT s.late_event_window INTO window_ FROM @extschema@.usage_settings s;
    IF occurred_at < received_at - window_ THEN
        RAISE EXCEPTION 'usage_events.occurred_at % is older than the late-event window (%)', occurred_at, window_
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'usage_settings.late_event_window sets how far back events may be dated.';
    END IF;
    IF occurred_at > received_at + interval '5 minutes' THEN
        RAISE EXCEPTION 'usage_events.occurred_at % is in the future', occurred_at
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;

-- A direct INSERT carrying an idempotency key already used in its organization is skipped
-- (INSERT 0 0), as record_usage would answer "duplicate": admit_usage_event claims the key
-- for the row's event id here, and skips the row when this answers false. (record_usage
-- claims its key itself, first, for the event it then writes.)
CREATE FUNCTION @extschema@.claim_usage_event_key(organization uuid, idempotency text, event uuid)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, @extschema@, pg_temp
AS $$
BEGIN
    INSERT INTO @extschema@.usage_idempotency_keys (organization_id, idempotency_key, event_id)
    VALUES (organization, idempotency, event)
    ON CONFLICT DO NOTHING;
    RETURN FOUND OR EXISTS (SELECT 1 FROM @extschema@.usage_idempotency_keys k
                            WHERE k.organization_id = organization
                              AND k.idempotency_key = idempotency AND k.event_id = event);
END
$$;

-- The rules of a direct INSERT (src/recording.rs, admit_usage_event): dated events, repeated
-- keys, and members' limits (past a soft limit the row is stored as overage). Trusted writers
-- (the service role, the owner, record_usage itself) skip the limits: their inserts stay
-- plain inserts. No WHEN clauses: PostgreSQL parses them anew for every statement.
CREATE TRIGGER admit_usage_event
    BEFORE INSERT ON @extschema@.usage_events
    FOR EACH ROW EXECUTE FUNCTION @extschema@.admit_usage_event();
CREATE TRIGGER start_member_usage_tally
    BEFORE INSERT ON @extschema@.usage_events
    FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.start_member_usage_tally();

REVOKE ALL ON @extschema@.usage_idempotency_keys, @extschema@.usage_meter_locks, @extschema@.usage_meter_leases
    FROM PUBLIC, anon, authenticated, service_role;
GRANT SELECT, DELETE ON @extschema@.usage_idempotency_keys TO service_role;
ALTER TABLE @extschema@.usage_idempotency_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE @extschema@.usage_meter_locks ENABLE ROW LEVEL SECURITY;
ALTER TABLE @extschema@.usage_meter_leases ENABLE ROW LEVEL SECURITY;
CREATE POLICY usage_idempotency_keys_service_role ON @extschema@.usage_idempotency_keys
    FOR ALL TO service_role USING (true) WITH CHECK (true);

SELECT pg_catalog.pg_extension_config_dump('@extschema@.usage_idempotency_keys', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.usage_meter_locks', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.usage_meter_leases', '');

REVOKE ALL ON FUNCTION @extschema@.check_usage_event_time(timestamptz, timestamptz) FROM PUBLIC, anon, authenticated, service_role;
REVOKE ALL ON FUNCTION @extschema@.claim_usage_event_key(uuid, text, uuid) FROM PUBLIC, anon, authenticated, service_role;
REVOKE ALL ON FUNCTION @extschema@.admit_usage_event() FROM PUBLIC, anon, authenticated, service_role;
REVOKE ALL ON FUNCTION @extschema@.start_member_usage_tally() FROM PUBLIC, anon, authenticated, service_role;
REVOKE ALL ON FUNCTION @extschema@.record_usage(uuid, text, numeric, text, timestamptz, jsonb, uuid)
    FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.record_usage(uuid, text, numeric, text, timestamptz, jsonb, uuid)
    TO authenticated, service_role;
REVOKE ALL ON FUNCTION @extschema@.record_usage_batch(jsonb) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.record_usage_batch(jsonb) TO authenticated, service_role;

-- ---------------------------------------------------------------------------------------
-- provisioning (sql/provisioning.sql)
-- ---------------------------------------------------------------------------------------
CREATE TRIGGER saas_core_provision_user
    AFTER INSERT ON auth.users
    FOR EACH ROW EXECUTE FUNCTION @extschema@.provision_auth_user();
CREATE TRIGGER saas_core_sync_user
    AFTER UPDATE ON auth.users
    FOR EACH ROW EXECUTE FUNCTION @extschema@.sync_auth_user();
CREATE TRIGGER saas_core_delete_user
    AFTER DELETE ON auth.users
    FOR EACH ROW EXECUTE FUNCTION @extschema@.remove_auth_user();

ALTER FUNCTION @extschema@.provision_auth_user()
    SECURITY DEFINER SET search_path = pg_catalog, @extschema@, pg_temp;
ALTER FUNCTION @extschema@.sync_auth_user()
    SECURITY DEFINER SET search_path = pg_catalog, @extschema@, pg_temp;
ALTER FUNCTION @extschema@.remove_auth_user()
    SECURITY DEFINER SET search_path = pg_catalog, @extschema@, pg_temp;
REVOKE ALL ON FUNCTION @extschema@.provision_auth_user() FROM PUBLIC, anon, authenticated, service_role;
REVOKE ALL ON FUNCTION @extschema@.sync_auth_user() FROM PUBLIC, anon, authenticated, service_role;
REVOKE ALL ON FUNCTION @extschema@.remove_auth_user() FROM PUBLIC, anon, authenticated, service_role;
REVOKE ALL ON FUNCTION @extschema@.provision_existing_accounts_at_install() FROM PUBLIC, anon, authenticated, service_role;

-- ---------------------------------------------------------------------------------------
-- roles (sql/roles.sql, new in 0.2.0: as a fresh install has it)
-- ---------------------------------------------------------------------------------------
-- 0.1.0's CHECK list of member roles gives way to roles as data (check_member_role).
ALTER TABLE @extschema@.organization_members DROP CONSTRAINT organization_members_role_check;

CREATE FUNCTION @extschema@."has_permission"(
	"org_id" uuid,
	"permission" TEXT
) RETURNS bool
STABLE SECURITY DEFINER
SET search_path TO pg_catalog, @extschema@, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'has_permission_wrapper';

CREATE FUNCTION @extschema@."check_member_role"()
	RETURNS TRIGGER
	LANGUAGE c
	AS 'MODULE_PATHNAME', 'check_member_role_wrapper';

CREATE FUNCTION @extschema@."check_role"()
	RETURNS TRIGGER
	LANGUAGE c
	AS 'MODULE_PATHNAME', 'check_role_wrapper';

-- Roles and permissions as data (seed 002 §3): src/roles.rs.
--
-- A member's role (organization_members.role) names a role by its key: one of the system roles
-- (owner, admin, member, viewer), or a custom role of that organization. What a role may do is
-- the set of permissions granted to it in role_permissions; who ranks above whom is its
-- hierarchy_level. Platform roles (support staff, say) are granted to users in user_roles, for
-- a time if expires_at is set.

CREATE TABLE @extschema@.permissions (
    key          text PRIMARY KEY
                 CONSTRAINT permissions_key_check CHECK (key ~ '^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$'),
    description  text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE @extschema@.permissions IS
    'What a role can be allowed to do. An application adds its own (projects.create, …) with an INSERT.';

CREATE TABLE @extschema@.roles (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    -- organization: held by members (system roles, or an organization's custom roles);
    -- platform: granted to users in user_roles, across organizations.
    scope            text NOT NULL DEFAULT 'organization'
                     CONSTRAINT roles_scope_check CHECK (scope IN ('organization', 'platform')),
    -- NULL for system and platform roles; the organization of a custom role.
    organization_id  uuid REFERENCES @extschema@.organizations (id) ON DELETE CASCADE,
    key              text NOT NULL CONSTRAINT roles_key_check CHECK (key ~ '^[a-z][a-z0-9_]{0,39}$'),
    name             text NOT NULL CONSTRAINT roles_name_check CHECK (char_length(btrim(name)) BETWEEN 1 AND 100),
    description      text CONSTRAINT roles_description_check CHECK (char_length(description) <= 1000),
    -- Who outranks whom: owner 100, admin 80, member 50, viewer 10. Nobody grants a role
    -- ranked above their own; custom roles rank below owner.
    hierarchy_level  integer NOT NULL CONSTRAINT roles_hierarchy_level_check CHECK (hierarchy_level BETWEEN 0 AND 100),
    is_system        boolean NOT NULL DEFAULT false,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT roles_owner_check CHECK (
        (is_system OR scope = 'platform' OR (organization_id IS NOT NULL AND hierarchy_level < 100))
        AND NOT (is_system AND organization_id IS NOT NULL)
        AND NOT (scope = 'platform' AND organization_id IS NOT NULL)),
    -- user_roles references (id, scope) so that only platform roles can be granted there.
    CONSTRAINT roles_id_scope_key UNIQUE (id, scope)
);
COMMENT ON TABLE @extschema@.roles IS
    'System roles (owner, admin, member, viewer), custom roles of an organization, and platform roles.';

-- One key per organization, and custom keys never shadow a system or platform key (check_role).
CREATE UNIQUE INDEX roles_global_key ON @extschema@.roles (key) WHERE organization_id IS NULL;
CREATE UNIQUE INDEX roles_organization_key ON @extschema@.roles (organization_id, key)
    WHERE organization_id IS NOT NULL;

CREATE TABLE @extschema@.role_permissions (
    role_id     uuid NOT NULL REFERENCES @extschema@.roles (id) ON DELETE CASCADE,
    permission  text NOT NULL REFERENCES @extschema@.permissions (key) ON DELETE CASCADE ON UPDATE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (role_id, permission)
);
CREATE INDEX role_permissions_permission_idx ON @extschema@.role_permissions (permission, role_id);

CREATE TABLE @extschema@.user_roles (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id      uuid NOT NULL REFERENCES @extschema@.users (id) ON DELETE CASCADE,
    role_id      uuid NOT NULL,
    role_scope   text NOT NULL DEFAULT 'platform' CONSTRAINT user_roles_role_scope_check CHECK (role_scope = 'platform'),
    assigned_by  uuid REFERENCES @extschema@.users (id) ON DELETE SET NULL,
    assigned_at  timestamptz NOT NULL DEFAULT now(),
    -- The grant stops granting at this instant (no job: every check compares it with the clock).
    expires_at   timestamptz,
    CONSTRAINT user_roles_role_fkey FOREIGN KEY (role_id, role_scope)
        REFERENCES @extschema@.roles (id, scope) ON DELETE CASCADE,
    CONSTRAINT user_roles_expiry_check CHECK (expires_at IS NULL OR expires_at > assigned_at),
    UNIQUE (user_id, role_id)
);
CREATE INDEX user_roles_role_id_idx ON @extschema@.user_roles (role_id);
COMMENT ON TABLE @extschema@.user_roles IS
    'Platform roles granted to users, by whom, until when. Written by the service role.';

-- The one place a member's role key is resolved: a system role, or a custom role of the
-- member's own organization. Internal (no API role reads it).
CREATE VIEW @extschema@.member_roles AS
SELECT m.organization_id, m.user_id, m.role, r.id AS role_id, r.hierarchy_level, m.created_at AS joined_at
FROM @extschema@.organization_members m
JOIN @extschema@.roles r
  ON r.key = m.role AND r.scope = 'organization'
 AND (r.organization_id IS NULL OR r.organization_id = m.organization_id);

-- The one place a platform grant's expiry is applied.
CREATE VIEW @extschema@.active_user_roles AS
SELECT ur.user_id, ur.role_id
FROM @extschema@.user_roles ur
WHERE ur.expires_at IS NULL OR ur.expires_at > pg_catalog.statement_timestamp();

CREATE FUNCTION @extschema@.has_platform_permission(permission text)
RETURNS boolean
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, @extschema@, pg_temp
AS $$
BEGIN
    RETURN EXISTS (
        SELECT 1
        FROM @extschema@.active_user_roles ur
        JOIN @extschema@.role_permissions rp ON rp.role_id = ur.role_id AND rp.permission = $1
        WHERE ur.user_id = auth.uid());
END
$$;
COMMENT ON FUNCTION @extschema@.has_platform_permission(text) IS
    'True when an unexpired platform role of the caller grants permission.';

-- Organizations where the caller's role grants permission, or every organization when an
-- unexpired platform role does: the one answer has_permission and the policies share. One set
-- (not an OR of two policies) keeps "organization_id IN (...)" an index semi-join.
-- PL/pgSQL, not SQL: a SECURITY DEFINER SQL function is planned again on every call, and
-- every RLS read of these tables runs it once; PL/pgSQL plans once per backend.
CREATE FUNCTION @extschema@.current_user_permitted_org_ids(permission text)
RETURNS SETOF uuid
LANGUAGE plpgsql STABLE SECURITY DEFINER ROWS 10
SET search_path = pg_catalog, @extschema@, pg_temp
AS $$
BEGIN
    IF @extschema@.has_platform_permission($1) THEN
        RETURN QUERY SELECT o.id FROM @extschema@.organizations o;
        RETURN;
    END IF;
    RETURN QUERY
    SELECT mr.organization_id
    FROM @extschema@.member_roles mr
    JOIN @extschema@.role_permissions rp ON rp.role_id = mr.role_id AND rp.permission = $1
    WHERE mr.user_id = auth.uid();
END
$$;
COMMENT ON FUNCTION @extschema@.current_user_permitted_org_ids(text) IS
    'Organizations in which the caller''s role (or an unexpired platform role) grants permission.';

-- The caller's rank (their role's hierarchy_level) in an organization; NULL for non-members.
CREATE FUNCTION @extschema@.current_user_rank(org_id uuid)
RETURNS integer
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, @extschema@, pg_temp
AS $$
BEGIN
    RETURN (SELECT mr.hierarchy_level FROM @extschema@.member_roles mr
            WHERE mr.organization_id = $1 AND mr.user_id = auth.uid());
END
$$;

CREATE TRIGGER update_roles_updated_at
    BEFORE UPDATE ON @extschema@.roles
    FOR EACH ROW EXECUTE FUNCTION @extschema@.update_updated_at_column();

-- Keys never collide across scopes; system roles keep their key and rank; a role in use stays.
CREATE TRIGGER check_role
    BEFORE INSERT OR UPDATE OR DELETE ON @extschema@.roles
    FOR EACH ROW EXECUTE FUNCTION @extschema@.check_role();

-- A member's role exists for their organization (replaces 0.1.0's CHECK list).
CREATE TRIGGER check_member_role
    BEFORE INSERT OR UPDATE OF role, organization_id ON @extschema@.organization_members
    FOR EACH ROW EXECUTE FUNCTION @extschema@.check_member_role();

INSERT INTO @extschema@.permissions (key, description) VALUES
    ('members.invite',      'Invite people to the organization and revoke invitations'),
    ('members.remove',      'Remove members ranked below oneself'),
    ('members.change_role', 'Change the role of members ranked below oneself'),
    ('billing.read',        'See the organization''s subscription and invoices'),
    ('billing.manage',      'Change the organization''s plan and payment details'),
    ('settings.update',     'Rename the organization, change its slug and settings'),
    ('org.delete',          'Delete the organization'),
    ('ownership.transfer',  'Hand the organization to another member'),
    ('roles.manage',        'Create, change and delete custom roles'),
    ('teams.manage',        'Create and manage every team and workspace, secret ones included'),
    ('audit.read',          'Read the organization''s audit log');

INSERT INTO @extschema@.roles (scope, key, name, description, hierarchy_level, is_system) VALUES
    ('organization', 'owner',   'Owner',   'Everything, including deleting the organization', 100, true),
    ('organization', 'admin',   'Admin',   'Manages members, settings and billing visibility', 80, true),
    ('organization', 'member',  'Member',  'Works in the organization',                        50, true),
    ('organization', 'viewer',  'Viewer',  'Reads the organization''s data',                   10, true),
    ('platform',     'support', 'Support', 'Platform staff: reads audit logs and billing of every organization', 0, false);

INSERT INTO @extschema@.role_permissions (role_id, permission)
SELECT r.id, p.key
FROM @extschema@.roles r
JOIN @extschema@.permissions p ON CASE r.key
    WHEN 'owner'   THEN true
    WHEN 'admin'   THEN p.key IN ('members.invite', 'members.remove', 'members.change_role',
                                  'billing.read', 'settings.update', 'audit.read', 'teams.manage')
    WHEN 'support' THEN p.key IN ('audit.read', 'billing.read')
    ELSE false END
WHERE r.organization_id IS NULL;

-- pg_dump dumps every row (operator edits and custom roles too); a restore's COPY replaces the
-- seeded rows (backup.sql).
CREATE TRIGGER replace_seeded_rows
    BEFORE INSERT ON @extschema@.permissions
    FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.replace_seeded_rows();
CREATE TRIGGER replace_seeded_rows
    BEFORE INSERT ON @extschema@.roles
    FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.replace_seeded_rows();
CREATE TRIGGER replace_seeded_rows
    BEFORE INSERT ON @extschema@.role_permissions
    FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.replace_seeded_rows();

SELECT pg_catalog.pg_extension_config_dump('@extschema@.permissions', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.roles', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.role_permissions', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.user_roles', '');

-- Privileges.
REVOKE ALL ON @extschema@.permissions, @extschema@.roles, @extschema@.role_permissions, @extschema@.user_roles
    FROM PUBLIC, anon, authenticated, service_role;
REVOKE ALL ON @extschema@.member_roles, @extschema@.active_user_roles FROM PUBLIC, anon, authenticated, service_role;
GRANT SELECT ON @extschema@.permissions TO authenticated;
GRANT SELECT, INSERT, DELETE ON @extschema@.roles, @extschema@.role_permissions TO authenticated;
-- key and scope are fixed once created: members refer to a role by its key.
GRANT UPDATE (name, description, hierarchy_level) ON @extschema@.roles TO authenticated;
GRANT SELECT ON @extschema@.user_roles TO authenticated;
GRANT SELECT, INSERT, UPDATE, DELETE ON @extschema@.permissions, @extschema@.roles,
    @extschema@.role_permissions, @extschema@.user_roles TO service_role;

ALTER TABLE @extschema@.permissions ENABLE ROW LEVEL SECURITY;
ALTER TABLE @extschema@.roles ENABLE ROW LEVEL SECURITY;
ALTER TABLE @extschema@.role_permissions ENABLE ROW LEVEL SECURITY;
ALTER TABLE @extschema@.user_roles ENABLE ROW LEVEL SECURITY;

CREATE POLICY permissions_select_authenticated ON @extschema@.permissions
    FOR SELECT TO authenticated USING (true);
CREATE POLICY permissions_service_role_all ON @extschema@.permissions
    FOR ALL TO service_role USING (true) WITH CHECK (true);

-- System and platform roles are public knowledge; an organization's custom roles are its members'.
CREATE POLICY roles_select ON @extschema@.roles
    FOR SELECT TO authenticated
    USING (organization_id IS NULL OR organization_id IN (SELECT @extschema@.current_user_org_ids()));

-- Custom roles: by roles.manage, and only below the caller's own rank.
CREATE POLICY roles_insert_manager ON @extschema@.roles
    FOR INSERT TO authenticated
    WITH CHECK (
        organization_id IN (SELECT @extschema@.current_user_permitted_org_ids('roles.manage'))
        AND hierarchy_level < @extschema@.current_user_rank(organization_id));
CREATE POLICY roles_update_manager ON @extschema@.roles
    FOR UPDATE TO authenticated
    USING (
        organization_id IN (SELECT @extschema@.current_user_permitted_org_ids('roles.manage'))
        AND hierarchy_level < @extschema@.current_user_rank(organization_id))
    WITH CHECK (
        organization_id IN (SELECT @extschema@.current_user_permitted_org_ids('roles.manage'))
        AND hierarchy_level < @extschema@.current_user_rank(organization_id));
CREATE POLICY roles_delete_manager ON @extschema@.roles
    FOR DELETE TO authenticated
    USING (
        organization_id IN (SELECT @extschema@.current_user_permitted_org_ids('roles.manage'))
        AND hierarchy_level < @extschema@.current_user_rank(organization_id));
CREATE POLICY roles_service_role_all ON @extschema@.roles
    FOR ALL TO service_role USING (true) WITH CHECK (true);

CREATE POLICY role_permissions_select ON @extschema@.role_permissions
    FOR SELECT TO authenticated
    USING (role_id IN (SELECT r.id FROM @extschema@.roles r));
-- A manager grants a custom role below their rank only what they hold themself.
CREATE POLICY role_permissions_insert_manager ON @extschema@.role_permissions
    FOR INSERT TO authenticated
    WITH CHECK (EXISTS (
        SELECT 1 FROM @extschema@.roles r
        WHERE r.id = role_id
          AND r.organization_id IN (SELECT @extschema@.current_user_permitted_org_ids('roles.manage'))
          AND r.hierarchy_level < @extschema@.current_user_rank(r.organization_id)
          AND r.organization_id IN (SELECT @extschema@.current_user_permitted_org_ids(permission))));
CREATE POLICY role_permissions_delete_manager ON @extschema@.role_permissions
    FOR DELETE TO authenticated
    USING (EXISTS (
        SELECT 1 FROM @extschema@.roles r
        WHERE r.id = role_id
          AND r.organization_id IN (SELECT @extschema@.current_user_permitted_org_ids('roles.manage'))
          AND r.hierarchy_level < @extschema@.current_user_rank(r.organization_id)));
CREATE POLICY role_permissions_service_role_all ON @extschema@.role_permissions
    FOR ALL TO service_role USING (true) WITH CHECK (true);

-- A user sees their own platform grants; only the service role grants them.
CREATE POLICY user_roles_select_own ON @extschema@.user_roles
    FOR SELECT TO authenticated USING (user_id = (SELECT auth.uid()));
CREATE POLICY user_roles_service_role_all ON @extschema@.user_roles
    FOR ALL TO service_role USING (true) WITH CHECK (true);

REVOKE ALL ON FUNCTION @extschema@.current_user_permitted_org_ids(text) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.current_user_permitted_org_ids(text) TO authenticated, service_role;
REVOKE ALL ON FUNCTION @extschema@.has_platform_permission(text) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.has_platform_permission(text) TO authenticated, service_role;
REVOKE ALL ON FUNCTION @extschema@.current_user_rank(uuid) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.current_user_rank(uuid) TO authenticated, service_role;
REVOKE ALL ON FUNCTION @extschema@.has_permission(uuid, text) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.has_permission(uuid, text) TO authenticated, service_role;

REVOKE ALL ON FUNCTION @extschema@.check_role() FROM PUBLIC, anon, authenticated, service_role;
REVOKE ALL ON FUNCTION @extschema@.check_member_role() FROM PUBLIC, anon, authenticated, service_role;
ALTER FUNCTION @extschema@.check_role()
    SECURITY DEFINER SET search_path = pg_catalog, @extschema@, pg_temp;
ALTER FUNCTION @extschema@.check_member_role()
    SECURITY DEFINER SET search_path = pg_catalog, @extschema@, pg_temp;

-- ---------------------------------------------------------------------------------------
-- members (sql/members.sql, new in 0.2.0: as a fresh install has it)
-- ---------------------------------------------------------------------------------------
-- 0.1.0's write policies on organizations and their members named roles; 0.2.0's check permissions.
DROP POLICY organizations_update_admin ON @extschema@.organizations;
DROP POLICY organizations_delete_owner ON @extschema@.organizations;
DROP POLICY organization_members_insert_admin ON @extschema@.organization_members;
DROP POLICY organization_members_update_admin ON @extschema@.organization_members;
DROP POLICY organization_members_delete ON @extschema@.organization_members;

CREATE FUNCTION @extschema@."delete_organization"(
	"org_id" uuid
) RETURNS void
VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, @extschema@, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'delete_organization_wrapper';

CREATE FUNCTION @extschema@."leave_organization"(
	"org_id" uuid
) RETURNS void
VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, @extschema@, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'leave_organization_wrapper';

CREATE FUNCTION @extschema@."may_manage_member"(
	"org_id" uuid,
	"permission" TEXT,
	"current_role" TEXT,
	"new_role" TEXT
) RETURNS bool
STABLE SECURITY DEFINER
SET search_path TO pg_catalog, @extschema@, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'may_manage_member_wrapper';

CREATE FUNCTION @extschema@."organization_id_by_slug"(
	"slug" TEXT,
	"action" TEXT
) RETURNS uuid
STABLE
LANGUAGE c
AS 'MODULE_PATHNAME', 'organization_id_by_slug_wrapper';

CREATE FUNCTION @extschema@."remove_member"(
	"org_id" uuid,
	"user_id" uuid
) RETURNS void
VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, @extschema@, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'remove_member_wrapper';

CREATE FUNCTION @extschema@."require_membership"(
	"org_id" uuid,
	"action" TEXT
) RETURNS bool
STABLE
LANGUAGE c
AS 'MODULE_PATHNAME', 'require_membership_wrapper';

CREATE FUNCTION @extschema@."signed_in_user"(
	"action" TEXT
) RETURNS uuid
STABLE
LANGUAGE c
AS 'MODULE_PATHNAME', 'signed_in_user_wrapper';

CREATE FUNCTION @extschema@."update_member_role"(
	"org_id" uuid,
	"user_id" uuid,
	"role" TEXT
) RETURNS void
VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, @extschema@, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'update_member_role_wrapper';

-- Member management RPCs (src/members.rs): the members page of an app, with RPCs alone.
-- Each takes the caller from the JWT and checks the caller's permissions (roles.sql).

-- How a user is named to others (members pages, invitations, the audit log): display name,
-- else username, else email.
CREATE FUNCTION @extschema@.user_label(user_id uuid)
RETURNS text
LANGUAGE sql STABLE
AS $$
    SELECT coalesce(u.display_name, u.username, u.email) FROM @extschema@.users u WHERE u.id = $1
$$;
REVOKE ALL ON FUNCTION @extschema@.user_label(uuid) FROM PUBLIC, anon, authenticated, service_role;

-- What get_my_organizations, get_organization and get_organization_by_slug return.
CREATE TYPE @extschema@.organization_summary AS (
    id uuid, name text, slug text, org_type text, is_personal boolean, description text, avatar_url text,
    owner_id uuid, role text, plan text, member_count integer, joined_at timestamptz, created_at timestamptz
);

-- The RPCs that return rows are queries behind a Rust guard (signed_in_user,
-- require_membership, organization_id_by_slug) that runs once, before any row. PL/pgSQL, not
-- SQL: a SECURITY DEFINER SQL function is planned again on every call (measured: 2,250 vs
-- 3,700 calls/s for get_organization).

-- The caller's organizations (personal first), with their role, plan and member count.
CREATE FUNCTION @extschema@.get_my_organizations()
RETURNS SETOF @extschema@.organization_summary
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, @extschema@, pg_temp
AS $$
BEGIN
    RETURN QUERY
    SELECT o.id, o.name, o.slug, o.org_type, o.is_personal, o.description, o.avatar_url, o.owner_id,
               m.role, @extschema@.org_effective_plan(o.id), o.member_count, m.created_at, o.created_at
        FROM @extschema@.organization_members m
        JOIN @extschema@.organizations o ON o.id = m.organization_id
        WHERE m.user_id = @extschema@.signed_in_user('get_my_organizations')
        ORDER BY o.is_personal DESC, lower(o.name), o.id;
END
$$;

-- One organization the caller belongs to (or any, for the service role).
CREATE FUNCTION @extschema@.get_organization(org_id uuid)
RETURNS SETOF @extschema@.organization_summary
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, @extschema@, pg_temp
AS $$
BEGIN
    RETURN QUERY
    SELECT o.id, o.name, o.slug, o.org_type, o.is_personal, o.description, o.avatar_url, o.owner_id,
               m.role, @extschema@.org_effective_plan(o.id), o.member_count, m.created_at, o.created_at
        FROM @extschema@.organizations o
        LEFT JOIN @extschema@.organization_members m ON m.organization_id = o.id AND m.user_id = auth.uid()
        WHERE o.id = $1 AND @extschema@.require_membership($1, 'get_organization');
END
$$;

-- As get_organization, by slug (for URLs like /acme/settings).
CREATE FUNCTION @extschema@.get_organization_by_slug(slug text)
RETURNS SETOF @extschema@.organization_summary
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, @extschema@, pg_temp
AS $$
BEGIN
    RETURN QUERY
    SELECT * FROM @extschema@.get_organization(@extschema@.organization_id_by_slug($1, 'get_organization_by_slug'));
END
$$;

-- The members of an organization the caller belongs to (or any, for the service role), with the
-- profile fields a members page shows (other users' profiles are otherwise private). The rule is
-- require_membership's (Rust, raising 42501 for non-members); it runs once, before any row.
CREATE FUNCTION @extschema@.get_organization_members(org_id uuid)
RETURNS TABLE (user_id uuid, email text, display_name text, username text, avatar_url text,
               role text, role_rank integer, joined_at timestamptz)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, @extschema@, pg_temp
AS $$
BEGIN
    RETURN QUERY
    SELECT mr.user_id, u.email, u.display_name, u.username, u.avatar_url, mr.role, mr.hierarchy_level, mr.joined_at
        FROM @extschema@.member_roles mr
        JOIN @extschema@.users u ON u.id = mr.user_id
        WHERE mr.organization_id = $1
          AND @extschema@.require_membership($1, 'get_organization_members')
        ORDER BY mr.hierarchy_level DESC, mr.joined_at, mr.user_id;
END
$$;

-- Direct writes to organizations and their members (PostgREST's PATCH / POST / DELETE) follow
-- the same permissions and hierarchy as the RPCs: may_manage_member applies the RPCs' rule.
CREATE POLICY organizations_update_permitted ON @extschema@.organizations
    FOR UPDATE TO authenticated
    USING (id = ANY (ARRAY(SELECT @extschema@.current_user_permitted_org_ids('settings.update'))))
    WITH CHECK (id = ANY (ARRAY(SELECT @extschema@.current_user_permitted_org_ids('settings.update'))));

-- Personal workspaces live as long as their user.
CREATE POLICY organizations_delete_permitted ON @extschema@.organizations
    FOR DELETE TO authenticated
    USING (NOT is_personal AND id = ANY (ARRAY(SELECT @extschema@.current_user_permitted_org_ids('org.delete'))));

-- People are added to team organizations with members.invite, in roles up to the adder's own.
CREATE POLICY organization_members_insert_permitted ON @extschema@.organization_members
    FOR INSERT TO authenticated
    WITH CHECK (
        @extschema@.may_manage_member(organization_id, 'members.invite', NULL, role)
        AND NOT EXISTS (SELECT 1 FROM @extschema@.organizations o
                        WHERE o.id = organization_id AND o.is_personal));

-- Nobody changes their own role; others' only below the changer's rank, to a role up to it.
CREATE POLICY organization_members_update_permitted ON @extschema@.organization_members
    FOR UPDATE TO authenticated
    USING (user_id <> (SELECT auth.uid())
           AND @extschema@.may_manage_member(organization_id, 'members.change_role', role, NULL))
    WITH CHECK (user_id <> (SELECT auth.uid())
                AND @extschema@.may_manage_member(organization_id, 'members.change_role', NULL, role));

-- Members ranked below the remover go with members.remove; anyone but an owner may leave.
CREATE POLICY organization_members_delete_permitted ON @extschema@.organization_members
    FOR DELETE TO authenticated
    USING ((user_id = (SELECT auth.uid()) AND role <> 'owner')
           OR (user_id <> (SELECT auth.uid())
               AND @extschema@.may_manage_member(organization_id, 'members.remove', role, NULL)));

REVOKE ALL ON FUNCTION @extschema@.may_manage_member(uuid, text, text, text) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.may_manage_member(uuid, text, text, text) TO authenticated, service_role;
REVOKE ALL ON FUNCTION @extschema@.require_membership(uuid, text) FROM PUBLIC, anon, authenticated, service_role;
REVOKE ALL ON FUNCTION @extschema@.signed_in_user(text) FROM PUBLIC, anon, authenticated, service_role;
REVOKE ALL ON FUNCTION @extschema@.organization_id_by_slug(text, text) FROM PUBLIC, anon, authenticated, service_role;
REVOKE ALL ON FUNCTION @extschema@.get_my_organizations() FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.get_my_organizations() TO authenticated;
REVOKE ALL ON FUNCTION @extschema@.get_organization(uuid) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.get_organization(uuid) TO authenticated, service_role;
REVOKE ALL ON FUNCTION @extschema@.get_organization_by_slug(text) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.get_organization_by_slug(text) TO authenticated, service_role;
REVOKE ALL ON FUNCTION @extschema@.get_organization_members(uuid) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.get_organization_members(uuid) TO authenticated, service_role;
REVOKE ALL ON FUNCTION @extschema@.update_member_role(uuid, uuid, text) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.update_member_role(uuid, uuid, text) TO authenticated, service_role;
REVOKE ALL ON FUNCTION @extschema@.remove_member(uuid, uuid) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.remove_member(uuid, uuid) TO authenticated, service_role;
REVOKE ALL ON FUNCTION @extschema@.leave_organization(uuid) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.leave_organization(uuid) TO authenticated;
REVOKE ALL ON FUNCTION @extschema@.delete_organization(uuid) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.delete_organization(uuid) TO authenticated, service_role;

-- ---------------------------------------------------------------------------------------
-- teams (sql/teams.sql, new in 0.2.0: as a fresh install has it)
-- ---------------------------------------------------------------------------------------
CREATE FUNCTION @extschema@."create_team"(
	"org_id" uuid,
	"name" TEXT,
	"privacy" TEXT DEFAULT 'private',
	"description" TEXT DEFAULT NULL
) RETURNS uuid
VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, @extschema@, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'create_team_wrapper';

CREATE FUNCTION @extschema@."create_workspace"(
	"org_id" uuid,
	"name" TEXT,
	"slug" TEXT,
	"visibility" TEXT DEFAULT 'organization',
	"team_id" uuid DEFAULT NULL
) RETURNS uuid
VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, @extschema@, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'create_workspace_wrapper';

-- Teams and workspaces inside an organization (seed 002 §2): src/teams.rs.
--
-- A team's privacy says who knows about it: public (every member of the organization sees the
-- team and who is in it), private (members see that it exists, only its own members and team
-- managers see who is in it), secret (only its own members and team managers know it exists).
-- A workspace's visibility: organization (every member), team (the members of its team),
-- private (its own members). Holders of teams.manage (owners, admins) see and manage all of
-- them. Team and workspace members are always members of the organization: the composite
-- foreign keys below make a removal from the organization take its team and workspace
-- memberships along.

CREATE TABLE @extschema@.teams (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id  uuid NOT NULL REFERENCES @extschema@.organizations (id) ON DELETE CASCADE,
    name             text NOT NULL CONSTRAINT teams_name_check CHECK (char_length(btrim(name)) BETWEEN 1 AND 100),
    description      text CONSTRAINT teams_description_check CHECK (char_length(description) <= 2000),
    privacy          text NOT NULL DEFAULT 'private'
                     CONSTRAINT teams_privacy_check CHECK (privacy IN ('public', 'private', 'secret')),
    settings         jsonb NOT NULL DEFAULT '{}'::jsonb CONSTRAINT teams_settings_check CHECK (jsonb_typeof(settings) = 'object'),
    archived_at      timestamptz,
    created_by       uuid DEFAULT auth.uid() REFERENCES @extschema@.users (id) ON DELETE SET NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT teams_id_organization_key UNIQUE (id, organization_id)
);
CREATE UNIQUE INDEX teams_organization_name_key ON @extschema@.teams (organization_id, lower(name));

CREATE TABLE @extschema@.team_members (
    team_id          uuid NOT NULL,
    organization_id  uuid NOT NULL,
    user_id          uuid NOT NULL,
    role             text NOT NULL DEFAULT 'member' CONSTRAINT team_members_role_check CHECK (role IN ('lead', 'member')),
    added_by         uuid DEFAULT auth.uid() REFERENCES @extschema@.users (id) ON DELETE SET NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (team_id, user_id),
    CONSTRAINT team_members_team_fkey FOREIGN KEY (team_id, organization_id)
        REFERENCES @extschema@.teams (id, organization_id) ON DELETE CASCADE,
    CONSTRAINT team_members_member_fkey FOREIGN KEY (organization_id, user_id)
        REFERENCES @extschema@.organization_members (organization_id, user_id) ON DELETE CASCADE
);
CREATE INDEX team_members_user_idx ON @extschema@.team_members (user_id, team_id, role);
CREATE INDEX team_members_member_idx ON @extschema@.team_members (organization_id, user_id);

CREATE TABLE @extschema@.workspaces (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id  uuid NOT NULL REFERENCES @extschema@.organizations (id) ON DELETE CASCADE,
    -- The team it belongs to, if any. When the team is deleted the workspace stays; if it was
    -- visible to the team, only its own members (and team managers) see it from then on.
    team_id          uuid,
    name             text NOT NULL CONSTRAINT workspaces_name_check CHECK (char_length(btrim(name)) BETWEEN 1 AND 100),
    slug             text NOT NULL CONSTRAINT workspaces_slug_check CHECK (@extschema@.is_valid_slug(slug)),
    visibility       text NOT NULL DEFAULT 'organization'
                     CONSTRAINT workspaces_visibility_check CHECK (visibility IN ('organization', 'team', 'private')),
    settings         jsonb NOT NULL DEFAULT '{}'::jsonb CONSTRAINT workspaces_settings_check CHECK (jsonb_typeof(settings) = 'object'),
    archived_at      timestamptz,
    created_by       uuid DEFAULT auth.uid() REFERENCES @extschema@.users (id) ON DELETE SET NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT workspaces_id_organization_key UNIQUE (id, organization_id),
    CONSTRAINT workspaces_organization_slug_key UNIQUE (organization_id, slug),
    CONSTRAINT workspaces_team_fkey FOREIGN KEY (team_id, organization_id)
        REFERENCES @extschema@.teams (id, organization_id) ON DELETE SET NULL (team_id)
);
CREATE INDEX workspaces_team_idx ON @extschema@.workspaces (team_id) WHERE team_id IS NOT NULL;

CREATE TABLE @extschema@.workspace_members (
    workspace_id     uuid NOT NULL,
    organization_id  uuid NOT NULL,
    user_id          uuid NOT NULL,
    role             text NOT NULL DEFAULT 'editor'
                     CONSTRAINT workspace_members_role_check CHECK (role IN ('admin', 'editor', 'viewer')),
    added_by         uuid DEFAULT auth.uid() REFERENCES @extschema@.users (id) ON DELETE SET NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, user_id),
    CONSTRAINT workspace_members_workspace_fkey FOREIGN KEY (workspace_id, organization_id)
        REFERENCES @extschema@.workspaces (id, organization_id) ON DELETE CASCADE,
    CONSTRAINT workspace_members_member_fkey FOREIGN KEY (organization_id, user_id)
        REFERENCES @extschema@.organization_members (organization_id, user_id) ON DELETE CASCADE
);
CREATE INDEX workspace_members_user_idx ON @extschema@.workspace_members (user_id, workspace_id, role);
CREATE INDEX workspace_members_member_idx ON @extschema@.workspace_members (organization_id, user_id);

CREATE TRIGGER update_teams_updated_at
    BEFORE UPDATE ON @extschema@.teams
    FOR EACH ROW EXECUTE FUNCTION @extschema@.update_updated_at_column();
CREATE TRIGGER update_workspaces_updated_at
    BEFORE UPDATE ON @extschema@.workspaces
    FOR EACH ROW EXECUTE FUNCTION @extschema@.update_updated_at_column();

-- Policy helpers: the caller's teams and workspaces (optionally only where they hold role).
CREATE FUNCTION @extschema@.current_user_team_ids(role text DEFAULT NULL)
RETURNS SETOF uuid
LANGUAGE plpgsql STABLE SECURITY DEFINER ROWS 10
SET search_path = pg_catalog, @extschema@, pg_temp
AS $$
BEGIN
    RETURN QUERY
    SELECT tm.team_id FROM @extschema@.team_members tm
    WHERE tm.user_id = auth.uid() AND ($1 IS NULL OR tm.role = $1);
END
$$;
CREATE FUNCTION @extschema@.current_user_workspace_ids(role text DEFAULT NULL)
RETURNS SETOF uuid
LANGUAGE plpgsql STABLE SECURITY DEFINER ROWS 10
SET search_path = pg_catalog, @extschema@, pg_temp
AS $$
BEGIN
    RETURN QUERY
    SELECT wm.workspace_id FROM @extschema@.workspace_members wm
    WHERE wm.user_id = auth.uid() AND ($1 IS NULL OR wm.role = $1);
END
$$;

SELECT pg_catalog.pg_extension_config_dump('@extschema@.teams', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.team_members', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.workspaces', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.workspace_members', '');

REVOKE ALL ON @extschema@.teams, @extschema@.team_members, @extschema@.workspaces, @extschema@.workspace_members
    FROM PUBLIC, anon, authenticated, service_role;
GRANT SELECT, INSERT, DELETE ON @extschema@.teams, @extschema@.team_members, @extschema@.workspaces,
    @extschema@.workspace_members TO authenticated;
GRANT UPDATE (name, description, privacy, settings, archived_at) ON @extschema@.teams TO authenticated;
GRANT UPDATE (role) ON @extschema@.team_members, @extschema@.workspace_members TO authenticated;
GRANT UPDATE (name, slug, visibility, settings, archived_at, team_id) ON @extschema@.workspaces TO authenticated;
GRANT SELECT, INSERT, UPDATE, DELETE ON @extschema@.teams, @extschema@.team_members, @extschema@.workspaces,
    @extschema@.workspace_members TO service_role;

ALTER TABLE @extschema@.teams ENABLE ROW LEVEL SECURITY;
ALTER TABLE @extschema@.team_members ENABLE ROW LEVEL SECURITY;
ALTER TABLE @extschema@.workspaces ENABLE ROW LEVEL SECURITY;
ALTER TABLE @extschema@.workspace_members ENABLE ROW LEVEL SECURITY;

-- Teams: public and private ones are known to the organization; secret ones to their members.
CREATE POLICY teams_select ON @extschema@.teams
    FOR SELECT TO authenticated
    USING (organization_id IN (SELECT @extschema@.current_user_org_ids())
           AND (privacy <> 'secret'
                OR id IN (SELECT @extschema@.current_user_team_ids())
                OR organization_id IN (SELECT @extschema@.current_user_permitted_org_ids('teams.manage'))));
CREATE POLICY teams_write_manager ON @extschema@.teams
    FOR ALL TO authenticated
    USING (organization_id IN (SELECT @extschema@.current_user_permitted_org_ids('teams.manage')))
    WITH CHECK (organization_id IN (SELECT @extschema@.current_user_permitted_org_ids('teams.manage')));
-- Leads edit their own team (not delete it).
CREATE POLICY teams_update_lead ON @extschema@.teams
    FOR UPDATE TO authenticated
    USING (id IN (SELECT @extschema@.current_user_team_ids('lead')))
    WITH CHECK (id IN (SELECT @extschema@.current_user_team_ids('lead')));
CREATE POLICY teams_service_role_all ON @extschema@.teams
    FOR ALL TO service_role USING (true) WITH CHECK (true);

-- Who is in a team: everyone in the organization for public teams; the team's own members and
-- team managers otherwise.
CREATE POLICY team_members_select ON @extschema@.team_members
    FOR SELECT TO authenticated
    USING (team_id IN (SELECT @extschema@.current_user_team_ids())
           OR organization_id IN (SELECT @extschema@.current_user_permitted_org_ids('teams.manage'))
           OR team_id IN (SELECT t.id FROM @extschema@.teams t WHERE t.privacy = 'public'));
-- Team managers and the team's leads add, change and remove; anyone may leave.
CREATE POLICY team_members_write_manager ON @extschema@.team_members
    FOR ALL TO authenticated
    USING (organization_id IN (SELECT @extschema@.current_user_permitted_org_ids('teams.manage'))
           OR team_id IN (SELECT @extschema@.current_user_team_ids('lead')))
    WITH CHECK (organization_id IN (SELECT @extschema@.current_user_permitted_org_ids('teams.manage'))
                OR team_id IN (SELECT @extschema@.current_user_team_ids('lead')));
CREATE POLICY team_members_leave ON @extschema@.team_members
    FOR DELETE TO authenticated USING (user_id = (SELECT auth.uid()));
CREATE POLICY team_members_service_role_all ON @extschema@.team_members
    FOR ALL TO service_role USING (true) WITH CHECK (true);

CREATE POLICY workspaces_select ON @extschema@.workspaces
    FOR SELECT TO authenticated
    USING (organization_id IN (SELECT @extschema@.current_user_org_ids())
           AND (visibility = 'organization'
                OR (visibility = 'team' AND team_id IN (SELECT @extschema@.current_user_team_ids()))
                OR id IN (SELECT @extschema@.current_user_workspace_ids())
                OR organization_id IN (SELECT @extschema@.current_user_permitted_org_ids('teams.manage'))));
CREATE POLICY workspaces_write_manager ON @extschema@.workspaces
    FOR ALL TO authenticated
    USING (organization_id IN (SELECT @extschema@.current_user_permitted_org_ids('teams.manage')))
    WITH CHECK (organization_id IN (SELECT @extschema@.current_user_permitted_org_ids('teams.manage')));
CREATE POLICY workspaces_update_admin ON @extschema@.workspaces
    FOR UPDATE TO authenticated
    USING (id IN (SELECT @extschema@.current_user_workspace_ids('admin')))
    WITH CHECK (id IN (SELECT @extschema@.current_user_workspace_ids('admin')));
CREATE POLICY workspaces_service_role_all ON @extschema@.workspaces
    FOR ALL TO service_role USING (true) WITH CHECK (true);

-- Who is in a workspace: whoever can see the workspace.
CREATE POLICY workspace_members_select ON @extschema@.workspace_members
    FOR SELECT TO authenticated
    USING (workspace_id IN (SELECT w.id FROM @extschema@.workspaces w));
CREATE POLICY workspace_members_write_manager ON @extschema@.workspace_members
    FOR ALL TO authenticated
    USING (organization_id IN (SELECT @extschema@.current_user_permitted_org_ids('teams.manage'))
           OR workspace_id IN (SELECT @extschema@.current_user_workspace_ids('admin')))
    WITH CHECK (organization_id IN (SELECT @extschema@.current_user_permitted_org_ids('teams.manage'))
                OR workspace_id IN (SELECT @extschema@.current_user_workspace_ids('admin')));
CREATE POLICY workspace_members_leave ON @extschema@.workspace_members
    FOR DELETE TO authenticated USING (user_id = (SELECT auth.uid()));
CREATE POLICY workspace_members_service_role_all ON @extschema@.workspace_members
    FOR ALL TO service_role USING (true) WITH CHECK (true);

REVOKE ALL ON FUNCTION @extschema@.current_user_team_ids(text) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.current_user_team_ids(text) TO authenticated, service_role;
REVOKE ALL ON FUNCTION @extschema@.current_user_workspace_ids(text) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.current_user_workspace_ids(text) TO authenticated, service_role;

REVOKE ALL ON FUNCTION @extschema@.create_team(uuid, text, text, text) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.create_team(uuid, text, text, text) TO authenticated, service_role;
REVOKE ALL ON FUNCTION @extschema@.create_workspace(uuid, text, text, text, uuid) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.create_workspace(uuid, text, text, text, uuid) TO authenticated, service_role;

-- ---------------------------------------------------------------------------------------
-- invitations (sql/invitations.sql, new in 0.2.0: as a fresh install has it)
-- ---------------------------------------------------------------------------------------
CREATE FUNCTION @extschema@."accept_invitation"(
	"token" TEXT
) RETURNS uuid
VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, @extschema@, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'accept_invitation_wrapper';

CREATE FUNCTION @extschema@."create_invitation"(
	"org_id" uuid,
	"email" TEXT,
	"role" TEXT DEFAULT 'member',
	"expires_in" interval DEFAULT NULL,
	"team_id" uuid DEFAULT NULL,
	"workspace_id" uuid DEFAULT NULL
) RETURNS TEXT
VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, @extschema@, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'create_invitation_wrapper';

CREATE FUNCTION @extschema@."create_invitations"(
	"org_id" uuid,
	"emails" TEXT[],
	"role" TEXT DEFAULT 'member',
	"expires_in" interval DEFAULT NULL,
	"team_id" uuid DEFAULT NULL,
	"workspace_id" uuid DEFAULT NULL
) RETURNS TABLE (
	"email" TEXT,
	"invitation_id" uuid,
	"token" TEXT
)
VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, @extschema@, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'create_invitations_wrapper';

CREATE FUNCTION @extschema@."decline_invitation"(
	"token" TEXT
) RETURNS void
VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, @extschema@, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'decline_invitation_wrapper';

CREATE FUNCTION @extschema@."get_organization_invitations"(
	"org_id" uuid
) RETURNS TABLE (
	"id" uuid,
	"email" TEXT,
	"role" TEXT,
	"status" TEXT,
	"invited_by" uuid,
	"invited_by_name" TEXT,
	"expires_at" timestamp with time zone,
	"created_at" timestamp with time zone,
	"responded_at" timestamp with time zone
)
STABLE SECURITY DEFINER
SET search_path TO pg_catalog, @extschema@, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'get_organization_invitations_wrapper';

CREATE FUNCTION @extschema@."lookup_invitation"(
	"token" TEXT
) RETURNS TABLE (
	"invitation_id" uuid,
	"organization_id" uuid,
	"organization_name" TEXT,
	"invited_by_name" TEXT,
	"email" TEXT,
	"role" TEXT,
	"status" TEXT,
	"expires_at" timestamp with time zone,
	"team_name" TEXT,
	"workspace_name" TEXT
)
STABLE SECURITY DEFINER
SET search_path TO pg_catalog, @extschema@, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'lookup_invitation_wrapper';

CREATE FUNCTION @extschema@."revoke_invitation"(
	"invitation_id" uuid
) RETURNS void
VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, @extschema@, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'revoke_invitation_wrapper';

-- Invitations (seed 002 `invitations`, seed 004 `team_invitations`): src/invitations.rs.
--
-- An invitation is to an organization, and optionally to one of its teams and/or workspaces
-- (accepting joins those too). It is bound to an email address (stored lower-cased) and a role no higher than
-- the inviter's. Only the SHA-256 of its token is stored: the token itself is returned once,
-- to the inviter, and is what the invitee's link carries. A pending invitation past expires_at
-- reads as expired (no job needed).

CREATE TABLE @extschema@.invitation_settings (
    id                    boolean PRIMARY KEY DEFAULT true CONSTRAINT invitation_settings_singleton_check CHECK (id),
    -- How long an invitation stays valid when create_invitation is not told otherwise.
    default_expiry        interval NOT NULL DEFAULT interval '7 days',
    -- The longest expiry an inviter may ask for.
    max_expiry            interval NOT NULL DEFAULT interval '30 days',
    -- Pending (unexpired) invitations an organization may have at once.
    max_pending_per_org   integer NOT NULL DEFAULT 100
                          CONSTRAINT invitation_settings_max_pending_check CHECK (max_pending_per_org BETWEEN 1 AND 100000),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT invitation_settings_expiry_check
        CHECK (default_expiry >= interval '5 minutes' AND default_expiry <= max_expiry AND max_expiry <= interval '1 year')
);
INSERT INTO @extschema@.invitation_settings DEFAULT VALUES;
COMMENT ON TABLE @extschema@.invitation_settings IS
    'Invitation configuration (one row): default and longest expiry, pending invitations per organization.';

CREATE TRIGGER update_invitation_settings_updated_at
    BEFORE UPDATE ON @extschema@.invitation_settings
    FOR EACH ROW EXECUTE FUNCTION @extschema@.update_updated_at_column();
-- A restore's COPY replaces the seeded row (backup.sql).
CREATE TRIGGER replace_seeded_rows
    BEFORE INSERT ON @extschema@.invitation_settings
    FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.replace_seeded_rows();
SELECT pg_catalog.pg_extension_config_dump('@extschema@.invitation_settings', '');
REVOKE ALL ON @extschema@.invitation_settings FROM PUBLIC, anon, authenticated, service_role;
GRANT SELECT ON @extschema@.invitation_settings TO authenticated;
GRANT SELECT, UPDATE ON @extschema@.invitation_settings TO service_role;
ALTER TABLE @extschema@.invitation_settings ENABLE ROW LEVEL SECURITY;
CREATE POLICY invitation_settings_select ON @extschema@.invitation_settings
    FOR SELECT TO authenticated USING (true);
CREATE POLICY invitation_settings_service_role_all ON @extschema@.invitation_settings
    FOR ALL TO service_role USING (true) WITH CHECK (true);

CREATE TABLE @extschema@.invitations (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id  uuid NOT NULL REFERENCES @extschema@.organizations (id) ON DELETE CASCADE,
    email            text NOT NULL
                     CONSTRAINT invitations_email_check CHECK (email = lower(btrim(email)) AND email LIKE '_%@_%'),
    role             text NOT NULL,
    -- Optionally also to one of the organization's teams and/or workspaces.
    team_id          uuid,
    workspace_id     uuid,
    token_hash       bytea NOT NULL UNIQUE CONSTRAINT invitations_token_hash_check CHECK (octet_length(token_hash) = 32),
    status           text NOT NULL DEFAULT 'pending'
                     CONSTRAINT invitations_status_check
                     CHECK (status IN ('pending', 'accepted', 'declined', 'revoked', 'expired')),
    invited_by       uuid REFERENCES @extschema@.users (id) ON DELETE SET NULL,
    expires_at       timestamptz NOT NULL,
    responded_at     timestamptz,
    accepted_by      uuid REFERENCES @extschema@.users (id) ON DELETE SET NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT invitations_response_check CHECK ((status = 'pending') = (responded_at IS NULL)),
    CONSTRAINT invitations_team_fkey FOREIGN KEY (team_id, organization_id)
        REFERENCES @extschema@.teams (id, organization_id) ON DELETE CASCADE,
    CONSTRAINT invitations_workspace_fkey FOREIGN KEY (workspace_id, organization_id)
        REFERENCES @extschema@.workspaces (id, organization_id) ON DELETE CASCADE
);
COMMENT ON TABLE @extschema@.invitations IS
    'Invitations to an organization by email. Created, accepted, declined and revoked through RPCs (create_invitation, …).';

-- The one place expiry is read: a pending invitation past expires_at is expired.
CREATE FUNCTION @extschema@.effective_invitation_status(status text, expires_at timestamptz)
RETURNS text
LANGUAGE sql STABLE
AS $$
    SELECT CASE WHEN status = 'pending' AND expires_at <= now() THEN 'expired' ELSE status END
$$;
REVOKE ALL ON FUNCTION @extschema@.effective_invitation_status(text, timestamptz) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.effective_invitation_status(text, timestamptz) TO authenticated, service_role;

-- One pending invitation per email and organization: re-inviting replaces it.
CREATE UNIQUE INDEX invitations_one_pending_per_email ON @extschema@.invitations (organization_id, email)
    WHERE status = 'pending';
CREATE INDEX invitations_organization_idx ON @extschema@.invitations (organization_id, created_at DESC);
CREATE INDEX invitations_email_idx ON @extschema@.invitations (email) WHERE status = 'pending';
CREATE INDEX invitations_team_idx ON @extschema@.invitations (team_id) WHERE team_id IS NOT NULL;
CREATE INDEX invitations_workspace_idx ON @extschema@.invitations (workspace_id) WHERE workspace_id IS NOT NULL;

CREATE TRIGGER update_invitations_updated_at
    BEFORE UPDATE ON @extschema@.invitations
    FOR EACH ROW EXECUTE FUNCTION @extschema@.update_updated_at_column();

SELECT pg_catalog.pg_extension_config_dump('@extschema@.invitations', '');

-- Read by those who may invite; written only through the RPCs (and by the service role).
REVOKE ALL ON @extschema@.invitations FROM PUBLIC, anon, authenticated, service_role;
GRANT SELECT ON @extschema@.invitations TO authenticated;
GRANT SELECT, INSERT, UPDATE, DELETE ON @extschema@.invitations TO service_role;
ALTER TABLE @extschema@.invitations ENABLE ROW LEVEL SECURITY;
CREATE POLICY invitations_select_inviter ON @extschema@.invitations
    FOR SELECT TO authenticated
    USING (organization_id = ANY (ARRAY(SELECT @extschema@.current_user_permitted_org_ids('members.invite'))));
CREATE POLICY invitations_service_role_all ON @extschema@.invitations
    FOR ALL TO service_role USING (true) WITH CHECK (true);

REVOKE ALL ON FUNCTION @extschema@.create_invitation(uuid, text, text, interval, uuid, uuid) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.create_invitation(uuid, text, text, interval, uuid, uuid) TO authenticated, service_role;
REVOKE ALL ON FUNCTION @extschema@.create_invitations(uuid, text[], text, interval, uuid, uuid) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.create_invitations(uuid, text[], text, interval, uuid, uuid) TO authenticated, service_role;
-- The accept page may be shown before the invitee signs in.
REVOKE ALL ON FUNCTION @extschema@.lookup_invitation(text) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.lookup_invitation(text) TO anon, authenticated, service_role;
REVOKE ALL ON FUNCTION @extschema@.accept_invitation(text) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.accept_invitation(text) TO authenticated;
REVOKE ALL ON FUNCTION @extschema@.decline_invitation(text) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.decline_invitation(text) TO authenticated;
REVOKE ALL ON FUNCTION @extschema@.revoke_invitation(uuid) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.revoke_invitation(uuid) TO authenticated, service_role;
REVOKE ALL ON FUNCTION @extschema@.get_organization_invitations(uuid) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.get_organization_invitations(uuid) TO authenticated, service_role;

-- ---------------------------------------------------------------------------------------
-- audit (sql/audit.sql, new in 0.2.0: as a fresh install has it)
-- ---------------------------------------------------------------------------------------
CREATE FUNCTION @extschema@."audit_changes"()
	RETURNS TRIGGER
	LANGUAGE c
	AS 'MODULE_PATHNAME', 'audit_changes_wrapper';

CREATE FUNCTION @extschema@."refuse_audit_update"()
	RETURNS TRIGGER
	LANGUAGE c
	AS 'MODULE_PATHNAME', 'refuse_audit_update_wrapper';

-- Audit log (seed 004 activity_logs, seed 002 activities): src/audit.rs.
--
-- Every privileged change is recorded by the database itself, in the transaction that makes
-- it: memberships, ownership, invitations, the organization's name, slug and deletion, roles
-- and their permissions, platform role grants, the subscription's plan and status, teams and
-- workspaces and who is in them. Statement
-- triggers read each statement's transition tables, so a bulk change costs one INSERT.
--
-- Append-only: no API role may write, update or delete entries (the trigger functions write
-- as the table's owner), and nobody may UPDATE one. Entries outlive what they describe (no
-- foreign keys): an organization's deletion stays on record. The key includes occurred_at,
-- so the table can be range-partitioned by time without changing its shape.

-- The changed keys of two objects, as {"key": {"before": …, "after": …}} (either side may be
-- NULL: a creation or a deletion).
CREATE FUNCTION @extschema@.audit_diff(jsonb, jsonb)
RETURNS jsonb
LANGUAGE sql IMMUTABLE
AS $$
    SELECT coalesce(pg_catalog.jsonb_object_agg(k, pg_catalog.jsonb_build_object('before', $1 -> k, 'after', $2 -> k)),
                    '{}'::jsonb)
    FROM pg_catalog.jsonb_object_keys(coalesce($1, '{}'::jsonb) || coalesce($2, '{}'::jsonb)) AS k
    WHERE ($1 -> k) IS DISTINCT FROM ($2 -> k)
$$;
REVOKE ALL ON FUNCTION @extschema@.audit_diff(jsonb, jsonb) FROM PUBLIC, anon, authenticated, service_role;

CREATE TABLE @extschema@.audit_log (
    id               uuid NOT NULL DEFAULT gen_random_uuid(),
    -- The clock, not the transaction's start: entries of one transaction keep their order.
    occurred_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- NULL for platform-wide changes (system roles, platform role grants).
    organization_id  uuid,
    -- auth.uid() of the request, if any, and their name at the time.
    actor_id         uuid,
    actor_name       text,
    -- The database role the change was made as: authenticated, service_role, a DBA's role…
    actor_role       text NOT NULL,
    action           text NOT NULL CONSTRAINT audit_log_action_check CHECK (action ~ '^[a-z_]+\.[a-z_]+$'),
    resource_type    text NOT NULL,
    resource_id      uuid,
    resource_name    text,
    -- Changed fields: {"field": {"before": …, "after": …}}.
    changes          jsonb NOT NULL DEFAULT '{}'::jsonb,
    -- The client's address from PostgREST's request.headers (x-forwarded-for, x-real-ip).
    ip_address       inet,
    PRIMARY KEY (id, occurred_at)
);
COMMENT ON TABLE @extschema@.audit_log IS
    'Append-only record of privileged changes, written by saas_core''s triggers. Read with audit.read in the organization.';

CREATE INDEX audit_log_organization_idx ON @extschema@.audit_log (organization_id, occurred_at DESC);
CREATE INDEX audit_log_resource_idx ON @extschema@.audit_log (resource_type, resource_id, occurred_at DESC);
CREATE INDEX audit_log_actor_idx ON @extschema@.audit_log (actor_id, occurred_at DESC) WHERE actor_id IS NOT NULL;

CREATE TRIGGER refuse_audit_update
    BEFORE UPDATE ON @extschema@.audit_log
    FOR EACH ROW EXECUTE FUNCTION @extschema@.refuse_audit_update();

-- What is recorded. One trigger per event: a trigger with transition tables takes one event.
CREATE TRIGGER audit_insert AFTER INSERT ON @extschema@.organizations
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.audit_changes();
CREATE TRIGGER audit_update AFTER UPDATE ON @extschema@.organizations
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.audit_changes();
CREATE TRIGGER audit_delete AFTER DELETE ON @extschema@.organizations
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.audit_changes();

CREATE TRIGGER audit_insert AFTER INSERT ON @extschema@.organization_members
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.audit_changes();
CREATE TRIGGER audit_update AFTER UPDATE ON @extschema@.organization_members
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.audit_changes();
CREATE TRIGGER audit_delete AFTER DELETE ON @extschema@.organization_members
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.audit_changes();

CREATE TRIGGER audit_insert AFTER INSERT ON @extschema@.invitations
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.audit_changes();
CREATE TRIGGER audit_update AFTER UPDATE ON @extschema@.invitations
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.audit_changes();

CREATE TRIGGER audit_insert AFTER INSERT ON @extschema@.roles
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.audit_changes();
CREATE TRIGGER audit_update AFTER UPDATE ON @extschema@.roles
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.audit_changes();
CREATE TRIGGER audit_delete AFTER DELETE ON @extschema@.roles
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.audit_changes();

CREATE TRIGGER audit_insert AFTER INSERT ON @extschema@.role_permissions
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.audit_changes();
CREATE TRIGGER audit_delete AFTER DELETE ON @extschema@.role_permissions
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.audit_changes();

CREATE TRIGGER audit_insert AFTER INSERT ON @extschema@.user_roles
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.audit_changes();
CREATE TRIGGER audit_update AFTER UPDATE ON @extschema@.user_roles
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.audit_changes();
CREATE TRIGGER audit_delete AFTER DELETE ON @extschema@.user_roles
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.audit_changes();

CREATE TRIGGER audit_insert AFTER INSERT ON @extschema@.teams
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.audit_changes();
CREATE TRIGGER audit_update AFTER UPDATE ON @extschema@.teams
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.audit_changes();
CREATE TRIGGER audit_delete AFTER DELETE ON @extschema@.teams
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.audit_changes();

CREATE TRIGGER audit_insert AFTER INSERT ON @extschema@.team_members
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.audit_changes();
CREATE TRIGGER audit_delete AFTER DELETE ON @extschema@.team_members
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.audit_changes();

CREATE TRIGGER audit_insert AFTER INSERT ON @extschema@.workspaces
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.audit_changes();
CREATE TRIGGER audit_update AFTER UPDATE ON @extschema@.workspaces
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.audit_changes();
CREATE TRIGGER audit_delete AFTER DELETE ON @extschema@.workspaces
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.audit_changes();

CREATE TRIGGER audit_insert AFTER INSERT ON @extschema@.workspace_members
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.audit_changes();
CREATE TRIGGER audit_delete AFTER DELETE ON @extschema@.workspace_members
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.audit_changes();

CREATE TRIGGER audit_update AFTER UPDATE ON @extschema@.org_subscriptions
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.audit_changes();

SELECT pg_catalog.pg_extension_config_dump('@extschema@.audit_log', '');

-- Read only, by permission; written only by the triggers (as the table's owner). The policy
-- compares with an array computed once per query (an InitPlan), which an index scan on
-- (organization_id, occurred_at) uses; "IN (SELECT …)" in a policy is never turned into a
-- join and filters every row of the table.
REVOKE ALL ON @extschema@.audit_log FROM PUBLIC, anon, authenticated, service_role;
GRANT SELECT ON @extschema@.audit_log TO authenticated, service_role;
ALTER TABLE @extschema@.audit_log ENABLE ROW LEVEL SECURITY;
CREATE POLICY audit_log_select_reader ON @extschema@.audit_log
    FOR SELECT TO authenticated
    USING (organization_id = ANY (ARRAY(SELECT @extschema@.current_user_permitted_org_ids('audit.read'))));
CREATE POLICY audit_log_select_service_role ON @extschema@.audit_log
    FOR SELECT TO service_role USING (true);

REVOKE ALL ON FUNCTION @extschema@.audit_changes() FROM PUBLIC, anon, authenticated, service_role;
REVOKE ALL ON FUNCTION @extschema@.refuse_audit_update() FROM PUBLIC, anon, authenticated, service_role;
ALTER FUNCTION @extschema@.audit_changes()
    SECURITY DEFINER SET search_path = pg_catalog, @extschema@, pg_temp;

-- ---------------------------------------------------------------------------------------
-- notifications (sql/notifications.sql, new in 0.2.0: as a fresh install has it)
-- ---------------------------------------------------------------------------------------
CREATE FUNCTION @extschema@."archive_notification"(
	"notification_id" uuid
) RETURNS void
VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, @extschema@, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'archive_notification_wrapper';

CREATE FUNCTION @extschema@."get_notifications"(
	"max_rows" INT DEFAULT 50,
	"before" timestamp with time zone DEFAULT NULL,
	"include_archived" bool DEFAULT false
) RETURNS TABLE (
	"id" uuid,
	"organization_id" uuid,
	"type" TEXT,
	"title" TEXT,
	"body" TEXT,
	"data" jsonb,
	"link" TEXT,
	"read_at" timestamp with time zone,
	"archived_at" timestamp with time zone,
	"created_at" timestamp with time zone
)
STABLE SECURITY DEFINER
SET search_path TO pg_catalog, @extschema@, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'get_notifications_wrapper';

CREATE FUNCTION @extschema@."get_unread_notification_count"() RETURNS bigint
STRICT STABLE SECURITY DEFINER
SET search_path TO pg_catalog, @extschema@, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'get_unread_notification_count_wrapper';

CREATE FUNCTION @extschema@."mark_all_notifications_read"(
	"org_id" uuid DEFAULT NULL
) RETURNS bigint
VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, @extschema@, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'mark_all_notifications_read_wrapper';

CREATE FUNCTION @extschema@."mark_notification_read"(
	"notification_id" uuid
) RETURNS void
VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, @extschema@, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'mark_notification_read_wrapper';

CREATE FUNCTION @extschema@."notify_from_audit"()
	RETURNS TRIGGER
	LANGUAGE c
	AS 'MODULE_PATHNAME', 'notify_from_audit_wrapper';

-- Notifications (seed 004 §4) and user preferences (seed 002 §1): src/notifications.rs.
--
-- The database notifies people of what happened to them, from the audit log's entries (one
-- rule per type, in notify_from_audit): an invitation for an existing account's email, an
-- invitation accepted (to the inviter), a role changed, a removal from an organization, an
-- ownership received. Nobody is notified of their own action; a preference with
-- in_app_enabled = false turns a type off. Each new notification is also sent with pg_notify
-- on the channel saas_core_notifications ({"id", "user_id", "organization_id", "type"}).

CREATE TABLE @extschema@.notifications (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id          uuid NOT NULL REFERENCES @extschema@.users (id) ON DELETE CASCADE,
    organization_id  uuid REFERENCES @extschema@.organizations (id) ON DELETE CASCADE,
    type             text NOT NULL CONSTRAINT notifications_type_check CHECK (type ~ '^[a-z_]+(\.[a-z_]+)*$'),
    title            text NOT NULL CONSTRAINT notifications_title_check CHECK (char_length(title) <= 255),
    body             text NOT NULL,
    data             jsonb NOT NULL DEFAULT '{}'::jsonb CONSTRAINT notifications_data_check CHECK (jsonb_typeof(data) = 'object'),
    link             text,
    read_at          timestamptz,
    archived_at      timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE @extschema@.notifications IS
    'In-app notifications, created by the database. A user reads their own and sets only read_at and archived_at.';

CREATE INDEX notifications_user_idx ON @extschema@.notifications (user_id, created_at DESC);
CREATE INDEX notifications_unread_idx ON @extschema@.notifications (user_id)
    WHERE read_at IS NULL AND archived_at IS NULL;
CREATE INDEX notifications_organization_idx ON @extschema@.notifications (organization_id);

CREATE TABLE @extschema@.notification_preferences (
    user_id            uuid NOT NULL REFERENCES @extschema@.users (id) ON DELETE CASCADE,
    notification_type  text NOT NULL
                       CONSTRAINT notification_preferences_type_check CHECK (notification_type ~ '^[a-z_]+(\.[a-z_]+)*$'),
    in_app_enabled     boolean NOT NULL DEFAULT true,
    -- For the application's mailer: saas_core sends no email.
    email_enabled      boolean NOT NULL DEFAULT true,
    email_frequency    text NOT NULL DEFAULT 'immediate'
                       CONSTRAINT notification_preferences_frequency_check
                       CHECK (email_frequency IN ('immediate', 'daily', 'weekly', 'never')),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, notification_type)
);

CREATE TABLE @extschema@.user_preferences (
    user_id     uuid NOT NULL REFERENCES @extschema@.users (id) ON DELETE CASCADE,
    category    text NOT NULL DEFAULT 'general'
                CONSTRAINT user_preferences_category_check CHECK (category ~ '^[a-z][a-z0-9_]{0,62}$'),
    key         text NOT NULL CONSTRAINT user_preferences_key_check CHECK (key ~ '^[a-z][a-z0-9_.]{0,126}$'),
    value       jsonb NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, category, key)
);
COMMENT ON TABLE @extschema@.user_preferences IS
    'Per-user settings as key/value (theme, language, …), read and written by the user.';

CREATE TRIGGER update_notification_preferences_updated_at
    BEFORE UPDATE ON @extschema@.notification_preferences
    FOR EACH ROW EXECUTE FUNCTION @extschema@.update_updated_at_column();
CREATE TRIGGER update_user_preferences_updated_at
    BEFORE UPDATE ON @extschema@.user_preferences
    FOR EACH ROW EXECUTE FUNCTION @extschema@.update_updated_at_column();

CREATE TRIGGER notify_from_audit
    AFTER INSERT ON @extschema@.audit_log
    REFERENCING NEW TABLE AS new_entries
    FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.notify_from_audit();

SELECT pg_catalog.pg_extension_config_dump('@extschema@.notifications', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.notification_preferences', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.user_preferences', '');

REVOKE ALL ON @extschema@.notifications, @extschema@.notification_preferences, @extschema@.user_preferences
    FROM PUBLIC, anon, authenticated, service_role;
GRANT SELECT ON @extschema@.notifications TO authenticated;
GRANT UPDATE (read_at, archived_at) ON @extschema@.notifications TO authenticated;
GRANT SELECT, INSERT, UPDATE, DELETE ON @extschema@.notification_preferences, @extschema@.user_preferences TO authenticated;
GRANT SELECT, INSERT, UPDATE, DELETE ON @extschema@.notifications, @extschema@.notification_preferences,
    @extschema@.user_preferences TO service_role;

ALTER TABLE @extschema@.notifications ENABLE ROW LEVEL SECURITY;
ALTER TABLE @extschema@.notification_preferences ENABLE ROW LEVEL SECURITY;
ALTER TABLE @extschema@.user_preferences ENABLE ROW LEVEL SECURITY;

CREATE POLICY notifications_select_own ON @extschema@.notifications
    FOR SELECT TO authenticated USING (user_id = (SELECT auth.uid()));
CREATE POLICY notifications_update_own ON @extschema@.notifications
    FOR UPDATE TO authenticated
    USING (user_id = (SELECT auth.uid())) WITH CHECK (user_id = (SELECT auth.uid()));
CREATE POLICY notifications_service_role_all ON @extschema@.notifications
    FOR ALL TO service_role USING (true) WITH CHECK (true);

CREATE POLICY notification_preferences_own ON @extschema@.notification_preferences
    FOR ALL TO authenticated
    USING (user_id = (SELECT auth.uid())) WITH CHECK (user_id = (SELECT auth.uid()));
CREATE POLICY notification_preferences_service_role_all ON @extschema@.notification_preferences
    FOR ALL TO service_role USING (true) WITH CHECK (true);

CREATE POLICY user_preferences_own ON @extschema@.user_preferences
    FOR ALL TO authenticated
    USING (user_id = (SELECT auth.uid())) WITH CHECK (user_id = (SELECT auth.uid()));
CREATE POLICY user_preferences_service_role_all ON @extschema@.user_preferences
    FOR ALL TO service_role USING (true) WITH CHECK (true);

REVOKE ALL ON FUNCTION @extschema@.notify_from_audit() FROM PUBLIC, anon, authenticated, service_role;
ALTER FUNCTION @extschema@.notify_from_audit()
    SECURITY DEFINER SET search_path = pg_catalog, @extschema@, pg_temp;

REVOKE ALL ON FUNCTION @extschema@.get_notifications(integer, timestamptz, boolean) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.get_notifications(integer, timestamptz, boolean) TO authenticated;
REVOKE ALL ON FUNCTION @extschema@.get_unread_notification_count() FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.get_unread_notification_count() TO authenticated;
REVOKE ALL ON FUNCTION @extschema@.mark_notification_read(uuid) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.mark_notification_read(uuid) TO authenticated;
REVOKE ALL ON FUNCTION @extschema@.mark_all_notifications_read(uuid) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.mark_all_notifications_read(uuid) TO authenticated;
REVOKE ALL ON FUNCTION @extschema@.archive_notification(uuid) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.archive_notification(uuid) TO authenticated;

-- ---------------------------------------------------------------------------------------
-- billing_events (sql/billing_events.sql, new in 0.2.0: as a fresh install has it)
-- ---------------------------------------------------------------------------------------
CREATE FUNCTION @extschema@."apply_billing_event"(
	"provider" TEXT,
	"event" jsonb
) RETURNS jsonb
VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, @extschema@, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'apply_billing_event_wrapper';

CREATE FUNCTION @extschema@."request_seats"(
	"org_id" uuid,
	"quantity" INT
) RETURNS void
VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, @extschema@, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'request_seats_wrapper';

-- Payment provider webhooks and the seat outbox (src/billing_events.rs): apply_billing_event() takes a Stripe Event
-- or a Lemon Squeezy webhook body as the provider sends it, applies it once, in order, and logs
-- it here with its outcome. Signature verification stays in the application: it needs the raw
-- body and the endpoint's secret.

CREATE TABLE @extschema@.billing_events (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    provider         text NOT NULL CONSTRAINT billing_events_provider_check CHECK (provider IN ('stripe', 'lemon_squeezy')),
    -- Stripe's event id; for Lemon Squeezy (no event id) its event name, object and update time.
    event_key        text NOT NULL,
    event_type       text NOT NULL,
    -- The provider's id of the object the event is about (sub_…, cus_…, cs_…, a subscription id).
    object_id        text,
    -- No foreign key: the log outlives the organization.
    organization_id  uuid,
    -- The provider's time of the event (Stripe: created; Lemon Squeezy: the object's updated_at).
    occurred_at      timestamptz,
    received_at      timestamptz NOT NULL DEFAULT now(),
    -- How many deliveries were applied (failed and unmapped events are tried again).
    attempts         integer NOT NULL DEFAULT 1,
    -- applied; stale (older than what was applied to its object); unknown_type (logged, ignored);
    -- unmapped (no organization found: tried again on redelivery); failed (the error is kept;
    -- tried again on redelivery).
    outcome          text NOT NULL CONSTRAINT billing_events_outcome_check
                     CHECK (outcome IN ('applied', 'stale', 'unknown_type', 'unmapped', 'failed')),
    error            text,
    payload          jsonb NOT NULL,
    CONSTRAINT billing_events_key UNIQUE (provider, event_key)
);
COMMENT ON TABLE @extschema@.billing_events IS
    'Every provider webhook event apply_billing_event() received, with its outcome, for support.';
CREATE INDEX billing_events_organization_idx ON @extschema@.billing_events (organization_id, received_at DESC);
CREATE INDEX billing_events_object_idx ON @extschema@.billing_events (provider, object_id, occurred_at DESC);

SELECT pg_catalog.pg_extension_config_dump('@extschema@.billing_events', '');

REVOKE ALL ON @extschema@.billing_events FROM PUBLIC, anon, authenticated, service_role;
GRANT SELECT ON @extschema@.billing_events TO service_role;
ALTER TABLE @extschema@.billing_events ENABLE ROW LEVEL SECURITY;
CREATE POLICY billing_events_service_role_read ON @extschema@.billing_events
    FOR SELECT TO service_role USING (true);

REVOKE ALL ON FUNCTION @extschema@.apply_billing_event(text, jsonb) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.apply_billing_event(text, jsonb) TO service_role;

-- Seats of quantity-based subscriptions (seed 003): the seats the subscription pays for bound
-- membership; the quantity the provider should have waits here for the application's seat
-- manager, which pushes it (with immediate proration). request_seats() asks for more before
-- people are added; a removal asks for fewer. The provider's subscription event echoing the
-- quantity marks it done.
CREATE TABLE @extschema@.pending_seat_updates (
    id                        uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id           uuid NOT NULL REFERENCES @extschema@.organizations (id) ON DELETE CASCADE,
    provider                  text,
    provider_subscription_id  text,
    desired_quantity          integer NOT NULL CONSTRAINT pending_seat_updates_quantity_check CHECK (desired_quantity >= 1),
    reason                    text NOT NULL CONSTRAINT pending_seat_updates_reason_check
                              CHECK (reason IN ('requested', 'members_removed')),
    status                    text NOT NULL DEFAULT 'pending' CONSTRAINT pending_seat_updates_status_check
                              CHECK (status IN ('pending', 'done', 'superseded')),
    requested_at              timestamptz NOT NULL DEFAULT now(),
    resolved_at               timestamptz,
    CONSTRAINT pending_seat_updates_resolved_check CHECK ((status = 'pending') = (resolved_at IS NULL))
);
COMMENT ON TABLE @extschema@.pending_seat_updates IS
    'The seat quantity to push to the provider for a quantity-based subscription: one pending row per organization at most.';
CREATE UNIQUE INDEX pending_seat_updates_one_pending ON @extschema@.pending_seat_updates (organization_id)
    WHERE status = 'pending';
CREATE INDEX pending_seat_updates_status_idx ON @extschema@.pending_seat_updates (status, requested_at)
    WHERE status = 'pending';

SELECT pg_catalog.pg_extension_config_dump('@extschema@.pending_seat_updates', '');

REVOKE ALL ON @extschema@.pending_seat_updates FROM PUBLIC, anon, authenticated, service_role;
GRANT SELECT ON @extschema@.pending_seat_updates TO authenticated;
GRANT SELECT, UPDATE ON @extschema@.pending_seat_updates TO service_role;
ALTER TABLE @extschema@.pending_seat_updates ENABLE ROW LEVEL SECURITY;
CREATE POLICY pending_seat_updates_select_billing ON @extschema@.pending_seat_updates
    FOR SELECT TO authenticated
    USING (organization_id = ANY (ARRAY(SELECT @extschema@.current_user_permitted_org_ids('billing.read'))));
CREATE POLICY pending_seat_updates_service_role_all ON @extschema@.pending_seat_updates
    FOR ALL TO service_role USING (true) WITH CHECK (true);

REVOKE ALL ON FUNCTION @extschema@.request_seats(uuid, integer) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.request_seats(uuid, integer) TO authenticated, service_role;

-- ---------------------------------------------------------------------------------------
-- billing_ledger (sql/billing_ledger.sql, new in 0.2.0: as a fresh install has it)
-- ---------------------------------------------------------------------------------------


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

-- ---------------------------------------------------------------------------------------
-- coupons (sql/coupons.sql, new in 0.2.0: as a fresh install has it)
-- ---------------------------------------------------------------------------------------
CREATE FUNCTION @extschema@."redeem_coupon"(
	"org_id" uuid,
	"code" TEXT,
	"plan" TEXT DEFAULT NULL
) RETURNS jsonb
VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, @extschema@, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'redeem_coupon_wrapper';

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

-- ---------------------------------------------------------------------------------------
-- usage_records (sql/usage_records.sql, new in 0.2.0: as a fresh install has it)
-- ---------------------------------------------------------------------------------------
CREATE FUNCTION @extschema@."mark_usage_record_reported"(
	"record_id" uuid,
	"provider_record_id" TEXT DEFAULT NULL
) RETURNS void
VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, @extschema@, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'mark_usage_record_reported_wrapper';

CREATE FUNCTION @extschema@."prepare_usage_records"(
	"month" timestamp with time zone DEFAULT NULL
) RETURNS jsonb
VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, @extschema@, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'prepare_usage_records_wrapper';

-- Usage records (seed 002 §4, seed 004 §1; src/usage_records.rs): what a usage_based
-- subscription reports to its provider for a billing period, produced from saas_core's
-- rollups by prepare_usage_records(), which the application's billing job calls after a
-- month closes. One row per organization, event type and month; preparing a month again
-- refreshes what is still pending and never touches what was reported.

CREATE TABLE @extschema@.usage_records (
    id                        uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id           uuid NOT NULL REFERENCES @extschema@.organizations (id) ON DELETE CASCADE,
    event_type                text NOT NULL,
    -- A UTC calendar month, the bucket check_feature_access counts against: [period_start, period_end).
    period_start              timestamptz NOT NULL,
    period_end                timestamptz NOT NULL,
    quantity                  numeric NOT NULL CONSTRAINT usage_records_quantity_check CHECK (quantity >= 0),
    provider                  text CONSTRAINT usage_records_provider_check CHECK (provider IN ('stripe', 'lemon_squeezy')),
    provider_subscription_id  text,
    -- pending: waiting for the billing job; reported: the provider has it (its record id kept).
    status                    text NOT NULL DEFAULT 'pending' CONSTRAINT usage_records_status_check
                              CHECK (status IN ('pending', 'reported')),
    reported_at               timestamptz,
    provider_record_id        text,
    created_at                timestamptz NOT NULL DEFAULT now(),
    updated_at                timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT usage_records_period_key UNIQUE (organization_id, event_type, period_start),
    CONSTRAINT usage_records_period_check CHECK (period_end > period_start),
    CONSTRAINT usage_records_reported_check CHECK ((status = 'reported') = (reported_at IS NOT NULL))
);
COMMENT ON TABLE @extschema@.usage_records IS
    'Usage a usage_based subscription reports to its provider, per organization, event type and month.';
CREATE INDEX usage_records_pending_idx ON @extschema@.usage_records (period_start) WHERE status = 'pending';

CREATE TRIGGER update_usage_records_updated_at
    BEFORE UPDATE ON @extschema@.usage_records
    FOR EACH ROW EXECUTE FUNCTION @extschema@.update_updated_at_column();

SELECT pg_catalog.pg_extension_config_dump('@extschema@.usage_records', '');

REVOKE ALL ON @extschema@.usage_records FROM PUBLIC, anon, authenticated, service_role;
GRANT SELECT ON @extschema@.usage_records TO authenticated;
GRANT SELECT, INSERT, UPDATE, DELETE ON @extschema@.usage_records TO service_role;
ALTER TABLE @extschema@.usage_records ENABLE ROW LEVEL SECURITY;
CREATE POLICY usage_records_select_billing ON @extschema@.usage_records
    FOR SELECT TO authenticated
    USING (organization_id = ANY (ARRAY(SELECT @extschema@.current_user_permitted_org_ids('billing.read'))));
CREATE POLICY usage_records_service_role_all ON @extschema@.usage_records
    FOR ALL TO service_role USING (true) WITH CHECK (true);

REVOKE ALL ON FUNCTION @extschema@.prepare_usage_records(timestamptz) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.prepare_usage_records(timestamptz) TO service_role;
REVOKE ALL ON FUNCTION @extschema@.mark_usage_record_reported(uuid, text) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.mark_usage_record_reported(uuid, text) TO service_role;

-- ---------------------------------------------------------------------------------------
-- finalize (sql/finalize.sql)
-- ---------------------------------------------------------------------------------------
CREATE FUNCTION @extschema@.hand_objects_to_owner()
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    ext   oid;
    owner regrole;
    stmt  text;
BEGIN
    SELECT e.oid, e.extowner::regrole INTO ext, owner FROM pg_extension e WHERE e.extname = 'saas_core';
    FOR stmt IN
        SELECT format('ALTER %s %s OWNER TO %s', CASE c.relkind WHEN 'S' THEN 'SEQUENCE' ELSE 'TABLE' END,
                      c.oid::regclass, owner)
        FROM pg_depend d JOIN pg_class c ON c.oid = d.objid
        WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_extension'::regclass
          AND d.refobjid = ext AND d.deptype = 'e' AND c.relkind IN ('r', 'p', 'v', 'S') AND c.relowner <> owner
        UNION ALL
        SELECT format('ALTER ROUTINE %s OWNER TO %s', p.oid::regprocedure, owner)
        FROM pg_depend d JOIN pg_proc p ON p.oid = d.objid
        WHERE d.classid = 'pg_proc'::regclass AND d.refclassid = 'pg_extension'::regclass
          AND d.refobjid = ext AND d.deptype = 'e' AND p.proowner <> owner
    LOOP
        EXECUTE stmt;
    END LOOP;
END
$$;
REVOKE ALL ON FUNCTION @extschema@.hand_objects_to_owner() FROM PUBLIC, anon, authenticated, service_role;
SELECT @extschema@.hand_objects_to_owner();

-- Profiles of accounts soft-deleted while 0.1.0 ignored it lose their personal data now,
-- and any account without a profile gets one.
SELECT @extschema@.sync_auth_users();
