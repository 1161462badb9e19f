-- 10_recording: record_usage / record_usage_batch for each role: what is recorded and what is
-- refused (with its SQLSTATE and no partial rows), hard and soft limits, idempotency keys
-- (also for direct INSERTs), event time and the late-event window, get_usage_summary.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(87);

\set o '00000000-0000-4000-8000-000000001001'
\set m '00000000-0000-4000-8000-000000001002'
\set v '00000000-0000-4000-8000-000000001003'
\set x '00000000-0000-4000-8000-000000001004'

INSERT INTO auth.users (id, email, raw_user_meta_data) VALUES
    (:'o', 'o@rec.example', '{"username":"rec_o"}'),
    (:'m', 'm@rec.example', '{"username":"rec_m"}'),
    (:'v', 'v@rec.example', '{"username":"rec_v"}'),
    (:'x', 'x@rec.example', '{"username":"rec_x"}');
SELECT id AS px FROM organizations WHERE owner_id = :'x' AND is_personal \gset

SET LOCAL ROLE authenticated;
SELECT set_config('request.jwt.claims', format('{"sub":"%s","role":"authenticated"}', :'o'), true);
SELECT create_organization('Recording Team', 'business') AS t \gset
RESET ROLE;
UPDATE org_subscriptions SET plan = 'business' WHERE organization_id = :'t';
INSERT INTO organization_members (organization_id, user_id, role) VALUES (:'t', :'m', 'member'), (:'t', :'v', 'viewer');
-- A small hard limit to reach, and a soft one to pass.
UPDATE plan_features SET limit_value = 3 WHERE plan = 'business' AND feature_key = 'max_automations';
UPDATE plan_features SET limit_value = 2, enforcement = 'soft' WHERE plan = 'business' AND feature_key = 'max_schedules';

CREATE FUNCTION pg_temp.events(org uuid, kind text) RETURNS bigint LANGUAGE sql AS
$$ SELECT count(*) FROM usage_events WHERE organization_id = org AND event_type = kind $$;

-- ================================================================ member
SET LOCAL ROLE authenticated;
SELECT set_config('request.jwt.claims', format('{"sub":"%s","role":"authenticated"}', :'m'), true);

SELECT record_usage(:'t', 'automation_run') AS r1 \gset
SELECT is((:'r1'::jsonb) - 'event_id'::text - 'limits'::text,
          jsonb_build_object('recorded', true, 'duplicate', false, 'organization_id', :'t',
                             'event_type', 'automation_run', 'quantity', 1, 'over_limit', false),
          'record_usage answers what it recorded');
SELECT is(((:'r1'::jsonb) -> 'limits' -> 'max_automations') - 'window'::text,
          '{"limit":3,"unlimited":false,"usage":1,"remaining":2,"allowed":true,"reason":null,"enforcement":"hard","over_limit":false}'::jsonb,
          'and what check_feature_access says afterwards');
SELECT is(check_feature_access(:'m', 'max_automations', :'t') - 'feature_key'::text - 'plan'::text - 'subscription_status'::text - 'role'::text - 'type'::text - 'window'::text,
          ((:'r1'::jsonb) -> 'limits' -> 'max_automations') - 'window'::text,
          'check_feature_access agrees with the answer');
SELECT is((SELECT user_id FROM usage_events WHERE id = (:'r1'::jsonb ->> 'event_id')::uuid), :'m'::uuid,
          'the event is recorded for the calling member');
SELECT ok((SELECT occurred_at = received_at AND received_at = now() FROM usage_events
           WHERE id = (:'r1'::jsonb ->> 'event_id')::uuid),
          'a member''s event happened now');

