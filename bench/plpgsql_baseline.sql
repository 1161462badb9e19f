-- The PL/pgSQL baseline for bench/bench.sql: the same work as saas_core's Rust
-- check_feature_access() and handle_new_user() trigger, on the same tables, written the way a
-- careful PL/pgSQL author would (one query per answer, cached plans, no dynamic SQL).
--
-- Run with psql as a superuser in a database where saas_core is installed:
--   psql -X -v ON_ERROR_STOP=1 -f bench/plpgsql_baseline.sql
-- The extension's schema is looked up, so CREATE EXTENSION ... SCHEMA x works too.

\set ON_ERROR_STOP 1
SELECT n.nspname AS ext_schema
FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
WHERE e.extname = 'saas_core'
\gset

SET client_min_messages = warning;
DROP SCHEMA IF EXISTS bench_plpgsql CASCADE;
RESET client_min_messages;
CREATE SCHEMA bench_plpgsql;
GRANT USAGE ON SCHEMA bench_plpgsql TO authenticated, service_role;

-- ---------------------------------------------------------------------------------------------
-- Entitlements
-- ---------------------------------------------------------------------------------------------

-- True when the role the request runs as (SET ROLE, else the session user; not the owner of
-- this SECURITY DEFINER function) has the privileges of service_role. Superusers do.
CREATE FUNCTION bench_plpgsql.caller_is_service_role()
RETURNS boolean
LANGUAGE sql STABLE
AS $$
    SELECT pg_catalog.pg_has_role(
        CASE WHEN pg_catalog.current_setting('role') = 'none' THEN session_user
             ELSE pg_catalog.current_setting('role')::name END,
        'service_role', 'USAGE')
$$;

CREATE FUNCTION bench_plpgsql.check_feature_access(user_id uuid, feature_key text, org_id uuid)
RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, :"ext_schema", pg_temp
AS $$
DECLARE
    v_role    text;
    v_plan    text;
    v_status  text;
    v_kind    text;
    v_window  text;
    v_limit   bigint;
    v_flags   jsonb;
    v_is_flag boolean;
    v_usage   float8;
    v_measure text;
    v_enforce text;
    v_reason  text;
    v_uid     uuid;
    v_enabled boolean;
    answer    jsonb;
