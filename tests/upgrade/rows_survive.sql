-- After ALTER EXTENSION saas_core UPDATE: every row of tests/upgrade/snapshot.sql is still
-- there, unchanged, except for the repairs 0.2.0 makes on purpose, each checked here.
-- Columns added by 0.2.0 are left out of the comparisons and checked on their own.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(27);

\set olivia '00000000-0000-4000-8000-0000000d0001'
\set adam '00000000-0000-4000-8000-0000000d0002'
\set victor '00000000-0000-4000-8000-0000000d0004'
\set cora '00000000-0000-4000-8000-0000000d0007'
\set guest '00000000-0000-4000-8000-0000000d0008'
SELECT EXISTS (SELECT 1 FROM upgrade_snapshot.auth_users WHERE id = :'victor' AND to_jsonb(auth_users) ->> 'deleted_at' IS NOT NULL) AS soft_deleted \gset
SELECT id AS fixture_team FROM organizations WHERE slug = 'fixture-team' \gset
SELECT id AS abandoned FROM organizations WHERE slug = 'abandoned-team' \gset
SELECT id AS victor_personal FROM organizations WHERE owner_id = :'victor' AND is_personal \gset

SELECT is(extversion, '0.2.0', 'the extension is at 0.2.0') FROM pg_extension WHERE extname = 'saas_core';

-- ------------------------------------------------------------ unchanged tables
SELECT set_eq($$ SELECT to_jsonb(x) - '{phone_confirmed_at,is_anonymous,deleted_at}'::text[] FROM auth.users x $$,
              $$ SELECT to_jsonb(x) - '{phone_confirmed_at,is_anonymous,deleted_at}'::text[] FROM upgrade_snapshot.auth_users x $$,
              'auth.users: every account kept as it was');
SELECT set_eq($$ SELECT to_jsonb(x) - '{provider_synced_at,default_payment_method_id}'::text[] FROM billing_customers x $$,
              'SELECT to_jsonb(x) FROM upgrade_snapshot.billing_customers x',
              'billing_customers: every row kept as it was');
SELECT set_eq($$ SELECT to_jsonb(x) - 'provider_synced_at' FROM org_subscriptions x $$,
              'SELECT to_jsonb(x) FROM upgrade_snapshot.org_subscriptions x',
              'org_subscriptions: every row kept as it was');
SELECT is_empty($$ SELECT 1 FROM billing_customers WHERE provider_synced_at IS NOT NULL OR default_payment_method_id IS NOT NULL
                   UNION ALL SELECT 1 FROM org_subscriptions WHERE provider_synced_at IS NOT NULL $$,
                'provider_synced_at and default_payment_method_id (0.2.0) start empty: no provider event was applied yet');
SELECT set_eq('SELECT key FROM plans', ARRAY['free', 'pro', 'business', 'enterprise'],
              'the four plans of 0.1.0''s CHECK lists are rows');
SELECT set_eq('SELECT to_jsonb(x) FROM feature_definitions x', 'SELECT to_jsonb(x) FROM upgrade_snapshot.feature_definitions x',
              'feature_definitions: every row kept, the operator''s feature included');
SELECT set_eq($$ SELECT to_jsonb(x) - 'enforcement' FROM plan_features x WHERE x.enforcement = 'hard' $$,
              'SELECT to_jsonb(x) FROM upgrade_snapshot.plan_features x',
              'plan_features: every row kept, the operator''s edits included, every limit hard as in 0.1.0');
SELECT set_eq($$ SELECT (to_jsonb(x) - '{occurred_at,received_at,idempotency_key,over_limit}'::text[])
                        || jsonb_build_object('created_at', x.occurred_at) FROM usage_events x $$,
              'SELECT to_jsonb(x) FROM upgrade_snapshot.usage_events x',
              'usage_events: every event kept as it was, in the partitioned log (created_at became occurred_at)');
SELECT is_empty($$ SELECT 1 FROM usage_events WHERE received_at <> occurred_at OR idempotency_key IS NOT NULL OR over_limit $$,
                'migrated events were received when they occurred, with no key and no overage');
SELECT is_empty('SELECT 1 FROM usage_counters',
                'migrated events are not counted a second time: 0.1.0 kept their rollups live');
SELECT is_empty($$ SELECT 1 FROM (
                     SELECT m.organization_id, m.event_type, m.month, m.events,
                            (SELECT a.total_quantity FROM usage_aggregations a
                             WHERE a.organization_id = m.organization_id AND a.event_type = m.event_type
                               AND a.period = 'monthly' AND a.period_start = m.month) AS rollup
                     FROM (SELECT e.organization_id, e.event_type, usage_bucket_start('monthly', e.occurred_at) AS month,
                                  sum(e.quantity) AS events
                           FROM usage_events e GROUP BY 1, 2, 3) m) t
                   WHERE t.events IS DISTINCT FROM t.rollup $$,
                'every monthly rollup equals its migrated events');
