-- The same delivery through the hand-written handler (the floor).
\set org random(1, :orgs)
\set kind random(1, 10)
SELECT bench_billing.naive_apply(bench_billing.event(:org, :kind));
