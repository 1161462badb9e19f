-- saas_core benchmark: the Rust check_feature_access() and signup trigger against the PL/pgSQL
-- baseline of bench/plpgsql_baseline.sql, on the same tables, in the same session.
--
-- Run with psql as a superuser against a fresh database where saas_core and the baseline are
-- installed (scripts/bench.sh does all of it):
--   psql -X -f bench/bench.sql [-v calls=10000] [-v rounds=5] [-v signups=1000]
--
-- A benchmark, not a test: it asserts only that both implementations give the same answers.
-- Each number is the median over `rounds` rounds; within a round the implementations run
-- back to back, in alternating order, from a PL/pgSQL driver loop (PERFORM), timed with
-- clock_timestamp(). The driver loop itself is included in every number alike.

\set ON_ERROR_STOP 1
\set QUIET 1
\pset footer off
\if :{?calls}
\else
  \set calls 10000
\endif
\if :{?rounds}
\else
  \set rounds 5
\endif
\if :{?signups}
\else
  \set signups 1000
\endif

SELECT n.nspname AS ext_schema
FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
WHERE e.extname = 'saas_core'
\gset
SELECT set_config('search_path', format('%I, bench, pg_catalog', :'ext_schema'), false) \gset
SET bench.calls = :'calls';
SET bench.rounds = :'rounds';
SET bench.signups = :'signups';
SET jit = off;

SET client_min_messages = warning;
DROP SCHEMA IF EXISTS bench CASCADE;
SET client_min_messages = notice;
CREATE SCHEMA bench;
GRANT USAGE ON SCHEMA bench TO authenticated;

CREATE TABLE bench.workloads (ord serial, workload text PRIMARY KEY);
CREATE TABLE bench.samples (workload text, impl text, round int, calls int, seconds float8);
-- Arguments cycled through by a check_feature_access workload.
CREATE TABLE bench.args (workload text, ord int, user_id uuid, feature_key text, org_id uuid);
GRANT SELECT ON bench.args TO authenticated;

-- ---------------------------------------------------------------------------------------------
-- Drivers
-- ---------------------------------------------------------------------------------------------

-- Seconds taken by n calls of one implementation, cycling through the argument arrays.
CREATE FUNCTION bench.time_check(impl text, n int, u uuid[], k text[], o uuid[])
RETURNS float8
LANGUAGE plpgsql
AS $$
DECLARE
    m  int := cardinality(u);
    t0 timestamptz;
    i  int;
    j  int;
BEGIN
    t0 := clock_timestamp();
    IF impl = 'rust' THEN
        FOR i IN 0 .. n - 1 LOOP
            j := i % m + 1;
            PERFORM check_feature_access(u[j], k[j], o[j]);
        END LOOP;
    ELSIF impl = 'plpgsql' THEN
        FOR i IN 0 .. n - 1 LOOP
            j := i % m + 1;
            PERFORM bench_plpgsql.check_feature_access(u[j], k[j], o[j]);
        END LOOP;
    ELSIF impl = 'sql' THEN
        -- The floor: the same rows read by one plain query, no function call, no auth, no JSON.
        FOR i IN 0 .. n - 1 LOOP
            j := i % m + 1;
            PERFORM * FROM (
                SELECT mm.role, p.plan, s.status, f.kind, f.usage_window, pf.limit_value, fl.flags,
                    EXISTS (SELECT 1 FROM plan_features x WHERE x.feature_key = 'features' AND x.flags ? k[j]),
                    (CASE f.usage_measure
                        WHEN 'members' THEN
                            (SELECT count(*) FROM organization_members x WHERE x.organization_id = o[j])::numeric
                        WHEN 'sum' THEN
                            (SELECT coalesce(sum(a.total_quantity), 0) FROM usage_aggregations a
                             WHERE a.organization_id = o[j] AND a.event_type = f.usage_event_type
                               AND a.period = 'monthly'
                               AND (f.usage_window = 'lifetime'
                                    OR a.period_start = date_trunc('month', now(), 'UTC')))
                        WHEN 'unique_users' THEN
                            (SELECT coalesce(sum(a.unique_users), 0) FROM usage_aggregations a
                             WHERE a.organization_id = o[j] AND a.event_type = f.usage_event_type
                               AND a.period = 'monthly'
                               AND a.period_start = date_trunc('month', now(), 'UTC'))::numeric
                     END)::float8
                FROM (SELECT) AS one
                LEFT JOIN org_subscriptions s ON s.organization_id = o[j]
                CROSS JOIN LATERAL (SELECT coalesce(plan_in_effect(s.plan, s.status), 'free') AS plan) p
                LEFT JOIN organization_members mm ON mm.organization_id = o[j] AND mm.user_id = u[j]
                LEFT JOIN feature_definitions f ON f.feature_key = k[j]
                LEFT JOIN plan_features pf ON pf.plan = p.plan AND pf.feature_key = k[j]
                LEFT JOIN plan_features fl ON fl.plan = p.plan AND fl.feature_key = 'features') q;
        END LOOP;
    ELSE
        RAISE EXCEPTION 'unknown impl %', impl;
    END IF;
    RETURN extract(epoch FROM clock_timestamp() - t0);