-- Idempotency.
SELECT record_usage(:'t', 'automation_run', 1, 'req-1', NULL, '{"job":"a"}') AS k1 \gset
SELECT record_usage(:'t', 'automation_run', 1, 'req-1', NULL, '{"job":"a"}') AS k2 \gset
SELECT is((:'k2'::jsonb) ->> 'duplicate', 'true', 'a repeated key is a duplicate');
SELECT is((:'k2'::jsonb) ->> 'recorded', 'false', 'a repeated key records nothing');
SELECT is((:'k2'::jsonb) ->> 'event_id', (:'k1'::jsonb) ->> 'event_id', 'and returns the first call''s event');
SELECT is((:'k2'::jsonb) -> 'limits', (:'k1'::jsonb) -> 'limits', 'and the first call''s answer');
SELECT is(pg_temp.events(:'t', 'automation_run'), 2::bigint, 'two automation runs recorded, not three');

-- Hard limit: 2 of 3 used.
SELECT throws_ok(format($$ SELECT record_usage(%L, 'automation_run', 2) $$, :'t'),
                 '54000', 'max_automations: the limit of 3 is reached (usage 2, this event 2)',
                 'a quantity beyond what is left is refused with 54000, naming feature, limit and usage');
SELECT lives_ok(format($$ SELECT record_usage(%L, 'automation_run', 1, 'req-3') $$, :'t'), 'the last unit is recorded');
SELECT throws_ok(format($$ SELECT record_usage(%L, 'automation_run', 1, 'req-4') $$, :'t'),
                 '54000', 'max_automations: the limit of 3 is reached (usage 3, this event 1)',
                 'at the limit, recording is refused');
SELECT is(pg_temp.events(:'t', 'automation_run'), 3::bigint, 'refusals left no rows');
SELECT is(check_feature_access(:'m', 'max_automations', :'t') ->> 'reason', 'limit_reached',
          'check_feature_access says why no more is allowed');
SELECT throws_ok(format($$ INSERT INTO usage_events (organization_id, event_type) VALUES (%L, 'automation_run') $$, :'t'),
                 '54000', NULL, 'a member''s direct INSERT over the hard limit is refused too');
SELECT is(pg_temp.events(:'t', 'automation_run'), 3::bigint, 'and left no row');

-- Soft limit: overage recorded and flagged.
SELECT record_usage(:'t', 'schedule_executed', 2) AS s1 \gset
SELECT record_usage(:'t', 'schedule_executed', 1) AS s2 \gset
SELECT is((:'s1'::jsonb) ->> 'over_limit', 'false', 'up to a soft limit nothing is overage');
SELECT is((:'s2'::jsonb) ->> 'over_limit', 'true', 'beyond a soft limit the event is recorded as overage');
SELECT is((:'s2'::jsonb) -> 'limits' -> 'max_schedules' ->> 'usage', '3', 'usage goes past a soft limit');
SELECT is((SELECT over_limit FROM usage_events WHERE id = (:'s2'::jsonb ->> 'event_id')::uuid), true,
          'the stored event is flagged over_limit');
SELECT is(check_feature_access(:'m', 'max_schedules', :'t') - 'feature_key'::text - 'plan'::text - 'subscription_status'::text - 'role'::text - 'type'::text - 'window'::text,
          '{"limit":2,"unlimited":false,"usage":3,"remaining":0,"allowed":true,"reason":null,"enforcement":"soft","over_limit":true}'::jsonb,
          'check_feature_access: a soft limit stays allowed and says it is over');
SELECT lives_ok(format($$ INSERT INTO usage_events (organization_id, event_type) VALUES (%L, 'schedule_executed') $$, :'t'),
                'a member''s direct INSERT past a soft limit is accepted');
RESET ROLE;
SELECT is((SELECT count(*) FROM usage_events WHERE organization_id = :'t' AND event_type = 'schedule_executed' AND over_limit),
          2::bigint, 'and flagged as overage like record_usage''s');
SET LOCAL ROLE authenticated;

-- What members may not do.
SELECT throws_ok(format($$ SELECT record_usage(%L, 'api_call', -1) $$, :'t'),
                 '42501', 'only the service role records negative quantities (corrections)', 'member: negative quantity is 42501');
