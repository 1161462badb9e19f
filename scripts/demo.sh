#!/usr/bin/env bash
# The demo: set up the toolchain, build and install saas_core, start a throwaway PostgreSQL
# cluster, and run examples/demo.sql (signups, a team org, feature checks, usage rollups).
source "$(dirname "$0")/common.sh"
cd "$ROOT"
setup_toolchain
install_extension
start_cluster "${TMPDIR:-/tmp}/saas_core_demo_cluster" 55434
psql_q -d postgres -c "CREATE DATABASE saas_core_demo"
"$PG_BIN/psql" -X -d saas_core_demo -f examples/demo.sql
log "demo done; the cluster is stopped and removed on exit"
