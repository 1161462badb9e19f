SELECT count(*), sum(total_quantity) FROM usage_aggregations WHERE organization_id = '00000000-0000-4000-8001-000000000002';