END
$$;
GRANT EXECUTE ON FUNCTION bench.time_check(text, int, uuid[], text[], uuid[]) TO authenticated;

-- Runs one check_feature_access workload: a short warm-up, then `rounds` rounds of `calls`
-- calls per implementation, alternating which goes first. With as_user, the calls run as
-- the authenticated role with that user's JWT (the API path); otherwise as the superuser.
CREATE PROCEDURE bench.run_check(label text, impls text[], as_user uuid DEFAULT NULL)
LANGUAGE plpgsql
AS $$
DECLARE
    n      int := current_setting('bench.calls')::int;
    rounds int := current_setting('bench.rounds')::int;
    u      uuid[];
    k      text[];
    o      uuid[];
    r      int;
    impl   text;
    order_ text[];
    secs   float8;
BEGIN
    SELECT array_agg(a.user_id ORDER BY a.ord), array_agg(a.feature_key ORDER BY a.ord),
           array_agg(a.org_id ORDER BY a.ord)
    INTO u, k, o
    FROM bench.args a WHERE a.workload = label;
    IF u IS NULL THEN
        RAISE EXCEPTION 'no arguments for workload %', label;
    END IF;
    INSERT INTO bench.workloads (workload) VALUES (label) ON CONFLICT DO NOTHING;
    FOR r IN 0 .. rounds LOOP
        order_ := CASE WHEN r % 2 = 0 THEN impls
                       ELSE ARRAY(SELECT x FROM unnest(impls) WITH ORDINALITY t (x, i) ORDER BY i DESC) END;
        FOREACH impl IN ARRAY order_ LOOP
            IF as_user IS NOT NULL THEN
                SET LOCAL ROLE authenticated;
                PERFORM set_config('request.jwt.claims',
                                   json_build_object('sub', as_user, 'role', 'authenticated')::text, true);
            END IF;
            -- Round 0 is the warm-up (plans, caches), not recorded.
            secs := bench.time_check(impl, CASE WHEN r = 0 THEN least(n, 2000) ELSE n END, u, k, o);
            IF as_user IS NOT NULL THEN
                RESET ROLE;
                PERFORM set_config('request.jwt.claims', '', true);
            END IF;
            IF r > 0 THEN
                INSERT INTO bench.samples VALUES (label, impl, r, n, secs);
            END IF;
            COMMIT;
        END LOOP;
    END LOOP;
END
$$;

-- Seconds taken by inserting the given users into auth.users one statement each, with the
-- signup trigger of one implementation enabled ('none': no trigger, the floor).
CREATE FUNCTION bench.time_signup(impl text, ids uuid[], emails text[], metas jsonb[])
RETURNS float8
LANGUAGE plpgsql
AS $$
DECLARE
    t0 timestamptz;
    i  int;
