#!/usr/bin/env bash
# Metering benchmark (issue 6): usage ingestion, record_usage, aggregate_usage, check_feature_access
# and RLS reads, each against a baseline measured in the same run, in a throwaway cluster.
# Prints a table of figures and ratios. A benchmark, not a test: it asserts nothing about speed.
#
#   bash scripts/bench_metering.sh                      # release build, full run (~25 minutes)
#   SKIP_INSTALL=1 QUICK=1 bash scripts/bench_metering.sh   # installed build, short runs
#
# Settings (environment): SECONDS_PER_RUN (10), CLIENTS ("1 4 16"), ORGS (1000),
# BIG_EVENTS (10000000: the size check_feature_access is measured at), ROUNDS (2),
# SECTIONS ("1 2 3 4 5 6 7 8": which parts to run).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

DB=saas_core_bench_metering
T=${SECONDS_PER_RUN:-10}
CLIENTS=${CLIENTS:-"1 4 16"}
ORGS=${ORGS:-1000}
BIG=${BIG_EVENTS:-10000000}
ROUNDS=${ROUNDS:-2}
SECTIONS=" ${SECTIONS:-1 2 3 4 5 6 7 8} "
section() { [[ "$SECTIONS" == *" $1 "* ]]; }
if [ "${QUICK:-0}" = "1" ]; then T=3; BIG=1000000; ROUNDS=1; fi
PGB="$ROOT/bench/metering/pgbench"
OUT="${TMPDIR:-/tmp}/saas_core_bench_metering"

setup_toolchain
[ "${SKIP_INSTALL:-0}" = "1" ] || install_extension --release
start_cluster "$OUT" 55451
# Checkpoints only between runs (CHECKPOINT before each), so they do not land inside one.
psql_q -d postgres -c "ALTER SYSTEM SET max_wal_size = '20GB'" -c "ALTER SYSTEM SET checkpoint_timeout = '1h'" \
  -c "ALTER SYSTEM SET shared_buffers = '2GB'" -c "ALTER SYSTEM SET jit = off"
as_postgres "$PG_BIN/pg_ctl" -D "$OUT/data" -l "$OUT/server.log" -w -o "-p $CLUSTER_PORT -k $OUT -c listen_addresses=''" restart >/dev/null
psql_q -d postgres -c "CREATE DATABASE $DB"
psql_q -d "$DB" -c "CREATE EXTENSION saas_core"
psql_q -d "$DB" -v orgs="$ORGS" -f "$ROOT/bench/metering/setup.sql"
cp -r "$PGB" "$OUT/pgbench"; chown -R postgres "$OUT/pgbench"

source "$ROOT/scripts/bench_common.sh"

if section 1; then
log "1. single-row ingestion, one INSERT per transaction (tps), as service_role"
for scenario in hot spread; do
  orgs=1; [ "$scenario" = spread ] && orgs=$ORGS
  for c in $CLIENTS; do
    bare=$(measure bare insert_bare.sql "$c" "$orgs")
    cons=$(measure constrained insert_constrained.sql "$c" "$orgs")
    saas=$(measure saas insert_saas_core.sql "$c" "$orgs")
    keyed=$(measure keyed insert_constrained_keyed.sql "$c" "$orgs")
    rec=$(measure record record_usage.sql "$c" "$orgs")
    record "ingest $scenario c=$c: bare copy" "$bare tps" ""
    record "ingest $scenario c=$c: constrained copy" "$cons tps" ""
    record "ingest $scenario c=$c: usage_events" "$saas tps" "$(ratio "$saas" "$cons")x constrained, $(ratio "$saas" "$bare")x bare"
    record "ingest $scenario c=$c: record_usage (hard limit, key)" "$rec tps" "$(ratio "$rec" "$keyed")x constrained+key, $(ratio "$rec" "$bare")x bare"
  done
done
fi

sql "COPY (SELECT bench_metering.org_id(1 + g % $ORGS), bench_metering.user_id(1 + g % $ORGS), 'api_call', 1
           FROM generate_series(1, 1000000) g) TO '$OUT/events_1m.csv'"
