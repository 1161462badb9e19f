-- Supabase compatibility: the roles and the `auth` schema the rest of saas_core stands on.
--
-- On a Supabase database `auth` exists, and saas_core creates nothing in it: not even a
-- function Supabase has not created yet (GoTrue's own migrations create auth.jwt() later, as
-- supabase_auth_admin, and must still be able to). It needs auth.users and auth.uid().
--
-- On plain PostgreSQL the missing `auth` schema is created with Supabase's definitions, so
-- that policies and applications behave the same on both, and then released from the
-- extension: the sign-in accounts are the application's, and DROP EXTENSION saas_core
-- must not take them along. They belong to the role that installed saas_core.

DO $roles$
BEGIN
    -- Cluster-wide roles, as Supabase has them. Created only when missing.
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'anon') THEN
        CREATE ROLE anon NOLOGIN NOINHERIT;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'authenticated') THEN
        CREATE ROLE authenticated NOLOGIN NOINHERIT;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'service_role') THEN
        CREATE ROLE service_role NOLOGIN NOINHERIT BYPASSRLS;
    END IF;
END
$roles$;

DO $auth$
BEGIN
    IF pg_catalog.to_regnamespace('auth') IS NOT NULL THEN
        IF pg_catalog.to_regclass('auth.users') IS NULL OR pg_catalog.to_regprocedure('auth.uid()') IS NULL THEN
            RAISE EXCEPTION 'saas_core needs auth.users and auth.uid(): the schema "auth" exists without them'
                USING ERRCODE = 'undefined_object',
                      HINT = 'On Supabase, install saas_core after the auth schema is set up; elsewhere, drop or rename the unrelated "auth" schema.';
        END IF;
        RETURN;
    END IF;

    CREATE SCHEMA auth;
    GRANT USAGE ON SCHEMA auth TO anon, authenticated, service_role;

    -- The columns of GoTrue's auth.users that saas_core follows, with GoTrue's types where it matters.
    CREATE TABLE auth.users (
        id                 uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        email              text,
        phone              text,
        role               text,
        raw_user_meta_data jsonb NOT NULL DEFAULT '{}'::jsonb,
        raw_app_meta_data  jsonb NOT NULL DEFAULT '{}'::jsonb,
        email_confirmed_at timestamptz,
        last_sign_in_at    timestamptz,
        created_at         timestamptz NOT NULL DEFAULT now(),
        updated_at         timestamptz NOT NULL DEFAULT now(),
        -- since 0.2.0
        phone_confirmed_at timestamptz,
        is_anonymous       boolean NOT NULL DEFAULT false,
        deleted_at         timestamptz
    );
    CREATE UNIQUE INDEX users_email_key ON auth.users (lower(email)) WHERE email IS NOT NULL;
    -- Only the owner (the auth server's role) writes here; nobody reads it through the API.
    ALTER TABLE auth.users ENABLE ROW LEVEL SECURITY;
    REVOKE ALL ON auth.users FROM PUBLIC;

    -- Supabase's definitions, verbatim in behaviour: the legacy per-claim setting wins,
    -- then the JSON claims; '' counts as unset; NULL when absent. (The bodies are indented as
    -- 0.1.0 had them: a database updated from 0.1.0 must end up byte-identical.)
    CREATE FUNCTION auth.uid() RETURNS uuid
    LANGUAGE sql STABLE
    AS $fn$
            SELECT coalesce(
                nullif(current_setting('request.jwt.claim.sub', true), ''),
                (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
            )::uuid
        $fn$;
    CREATE FUNCTION auth.role() RETURNS text
    LANGUAGE sql STABLE
    AS $fn$
            SELECT coalesce(
                nullif(current_setting('request.jwt.claim.role', true), ''),
                (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role')
            )::text
        $fn$;
    CREATE FUNCTION auth.jwt() RETURNS jsonb
    LANGUAGE sql STABLE
    AS $fn$
            SELECT coalesce(
                nullif(current_setting('request.jwt.claim', true), ''),
                nullif(current_setting('request.jwt.claims', true), '')
            )::jsonb
        $fn$;
    REVOKE ALL ON FUNCTION auth.uid(), auth.role(), auth.jwt() FROM PUBLIC;
    GRANT EXECUTE ON FUNCTION auth.uid(), auth.role(), auth.jwt() TO anon, authenticated, service_role;

    -- Not the extension's: DROP EXTENSION keeps them, pg_dump dumps them as ordinary objects.
    ALTER EXTENSION saas_core DROP FUNCTION auth.uid();
    ALTER EXTENSION saas_core DROP FUNCTION auth.role();
    ALTER EXTENSION saas_core DROP FUNCTION auth.jwt();
    ALTER EXTENSION saas_core DROP TABLE auth.users;
    ALTER EXTENSION saas_core DROP SCHEMA auth;
    ALTER SCHEMA auth OWNER TO @extowner@;
    ALTER TABLE auth.users OWNER TO @extowner@;
    ALTER FUNCTION auth.uid() OWNER TO @extowner@;
    ALTER FUNCTION auth.role() OWNER TO @extowner@;
    ALTER FUNCTION auth.jwt() OWNER TO @extowner@;
END
$auth$;

-- The API roles reach the extension's schema (it may be other than public).
GRANT USAGE ON SCHEMA @extschema@ TO anon, authenticated, service_role;