BEGIN
    IF impl = 'rust' THEN
        ALTER TABLE auth.users DISABLE TRIGGER bench_plpgsql_on_auth_user_created;
        ALTER TABLE auth.users ENABLE TRIGGER saas_core_provision_user;
    ELSIF impl = 'plpgsql' THEN
        ALTER TABLE auth.users DISABLE TRIGGER saas_core_provision_user;
        ALTER TABLE auth.users ENABLE TRIGGER bench_plpgsql_on_auth_user_created;
    ELSIF impl = 'none' THEN
        ALTER TABLE auth.users DISABLE TRIGGER saas_core_provision_user;
        ALTER TABLE auth.users DISABLE TRIGGER bench_plpgsql_on_auth_user_created;
    ELSE
        RAISE EXCEPTION 'unknown impl %', impl;
    END IF;
    t0 := clock_timestamp();
    FOR i IN 1 .. cardinality(ids) LOOP
        INSERT INTO auth.users (id, email, raw_user_meta_data) VALUES (ids[i], emails[i], metas[i]);
    END LOOP;
    RETURN extract(epoch FROM clock_timestamp() - t0);
END
$$;

-- Signup metadata as it comes from GoTrue: a mix of providers and of collisions.
-- tag makes names unique per implementation and round; every 10th user asks for a taken
-- username, every 10th has a handle whose slug is taken (both take the retry path).
CREATE FUNCTION bench.signup_meta(tag text, i int)
RETURNS jsonb
LANGUAGE sql IMMUTABLE
AS $$
    SELECT CASE i % 10
        WHEN 0 THEN '{}'::jsonb
        WHEN 1 THEN jsonb_build_object('username', tag || '_' || i, 'full_name', 'User ' || i)
        WHEN 2 THEN jsonb_build_object('username', tag || '_' || i)
        WHEN 3 THEN jsonb_build_object('first_name', 'Ada', 'last_name', 'Number ' || i)
        WHEN 4 THEN jsonb_build_object('user_name', tag || '_' || i, 'name', 'Gh ' || i,
                                       'avatar_url', 'https://avatars.example/' || i)
        WHEN 5 THEN jsonb_build_object('preferred_username', tag || '_' || i, 'given_name', 'Grace',
                                       'family_name', 'Hopper', 'picture', 'https://img.example/' || i)
        WHEN 6 THEN jsonb_build_object('display_name', 'Display ' || i, 'email_verified', true)
        WHEN 7 THEN jsonb_build_object('username', 'taken_name', 'full_name', 'Taken ' || i)
        WHEN 8 THEN '{}'::jsonb   -- email user@...: slug "user" is taken
        ELSE jsonb_build_object('full_name', 'Name With Spaces ' || i, 'username', 'not valid ' || tag || i)
    END
$$;

CREATE PROCEDURE bench.run_signup(label text)
LANGUAGE plpgsql
AS $$
DECLARE
    k      int := current_setting('bench.signups')::int;
    rounds int := current_setting('bench.rounds')::int;
    impls  text[] := ARRAY['rust', 'plpgsql', 'none'];
    order_ text[];
    r      int;
    impl   text;
    ids    uuid[];
    emails text[];
    metas  jsonb[];
    secs   float8;
BEGIN
    INSERT INTO bench.workloads (workload) VALUES (label) ON CONFLICT DO NOTHING;
    FOR r IN 0 .. rounds LOOP
        order_ := CASE WHEN r % 2 = 0 THEN impls ELSE ARRAY['plpgsql', 'rust', 'none'] END;
        FOREACH impl IN ARRAY order_ LOOP
            SELECT array_agg(gen_random_uuid() ORDER BY i),
                   array_agg(CASE WHEN i % 10 = 8 THEN format('user@%s-r%s-%s.example', impl, r, i)
                                  ELSE format('%s.r%s.%s@signup.example', impl, r, i) END ORDER BY i),
                   array_agg(bench.signup_meta(format('%s_r%s', impl, r), i) ORDER BY i)
            INTO ids, emails, metas
            FROM generate_series(1, CASE WHEN r = 0 THEN least(k, 100) ELSE k END) i;
            secs := bench.time_signup(impl, ids, emails, metas);
            IF r > 0 THEN
                INSERT INTO bench.samples VALUES (label, impl, r, k, secs);
            END IF;
            COMMIT;
        END LOOP;
    END LOOP;
    ALTER TABLE auth.users DISABLE TRIGGER bench_plpgsql_on_auth_user_created;
    ALTER TABLE auth.users ENABLE TRIGGER saas_core_provision_user;
    -- Users inserted with no trigger (the floor) get provisioned now, like a migration would.
    PERFORM sync_auth_users();