SELECT throws_ok(format($$ SELECT record_usage(%L, 'api_call', 1, NULL, now() - interval '1 day') $$, :'t'),
                 '42501', 'only the service role dates events (occurred_at); members record for now',
                 'member: occurred_at is 42501');
SELECT throws_ok(format($$ SELECT record_usage(%L, 'api_call', 1, NULL, NULL, '{}', %L) $$, :'t', :'o'),
                 '42501', 'a member records usage for themself only', 'member: recording for someone else is 42501');
SELECT throws_ok(format($$ SELECT record_usage(%L, 'api_call') $$, :'px'),
                 '42501', 'the caller is not a member of this organization', 'member: foreign org is 42501');

-- Bad input.
SELECT throws_ok(format($$ SELECT record_usage(%L, 'api_call', 'NaN') $$, :'t'), '22023', NULL, 'NaN is 22023');
SELECT throws_ok(format($$ SELECT record_usage(%L, 'api_call', 'Infinity') $$, :'t'), '22023', NULL, 'Infinity is 22023');
SELECT throws_ok(format($$ SELECT record_usage(%L, 'api_call', 0) $$, :'t'), '22023', NULL, '0 is 22023');
SELECT throws_ok(format($$ SELECT record_usage(%L, 'api_call', 1e13) $$, :'t'), '22023', NULL, '1e13 is 22023');
SELECT throws_ok(format($$ SELECT record_usage(%L, 'API Call') $$, :'t'), '22023',
                 'event_type "API Call" is not valid: use a lowercase letter, then up to 62 lowercase letters, digits or underscores',
                 'a malformed event_type is 22023');
SELECT throws_ok(format($$ SELECT record_usage(%L, 'api_call', 1, '') $$, :'t'), '22023',
                 'idempotency_key must be 1 to 255 characters', 'an empty key is 22023');
SELECT throws_ok(format($$ SELECT record_usage(%L, 'api_call', 1, repeat('k', 256)) $$, :'t'), '22023',
                 'idempotency_key must be 1 to 255 characters', 'a 256-character key is 22023');
SELECT throws_ok($$ SELECT record_usage(NULL, 'api_call') $$, '22004', 'org_id must not be NULL', 'NULL org is 22004');
SELECT throws_ok(format($$ SELECT record_usage(%L, NULL) $$, :'t'), '22004', 'event_type must not be NULL', 'NULL event_type is 22004');

-- ================================================================ viewer
SELECT set_config('request.jwt.claims', format('{"sub":"%s","role":"authenticated"}', :'v'), true);
SELECT throws_ok(format($$ SELECT record_usage(%L, 'api_call') $$, :'t'),
                 '42501', 'viewers cannot record usage', 'viewer cannot record usage');
SELECT is(check_feature_access(:'v', 'max_api_calls_per_month', :'t') ->> 'allowed', 'false',
          'check_feature_access tells a viewer they may not record');
SELECT is(check_feature_access(:'v', 'max_api_calls_per_month', :'t') ->> 'reason', 'role_cannot_record_usage',
          'and why');

-- ================================================================ get_usage_summary
SELECT get_usage_summary(:'t') AS sv \gset
SELECT is((:'sv'::jsonb) ->> 'role', 'viewer', 'summary: the viewer''s role');
SELECT is((:'sv'::jsonb) -> 'limits' -> 'max_automations' ->> 'reason', 'role_cannot_record_usage',
          'summary: a viewer may not record, and the reason says so');
SELECT is((:'sv'::jsonb) -> 'limits' -> 'max_seats' ->> 'reason', 'role_cannot_add_members',
          'summary: a viewer may not add members');
SELECT set_config('request.jwt.claims', format('{"sub":"%s","role":"authenticated"}', :'m'), true);
SELECT get_usage_summary(:'t') AS sm \gset
SELECT set_eq($$ SELECT jsonb_object_keys(get_usage_summary('$$ || :'t' || $$') -> 'limits') $$,
              $$ SELECT feature_key FROM feature_definitions WHERE kind = 'limit' $$,
              'summary: every limit of the plan');
