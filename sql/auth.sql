-- Supabase compatibility: the roles and the `auth` schema the rest of saas_core stands on.
--
-- On a Supabase database everything here already exists and nothing is created.
-- On plain PostgreSQL the missing pieces are created with Supabase's definitions,
-- so policies and applications behave the same on both.

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
    IF pg_catalog.to_regnamespace('auth') IS NULL THEN
        CREATE SCHEMA auth;
        GRANT USAGE ON SCHEMA auth TO anon, authenticated, service_role;
    END IF;

    IF pg_catalog.to_regclass('auth.users') IS NULL THEN
        -- The columns GoTrue's auth.users has that saas_core reads, plus the usual timestamps.
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
            updated_at         timestamptz NOT NULL DEFAULT now()
        );
        CREATE UNIQUE INDEX users_email_key ON auth.users (lower(email)) WHERE email IS NOT NULL;
        -- Only the owner (the auth server's role) writes here; nobody reads it through the API.
        ALTER TABLE auth.users ENABLE ROW LEVEL SECURITY;
        REVOKE ALL ON auth.users FROM PUBLIC;
        PERFORM pg_catalog.pg_extension_config_dump('auth.users', '');
    END IF;

    -- Supabase's definitions, verbatim in behaviour: the legacy per-claim setting wins,
    -- then the JSON claims; '' counts as unset; NULL when absent.
    IF pg_catalog.to_regprocedure('auth.uid()') IS NULL THEN
        CREATE FUNCTION auth.uid() RETURNS uuid
        LANGUAGE sql STABLE
        AS $fn$
            SELECT coalesce(
                nullif(current_setting('request.jwt.claim.sub', true), ''),
                (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
            )::uuid
        $fn$;
        REVOKE ALL ON FUNCTION auth.uid() FROM PUBLIC;
        GRANT EXECUTE ON FUNCTION auth.uid() TO anon, authenticated, service_role;
    END IF;

    IF pg_catalog.to_regprocedure('auth.role()') IS NULL THEN
        CREATE FUNCTION auth.role() RETURNS text
        LANGUAGE sql STABLE
        AS $fn$
            SELECT coalesce(
                nullif(current_setting('request.jwt.claim.role', true), ''),
                (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role')
            )::text
        $fn$;
        REVOKE ALL ON FUNCTION auth.role() FROM PUBLIC;
        GRANT EXECUTE ON FUNCTION auth.role() TO anon, authenticated, service_role;
    END IF;

    IF pg_catalog.to_regprocedure('auth.jwt()') IS NULL THEN
        CREATE FUNCTION auth.jwt() RETURNS jsonb
        LANGUAGE sql STABLE
        AS $fn$
            SELECT coalesce(
                nullif(current_setting('request.jwt.claim', true), ''),
                nullif(current_setting('request.jwt.claims', true), '')
            )::jsonb
        $fn$;
        REVOKE ALL ON FUNCTION auth.jwt() FROM PUBLIC;
        GRANT EXECUTE ON FUNCTION auth.jwt() TO anon, authenticated, service_role;
    END IF;
END
$auth$;

-- The API roles reach the extension's schema (it may be other than public).
GRANT USAGE ON SCHEMA @extschema@ TO anon, authenticated, service_role;