END
$$;

-- ---------------------------------------------------------------------------------------------
-- Data: 2,000 signups, four team organizations with members on four plans, usage events
-- ---------------------------------------------------------------------------------------------

\echo 'setup: 2,000 signups, team organizations, 20,000 usage events'
SELECT setseed(0.4242) \gset

-- A user whose username and slug the signup workload collides with.
INSERT INTO auth.users (email, raw_user_meta_data) VALUES
    ('user@taken.example', '{"username": "taken_name"}'),
    ('taken-name@taken.example', '{}'),
    ('user@taken2.example', '{}');

INSERT INTO auth.users (id, email, raw_user_meta_data, created_at)
SELECT ('00000000-0000-4000-8000-' || lpad(to_hex(i), 12, '0'))::uuid,
       format('person%s@example.com', i),
       bench.signup_meta('person', i),
       now() - (2000 - i) * interval '1 hour'
FROM generate_series(1, 2000) i;

-- Team organizations: enterprise (200 members), business (45), pro (5), and a canceled pro
-- that falls back to free. User 1 owns the last one and belongs to the three others.
CREATE TABLE bench.team_orgs (idx int PRIMARY KEY, org_id uuid, plan text, status text, members uuid[]);
CREATE FUNCTION bench.user_id(i int) RETURNS uuid LANGUAGE sql IMMUTABLE
AS $$ SELECT ('00000000-0000-4000-8000-' || lpad(to_hex(i), 12, '0'))::uuid $$;

INSERT INTO bench.team_orgs (idx, org_id, plan, status)
VALUES (1, gen_random_uuid(), 'enterprise', 'active'),
       (2, gen_random_uuid(), 'business', 'active'),
       (3, gen_random_uuid(), 'pro', 'trialing'),
       (4, gen_random_uuid(), 'pro', 'canceled');

INSERT INTO organizations (id, name, slug, owner_id, is_personal, org_type)
SELECT t.org_id, 'Team ' || t.idx, 'team-' || t.idx, bench.user_id(CASE t.idx WHEN 4 THEN 1 ELSE 100 * t.idx END),
       false, 'business'
FROM bench.team_orgs t;
INSERT INTO org_subscriptions (organization_id, plan, status, seats)
SELECT t.org_id, t.plan, t.status, 1 FROM bench.team_orgs t;

-- Owners first, then members (the seat-limit trigger checks each insert).
INSERT INTO organization_members (organization_id, user_id, role)
SELECT t.org_id, bench.user_id(CASE t.idx WHEN 4 THEN 1 ELSE 100 * t.idx END), 'owner' FROM bench.team_orgs t;
INSERT INTO organization_members (organization_id, user_id, role)
SELECT t.org_id, bench.user_id(u), CASE WHEN u % 10 = 0 THEN 'admin' WHEN u % 7 = 0 THEN 'viewer' ELSE 'member' END
FROM bench.team_orgs t
CROSS JOIN LATERAL generate_series(100 * t.idx + 1, 100 * t.idx + CASE t.idx WHEN 1 THEN 198 WHEN 2 THEN 43 WHEN 3 THEN 3 ELSE 0 END) u
UNION ALL
SELECT t.org_id, bench.user_id(1), 'member' FROM bench.team_orgs t WHERE t.idx IN (1, 2, 3);

UPDATE bench.team_orgs t
SET members = (SELECT array_agg(m.user_id ORDER BY m.user_id) FROM organization_members m
               WHERE m.organization_id = t.org_id);

-- n usage events over the last 12 months: half in the enterprise org, the rest spread out.
-- Inserted in batches of 500, as an ingest path would, through the counting trigger.
CREATE PROCEDURE bench.add_events(n int)
LANGUAGE plpgsql
AS $$
DECLARE
    done int := 0;
    b    int;
