#!/usr/bin/env bash
# Benchmark: saas_core's Rust check_feature_access() and signup trigger against the PL/pgSQL
# baseline in bench/plpgsql_baseline.sql, in a throwaway cluster. Prints calls/s and ratios.
#
#   bash scripts/bench.sh                         # release build (fat LTO: several minutes)
#   bash scripts/bench.sh -v calls=20000 -v rounds=7 -v signups=2000
#   SKIP_INSTALL=1 bash scripts/bench.sh          # use the build already installed
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

DB=saas_core_bench
setup_toolchain
if [ "${SKIP_INSTALL:-0}" != "1" ]; then
  install_extension --release
fi
start_cluster /tmp/saas_core_bench 55450
log "benchmark database $DB ($(nproc) cores, $(uname -m))"
psql_q -d postgres -c "CREATE DATABASE $DB"
psql_q -d "$DB" -c "CREATE EXTENSION saas_core"
psql_q -d "$DB" -f "$ROOT/bench/plpgsql_baseline.sql"
psql_q -d "$DB" -f "$ROOT/bench/bench.sql" "$@"
