\set n random(1, :orgs)
INSERT INTO usage_events (organization_id, user_id, event_type, quantity) VALUES (('00000000-0000-4000-8001-' || lpad(:n::text, 12, '0'))::uuid, ('00000000-0000-4000-8002-' || lpad(:n::text, 12, '0'))::uuid, 'api_call', 1);