if section 2; then
log "2. batches: INSERT … SELECT of 10,000 rows, and COPY of 1,000,000 rows (seconds, median of 3)"
for target in bench_metering.bare bench_metering.constrained usage_events; do
  secs=$(for i in 1 2 3; do sql "SELECT bench_metering.time_batch('$target', 10000, $ORGS)"; done | sort -n | sed -n 2p)
  record "batch 10k INSERT…SELECT: $target" "${secs}s" ""
done
for target in bench_metering.bare bench_metering.constrained usage_events; do
  sql "CHECKPOINT" >/dev/null
  secs=$(sql "SELECT bench_metering.time_copy('$target', '$OUT/events_1m.csv')")
  record "COPY 1M: $target" "${secs}s" ""
done

fi

if section 3; then
log "3. aggregate_usage(): the scheduled fold, and a whole-month recompute, vs the hand-written rollup"
# The same 100,000 new events in both tables, spread over the organizations.
sql "SELECT aggregate_usage()" >/dev/null
since=$(sql "SELECT now()")
sql "SELECT bench_metering.time_batch('usage_events', 100000, $ORGS)" >/dev/null
sql "SELECT bench_metering.time_batch('bench_metering.constrained', 100000, $ORGS)" >/dev/null
sql "CHECKPOINT" >/dev/null
rows=$(sql "SELECT count(*) FROM usage_counters")
fold=$(sql "SELECT extract(epoch FROM clock_timestamp() - t0) FROM (SELECT clock_timestamp() AS t0) s, LATERAL (SELECT aggregate_usage()) f")
sql "CHECKPOINT" >/dev/null
hand=$(sql "SELECT extract(epoch FROM clock_timestamp() - t0) FROM (SELECT clock_timestamp() AS t0) s, LATERAL (SELECT bench_metering.hand_rollup('$since')) f")
record "fold after 100k new events ($rows counter rows): aggregate_usage()" "${fold}s" "$(ratio "$fold" "$hand")x hand SQL"
record "hand INSERT…SELECT…GROUP BY…ON CONFLICT over the same 100k events" "${hand}s" ""
# Whole: this month recomputed from every event, against the hand SQL over the same events.
n_month=$(sql "SELECT count(*) FROM usage_events WHERE occurred_at >= usage_bucket_start('monthly', now())")
n_hand=$(sql "SELECT count(*) FROM bench_metering.constrained WHERE created_at >= usage_bucket_start('monthly', now())")
sql "CHECKPOINT" >/dev/null
whole=$(sql "SELECT extract(epoch FROM clock_timestamp() - t0) FROM (SELECT clock_timestamp() AS t0) s, LATERAL (SELECT aggregate_usage('monthly', now(), now() + interval '1 second')) f")
sql "TRUNCATE bench_metering.hand_rollups; CHECKPOINT" >/dev/null
hand=$(sql "SELECT extract(epoch FROM clock_timestamp() - t0) FROM (SELECT clock_timestamp() AS t0) s, LATERAL (SELECT bench_metering.hand_rollup(usage_bucket_start('monthly', now()))) f")
whole_m=$(awk -v s="$whole" -v n="$n_month" 'BEGIN {printf "%.2f", s * 1e6 / n}')
hand_m=$(awk -v s="$hand" -v n="$n_hand" 'BEGIN {printf "%.2f", s * 1e6 / n}')
record "recompute this month ($n_month events): aggregate_usage(period, from, to)" "${whole_m}s per 1M events" "$(ratio "$whole_m" "$hand_m")x hand SQL"
record "hand INSERT…SELECT…GROUP BY…ON CONFLICT, this month ($n_hand events)" "${hand_m}s per 1M events" ""
fi