SELECT is(((:'sm'::jsonb) -> 'limits' -> 'max_automations') - 'window'::text - 'resets_at'::text,
          '{"limit":3,"unlimited":false,"usage":3,"remaining":0,"allowed":false,"reason":"limit_reached","enforcement":"hard","over_limit":false,"percent":100}'::jsonb,
          'summary: usage, limit, remaining, percent and why not');
SELECT is(((:'sm'::jsonb) -> 'limits' -> 'max_automations' ->> 'resets_at')::timestamptz,
          usage_bucket_end('monthly', now()),
          'summary: a monthly limit resets at the next UTC month');
SELECT ok((:'sm'::jsonb) -> 'limits' -> 'max_records' -> 'resets_at' = 'null'::jsonb,
          'summary: a lifetime limit never resets');
SELECT is((:'sm'::jsonb) -> 'limits' -> 'max_seats' ->> 'allowed', 'false', 'summary: a member may not add members');
SELECT is((:'sm'::jsonb) -> 'flags' ->> 'sso', check_feature_access(:'m', 'sso', :'t') ->> 'enabled',
          'summary: flags agree with check_feature_access');
SELECT throws_ok(format($$ SELECT get_usage_summary(%L) $$, :'px'),
                 '42501', 'get_usage_summary: the caller is not a member of this organization',
                 'summary: a foreign org is 42501');

-- ================================================================ record_usage_batch (member)
SELECT record_usage_batch(jsonb_build_array(
    jsonb_build_object('org_id', :'t', 'event_type', 'api_call', 'quantity', 2, 'idempotency_key', 'b-1'),
    jsonb_build_object('org_id', :'t', 'event_type', 'api_call', 'quantity', 'NaN'),
    jsonb_build_object('org_id', :'t', 'event_type', 'api_call', 'idempotency_key', 'b-1'),
    jsonb_build_object('org_id', :'px', 'event_type', 'api_call'),
    jsonb_build_object('org_id', :'t', 'event_type', 'automation_run'),
    '"not an object"'::jsonb,
    jsonb_build_object('org_id', :'t', 'event_type', 'api_call', 'metadata', '[1]'::jsonb)
)) AS b \gset
SELECT is(jsonb_array_length(:'b'::jsonb), 7, 'batch: one result per event, in order');
SELECT is((:'b'::jsonb) -> 0 ->> 'recorded', 'true', 'batch: a good event is recorded');
SELECT is((:'b'::jsonb) -> 1 -> 'error' ->> 'sqlstate', '22023', 'batch: NaN is refused with 22023');
SELECT is((:'b'::jsonb) -> 2 ->> 'duplicate', 'true', 'batch: a key repeated within the batch is a duplicate');
SELECT is((:'b'::jsonb) -> 2 ->> 'event_id', (:'b'::jsonb) -> 0 ->> 'event_id', 'of the first event of the batch');
SELECT is((:'b'::jsonb) -> 3 -> 'error' ->> 'sqlstate', '42501', 'batch: a foreign org is refused with 42501');
SELECT is((:'b'::jsonb) -> 4 -> 'error' ->> 'sqlstate', '54000', 'batch: over a hard limit is refused with 54000');
SELECT is((:'b'::jsonb) -> 5 -> 'error' ->> 'sqlstate', '22023', 'batch: a non-object element is 22023');
SELECT is((:'b'::jsonb) -> 6 -> 'error' ->> 'message', 'events[6].metadata: must be a JSON object',
          'batch: metadata must be an object');
SELECT is((SELECT sum(quantity) FROM usage_events WHERE organization_id = :'t' AND event_type = 'api_call'),
          2::numeric, 'batch: only the good event was recorded');
SELECT throws_ok($$ SELECT record_usage_batch('{"org_id":1}') $$, '22023',
                 'record_usage_batch: events must be a JSON array', 'batch: not an array is 22023');
