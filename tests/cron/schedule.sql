-- pg_cron runs the metering maintenance that schedule_usage_maintenance() registers. Not in a
-- transaction: the jobs must see what this script commits. pg_cron 1.4 (Debian 12) schedules
-- by the minute, so this waits for the next minute or two.
\set ON_ERROR_STOP 1
SELECT plan(12);

INSERT INTO auth.users (id, email) VALUES ('00000000-0000-4000-8000-000000001201', 'cron@cron.example');
-- The next month's partitions are dropped so that the job has some to create.
DO $$
DECLARE p regclass;
BEGIN
  FOR p IN SELECT i.inhrelid::regclass FROM pg_inherits i
           WHERE i.inhparent = 'usage_events'::regclass
             AND i.inhrelid::regclass::text > 'usage_events_' || to_char(now() AT TIME ZONE 'UTC', 'YYYY_MM')
  LOOP
    EXECUTE format('DROP TABLE %s', p);
  END LOOP;
END $$;
SELECT count(*) AS partitions_before FROM pg_inherits WHERE inhparent = 'usage_events'::regclass \gset
INSERT INTO usage_events (organization_id, user_id, event_type, quantity)
SELECT id, owner_id, 'api_call', 4 FROM organizations WHERE owner_id = '00000000-0000-4000-8000-000000001201';
SELECT id AS org FROM organizations WHERE owner_id = '00000000-0000-4000-8000-000000001201' \gset

-- ================================================================ who may schedule
SET ROLE authenticated;
SELECT throws_ok($$ SELECT schedule_usage_maintenance() $$, '42501', NULL, 'a member cannot schedule maintenance');
RESET ROLE;
SET ROLE service_role;
SELECT schedule_usage_maintenance('* * * * *', '* * * * *') AS jobs \gset
RESET ROLE;
SELECT is(jsonb_array_length(:'jobs'::jsonb), 2, 'two jobs: rollups, and partitions with retention');
SELECT is((SELECT count(*)::int FROM cron.job WHERE jobname LIKE 'saas_core %'), 2, 'pg_cron holds both');
SELECT ok((SELECT bool_and(command LIKE 'SET ROLE service_role;%') FROM cron.job WHERE jobname LIKE 'saas_core %'),
          'both run as the service role');
SET ROLE service_role;
SELECT is(jsonb_array_length(schedule_usage_maintenance('* * * * *', '* * * * *')), 2, 'scheduling again ...');
RESET ROLE;
SELECT is((SELECT count(*)::int FROM cron.job WHERE jobname LIKE 'saas_core %'), 2, '... replaces the jobs, no duplicates');
SET ROLE service_role;
SELECT throws_ok($$ SELECT schedule_usage_maintenance('every tuesday', '* * * * *') $$, '22023', NULL,
                 'an invalid schedule is refused');
RESET ROLE;

-- ================================================================ pg_cron runs them
DO $$
BEGIN
  FOR i IN 1..150 LOOP
    EXIT WHEN (SELECT count(DISTINCT d.jobid) FROM cron.job_run_details d JOIN cron.job j USING (jobid)
               WHERE j.jobname LIKE 'saas_core %' AND d.status IN ('succeeded', 'failed')) = 2;
    PERFORM pg_sleep(1);
  END LOOP;
END $$;
SELECT is((SELECT string_agg(DISTINCT d.status || coalesce(': ' || nullif(d.return_message, ''), ''), ', ')
           FROM cron.job_run_details d JOIN cron.job j USING (jobid)
           WHERE j.jobname LIKE 'saas_core usage rollups%'), 'succeeded: SELECT 1', 'the rollup job ran and succeeded');
SELECT is((SELECT string_agg(DISTINCT d.status, ', ')
           FROM cron.job_run_details d JOIN cron.job j USING (jobid)
           WHERE j.jobname LIKE 'saas_core usage partitions%'), 'succeeded', 'the partition and retention job ran and succeeded');
SELECT is((SELECT total_quantity FROM usage_aggregations WHERE organization_id = :'org' AND period = 'monthly'
             AND event_type = 'api_call' AND period_start = usage_bucket_start('monthly', now())), 4::numeric,
          'the rollup job folded the event''s count into the rollups');
SELECT cmp_ok((SELECT count(*) FROM pg_inherits WHERE inhparent = 'usage_events'::regclass), '>', :'partitions_before'::bigint,
              'the maintenance job created the partitions ahead');

SET ROLE service_role;
SELECT is(unschedule_usage_maintenance(), 2::bigint, 'unschedule_usage_maintenance removes both jobs');
RESET ROLE;

SELECT * FROM finish();