BEGIN
    WHILE done < n LOOP
        b := least(500, n - done);
        INSERT INTO usage_events (organization_id, user_id, event_type, quantity, occurred_at)
        SELECT t.org_id,
               t.members[1 + floor(s.r2 * cardinality(t.members))::int],
               e.event_type,
               CASE e.event_type
                   WHEN 'ai_tokens_used' THEN 100 + floor(s.r3 * 1900)
                   WHEN 'storage_used' THEN round((0.01 + s.r3 * 0.2)::numeric, 3)
                   WHEN 'record_created' THEN 1 + floor(s.r3 * 3)
                   ELSE 1 END,
               now() - s.r3 * interval '365 days'
        FROM (SELECT g, random() AS r1, random() AS r2, random() AS r3
              FROM generate_series(done + 1, done + b) g) s
        JOIN bench.team_orgs t
          ON t.idx = CASE WHEN s.g % 10 < 5 THEN 1 WHEN s.g % 10 < 8 THEN 2 WHEN s.g % 10 = 8 THEN 3 ELSE 4 END
        CROSS JOIN LATERAL (SELECT CASE
                WHEN s.r1 < 0.50 THEN 'api_call'
                WHEN s.r1 < 0.65 THEN 'record_created'
                WHEN s.r1 < 0.80 THEN 'user_active'
                WHEN s.r1 < 0.88 THEN 'automation_run'
                WHEN s.r1 < 0.95 THEN 'ai_tokens_used'
                WHEN s.r1 < 0.98 THEN 'storage_used'
                ELSE 'schedule_executed' END AS event_type) e;
        done := done + b;
        COMMIT;
    END LOOP;
END
$$;

-- Events of the last 12 months: the late-event window opens that far, partitions follow.
UPDATE usage_settings SET late_event_window = interval '1 year', idempotency_key_retention = interval '1 year';
SELECT create_usage_partitions() AS partitions_created \gset
CALL bench.add_events(20000);
-- As the scheduled job leaves it: counts folded into the rollups.
SELECT aggregate_usage() IS NOT NULL AS folded \gset
VACUUM ANALYZE;

-- Workload arguments. 'mixed': every key, half on team organizations (as their members),
-- half on personal organizations (as their owners).
INSERT INTO bench.args (workload, ord, user_id, feature_key, org_id)
SELECT 'mixed', i,
       CASE WHEN i % 2 = 0 THEN t.members[1 + (i * 7919) % cardinality(t.members)] ELSE o.owner_id END,
       (ARRAY['max_records', 'max_api_calls_per_month', 'max_automations', 'max_storage_gb', 'max_mau',
              'max_schedules', 'max_ai_tokens_per_month', 'max_seats', 'features', 'sso', 'api_access'])[1 + i % 11],
       CASE WHEN i % 2 = 0 THEN t.org_id ELSE o.id END
FROM generate_series(1, 2000) i
JOIN bench.team_orgs t ON t.idx = 1 + (i / 2) % 4
JOIN organizations o ON o.owner_id = bench.user_id(1 + (i * 31) % 2000) AND o.is_personal;

-- One key each, on the team organizations, as their members.
INSERT INTO bench.args (workload, ord, user_id, feature_key, org_id)
SELECT w.workload, i, t.members[1 + (i * 7919) % cardinality(t.members)], w.key, t.org_id
FROM (VALUES ('monthly sum (max_api_calls_per_month)', 'max_api_calls_per_month'),
             ('lifetime sum (max_records)', 'max_records'),
             ('unique users (max_mau)', 'max_mau'),
             ('members (max_seats)', 'max_seats'),
             ('one flag (sso)', 'sso'),
             ('all flags (features)', 'features')) w (workload, key)
CROSS JOIN generate_series(1, 1000) i
JOIN bench.team_orgs t ON t.idx = 1 + i % 4;

-- The API path: user 1 asks about their own organizations with their JWT.
INSERT INTO bench.args (workload, ord, user_id, feature_key, org_id)
SELECT 'as authenticated user (auth.uid())', row_number() OVER (), m.user_id, k.key, m.organization_id
FROM organization_members m
CROSS JOIN unnest(ARRAY['max_records', 'max_api_calls_per_month', 'max_mau', 'max_seats', 'features', 'sso']) k (key)
WHERE m.user_id = bench.user_id(1);

