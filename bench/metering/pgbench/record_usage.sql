\set n random(1, :orgs)
SELECT record_usage(('00000000-0000-4000-8001-' || lpad(:n::text, 12, '0'))::uuid, 'api_call', 1, gen_random_uuid()::text, NULL, '{}', ('00000000-0000-4000-8002-' || lpad(:n::text, 12, '0'))::uuid);