SELECT throws_ok(format($$ SELECT record_usage_batch((SELECT jsonb_agg(jsonb_build_object('org_id', %L, 'event_type', 'api_call'))
                                                      FROM generate_series(1, 1001))) $$, :'t'),
                 '22023', 'record_usage_batch: at most 1000 events per call', 'batch: more than 1000 events is 22023');

-- ================================================================ direct INSERTs and keys
RESET ROLE;
INSERT INTO usage_events (organization_id, user_id, event_type, idempotency_key) VALUES (:'t', :'m', 'api_call', 'direct-1');
INSERT INTO usage_events (organization_id, user_id, event_type, idempotency_key) VALUES (:'t', :'m', 'api_call', 'direct-1');
SELECT is((SELECT count(*) FROM usage_events WHERE organization_id = :'t' AND idempotency_key = 'direct-1'), 1::bigint,
          'a direct INSERT repeating a key is skipped');
SELECT is((SELECT count(*) FROM usage_events WHERE organization_id = :'t' AND idempotency_key = 'b-1'), 1::bigint,
          'the batch''s key is stored once');
SET LOCAL ROLE authenticated;
SELECT is(record_usage(:'t', 'api_call', 1, 'direct-1') ->> 'duplicate', 'true',
          'record_usage sees a key used by a direct INSERT');
SELECT set_config('request.jwt.claims', format('{"sub":"%s","role":"authenticated"}', :'x'), true);
SELECT is(record_usage(:'px', 'api_call', 1, 'b-1') ->> 'recorded', 'true',
          'keys are per organization: another org records the same key');
-- A refused call does not keep its key: after the limit is raised, the same key records.
SELECT set_config('request.jwt.claims', format('{"sub":"%s","role":"authenticated"}', :'m'), true);
RESET ROLE;
UPDATE plan_features SET limit_value = 10 WHERE plan = 'business' AND feature_key = 'max_automations';
SET LOCAL ROLE authenticated;
SELECT is(record_usage(:'t', 'automation_run', 1, 'req-4') ->> 'recorded', 'true',
          'a key refused earlier (over the limit) is free to record later');
-- A multi-row INSERT is admitted row by row against what its earlier rows took: 4 of 10 used,
-- 7 more would make 11.
SELECT throws_ok(format($$ INSERT INTO usage_events (organization_id, event_type)
                           SELECT %L, 'automation_run' FROM generate_series(1, 7) $$, :'t'),
                 '54000', NULL, 'a member''s 7-row INSERT that would pass the hard limit is refused whole');
SELECT lives_ok(format($$ INSERT INTO usage_events (organization_id, event_type)
                          SELECT %L, 'automation_run' FROM generate_series(1, 6) $$, :'t'),
                'a 6-row INSERT that reaches the limit exactly is recorded');
SELECT is(check_feature_access(:'m', 'max_automations', :'t') ->> 'usage', '10',
          'usage is exactly the limit: the refused statement left nothing');

-- ================================================================ anon
RESET ROLE;
SET LOCAL ROLE anon;
SELECT set_config('request.jwt.claims', '{"role":"anon"}', true);
SELECT throws_ok(format($$ SELECT record_usage(%L, 'api_call') $$, :'t'), '42501', NULL, 'anon cannot call record_usage');
SELECT throws_ok($$ SELECT record_usage_batch('[]') $$, '42501', NULL, 'anon cannot call record_usage_batch');
SELECT throws_ok(format($$ SELECT get_usage_summary(%L) $$, :'t'), '42501', NULL, 'anon cannot call get_usage_summary');

-- ================================================================ service role: event time, corrections
RESET ROLE;
SET LOCAL ROLE service_role;
SELECT set_config('request.jwt.claims', '{"role":"service_role"}', true);
SELECT is(get_usage_summary(:'t') ->> 'role', 'service_role', 'summary: the service role may ask about any org');
SELECT record_usage(:'t', 'api_call', 4, NULL, usage_bucket_start('monthly', now()) - interval '1 hour', '{}', :'m') AS late \gset
SELECT is((SELECT occurred_at FROM usage_events WHERE id = (:'late'::jsonb ->> 'event_id')::uuid),
          usage_bucket_start('monthly', now()) - interval '1 hour', 'the service role dates an event within the window');