-- ---------------------------------------------------------------------------------------------
-- Same answers: the baseline must agree with the extension before anything is timed
-- ---------------------------------------------------------------------------------------------

\echo 'checking that the PL/pgSQL baseline gives the same answers'
DO $$
DECLARE
    a       record;
    rust    jsonb;
    plpgsql jsonb;
    n       int := 0;
BEGIN
    FOR a IN
        SELECT DISTINCT user_id, feature_key, org_id FROM bench.args
        UNION ALL
        -- A personal organization on the free plan, every key.
        SELECT o.owner_id, d.key, o.id
        FROM organizations o
        CROSS JOIN unnest(ARRAY['max_records', 'max_api_calls_per_month', 'max_automations', 'max_storage_gb',
                                'max_mau', 'max_schedules', 'max_ai_tokens_per_month', 'max_seats',
                                'features', 'sso', 'api_access', 'basic_features', 'custom_contracts']) d (key)
        WHERE o.owner_id = bench.user_id(7) AND o.is_personal
    LOOP
        rust := check_feature_access(a.user_id, a.feature_key, a.org_id);
        plpgsql := bench_plpgsql.check_feature_access(a.user_id, a.feature_key, a.org_id);
        IF rust::text IS DISTINCT FROM plpgsql::text THEN
            RAISE EXCEPTION 'check_feature_access(%, %, %) differs: rust % plpgsql %',
                a.user_id, a.feature_key, a.org_id, rust, plpgsql;
        END IF;
        n := n + 1;
    END LOOP;
    RAISE NOTICE 'check_feature_access: % answers identical', n;
END
$$;

-- Errors: same SQLSTATE and message for unknown keys, non-members, other users, anonymous
-- callers and NULL arguments.
CREATE FUNCTION bench.error_of(impl text, u uuid, k text, o uuid, as_user uuid)
RETURNS text
LANGUAGE plpgsql
AS $$
DECLARE
    state text;
    msg   text;
BEGIN
    IF as_user IS NOT NULL THEN
        SET LOCAL ROLE authenticated;
        PERFORM set_config('request.jwt.claims', json_build_object('sub', as_user)::text, true);
    ELSIF k = 'as anon' THEN
        SET LOCAL ROLE authenticated;
        k := 'max_records';
    END IF;
    BEGIN
        IF impl = 'rust' THEN
            PERFORM check_feature_access(u, k, o);
        ELSE
            PERFORM bench_plpgsql.check_feature_access(u, k, o);
        END IF;
        state := 'no error';
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, msg = MESSAGE_TEXT;
    END;
    RESET ROLE;
    PERFORM set_config('request.jwt.claims', '', true);
    RETURN state || ': ' || coalesce(msg, '');
END
$$;

DO $$
DECLARE
    c     record;
    rust  text;
    plpgsql text;
    team1 uuid := (SELECT org_id FROM bench.team_orgs WHERE idx = 1);
    u1    uuid := bench.user_id(1);
    u2    uuid := bench.user_id(2);  -- not a member of team 1
BEGIN
    FOR c IN
        SELECT * FROM (VALUES
            ('unknown key', u1, 'max_unicorns', team1, NULL::uuid),
            ('non-member', u2, 'max_records', team1, NULL),
            ('no such org', u1, 'max_records', gen_random_uuid(), NULL),
            ('other user', u1, 'max_records', team1, u2),
            ('self', u1, 'max_records', team1, u1),
            ('anonymous', u1, 'as anon', team1, NULL),
            ('null user', NULL, 'max_records', team1, NULL),
            ('null key', u1, NULL, team1, NULL),
            ('null org', u1, 'max_records', NULL, NULL)) v (name, u, k, o, as_user)
    LOOP
        rust := bench.error_of('rust', c.u, c.k, c.o, c.as_user);
        plpgsql := bench.error_of('plpgsql', c.u, c.k, c.o, c.as_user);
        IF rust IS DISTINCT FROM plpgsql THEN
            RAISE EXCEPTION 'check_feature_access error (%) differs: rust "%" plpgsql "%"', c.name, rust, plpgsql;
        END IF;
    END LOOP;
    RAISE NOTICE 'check_feature_access: errors identical';
