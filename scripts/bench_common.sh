# pgbench helpers shared by the benchmarks (sourced after common.sh). The caller sets DB (the
# database), OUT (its cluster directory, with the pgbench scripts copied to $OUT/pgbench), T
# (seconds per run) and ROUNDS (runs per figure, the median is kept).

RESULTS="$OUT/results.tsv"; : > "$RESULTS"
sql() { "$PG_BIN/psql" -X -q -At -d "$DB" -c "$1"; }
record() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >> "$RESULTS"; printf '  %-58s %-26s %s\n' "$1" "$2" "$3"; }

# tps SCRIPT CLIENTS ORGS [ROLE]: transactions per second of one pgbench run, as ROLE, with
# PGB_OPTIONS (more -c settings, e.g. the JWT's subject) for its sessions.
tps() {
  local script="$1" c="$2" orgs="$3" role="${4:-service_role}"
  sql "CHECKPOINT" >/dev/null
  PGOPTIONS="-c role=$role ${PGB_OPTIONS:-}" "$PG_BIN/pgbench" -n -M prepared -c "$c" -j "$(( c < 4 ? c : 4 ))" -T "$T" \
    -D orgs="$orgs" -f "$OUT/pgbench/$script" -d "$DB" 2>&1 \
    | awk '/^tps = / {print int($3)}'
}

median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : int((a[NR/2] + a[NR/2+1]) / 2)}'; }

# measure NAME SCRIPT CLIENTS ORGS [ROLE]: median tps over ROUNDS
measure() {
  local name="$1" script="$2" c="$3" orgs="$4" role="${5:-service_role}" r vals=()
  for r in $(seq "$ROUNDS"); do vals+=("$(tps "$script" "$c" "$orgs" "$role")"); done
  printf '%s\n' "${vals[@]}" | median
}

# measure_pair CLIENTS ORGS "SCRIPT ROLE [PGBENCH OPTIONS]" "SCRIPT ROLE [OPTIONS]": the median tps
# of each of two workloads over ROUNDS, run alternately (A B, then B A, ...) so that a shared
# machine slowing down mid-measurement weighs on both alike. Prints "A B".
measure_pair() {
  local c="$1" orgs="$2" r va=() vb=()
  local -a a b
  read -r -a a <<< "$3"; read -r -a b <<< "$4"
  run_a() { va+=("$(PGB_OPTIONS="${a[*]:2}" tps "${a[0]}" "$c" "$orgs" "${a[1]}")"); }
  run_b() { vb+=("$(PGB_OPTIONS="${b[*]:2}" tps "${b[0]}" "$c" "$orgs" "${b[1]}")"); }
  for r in $(seq "$ROUNDS"); do
    if (( r % 2 )); then run_a; run_b; else run_b; run_a; fi
  done
  echo "$(printf '%s\n' "${va[@]}" | median) $(printf '%s\n' "${vb[@]}" | median)"
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }
