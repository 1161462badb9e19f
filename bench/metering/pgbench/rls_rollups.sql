SELECT count(*), sum(total_quantity) FROM usage_aggregations;
