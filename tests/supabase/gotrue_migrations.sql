-- What GoTrue's own migrations do to the parts of auth that saas_core touches, run as GoTrue
-- runs them: as supabase_auth_admin, which owns auth but is no superuser. They must succeed
-- whether saas_core was installed before or after: in particular GoTrue creates auth.jwt()
-- itself (migration 20220531120530) and fails with "must be owner of function jwt" if
-- anyone else created it first.
SET ROLE supabase_auth_admin;
SET search_path = auth;

ALTER TABLE auth.users
    ADD COLUMN IF NOT EXISTS phone VARCHAR(15) NULL UNIQUE DEFAULT NULL,
    ADD COLUMN IF NOT EXISTS phone_confirmed_at timestamptz NULL DEFAULT NULL,
    ADD COLUMN IF NOT EXISTS phone_change VARCHAR(15) NULL DEFAULT '',
    ADD COLUMN IF NOT EXISTS email_change varchar(255) NULL DEFAULT '';
ALTER TABLE auth.users RENAME COLUMN confirmed_at TO email_confirmed_at;
ALTER TABLE auth.users ADD COLUMN IF NOT EXISTS banned_until timestamptz NULL;

-- uid() and role() learn the JSON claims that PostgREST sets.
CREATE OR REPLACE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE
AS $$
  select coalesce(
    nullif(current_setting('request.jwt.claim.sub', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
  )::uuid
$$;
CREATE OR REPLACE FUNCTION auth.role() RETURNS text LANGUAGE sql STABLE
AS $$
  select coalesce(
    nullif(current_setting('request.jwt.claim.role', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role')
  )::text
$$;
-- The migration that fails when auth.jwt() already belongs to someone else.
COMMENT ON FUNCTION auth.uid() IS 'Deprecated. Use auth.jwt() -> ''sub'' instead.';
CREATE OR REPLACE FUNCTION auth.jwt() RETURNS jsonb LANGUAGE sql STABLE
AS $$
  select
    coalesce(
        nullif(current_setting('request.jwt.claim', true), ''),
        nullif(current_setting('request.jwt.claims', true), '')
    )::jsonb
$$;

ALTER TABLE auth.users ALTER COLUMN phone TYPE text;
ALTER TABLE auth.users ADD COLUMN IF NOT EXISTS deleted_at timestamptz NULL;
ALTER TABLE auth.users ADD COLUMN IF NOT EXISTS is_sso_user boolean NOT NULL DEFAULT false;
ALTER TABLE auth.users ADD COLUMN IF NOT EXISTS is_anonymous boolean NOT NULL DEFAULT false;
CREATE INDEX IF NOT EXISTS users_is_anonymous_idx ON auth.users USING btree (is_anonymous);
ALTER TABLE auth.users DROP CONSTRAINT IF EXISTS users_phone_key;

ALTER TABLE auth.users ENABLE ROW LEVEL SECURITY;
GRANT SELECT ON auth.users TO postgres WITH GRANT OPTION;
RESET search_path;
RESET ROLE;
