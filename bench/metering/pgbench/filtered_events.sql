SELECT count(*), sum(quantity) FROM usage_events WHERE organization_id = '00000000-0000-4000-8001-000000000002';
