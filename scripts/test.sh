#!/usr/bin/env bash
# Every test saas_core has, on a fresh Debian 12 machine with only Rust installed:
#   formatting and lints, the #[pg_test]s, then against the installed extension in a
#   throwaway cluster: pgTAP suites (RLS per role, errors, the seed's verification queries),
#   install on a Supabase-shaped database, and pg_isolation_regress concurrency specs.
source "$(dirname "$0")/common.sh"
cd "$ROOT"

setup_toolchain

log "cargo fmt --check && cargo clippy -D warnings"
cargo fmt --check
cargo clippy --all-targets --features "pg15 pg_test" -q -- -D warnings

log "cargo pgrx test pg15 (#[pg_test]s)"
PGRX_DATA="${TMPDIR:-/tmp}/saas_core_pgrx_test"
mkdir -p "$PGRX_DATA"; chown postgres "$PGRX_DATA"
runas=(); [ "$(id -u)" -eq 0 ] && runas=(--runas postgres)
cargo pgrx test pg15 "${runas[@]}" --pgdata "$PGRX_DATA/data"

install_extension
start_cluster "${TMPDIR:-/tmp}/saas_core_test_cluster" 55433
failed=0

log "pgTAP: tests/sql (plain PostgreSQL, extension in public)"
psql_q -d postgres -c "CREATE DATABASE saas_core_test"
psql_q -d saas_core_test -c "CREATE EXTENSION saas_core"
pg_prove -d saas_core_test tests/sql/*.sql || failed=1

log "pgTAP: install on a Supabase-shaped database (existing auth schema, default privileges)"
psql_q -d postgres -c "CREATE DATABASE saas_core_supabase"
psql_q -d saas_core_supabase -f tests/supabase/supabase_auth_schema.sql
psql_q -d saas_core_supabase -c "CREATE EXTENSION saas_core"
pg_prove -d saas_core_supabase tests/supabase/supabase_install.sql || failed=1

log "pgTAP: install into a non-public schema"
psql_q -d postgres -c "CREATE DATABASE saas_core_schema"
psql_q -d saas_core_schema -c "CREATE SCHEMA app; CREATE EXTENSION saas_core SCHEMA app"
pg_prove -d saas_core_schema tests/schema/*.sql || failed=1

log "pg_isolation_regress: tests/isolation"
# pg_isolation_regress runs as postgres, which may not be able to read this checkout: copy the specs.
ISO_DIR="$CLUSTER_DIR/isolation"; rm -rf "$ISO_DIR"; cp -r tests/isolation "$ISO_DIR"
ISO_OUT="$ISO_DIR/out"; mkdir -p "$ISO_OUT"; chown -R postgres "$ISO_DIR"
psql_q -d postgres -c "CREATE DATABASE isolation_regression"
specs=$(cd tests/isolation/specs && ls *.spec | sed 's/\.spec$//')
# shellcheck disable=SC2086
if ! as_postgres "$PGXS_TEST/isolation/pg_isolation_regress" --use-existing \
     --host="$PGHOST" --port="$PGPORT" --user=postgres \
     --inputdir="$ISO_DIR" --outputdir="$ISO_OUT" $specs; then
  cat "$ISO_OUT/regression.diffs" || true
  failed=1
fi

total=$(($(grep -c "^permutation" tests/isolation/specs/*.spec | awk -F: '{s+=$2} END {print s}')))
if [ "$failed" -ne 0 ]; then
  echo "SQL-level tests FAILED"
  exit 1
fi
echo "SQL-level tests passed (pgTAP suites and $total isolation permutations)"