BEGIN
    IF user_id IS NULL THEN
        RAISE EXCEPTION 'user_id must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    ELSIF feature_key IS NULL THEN
        RAISE EXCEPTION 'feature_key must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    ELSIF org_id IS NULL THEN
        RAISE EXCEPTION 'org_id must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;

    -- The service role may ask about anyone; any other caller only about themself.
    IF NOT bench_plpgsql.caller_is_service_role() THEN
        v_uid := auth.uid();
        IF v_uid IS NULL THEN
            RAISE EXCEPTION 'check_feature_access: not authenticated'
                USING ERRCODE = 'insufficient_privilege';
        ELSIF v_uid <> user_id THEN
            RAISE EXCEPTION 'check_feature_access: a user may only act for themself'
                USING ERRCODE = 'insufficient_privilege';
        END IF;
    END IF;

    -- Everything the answer needs in one query; usage from the monthly rollup rows plus the
    -- live counter rows not folded into them yet.
    SELECT
        m.role,
        p.plan,
        s.status,
        f.kind,
        f.usage_window,
        f.usage_measure,
        coalesce(pf.enforcement, 'hard'),
        pf.limit_value,
        fl.flags,
        EXISTS (SELECT 1 FROM plan_features x WHERE x.feature_key = 'features' AND x.flags ? check_feature_access.feature_key),
        (CASE f.usage_measure
            WHEN 'members' THEN
                (SELECT count(*) FROM organization_members x WHERE x.organization_id = org_id)::numeric
            WHEN 'sum' THEN
                (SELECT coalesce(sum(a.total_quantity), 0) FROM usage_aggregations a
                 WHERE a.organization_id = org_id AND a.event_type = f.usage_event_type
                   AND a.period = 'monthly'
                   AND (f.usage_window = 'lifetime'
                        OR a.period_start = date_trunc('month', now(), 'UTC')))
                + (SELECT coalesce(sum(c.total_quantity), 0) FROM usage_counters c
                   WHERE c.organization_id = org_id AND c.event_type = f.usage_event_type
                     AND c.period = 'monthly'
                     AND (f.usage_window = 'lifetime'
                          OR c.period_start = date_trunc('month', now(), 'UTC')))
            WHEN 'unique_users' THEN
                (SELECT coalesce(sum(a.unique_users), 0) FROM usage_aggregations a
                 WHERE a.organization_id = org_id AND a.event_type = f.usage_event_type
                   AND a.period = 'monthly'
                   AND a.period_start = date_trunc('month', now(), 'UTC'))::numeric
                + (SELECT coalesce(sum(c.unique_users), 0) FROM usage_counters c
                   WHERE c.organization_id = org_id AND c.event_type = f.usage_event_type
                     AND c.period = 'monthly'
                     AND c.period_start = date_trunc('month', now(), 'UTC'))::numeric
         END)::float8
    INTO v_role, v_plan, v_status, v_kind, v_window, v_measure, v_enforce, v_limit, v_flags, v_is_flag, v_usage
    FROM (SELECT) AS one
    LEFT JOIN org_subscriptions s ON s.organization_id = org_id
    CROSS JOIN LATERAL (SELECT coalesce(plan_in_effect(s.plan, s.status), 'free') AS plan) p
    LEFT JOIN organization_members m ON m.organization_id = org_id AND m.user_id = check_feature_access.user_id
    LEFT JOIN feature_definitions f ON f.feature_key = check_feature_access.feature_key
    LEFT JOIN plan_features pf ON pf.plan = p.plan AND pf.feature_key = check_feature_access.feature_key
    LEFT JOIN plan_features fl ON fl.plan = p.plan AND fl.feature_key = 'features';

    IF v_kind IS NULL AND NOT v_is_flag THEN
        RAISE EXCEPTION 'check_feature_access: unknown feature key "%"', feature_key
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF v_role IS NULL THEN
        RAISE EXCEPTION 'check_feature_access: the user is not a member of this organization'
            USING ERRCODE = 'insufficient_privilege';
    END IF;

    answer := jsonb_build_object(
        'feature_key', feature_key,
        'plan', coalesce(v_plan, 'free'),
        'subscription_status', v_status,
        'role', v_role);

    IF v_kind = 'limit' THEN
        v_usage := coalesce(v_usage, 0);
        -- Whether this user may do one more now, and if not why.
        v_reason := CASE
            WHEN v_limit IS NULL THEN 'not_granted'
            WHEN v_measure = 'members' AND v_role NOT IN ('owner', 'admin') THEN 'role_cannot_add_members'
            WHEN v_measure IN ('sum', 'unique_users') AND v_role = 'viewer' THEN 'role_cannot_record_usage'
            WHEN v_limit <> -1 AND v_enforce = 'hard' AND v_usage >= v_limit THEN 'limit_reached'
        END;
        RETURN answer || jsonb_build_object(
            'type', 'limit',
            'limit', v_limit,
            'unlimited', coalesce(v_limit = -1, false),
            'usage', v_usage,
            -- -1 is unlimited; a limit with no row for this plan is not granted.
            'remaining', CASE WHEN v_limit = -1 THEN NULL
                              WHEN v_limit IS NULL THEN 0
                              ELSE greatest(v_limit - v_usage, 0) END,
            'allowed', v_reason IS NULL,
            'reason', v_reason,
            'enforcement', v_enforce,
            'over_limit', coalesce(v_limit <> -1 AND v_usage > v_limit, false),
            'window', coalesce(v_window, 'current'));
    ELSIF v_kind IS NOT NULL THEN
        -- The 'features' key itself: all of the plan's flags.
        RETURN answer || jsonb_build_object(
            'type', 'flags',
            'limit', NULL,
            'features', coalesce(v_flags, '{}'::jsonb),
            'allowed', true);
    ELSE
        v_enabled := coalesce(jsonb_typeof(v_flags -> feature_key) = 'boolean'
                              AND (v_flags ->> feature_key)::boolean, false);
        RETURN answer || jsonb_build_object(
            'type', 'flag',
            'limit', NULL,
            'enabled', v_enabled,
            'allowed', v_enabled);
    END IF;
END
$$;