SELECT set_eq('SELECT to_jsonb(x) FROM usage_aggregations x', 'SELECT to_jsonb(x) FROM upgrade_snapshot.usage_aggregations x',
              'usage_aggregations: every rollup kept as it was');

-- ------------------------------------------------------------ users
SELECT set_eq(format($$ SELECT to_jsonb(x) - '{phone,is_anonymous,deleted_at}'::text[] FROM users x WHERE id NOT IN (%L, %L) $$, :'olivia', :'victor'),
              format($$ SELECT to_jsonb(x) FROM upgrade_snapshot.users x WHERE id NOT IN (%L, %L) $$, :'olivia', :'victor'),
              'users: every other profile kept as it was');
SELECT is((SELECT email FROM users WHERE id = :'olivia'), 'olivia.new@fixture.example',
          'repair: a stale email now follows auth.users');
SELECT is((SELECT to_jsonb(x) - '{email,phone,is_anonymous,deleted_at}'::text[] FROM users x WHERE id = :'olivia'),
          (SELECT to_jsonb(x) - 'email' FROM upgrade_snapshot.users x WHERE id = :'olivia'),
          'the rest of that profile is unchanged (updated_at included)');
SELECT ok(CASE WHEN :'soft_deleted'
               THEN (SELECT deleted_at = '2026-03-01 00:00+00' AND username IS NULL AND display_name IS NULL
                            AND email IS NULL AND first_name IS NULL FROM users WHERE id = :'victor')
               ELSE (SELECT to_jsonb(x) - '{phone,is_anonymous,deleted_at}'::text[] FROM users x WHERE id = :'victor')
                    = (SELECT to_jsonb(x) FROM upgrade_snapshot.users x WHERE id = :'victor') END,
          'repair: a profile whose account was soft-deleted keeps no personal data (kept as it was where auth.users has no deleted_at)');
SELECT ok(NOT :'soft_deleted' OR (SELECT is_anonymous FROM users WHERE id = :'guest'),
          'an anonymous account''s profile says so');
SELECT is((SELECT count(*)::int FROM users WHERE is_anonymous), CASE WHEN :'soft_deleted' THEN 1 ELSE 0 END,
          'no other profile is marked anonymous');

-- ------------------------------------------------------------ organizations and members
SELECT set_eq(format($$ SELECT to_jsonb(x) - 'member_count' FROM organizations x WHERE id NOT IN (%L, %L, %L) $$,
                     :'abandoned', :'fixture_team', :'victor_personal'),
              format($$ SELECT to_jsonb(x) FROM upgrade_snapshot.organizations x WHERE id NOT IN (%L, %L, %L) $$,
                     :'abandoned', :'fixture_team', :'victor_personal'),
              'organizations: every other organization kept as it was');
SELECT is((SELECT owner_id FROM organizations WHERE id = :'abandoned'), :'adam'::uuid,
          'repair: a team whose creator had been removed belongs to its co-owner');
SELECT is((SELECT to_jsonb(x) - '{owner_id,member_count}'::text[] FROM organizations x WHERE id = :'abandoned'),
          (SELECT to_jsonb(x) - 'owner_id' FROM upgrade_snapshot.organizations x WHERE id = :'abandoned'),
          'the rest of that team is unchanged');
SELECT is((SELECT to_jsonb(x) - '{updated_at,member_count}'::text[] FROM organizations x WHERE id = :'fixture_team'),
          (SELECT to_jsonb(x) - 'updated_at' FROM upgrade_snapshot.organizations x WHERE id = :'fixture_team'),
          'the fixture team is unchanged but for its member count');
SELECT is((SELECT (name = 'Deleted account') = :'soft_deleted' FROM organizations WHERE id = :'victor_personal'), true,
          'a soft-deleted account''s personal organization keeps no name (only where it was soft-deleted)');
SELECT set_eq(format($$ SELECT to_jsonb(x) FROM organization_members x $$),
              format($$ SELECT to_jsonb(x) FROM upgrade_snapshot.organization_members x
                        WHERE NOT (%L AND user_id = %L AND organization_id = %L) $$,
                     :'soft_deleted', :'victor', :'fixture_team'),
              'organization_members: every membership kept, but a soft-deleted account''s team membership');
SELECT is_empty($$ SELECT o.id FROM organizations o
                   WHERE o.member_count <> (SELECT count(*) FROM organization_members m WHERE m.organization_id = o.id) $$,
                'member_count is exact for every organization');
SELECT is_empty($$ SELECT o.id FROM organizations o
                   WHERE NOT EXISTS (SELECT 1 FROM organization_members m
                                     WHERE m.organization_id = o.id AND m.user_id = o.owner_id AND m.role = 'owner') $$,
                'every owner is a member with the role owner');

SELECT * FROM finish();
ROLLBACK;
