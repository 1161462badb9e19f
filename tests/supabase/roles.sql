-- The roles of a self-hosted Supabase database (the supabase/postgres image's init scripts and
-- migrations), created once per cluster by its bootstrap superuser, supabase_admin. The role
-- called postgres is NOT a superuser: it owns the database and is what the dashboard and most
-- projects' migrations run as.
CREATE ROLE postgres NOSUPERUSER CREATEDB CREATEROLE LOGIN REPLICATION BYPASSRLS;
CREATE ROLE anon NOLOGIN NOINHERIT;
CREATE ROLE authenticated NOLOGIN NOINHERIT;
CREATE ROLE service_role NOLOGIN NOINHERIT BYPASSRLS;
CREATE ROLE authenticator NOINHERIT LOGIN;
GRANT anon, authenticated, service_role TO authenticator;
-- GoTrue's role: it owns auth and runs GoTrue's migrations.
CREATE ROLE supabase_auth_admin NOINHERIT CREATEROLE LOGIN NOREPLICATION;
-- postgres manages auth's triggers through supabase_auth_admin, and is every API role.
GRANT supabase_auth_admin TO postgres;
GRANT anon, authenticated, service_role TO postgres;
ALTER ROLE authenticated INHERIT;
ALTER ROLE anon INHERIT;
ALTER ROLE service_role INHERIT;
