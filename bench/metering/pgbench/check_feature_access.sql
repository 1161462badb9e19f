\set n random(1, :orgs)
SELECT check_feature_access(('00000000-0000-4000-8002-' || lpad(:n::text, 12, '0'))::uuid, 'max_api_calls_per_month', ('00000000-0000-4000-8001-' || lpad(:n::text, 12, '0'))::uuid);
