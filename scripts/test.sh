#!/usr/bin/env bash
# Every test saas_core has, on a fresh Debian 12 machine with only Rust installed:
#   formatting and lints, the #[pg_test]s, then against the installed extension in throwaway
#   clusters: pgTAP suites (RLS per role, errors, the seed's verification queries), a
#   non-public schema, pg_isolation_regress concurrency specs, no Rust internals in errors,
#   backups (pg_dump/pg_restore and pg_dump | psql), the 0.1.0 → 0.2.0 upgrade, pg_cron, and a cluster
#   built like self-hosted Supabase (install as its non-superuser postgres, next to GoTrue).
source "$(dirname "$0")/common.sh"
cd "$ROOT"
source tests/upgrade/run.sh
source tests/backup/run.sh
source tests/supabase/run.sh
source tests/errors/run.sh
source tests/cron/run.sh
source tests/notify/run.sh

setup_toolchain

log "cargo fmt --check && cargo clippy -D warnings"
cargo fmt --check
cargo clippy --all-targets --features "pg15 pg_test" -q -- -D warnings

log "cargo pgrx test pg15 (#[pg_test]s)"
PGRX_DATA="${TMPDIR:-/tmp}/saas_core_pgrx_test"
mkdir -p "$PGRX_DATA"; chown postgres "$PGRX_DATA"
runas=(); [ "$(id -u)" -eq 0 ] && runas=(--runas postgres)
# One test at a time: they share one cluster, and aggregate_usage() waits (fold_wait) for
# every transaction writing usage events, including other tests' open transactions.
RUST_TEST_THREADS=1 cargo pgrx test pg15 "${runas[@]}" --pgdata "$PGRX_DATA/data"

install_extension

# ------------------------------------------------------------------ plain PostgreSQL
start_cluster "${TMPDIR:-/tmp}/saas_core_test_cluster" 55433

log "pgTAP: tests/sql (plain PostgreSQL, extension in public)"
psql_q -d postgres -c "CREATE DATABASE saas_core_test"
psql_q -d saas_core_test -c "CREATE EXTENSION saas_core"
check "pgTAP suites" pg_prove -d saas_core_test tests/sql/*.sql

log "pgTAP: install into a non-public schema"
psql_q -d postgres -c "CREATE DATABASE saas_core_schema"
psql_q -d saas_core_schema -c "CREATE SCHEMA app; CREATE EXTENSION saas_core SCHEMA app"
check "custom schema" pg_prove -d saas_core_schema tests/schema/*.sql

log "pg_isolation_regress: tests/isolation"
isolation() {
  # pg_isolation_regress runs as postgres, which may not be able to read this checkout: copy the specs.
  local dir="$CLUSTER_DIR/isolation"; rm -rf "$dir"; cp -r tests/isolation "$dir"
  mkdir -p "$dir/out"; chown -R postgres "$dir"
  psql_q -d postgres -c "CREATE DATABASE isolation_regression" || return 1
  local specs; specs=$(cd tests/isolation/specs && ls *.spec | sed 's/\.spec$//')
  # shellcheck disable=SC2086
  as_postgres "$PGXS_TEST/isolation/pg_isolation_regress" --use-existing \
     --host="$PGHOST" --port="$PGPORT" --user=postgres \
     --inputdir="$dir" --outputdir="$dir/out" $specs || { cat "$dir/out/regression.diffs"; return 1; }
}
check "isolation specs" isolation

log "errors: no Rust internals reach the client (server has RUST_BACKTRACE=1)"
check "no Rust internals in errors" no_rust_internals_test

log "notifications: pg_notify after commit, with the new row as payload"
check "pg_notify" notify_test

log "backups: pg_dump -Fc + pg_restore, and pg_dump | psql"
check "backup and restore (plain PostgreSQL)" backup_test_plain

log "upgrade: 0.1.0 → 0.2.0 on plain PostgreSQL"
check "upgrade (plain PostgreSQL)" upgrade_test plain postgres

stop_cluster

# ------------------------------------------------------------------ pg_cron
start_cluster "${TMPDIR:-/tmp}/saas_core_cron_cluster" 55435
log "pg_cron: schedule_usage_maintenance() registers jobs that run (pg_cron schedules by the minute)"
check "pg_cron scheduling" cron_test
stop_cluster

# ------------------------------------------------------------------ self-hosted Supabase
start_cluster "${TMPDIR:-/tmp}/saas_core_supabase_cluster" 55434 supabase_admin
psql_q -d postgres -f tests/supabase/roles.sql

log "Supabase: install as postgres (no superuser), before GoTrue's migrations"
check "Supabase: install before GoTrue" supabase_install_test before
log "Supabase: install as postgres (no superuser), after GoTrue's migrations"
check "Supabase: install after GoTrue" supabase_install_test after

log "Supabase: backup restored into a target that has its own auth schema"
check "backup and restore (Supabase target)" backup_test_supabase

log "Supabase: upgrade 0.1.0 → 0.2.0"
check "upgrade (Supabase)" upgrade_test supabase supabase_admin \
  "supabase_admin:tests/supabase/auth_init.sql" "supabase_admin:tests/supabase/gotrue_migrations.sql"

stop_cluster

permutations=$(grep -h "^permutation" tests/isolation/specs/*.spec | wc -l)
if [ ${#FAILED[@]} -ne 0 ]; then
  printf '\nFAILED: %s\n' "${FAILED[@]}"
  exit 1
fi
echo
echo "All tests passed (pgTAP suites, $permutations isolation permutations, errors, backups, upgrades, Supabase)."
