-- 01_install: the shape CREATE EXTENSION saas_core leaves behind: tables, RLS, seed rows,
-- function hardening (search_path, no PUBLIC execute), grants to the API roles, indexes.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(83);

-- The forty-three tables of the extension's schema (usage_events is partitioned; its monthly
-- partitions are created by the extension but are not members of it, see below).
SELECT has_table('public', t, format('table public.%s exists', t))
FROM unnest(ARRAY['users', 'organizations', 'organization_members', 'billing_customers',
                  'org_subscriptions', 'feature_definitions', 'plan_features',
                  'usage_events', 'usage_aggregations', 'usage_settings', 'usage_rollup_state',
                  'usage_active_users', 'usage_dirty_buckets', 'usage_idempotency_keys',
                  'usage_meter_locks', 'usage_meter_leases', 'usage_counters',
                  'permissions', 'roles', 'role_permissions', 'user_roles', 'invitation_settings',
                  'invitations', 'audit_log', 'notifications', 'notification_preferences',
                  'user_preferences', 'teams', 'team_members', 'workspaces', 'workspace_members',
                  'plans', 'plan_prices', 'billing_events', 'pending_seat_updates', 'invoices',
                  'invoice_line_items', 'payment_methods', 'payment_transactions', 'coupons', 'coupon_plans',
                  'coupon_redemptions', 'usage_records']) AS t;

-- Row level security on every table that belongs to the extension.
CREATE TEMP VIEW ext_tables AS
SELECT c.oid::regclass AS rel, c.relrowsecurity
FROM pg_class c
JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e'
JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'saas_core'
WHERE c.relkind IN ('r', 'p');

SELECT cmp_ok((SELECT count(*) FROM ext_tables WHERE rel::text NOT LIKE 'auth.%')::int, '=', 43,
              'the extension owns exactly 43 tables in its schema');
SELECT is_empty($$ SELECT rel::text FROM ext_tables WHERE NOT relrowsecurity $$,
                'RLS is enabled on every table of the extension');
SELECT ok((SELECT bool_and(relrowsecurity) FROM ext_tables WHERE rel::text IN
             ('users', 'organizations', 'organization_members', 'billing_customers', 'org_subscriptions',
              'feature_definitions', 'plan_features', 'usage_events', 'usage_aggregations')),
          'relrowsecurity is true on all 9 named tables');

-- Partitions: last month (late events) through partitions_ahead months ahead exist at install,
-- each with RLS on, owned like the parent, and no API role holding a privilege on it directly.
CREATE TEMP VIEW usage_partitions AS
SELECT i.inhrelid::regclass AS part, c.relrowsecurity, c.relowner
FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = 'usage_events'::regclass;
SELECT cmp_ok((SELECT count(*) FROM usage_partitions)::int, '>=',
              (SELECT partitions_ahead + 2 FROM usage_settings),
              'usage_events has partitions from last month to partitions_ahead months ahead');
SELECT ok(EXISTS (SELECT 1 FROM usage_partitions
                  WHERE part::text = 'usage_events_' || to_char(now() - interval '1 month', 'YYYY_MM')),
          'last month has a partition (late events)');
SELECT is_empty($$ SELECT part::text FROM usage_partitions WHERE NOT relrowsecurity $$,
                'RLS is enabled on every partition');
SELECT is_empty($$ SELECT part::text FROM usage_partitions
                   WHERE relowner <> (SELECT relowner FROM pg_class WHERE oid = 'usage_events'::regclass) $$,
                'every partition is owned by the owner of usage_events');
SELECT is_empty($$ SELECT part::text, r FROM usage_partitions,
                          unnest(ARRAY['anon', 'authenticated', 'service_role']) AS r
                   WHERE has_table_privilege(r, part, 'SELECT, INSERT, UPDATE, DELETE') $$,
                'API roles cannot reach a partition directly, only through usage_events');
SELECT is_empty($$ SELECT part::text FROM usage_partitions p
                   WHERE EXISTS (SELECT 1 FROM pg_depend d
                                 WHERE d.classid = 'pg_class'::regclass AND d.objid = p.part
                                   AND d.deptype = 'e') $$,
                'partitions are not extension members (pg_dump keeps their rows)');

-- Seed shape.
SELECT cmp_ok((SELECT count(*) FROM information_schema.columns
               WHERE table_schema = 'public' AND table_name = 'users')::int, '>=', 41,
              'users has at least 41 columns');
SELECT is((SELECT count(*) FROM plan_features)::int, 36, 'plan_features has 36 rows');
SELECT is((SELECT count(*) FROM (SELECT DISTINCT plan, feature_key FROM plan_features) x)::int, 36,
          'plan_features is 4 plans x 9 keys without duplicates');