REVOKE ALL ON FUNCTION bench_plpgsql.check_feature_access(uuid, text, uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION bench_plpgsql.check_feature_access(uuid, text, uuid) TO authenticated, service_role;

-- ---------------------------------------------------------------------------------------------
-- Signup: profile, personal organization, owner membership, free subscription
-- ---------------------------------------------------------------------------------------------

-- The username rule: 3-30 characters of [A-Za-z0-9_], not reserved (in any case).
CREATE FUNCTION bench_plpgsql.username_rule_holds(username text)
RETURNS boolean
LANGUAGE sql IMMUTABLE
AS $$
    SELECT char_length(username) BETWEEN 3 AND 30
       AND username ~ '^[A-Za-z0-9_]+$'
       AND lower(username) <> ALL (ARRAY[
           'admin', 'administrator', 'root', 'api', 'support', 'help', 'system', 'sysadmin', 'staff',
           'billing', 'security', 'moderator', 'owner', 'superuser', 'postgres', 'service', 'anon',
           'anonymous', 'authenticated', 'null', 'undefined', 'me', 'settings', 'login', 'logout',
           'signup', 'register', 'www', 'mail', 'email', 'info', 'status', 'console', 'dashboard'])
$$;

-- The rule for a username chosen now: the CHECK's rule and the names reserved since 0.2.0.
CREATE FUNCTION bench_plpgsql.new_username_ok(username text)
RETURNS boolean
LANGUAGE sql IMMUTABLE
AS $$
    SELECT bench_plpgsql.username_rule_holds(username)
       AND lower(username) <> ALL (ARRAY['new', 'invite', 'invitations', 'auth', 'deleted'])
$$;

-- The rule for a slug chosen now: the shape, and not a reserved name.
CREATE FUNCTION bench_plpgsql.new_slug_ok(slug text)
RETURNS boolean
LANGUAGE sql IMMUTABLE
AS $$
    SELECT slug ~ '^[a-z0-9]+(-[a-z0-9]+)*$' AND char_length(slug) BETWEEN 3 AND 63
       AND lower(slug) <> ALL (ARRAY[
           'admin', 'administrator', 'root', 'api', 'support', 'help', 'system', 'sysadmin', 'staff',
           'billing', 'security', 'moderator', 'owner', 'superuser', 'postgres', 'service', 'anon',
           'anonymous', 'authenticated', 'null', 'undefined', 'me', 'settings', 'login', 'logout',
           'signup', 'register', 'www', 'mail', 'email', 'info', 'status', 'console', 'dashboard',
           'new', 'invite', 'invitations', 'auth', 'deleted'])
$$;

-- A provider's login as a username: words of ASCII letters and digits joined by "_", at most
-- 30 characters; NULL for an email address or when nothing valid remains.
CREATE FUNCTION bench_plpgsql.username_from_handle(handle text)
RETURNS text
LANGUAGE sql IMMUTABLE
AS $$
    SELECT CASE WHEN handle LIKE '%@%' THEN NULL
                WHEN s ~ '^[A-Za-z0-9_]{3,30}$' THEN s END
    FROM (SELECT rtrim(left(btrim(regexp_replace(handle, '[^A-Za-z0-9]+', '_', 'g'), '_'), 30), '_') AS s) x
$$;

-- Lowercase ASCII letters and digits joined by single hyphens, at most 56 characters
-- (room for "-xxxxxx"), at least 3.
CREATE FUNCTION bench_plpgsql.slugify(input text)
RETURNS text
LANGUAGE sql IMMUTABLE
AS $$
    SELECT CASE WHEN s = '' THEN 'workspace'
                WHEN char_length(s) < 3 THEN s || '-workspace'
                ELSE s END
    FROM (SELECT rtrim(left(ltrim(regexp_replace(lower(input), '[^a-z0-9]+', '-', 'g'), '-'), 56), '-') AS s) x
$$;

-- The first string among meta's keys, trimmed, at most 100 characters, non-empty.
CREATE FUNCTION bench_plpgsql.meta_text(meta jsonb, keys text[])
RETURNS text
LANGUAGE plpgsql IMMUTABLE
AS $$
DECLARE
    k text;
    v text;
BEGIN
    FOREACH k IN ARRAY keys LOOP
        IF jsonb_typeof(meta #> string_to_array(k, '.')) = 'string' THEN
            v := left(btrim(meta #>> string_to_array(k, '.'), E' \t\n\r\f\v'), 100);
            IF v <> '' THEN
                RETURN v;
            END IF;
        END IF;
    END LOOP;
    RETURN NULL;
END
$$;

CREATE FUNCTION bench_plpgsql.random_suffix()
RETURNS text
LANGUAGE sql VOLATILE
AS $$ SELECT left(replace(gen_random_uuid()::text, '-', ''), 6) $$;

-- on_auth_user_created, in PL/pgSQL. Idempotent; a taken username or slug never aborts a signup.
CREATE FUNCTION bench_plpgsql.handle_new_user()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, :"ext_schema", pg_temp
AS $$
DECLARE
    v_first     text;
    v_last      text;
    v_display   text;
    v_username  text;
    v_requested text;
    v_avatar    text;
    v_handle    text;
    v_candidate text;
    v_candidates text[] := ARRAY[]::text[];
    v_base_slug text;
    v_slug      text;
    v_org       uuid;
    v_done      boolean := false;
    i           int;
BEGIN
    -- Profile fields from the signup metadata, cleaned to fit the profile's constraints.
    v_first    := bench_plpgsql.meta_text(NEW.raw_user_meta_data, ARRAY['first_name', 'given_name']);
    v_last     := bench_plpgsql.meta_text(NEW.raw_user_meta_data, ARRAY['last_name', 'family_name']);
    v_handle   := bench_plpgsql.meta_text(NEW.raw_user_meta_data, ARRAY['username', 'user_name', 'preferred_username', 'nickname']);
    v_display  := coalesce(
        bench_plpgsql.meta_text(NEW.raw_user_meta_data, ARRAY['display_name', 'full_name', 'name', 'custom_claims.global_name']),
        nullif(left(concat_ws(' ', v_first, v_last), 100), ''),
        CASE WHEN v_handle NOT LIKE '%@%' THEN v_handle END);
    v_username := coalesce(
        bench_plpgsql.username_from_handle(bench_plpgsql.meta_text(NEW.raw_user_meta_data, ARRAY['username'])),
        bench_plpgsql.username_from_handle(bench_plpgsql.meta_text(NEW.raw_user_meta_data, ARRAY['user_name'])),
        bench_plpgsql.username_from_handle(bench_plpgsql.meta_text(NEW.raw_user_meta_data, ARRAY['preferred_username'])),
        bench_plpgsql.username_from_handle(bench_plpgsql.meta_text(NEW.raw_user_meta_data, ARRAY['nickname'])));
    v_avatar   := bench_plpgsql.meta_text(NEW.raw_user_meta_data, ARRAY['avatar_url', 'picture']);

    -- The requested username if it may be chosen, then up to 5 variants of it, then none.
    IF bench_plpgsql.new_username_ok(v_username) THEN
        v_requested := v_username;
    END IF;
    IF v_requested IS NOT NULL THEN
        v_candidates := v_candidates || v_requested;
    END IF;
    IF v_username IS NOT NULL THEN
        FOR i IN 1 .. 5 LOOP
            v_candidates := v_candidates || (left(v_username, 23) || '_' || bench_plpgsql.random_suffix());
        END LOOP;
    END IF;
    v_candidates := v_candidates || NULL::text;
    FOREACH v_candidate IN ARRAY v_candidates LOOP
        CONTINUE WHEN v_candidate IS NOT NULL
            AND EXISTS (SELECT 1 FROM users u WHERE lower(u.username) = lower(v_candidate));
        INSERT INTO users (id, email, username, display_name, first_name, last_name, avatar_url)
        VALUES (NEW.id, NEW.email, v_candidate, v_display, v_first, v_last, v_avatar)
        ON CONFLICT DO NOTHING;
        -- Created now, or already there (the trigger ran before for this user). Otherwise a
        -- concurrent signup took the username between the check and the insert.
        EXIT WHEN FOUND OR EXISTS (SELECT 1 FROM users u WHERE u.id = NEW.id);
    END LOOP;

    -- The personal organization, unless it exists: first free slug among base, base-xxxxxx.
    SELECT o.id INTO v_org FROM organizations o WHERE o.owner_id = NEW.id AND o.is_personal;
    IF v_org IS NULL THEN
        v_handle := coalesce(v_username, nullif(split_part(NEW.email, '@', 1), ''), 'user');
        v_base_slug := bench_plpgsql.slugify(v_handle);
        FOR i IN 0 .. 7 LOOP
            v_slug := CASE WHEN i = 0 THEN v_base_slug
                           ELSE v_base_slug || '-' || bench_plpgsql.random_suffix() END;
            CONTINUE WHEN NOT bench_plpgsql.new_slug_ok(v_slug)
                OR EXISTS (SELECT 1 FROM organizations o WHERE o.slug = v_slug);
            INSERT INTO organizations (name, slug, owner_id, is_personal, org_type)
            VALUES (left(coalesce(v_display, v_handle) || '''s workspace', 100), v_slug, NEW.id, true, 'personal')
            ON CONFLICT DO NOTHING
            RETURNING id INTO v_org;
            EXIT WHEN v_org IS NOT NULL;
            -- A concurrent signup for the same user created it meanwhile.
            SELECT o.id INTO v_org FROM organizations o WHERE o.owner_id = NEW.id AND o.is_personal;
            EXIT WHEN v_org IS NOT NULL;
        END LOOP;
        IF v_org IS NULL THEN
            RAISE EXCEPTION 'organization slug "%" is already taken', v_base_slug
                USING ERRCODE = 'unique_violation';
        END IF;
    END IF;

    INSERT INTO organization_members (organization_id, user_id, role)
    VALUES (v_org, NEW.id, 'owner')
    ON CONFLICT (organization_id, user_id) DO NOTHING;

    INSERT INTO org_subscriptions (organization_id, plan, status, seats)
    VALUES (v_org, 'free', 'active', 1)
    ON CONFLICT (organization_id) DO NOTHING;

    RETURN NULL;
END
$$;

REVOKE ALL ON FUNCTION bench_plpgsql.handle_new_user() FROM PUBLIC;
