SELECT count(*), sum(quantity) FROM usage_events;