END
$$;

-- Signup: the same profile, organization, membership and subscription from both triggers.
-- Each case signs up with the Rust trigger, is deleted (cascading), then signs up again,
-- with the same id, email and metadata, with the PL/pgSQL trigger. Random suffixes are masked.
CREATE OR REPLACE TRIGGER bench_plpgsql_on_auth_user_created
    AFTER INSERT ON auth.users
    FOR EACH ROW EXECUTE FUNCTION bench_plpgsql.handle_new_user();
ALTER TABLE auth.users DISABLE TRIGGER bench_plpgsql_on_auth_user_created;

CREATE FUNCTION bench.provisioned(uid uuid)
RETURNS text
LANGUAGE sql
AS $$
    SELECT string_agg(row(regexp_replace(u.username, '_[0-9a-f]{6}$', '_RANDOM'), u.email, u.display_name,
                          u.first_name, u.last_name, u.avatar_url, o.name,
                          regexp_replace(o.slug, '-[0-9a-f]{6}$', '-RANDOM'), o.is_personal, o.org_type,
                          m.role, s.plan, s.status, s.seats, s.billing_type)::text, '; ')
    FROM users u
    LEFT JOIN organizations o ON o.owner_id = u.id
    LEFT JOIN organization_members m ON m.organization_id = o.id AND m.user_id = u.id
    LEFT JOIN org_subscriptions s ON s.organization_id = o.id
    WHERE u.id = uid
$$;

DO $$
DECLARE
    c       record;
    rust    text;
    plpgsql text;
    n       int := 0;
BEGIN
    FOR c IN
        SELECT gen_random_uuid() AS id, v.email, v.meta::jsonb AS meta
        FROM (VALUES
            ('Ada.Lovelace@example.com', '{}'),
            ('grace@example.com', '{"username": "grace", "first_name": " Grace ", "last_name": "Hopper"}'),
            ('odd@example.com', '{"full_name": "  Ünïcode Näme  ", "user_name": "no spaces allowed", "avatar_url": 42, "picture": "https://p.example/1"}'),
            ('sam@example.com', '{"preferred_username": "taken_name"}'),
            ('long@example.com', '{"full_name": "' || repeat('x', 500) || '", "username": "' || repeat('y', 40) || '"}'),
            (NULL, '{}'),
            ('jo@example.com', '{"name": "Jo", "username": "ADMIN"}'),
            ('user@dup.example', '{"given_name": "", "family_name": "Solo", "display_name": "   "}'),
            ('x@example.com', '{"username": "--Weird__Name--"}'),
            ('@example.com', '{"first_name": "Only"}')) v (email, meta)
    LOOP
        INSERT INTO auth.users (id, email, raw_user_meta_data) VALUES (c.id, c.email, c.meta);
        rust := bench.provisioned(c.id);
        DELETE FROM auth.users WHERE id = c.id;
        ALTER TABLE auth.users DISABLE TRIGGER saas_core_provision_user;
        ALTER TABLE auth.users ENABLE TRIGGER bench_plpgsql_on_auth_user_created;
        INSERT INTO auth.users (id, email, raw_user_meta_data) VALUES (c.id, c.email, c.meta);
        plpgsql := bench.provisioned(c.id);
        ALTER TABLE auth.users DISABLE TRIGGER bench_plpgsql_on_auth_user_created;
        ALTER TABLE auth.users ENABLE TRIGGER saas_core_provision_user;
        IF rust IS NULL OR rust IS DISTINCT FROM plpgsql THEN
            RAISE EXCEPTION 'signup of % % differs: rust % plpgsql %', c.email, c.meta, rust, plpgsql;
        END IF;
        n := n + 1;
    END LOOP;
    RAISE NOTICE 'handle_new_user: % signups identical', n;
END
$$;

-- ---------------------------------------------------------------------------------------------
-- Timing
-- ---------------------------------------------------------------------------------------------

\echo 'timing check_feature_access at 20,000 events'
CALL bench.run_check('mixed', ARRAY['rust', 'plpgsql', 'sql']);
UPDATE bench.samples SET workload = 'mixed keys @ 20k events' WHERE workload = 'mixed';
UPDATE bench.workloads SET workload = 'mixed keys @ 20k events' WHERE workload = 'mixed';

