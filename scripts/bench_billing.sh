#!/usr/bin/env bash
# Billing benchmark (issue 8): apply_billing_event() on a realistic mix of Stripe deliveries (new
# subscription updates, redeliveries, late older events, ignored types) against a hand-written
# handler doing the same writes (the floor), with an empty event log and with 1,000,000 events
# logged. Medians of ROUNDS pgbench runs, in a throwaway cluster. A benchmark, not a test.
#
#   bash scripts/bench_billing.sh                   # release build (~4 minutes)
#   SKIP_INSTALL=1 bash scripts/bench_billing.sh    # the installed build
#
# Settings (environment): SECONDS_PER_RUN (10), CLIENTS ("1 4"), ROUNDS (3), ORGS (1000),
# EVENTS (1000000).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

DB=saas_core_bench_billing
T=${SECONDS_PER_RUN:-10}
CLIENTS=${CLIENTS:-"1 4"}
ROUNDS=${ROUNDS:-3}
ORGS=${ORGS:-1000}
OUT="${TMPDIR:-/tmp}/saas_core_bench_billing"

setup_toolchain
[ "${SKIP_INSTALL:-0}" = "1" ] || install_extension --release
start_cluster "$OUT" 55453
psql_q -d postgres -c "ALTER SYSTEM SET shared_buffers = '1GB'" -c "ALTER SYSTEM SET jit = off"
as_postgres "$PG_BIN/pg_ctl" -D "$OUT/data" -l "$OUT/server.log" -w -o "-p $CLUSTER_PORT -k $OUT -c listen_addresses=''" restart >/dev/null
psql_q -d postgres -c "CREATE DATABASE $DB"
psql_q -d "$DB" -c "CREATE EXTENSION saas_core"
psql_q -d "$DB" -v orgs="$ORGS" -f "$ROOT/bench/billing/setup.sql"
cp -r "$ROOT/bench/billing/pgbench" "$OUT/pgbench"; chown -R postgres "$OUT/pgbench"
source "$ROOT/scripts/bench_common.sh"

run() {
  local label="$1" c
  for c in $CLIENTS; do
    naive=$(measure naive naive_apply.sql "$c" "$ORGS")
    saas=$(measure saas apply_billing_event.sql "$c" "$ORGS")
    record "$label c=$c: hand-written handler" "$naive events/s" ""
    record "$label c=$c: apply_billing_event()" "$saas events/s" "$(ratio "$saas" "$naive")x the handler's rate"
  done
}

log "apply_billing_event: a realistic mix of deliveries (event log: $(sql "SELECT count(*) FROM billing_events") rows)"
run "small log"
outcomes=$(sql "SELECT string_agg(outcome || ' ' || n, ', ' ORDER BY outcome) FROM (SELECT outcome, count(*) n FROM billing_events GROUP BY 1) o")
echo "  outcomes so far: $outcomes"

log "the same with ${EVENTS:-1000000} more events in each log"
psql_q -d "$DB" -v events="${EVENTS:-1000000}" -f "$ROOT/bench/billing/preload.sql"
run "1M logged"

stop_cluster
echo
echo "Results: $RESULTS"
