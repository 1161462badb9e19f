#!/usr/bin/env bash
# Teams benchmark (issue 7): get_organization_members() on an organization with 5,000 members
# against the hand-written query returning the same rows, and an admin reading the audit log
# of one organization among 1,000,000 entries with RLS alone against a superuser's explicit
# filter. Medians of ROUNDS pgbench runs, in a throwaway cluster. A benchmark, not a test.
#
#   bash scripts/bench_teams.sh                     # release build (~4 minutes)
#   SKIP_INSTALL=1 bash scripts/bench_teams.sh      # the installed build
#
# Settings (environment): SECONDS_PER_RUN (10), CLIENTS ("1 4"), ROUNDS (3), MEMBERS (5000),
# AUDIT_ORGS (1000), AUDIT_PER_ORG (1000).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

DB=saas_core_bench_teams
T=${SECONDS_PER_RUN:-10}
CLIENTS=${CLIENTS:-"1 4"}
ROUNDS=${ROUNDS:-3}
OUT="${TMPDIR:-/tmp}/saas_core_bench_teams"
ADMIN=00000000-0000-4000-8002-000000000002

setup_toolchain
[ "${SKIP_INSTALL:-0}" = "1" ] || install_extension --release
start_cluster "$OUT" 55452
psql_q -d postgres -c "ALTER SYSTEM SET shared_buffers = '1GB'" -c "ALTER SYSTEM SET jit = off"
as_postgres "$PG_BIN/pg_ctl" -D "$OUT/data" -l "$OUT/server.log" -w -o "-p $CLUSTER_PORT -k $OUT -c listen_addresses=''" restart >/dev/null
psql_q -d postgres -c "CREATE DATABASE $DB"
psql_q -d "$DB" -c "CREATE EXTENSION saas_core"
psql_q -d "$DB" -v members="${MEMBERS:-5000}" -v audit_orgs="${AUDIT_ORGS:-1000}" \
  -v audit_per_org="${AUDIT_PER_ORG:-1000}" -f "$ROOT/bench/teams/setup.sql"
cp -r "$ROOT/bench/teams/pgbench" "$OUT/pgbench"; chown -R postgres "$OUT/pgbench"
source "$ROOT/scripts/bench_common.sh"

log "members: get_organization_members() vs the hand-written query ($(sql "SELECT member_count FROM organizations WHERE slug = 'big-co'") members)"
for c in $CLIENTS; do
  hand=$(measure hand members_query.sql "$c" 1 postgres)
  rpc=$(PGB_OPTIONS="-c request.jwt.claim.sub=$ADMIN" measure rpc members_rpc.sql "$c" 1 authenticated)
  record "members c=$c: hand-written query (superuser)" "$hand tps" ""
  record "members c=$c: get_organization_members() (member)" "$rpc tps" "$(ratio "$hand" "$rpc")x the query's time"
done

log "audit log: one organization's entries among $(sql "SELECT count(*) FROM audit_log") (RLS alone vs explicit filter)"
for read in all page; do
  for c in $CLIENTS; do
    filtered=$(measure filtered "audit_filtered_$read.sql" "$c" 1 postgres)
    rls=$(PGB_OPTIONS="-c request.jwt.claim.sub=$ADMIN" measure rls "audit_rls_$read.sql" "$c" 1 authenticated)
    record "audit $read c=$c: explicit filter (superuser)" "$filtered tps" ""
    record "audit $read c=$c: RLS alone (admin, audit.read)" "$rls tps" "$(ratio "$filtered" "$rls")x the filter's time"
    if [ "$read" = page ]; then
      both=$(PGB_OPTIONS="-c request.jwt.claim.sub=$ADMIN" measure both audit_rls_filtered_page.sql "$c" 1 authenticated)
      record "audit page c=$c: explicit filter under RLS (admin)" "$both tps" "$(ratio "$filtered" "$both")x the filter's time"
    fi
  done
done

stop_cluster
echo
echo "Results: $RESULTS"
