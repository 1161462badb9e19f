#!/usr/bin/env bash
# Two or more builds of saas_core against each other on the metering workloads, CPU-bound
# (synchronous_commit = off, so WAL flush latency does not hide CPU per call), in one cluster:
# each round installs each build in turn (the cluster restarted so backends load it) and runs
# every workload once, next to the constrained copy it is compared with. A benchmark, not a test.
#
#   cargo pgrx install --release && cp /usr/lib/postgresql/15/lib/saas_core.so /tmp/after.so
#   git checkout <before> && cargo pgrx install --release && cp …/saas_core.so /tmp/before.so
#   bash scripts/bench_builds.sh /tmp/before.so /tmp/after.so
#
# Settings (environment): ROUNDS (2), SECONDS_PER_RUN (8), ORGS (1000). The last build given is
# left installed. Uses the schema of the build installed first (the extension's SQL is the
# same for builds of one version).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

[ $# -ge 2 ] || { echo "usage: $0 BUILD.so BUILD.so [...]" >&2; exit 2; }
DB=saas_core_bench_builds
T=${SECONDS_PER_RUN:-8}
ROUNDS=${ROUNDS:-2}
ORGS=${ORGS:-1000}
OUT="${TMPDIR:-/tmp}/saas_core_bench_builds"
LIB="$("$PG_CONFIG" --pkglibdir)/saas_core.so"

use_build() { as_postgres "$PG_BIN/pg_ctl" -D "$OUT/data" -m fast -w stop >/dev/null; cp "$1" "$LIB"; \
  as_postgres "$PG_BIN/pg_ctl" -D "$OUT/data" -l "$OUT/server.log" -w -o "-p $CLUSTER_PORT -k $OUT -c listen_addresses=''" start >/dev/null; }

cp "$1" "$LIB"
start_cluster "$OUT" 55452
psql_q -d postgres -c "ALTER SYSTEM SET max_wal_size = '20GB'" -c "ALTER SYSTEM SET checkpoint_timeout = '1h'" \
  -c "ALTER SYSTEM SET shared_buffers = '1GB'" -c "ALTER SYSTEM SET jit = off" -c "ALTER SYSTEM SET synchronous_commit = off"
psql_q -d postgres -c "CREATE DATABASE $DB"
psql_q -d "$DB" -c "CREATE EXTENSION saas_core"
psql_q -d "$DB" -v orgs="$ORGS" -f "$ROOT/bench/metering/setup.sql"
cp -r "$ROOT/bench/metering/pgbench" "$OUT/pgbench"; chown -R postgres "$OUT/pgbench"
source "$ROOT/scripts/bench_common.sh"

# script clients organizations
WORKLOADS=(
  "insert_constrained.sql 1 $ORGS" "insert_saas_core.sql 1 $ORGS"
  "insert_constrained.sql 16 1" "insert_saas_core.sql 16 1"
  "insert_constrained.sql 16 $ORGS" "insert_saas_core.sql 16 $ORGS"
  "insert_constrained_keyed.sql 1 $ORGS" "record_usage.sql 1 $ORGS"
  "insert_constrained_keyed.sql 16 $ORGS" "record_usage.sql 16 $ORGS"
  "check_bare_query.sql 16 $ORGS" "check_feature_access.sql 16 $ORGS"
)
log "tps per workload (script/clients/organizations), synchronous_commit = off"
for r in $(seq "$ROUNDS"); do
  for build in "$@"; do
    use_build "$build"
    line=""
    for w in "${WORKLOADS[@]}"; do
      read -r script c orgs <<< "$w"
      line="$line ${script%.sql}/$c/$orgs=$(tps "$script" "$c" "$orgs")"
    done
    record "round $r $(basename "$build")" "$line" ""
  done
done