SELECT is((:'late'::jsonb) -> 'limits' -> 'max_api_calls_per_month' ->> 'usage',
          (SELECT sum(quantity)::text FROM usage_events WHERE organization_id = :'t' AND event_type = 'api_call'
             AND occurred_at >= usage_bucket_start('monthly', now())),
          'an event of last month does not count against this month''s limit');
SELECT aggregate_usage() IS NOT NULL AS folded \gset
SELECT is((SELECT total_quantity FROM usage_aggregations WHERE organization_id = :'t' AND event_type = 'api_call'
             AND period = 'monthly' AND period_start = usage_bucket_start('monthly', now() - interval '1 month')
             AND period_start < usage_bucket_start('monthly', now())),
          4::numeric, 'after the fold, the late event is in last month''s rollup');
SELECT is((SELECT total_quantity FROM usage_aggregations WHERE organization_id = :'t' AND event_type = 'api_call'
             AND period = 'daily' AND period_start = usage_bucket_start('daily', usage_bucket_start('monthly', now()) - interval '1 hour')),
          4::numeric, 'and in its own day''s rollup');
SELECT throws_ok(format($$ SELECT record_usage(%L, 'api_call', 1, NULL, now() - interval '36 days', '{}', %L) $$, :'t', :'m'),
                 '22023', 'occurred_at is older than the late-event window (usage_settings.late_event_window)',
                 'older than the late-event window is 22023');
SELECT throws_ok(format($$ SELECT record_usage(%L, 'api_call', 1, NULL, now() + interval '1 hour', '{}', %L) $$, :'t', :'m'),
                 '22023', 'occurred_at is in the future', 'the future is 22023');
SELECT throws_ok(format($$ INSERT INTO usage_events (organization_id, event_type, occurred_at) VALUES (%L, 'api_call', now() - interval '36 days') $$, :'t'),
                 '22023', NULL, 'a direct INSERT older than the window is 22023 as well');
SELECT is(record_usage(:'t', 'api_call', -2, NULL, NULL, '{"reason":"refund"}') -> 'limits' -> 'max_api_calls_per_month' ->> 'usage',
          (SELECT (sum(quantity) - 2)::text FROM usage_events WHERE organization_id = :'t' AND event_type = 'api_call'
             AND occurred_at >= usage_bucket_start('monthly', now())),
          'the service role records a correction, and the answer counts it');
SELECT throws_ok($$ SELECT record_usage('00000000-0000-4000-8000-00000000dead', 'api_call') $$,
                 '22023', 'no organization 00000000-0000-4000-8000-00000000dead', 'service role: unknown org is 22023');
SELECT lives_ok(format($$ UPDATE usage_settings SET late_event_window = interval '40 days' $$),
                'the late-event window is configuration');
SELECT lives_ok(format($$ SELECT record_usage(%L, 'api_call', 1, NULL, now() - interval '36 days', '{}', %L) $$, :'t', :'m'),
                'and widening it admits older events');

-- record_usage claims its key, then writes its event past the deduplicating trigger, which
-- would only find that claim again; the pass lasts only while it writes that event.
SELECT record_usage(:'t', 'api_call', 1, 'key-claimed-by-record-usage') ->> 'event_id' AS claimed_event \gset
SELECT is((SELECT event_id FROM usage_idempotency_keys WHERE organization_id = :'t' AND idempotency_key = 'key-claimed-by-record-usage'),
          :'claimed_event'::uuid, 'record_usage claimed its key for the event it wrote');
WITH i AS (INSERT INTO usage_events (organization_id, event_type, idempotency_key)
           VALUES (:'t', 'api_call', 'key-claimed-by-record-usage') RETURNING 1)
SELECT is(count(*)::int, 0, 'a direct INSERT reusing record_usage''s key is still skipped') FROM i;

SELECT * FROM finish();
ROLLBACK;
