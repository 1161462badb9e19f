-- Teams benchmark set-up (scripts/bench_teams.sh): an enterprise organization with :members
-- members (ids computed from n), and an audit log of :audit_orgs organizations with
-- :audit_per_org entries each, the big organization among them. Run as a superuser in a
-- database with saas_core installed.
\set ON_ERROR_STOP 1
SET client_min_messages = warning;

-- Member n (1 is the owner, 2 an admin who reads the audit log).
CREATE OR REPLACE FUNCTION pg_temp.user_id(n int) RETURNS uuid LANGUAGE sql IMMUTABLE
AS $$ SELECT ('00000000-0000-4000-8002-' || lpad(n::text, 12, '0'))::uuid $$;

INSERT INTO auth.users (id, email, raw_user_meta_data)
SELECT pg_temp.user_id(n), format('member%s@bench.example', n),
       jsonb_build_object('full_name', format('Member %s', n), 'avatar_url', format('https://img.example/%s.png', n))
FROM generate_series(1, :members) n;
INSERT INTO organizations (id, name, slug, owner_id, org_type)
VALUES ('00000000-0000-4000-8003-000000000001', 'Big Co', 'big-co', pg_temp.user_id(1), 'business');
INSERT INTO org_subscriptions (organization_id, plan, status)
VALUES ('00000000-0000-4000-8003-000000000001', 'enterprise', 'active');
INSERT INTO organization_members (organization_id, user_id, role, created_at)
SELECT '00000000-0000-4000-8003-000000000001', pg_temp.user_id(n),
       CASE WHEN n = 1 THEN 'owner' WHEN n <= 20 THEN 'admin' WHEN n % 10 = 0 THEN 'viewer' ELSE 'member' END,
       now() - make_interval(mins => n)
FROM generate_series(1, :members) n;

-- The audit log: only the synthetic entries (what signups wrote goes), spread over a year.
-- Loaded the way a restore would (session_replication_role = replica): no notifications.
DELETE FROM audit_log;
SET session_replication_role = replica;
INSERT INTO audit_log (occurred_at, organization_id, actor_id, actor_name, actor_role, action,
                       resource_type, resource_id, resource_name, changes)
SELECT now() - make_interval(secs => (e * 31536000.0 / :audit_per_org) + o),
       CASE WHEN o = 1 THEN '00000000-0000-4000-8003-000000000001'::uuid
            ELSE ('00000000-0000-4000-8004-' || lpad(o::text, 12, '0'))::uuid END,
       pg_temp.user_id(1 + e % 20), format('Member %s', 1 + e % 20), 'authenticated',
       (ARRAY['member.added', 'member.role_changed', 'invitation.created', 'organization.renamed'])[1 + e % 4],
       'member', pg_temp.user_id(1 + e), format('Member %s', 1 + e),
       jsonb_build_object('role', jsonb_build_object('before', 'member', 'after', 'admin'))
FROM generate_series(1, :audit_orgs) o, generate_series(1, :audit_per_org) e;
RESET session_replication_role;
VACUUM ANALYZE audit_log;
VACUUM ANALYZE organization_members;
VACUUM ANALYZE users;
