-- Fill both event logs to :events rows (old, already applied deliveries).
\set ON_ERROR_STOP 1
SET session_replication_role = replica;
INSERT INTO billing_events (provider, event_key, event_type, object_id, organization_id, occurred_at, outcome, payload)
SELECT 'stripe', 'evt_old_' || g, 'customer.subscription.updated', 'sub_bench_' || (1 + g % 1000),
       bench_billing.org_id(1 + g % 1000), to_timestamp(1600000000 + g), 'applied',
       jsonb_build_object('id', 'evt_old_' || g, 'type', 'customer.subscription.updated')
FROM generate_series(1, :events) g;
INSERT INTO bench_billing.events (event_id, payload)
SELECT 'evt_old_' || g, jsonb_build_object('id', 'evt_old_' || g) FROM generate_series(1, :events) g;
RESET session_replication_role;
VACUUM ANALYZE billing_events;
VACUUM ANALYZE bench_billing.events;
