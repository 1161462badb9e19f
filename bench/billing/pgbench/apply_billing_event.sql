-- One webhook delivery from the mix (bench/billing/setup.sql), through apply_billing_event.
\set org random(1, :orgs)
\set kind random(1, 10)
SELECT apply_billing_event('stripe', bench_billing.event(:org, :kind));
