\set n random(1, :orgs)
-- The rows check_feature_access reads, in one plain query: the caller's membership, the
-- subscription, the plan's limit, this month's rollup and the counter rows not folded yet.
SELECT m.role, s.plan, s.status, f.limit_value, f.enforcement,
       (SELECT a.total_quantity FROM usage_aggregations a
        WHERE a.organization_id = m.organization_id AND a.event_type = 'api_call' AND a.period = 'monthly'
          AND a.period_start = usage_bucket_start('monthly', now())) AS folded,
       (SELECT sum(c.total_quantity) FROM usage_counters c
        WHERE c.organization_id = m.organization_id AND c.event_type = 'api_call' AND c.period = 'monthly'
          AND c.period_start = usage_bucket_start('monthly', now())) AS counted
FROM organization_members m
JOIN org_subscriptions s ON s.organization_id = m.organization_id
JOIN plan_features f ON f.plan = s.plan AND f.feature_key = 'max_api_calls_per_month'
WHERE m.organization_id = ('00000000-0000-4000-8001-' || lpad(:n::text, 12, '0'))::uuid AND m.user_id = ('00000000-0000-4000-8002-' || lpad(:n::text, 12, '0'))::uuid;