if section 4; then
log "4. insert latency while aggregate_usage recomputes this month (4 writers)"
latency() {  # latency LABEL: p99 and max (ms) of a 4-client run of single inserts
  rm -f "$OUT"/pgbench_log.*
  (cd "$OUT" && PGOPTIONS="-c role=service_role" "$PG_BIN/pgbench" -n -M prepared -c 4 -j 4 -T $((T * 2)) -D orgs="$ORGS" \
     -f "$OUT/pgbench/insert_saas_core.sql" -l -d "$DB" >/dev/null 2>&1)
  cat "$OUT"/pgbench_log.* | awk '{print $3 / 1000.0}' | sort -n \
    | awk '{a[NR]=$1} END {printf "p99 %.1f ms, max %.1f ms, %d inserts", a[int(NR*0.99)], a[NR], NR}'
}
record "inserts, nothing else running" "$(latency quiet)" ""
( sleep 2; sql "SELECT aggregate_usage('monthly', now(), now() + interval '1 second')" > "$OUT/recompute_1" ;
  sql "SELECT aggregate_usage('monthly', now(), now() + interval '1 second')" > "$OUT/recompute_2"; sql "SELECT aggregate_usage()" >/dev/null ) &
recompute_pid=$!
during=$(latency recompute)
wait $recompute_pid
record "inserts while this month is recomputed twice, then folded" "$during" "recompute wrote $(cat "$OUT/recompute_1") rows"
fi

log "5. check_feature_access vs the bare prepared query reading the same rows (tps, service_role)"
cfa_round() {  # cfa_round LABEL
  for c in $CLIENTS; do
    read -r cfa bare <<< "$(measure_pair "$c" "$ORGS" "check_feature_access.sql service_role" "check_bare_query.sql service_role")"
    record "check_feature_access c=$c @ $1" "$cfa tps" "$(ratio "$cfa" "$bare")x bare query ($bare tps)"
  done
}
if section 5; then
sql "SELECT aggregate_usage()" >/dev/null
cfa_round "$(sql "SELECT count(*) FROM usage_events") events"
fi

if section 6; then
log "6. RLS-only reads vs explicitly filtered reads (tps, 1 client)"
# At least 1M events, spread over the organizations (1,000 each at the default 1,000 orgs).
if [ "$(sql "SELECT count(*) FROM usage_events")" -lt 1000000 ]; then
  sql "COPY usage_events (organization_id, user_id, event_type, quantity) FROM '$OUT/events_1m.csv'"
fi
sql "VACUUM ANALYZE" >/dev/null
# Organization 2's owner: its events came from the spread runs, the batches and the COPY.
member="$(sql "SELECT bench_metering.user_id(2)")"
read -r rls_ev flt_ev <<< "$(measure_pair 1 1 "rls_events.sql authenticated -c request.jwt.claim.sub=$member" "filtered_events.sql postgres")"
read -r rls_ro flt_ro <<< "$(measure_pair 1 1 "rls_rollups.sql authenticated -c request.jwt.claim.sub=$member" "filtered_rollups.sql postgres")"
n_ev=$(sql "SELECT count(*) FROM usage_events")
record "member SELECT … FROM usage_events (RLS only) @ $n_ev" "$rls_ev tps" "$(ratio "$flt_ev" "$rls_ev")x the filtered read's time"
record "superuser SELECT … WHERE organization_id = … @ $n_ev" "$flt_ev tps" ""
record "member SELECT … FROM usage_aggregations (RLS only)" "$rls_ro tps" "$(ratio "$flt_ro" "$rls_ro")x the filtered read's time"
record "superuser SELECT … FROM usage_aggregations WHERE organization_id = …" "$flt_ro tps" ""
fi

if section 7; then
log "7. check_feature_access at $BIG events"
have=$(sql "SELECT count(*) FROM usage_events")
while [ "$have" -lt "$BIG" ]; do
  sql "COPY usage_events (organization_id, user_id, event_type, quantity) FROM '$OUT/events_1m.csv'"
  have=$((have + 1000000))
done
sql "SELECT aggregate_usage()" >/dev/null
sql "VACUUM ANALYZE" >/dev/null
# A tail of unfolded events, as between two scheduled folds.
sql "SELECT bench_metering.time_batch('usage_events', 10000, $ORGS)" >/dev/null
cfa_round "$(sql "SELECT count(*) FROM usage_events") events"
fi