\echo 'adding 180,000 events (10x)'
CALL bench.add_events(180000);
SELECT aggregate_usage() IS NOT NULL AS folded \gset
VACUUM ANALYZE;

\echo 'timing check_feature_access at 200,000 events'
CALL bench.run_check('mixed', ARRAY['rust', 'plpgsql', 'sql']);
UPDATE bench.samples SET workload = 'mixed keys @ 200k events' WHERE workload = 'mixed';
UPDATE bench.workloads SET workload = 'mixed keys @ 200k events' WHERE workload = 'mixed';
CALL bench.run_check('monthly sum (max_api_calls_per_month)', ARRAY['rust', 'plpgsql', 'sql']);
CALL bench.run_check('lifetime sum (max_records)', ARRAY['rust', 'plpgsql', 'sql']);
CALL bench.run_check('unique users (max_mau)', ARRAY['rust', 'plpgsql', 'sql']);
CALL bench.run_check('members (max_seats)', ARRAY['rust', 'plpgsql', 'sql']);
CALL bench.run_check('one flag (sso)', ARRAY['rust', 'plpgsql', 'sql']);
CALL bench.run_check('all flags (features)', ARRAY['rust', 'plpgsql', 'sql']);
CALL bench.run_check('as authenticated user (auth.uid())', ARRAY['rust', 'plpgsql'], bench.user_id(1));

\echo 'timing signups'
CALL bench.run_signup('signup (INSERT INTO auth.users)');

-- ---------------------------------------------------------------------------------------------
-- Results
-- ---------------------------------------------------------------------------------------------

SELECT count(*) AS usage_events,
       (SELECT count(*) FROM usage_aggregations) AS rollup_rows,
       (SELECT count(*) FROM auth.users) AS auth_users,
       (SELECT count(*) FROM organizations) AS organizations,
       current_setting('bench.calls') AS calls_per_sample,
       current_setting('bench.signups') AS signups_per_sample,
       current_setting('bench.rounds') AS rounds
FROM usage_events;

\echo
\echo 'calls/s: median over rounds. sql floor: the same rows read by one plain query (no function, no auth, no JSON);'
\echo 'for signups, the floor is the INSERT into auth.users with no trigger.'
WITH rate AS (
    SELECT workload, impl, percentile_cont(0.5) WITHIN GROUP (ORDER BY calls / seconds) AS per_s
    FROM bench.samples GROUP BY workload, impl
), t AS (
    SELECT w.ord, w.workload,
           max(per_s) FILTER (WHERE impl = 'rust') AS rust,
           max(per_s) FILTER (WHERE impl = 'plpgsql') AS plpgsql,
           max(per_s) FILTER (WHERE impl IN ('sql', 'none')) AS floor
    FROM bench.workloads w JOIN rate r USING (workload)
    GROUP BY w.ord, w.workload
), rows AS (
    SELECT ord, (CASE WHEN workload LIKE 'signup%' THEN '' ELSE 'check_feature_access: ' END) || workload AS workload,
           to_char(rust, 'FM9,999,990') AS "rust calls/s",
           to_char(plpgsql, 'FM9,999,990') AS "plpgsql calls/s",
           to_char(rust / plpgsql, 'FM990.00') || 'x' AS "rust/plpgsql",
           coalesce(to_char(floor, 'FM9,999,990'), '') AS "sql floor calls/s"
    FROM t
    UNION ALL
    SELECT 1000, 'flatness: calls/s @200k events / @20k events',
           to_char(a.rust / b.rust, 'FM0.00'), to_char(a.plpgsql / b.plpgsql, 'FM0.00'), '',
           to_char(a.floor / b.floor, 'FM0.00')
    FROM t a, t b
    WHERE a.workload = 'mixed keys @ 200k events' AND b.workload = 'mixed keys @ 20k events'
)
SELECT workload, "rust calls/s", "plpgsql calls/s", "rust/plpgsql", "sql floor calls/s"
FROM rows ORDER BY ord;