SELECT set_eq($$ SELECT DISTINCT plan FROM plan_features $$,
              ARRAY['free', 'pro', 'business', 'enterprise'], 'plan_features covers the 4 plans');
SELECT is((SELECT count(*) FROM feature_definitions)::int, 9, 'feature_definitions has 9 keys');

-- Functions of the extension (the pgrx test harness' "tests" schema is not part of a release build).
CREATE TEMP VIEW ext_functions AS
SELECT p.oid, p.oid::regprocedure AS fn, p.prosecdef, p.proconfig, p.proacl
FROM pg_proc p
JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e'
JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'saas_core'
WHERE p.pronamespace <> coalesce(to_regnamespace('tests'), 0);

SELECT cmp_ok((SELECT count(*) FROM ext_functions WHERE prosecdef)::int, '>=', 10,
              'the extension has its SECURITY DEFINER functions (at least 10)');
SELECT is_empty($$
    SELECT fn::text FROM ext_functions
    WHERE prosecdef
      AND NOT EXISTS (SELECT 1 FROM unnest(proconfig) AS c
                      WHERE c ~ '^search_path=pg_catalog\M' AND c ~ '\mpg_temp$')
$$, 'every SECURITY DEFINER function pins search_path = pg_catalog, ..., pg_temp');
SELECT is_empty($$ SELECT fn::text FROM ext_functions WHERE proacl IS NULL $$,
                'no extension function keeps the default ACL (which grants EXECUTE to PUBLIC)');
SELECT is_empty($$
    SELECT fn::text FROM ext_functions f, aclexplode(f.proacl) a
    WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE'
$$, 'no extension function is executable by PUBLIC');

-- Function grants to the API roles.
SELECT ok(NOT has_function_privilege('anon', 'check_feature_access(uuid,text,uuid)', 'EXECUTE'),
          'anon cannot execute check_feature_access');
SELECT ok(NOT has_function_privilege('anon', 'aggregate_usage(text,timestamptz,timestamptz)', 'EXECUTE'),
          'anon cannot execute aggregate_usage');
SELECT ok(NOT has_function_privilege('anon', 'complete_onboarding(uuid)', 'EXECUTE'),
          'anon cannot execute complete_onboarding');
SELECT ok(has_function_privilege('anon', 'check_username_available(text)', 'EXECUTE'),
          'anon can execute check_username_available');
SELECT ok(NOT has_function_privilege('authenticated', 'aggregate_usage(text,timestamptz,timestamptz)', 'EXECUTE'),
          'authenticated cannot execute aggregate_usage');
SELECT ok(NOT has_function_privilege('authenticated', 'sync_auth_users()', 'EXECUTE'),
          'authenticated cannot execute sync_auth_users');
SELECT ok(has_function_privilege('authenticated', 'check_feature_access(uuid,text,uuid)', 'EXECUTE'),
          'authenticated can execute check_feature_access');
SELECT ok(has_function_privilege('service_role', 'aggregate_usage(text,timestamptz,timestamptz)', 'EXECUTE')
          AND has_function_privilege('service_role', 'sync_auth_users()', 'EXECUTE'),
          'service_role can execute aggregate_usage and sync_auth_users');

-- Every column a policy filters on leads a valid index (on usage_events: on every partition).
CREATE TEMP VIEW index_targets AS
SELECT c.oid::regclass AS rel, coalesce(i.inhparent, c.oid)::regclass AS logical
FROM pg_class c LEFT JOIN pg_inherits i ON i.inhrelid = c.oid
WHERE c.relkind = 'r';
SELECT ok((SELECT bool_and(EXISTS (SELECT 1 FROM pg_index i
                                   JOIN pg_attribute a ON a.attrelid = i.indrelid
                                                      AND a.attnum = i.indkey[0]
                                   WHERE i.indrelid = t.rel AND a.attname = v.col AND i.indisvalid))
           FROM index_targets t WHERE t.logical = v.tbl::regclass),
          format('an index leads with %s.%s', v.tbl, v.col))
FROM (VALUES ('users', 'id'),
             ('organizations', 'id'),
             ('organizations', 'owner_id'),
             ('organization_members', 'user_id'),
             ('organization_members', 'organization_id'),
             ('billing_customers', 'organization_id'),
             ('org_subscriptions', 'organization_id'),
             ('usage_events', 'organization_id'),
             ('usage_events', 'user_id'),
             ('usage_aggregations', 'organization_id'),
             ('usage_active_users', 'organization_id'),
             ('usage_idempotency_keys', 'organization_id'),
             ('usage_counters', 'organization_id'),
             ('usage_meter_leases', 'organization_id')) AS v (tbl, col);

SELECT * FROM finish();
ROLLBACK;