if section 8; then
log "8. instructions per statement (valgrind callgrind, one backend): deterministic, unlike tps"
# The same statements in a single-user backend, N1 then N2 of them from one starting copy of
# a small cluster of its own: (instructions(N2) - instructions(N1)) / (N2 - N1) is one
# statement's steady cost, whatever else the machine is doing. 100 organizations, each
# counted by 16 writers first (as after a 16-client run), so reading usage adds up as many
# counter rows as it would then.
command -v valgrind >/dev/null || apt-get install -y -qq valgrind >/dev/null
CG="$OUT/cg"; rm -rf "$CG"; mkdir -p "$CG"; chown postgres "$CG"
as_postgres "$PG_BIN/initdb" -D "$CG/data" --auth=trust --locale=C.UTF-8 >/dev/null
cg_ctl() { as_postgres "$PG_BIN/pg_ctl" -D "$CG/data" -l "$CG/server.log" -w -o "-p 55452 -k $CG -c listen_addresses=''" "$@" >/dev/null; }
cg_sql() { "$PG_BIN/psql" -X -q -At -h "$CG" -p 55452 -d "$DB" "$@"; }
cg_ctl start
"$PG_BIN/psql" -X -q -h "$CG" -p 55452 -d postgres -c "CREATE DATABASE $DB"
cg_sql -c "CREATE EXTENSION saas_core"
cg_sql -v orgs=100 -f "$ROOT/bench/metering/setup.sql"
PGOPTIONS="-c role=service_role" "$PG_BIN/pgbench" -h "$CG" -p 55452 -n -c 16 -j 4 -t 200 -D orgs=100 \
  -f "$OUT/pgbench/record_usage.sql" -d "$DB" >/dev/null 2>&1
writers=$(cg_sql -c "SELECT round(avg(n), 1) FROM (SELECT count(*) AS n FROM usage_counters
                     WHERE period = 'monthly' AND event_type = 'api_call' GROUP BY organization_id) w")
N1=500; N2=2500
for kind in saas constrained record keyed; do
  for n in $N1 $N2; do
    { echo "SET ROLE service_role;"
      cg_sql -c "SELECT CASE '$kind'
         WHEN 'saas' THEN format('INSERT INTO usage_events (organization_id, user_id, event_type, quantity) VALUES (%L, %L, ''api_call'', 1);', o, u)
         WHEN 'constrained' THEN format('INSERT INTO bench_metering.constrained (organization_id, user_id, event_type, quantity) VALUES (%L, %L, ''api_call'', 1);', o, u)
         WHEN 'record' THEN format('SELECT record_usage(%L, ''api_call'', 1, %L, NULL, ''{}'', %L);', o, 'cg-$n-' || i, u)
         WHEN 'keyed' THEN format('INSERT INTO bench_metering.constrained (organization_id, user_id, event_type, quantity, idempotency_key) VALUES (%L, %L, ''api_call'', 1, %L);', o, u, 'cg-$n-' || i)
       END
       FROM (SELECT i, bench_metering.org_id(1 + (i * 7919) % 100) AS o, bench_metering.user_id(1 + (i * 7919) % 100) AS u
             FROM generate_series(1, $n) i) s"; } > "$CG/${kind}_$n.sql"
  done
done
chmod a+r "$CG"/*.sql
cg_sql -c "CHECKPOINT"
cg_ctl stop
as_postgres cp -a "$CG/data" "$CG/base"
instructions() {  # instructions KIND N: what N statements of KIND cost, start-up included
  rm -rf "$CG/run"; as_postgres cp -a "$CG/base" "$CG/run"
  as_postgres valgrind --tool=callgrind --callgrind-out-file=/dev/null "$PG_BIN/postgres" --single \
    -D "$CG/run" -c synchronous_commit=off "$DB" < "$CG/$1_$2.sql" 2>&1 >/dev/null \
    | awk '/Collected :/ {print $NF}'
}
per_statement() { echo $(( ($(instructions "$1" $N2) - $(instructions "$1" $N1)) / (N2 - N1) )); }
saas=$(per_statement saas); cons=$(per_statement constrained)
rec=$(per_statement record); keyed=$(per_statement keyed)
record "instructions: INSERT INTO usage_events" "$saas per event" "$(ratio "$cons" "$saas")x constrained ($cons)"
record "instructions: record_usage (hard limit, key; $writers writers)" "$rec per call" "$(ratio "$keyed" "$rec")x constrained+key ($keyed)"
fi

log "results ($RESULTS)"
column -t -s $'\t' "$RESULTS"
