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
-- entitlements (sql/entitlements.sql)
-- ---------------------------------------------------------------------------------------
CREATE FUNCTION @extschema@.replace_seeded_catalog()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, @extschema@, pg_temp
AS $$
BEGIN
    IF @extschema@.restore_in_progress() THEN
        DELETE FROM @extschema@.plan_features;
        IF TG_TABLE_NAME = 'feature_definitions' THEN
            DELETE FROM @extschema@.feature_definitions;
        END IF;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER replace_seeded_catalog
    BEFORE INSERT ON @extschema@.feature_definitions
    FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.replace_seeded_catalog();
CREATE TRIGGER replace_seeded_catalog
    BEFORE INSERT ON @extschema@.plan_features
    FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.replace_seeded_catalog();

-- 0.1.0 left the catalog out of pg_dump: operator edits were lost in a backup.
SELECT pg_catalog.pg_extension_config_dump('@extschema@.feature_definitions', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.plan_features', '');

REVOKE ALL ON FUNCTION @extschema@.replace_seeded_catalog() FROM PUBLIC, anon, authenticated, service_role;

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

ALTER TABLE @extschema@.usage_events DROP CONSTRAINT usage_events_quantity_check;
ALTER TABLE @extschema@.usage_events
    ADD CONSTRAINT usage_events_quantity_finite_check CHECK (quantity <> 0 AND quantity BETWEEN -1e12 AND 1e12);

CREATE OR REPLACE FUNCTION @extschema@.rollup_usage_events()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, @extschema@, pg_temp
AS $$
BEGIN
    IF @extschema@.restore_in_progress() THEN
        RETURN NULL;
    END IF;
    INSERT INTO @extschema@.usage_aggregations AS a
        (organization_id, event_type, period, period_start, period_end,
         total_quantity, event_count, unique_users)
    SELECT per_user.organization_id, per_user.event_type, per_user.period,
           per_user.bucket_start, per_user.bucket_end,
           sum(per_user.quantity), sum(per_user.events),
           count(*) FILTER (WHERE per_user.user_id IS NOT NULL AND per_user.events = (
               SELECT count(*) FROM (
                   SELECT 1 FROM @extschema@.usage_events e
                   WHERE e.organization_id = per_user.organization_id
                     AND e.event_type = per_user.event_type
                     AND e.user_id = per_user.user_id
                     AND e.created_at >= per_user.bucket_start AND e.created_at < per_user.bucket_end
                   LIMIT per_user.events + 1) AS seen))
    FROM (
        SELECT n.organization_id, n.event_type, n.user_id, p.period,
               @extschema@.usage_bucket_start(p.period, n.created_at) AS bucket_start,
               @extschema@.usage_bucket_end(p.period, n.created_at) AS bucket_end,
               sum(n.quantity) AS quantity, count(*) AS events
        FROM new_events n
        CROSS JOIN (VALUES ('daily'), ('monthly')) AS p (period)
        GROUP BY 1, 2, 3, 4, 5, 6
    ) per_user
    GROUP BY 1, 2, 3, 4, 5
    ON CONFLICT (organization_id, event_type, period, period_start) DO UPDATE
        SET total_quantity = a.total_quantity + excluded.total_quantity,
            event_count    = a.event_count + excluded.event_count,
            unique_users   = a.unique_users + excluded.unique_users;
    RETURN NULL;
END
$$;

-- The one global advisory lock key any role could hold to stall every tenant's writes.
DROP FUNCTION @extschema@.usage_rollup_lock_key();

REVOKE ALL ON FUNCTION @extschema@.usage_bucket_start(text, timestamptz) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.usage_bucket_start(text, timestamptz) TO authenticated, service_role;
REVOKE ALL ON FUNCTION @extschema@.usage_bucket_end(text, timestamptz) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.usage_bucket_end(text, timestamptz) TO authenticated, service_role;

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
        SELECT format('ALTER TABLE %s OWNER TO %s', c.oid::regclass, owner)
        FROM pg_depend d JOIN pg_class c ON c.oid = d.objid
        WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_extension'::regclass
          AND d.refobjid = ext AND d.deptype = 'e' AND c.relkind IN ('r', 'p') AND c.relowner <> owner
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
