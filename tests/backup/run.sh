# Backups (sourced by scripts/test.sh, cluster running): a database with data in every table
# is dumped and restored; the restored one must hold the same rows (ids included) and the same
# catalog. Any error, or any signup provisioning during the restore, shows up as a difference.

rows() { "$PG_BIN/psql" -X -q -d "$1" -f "$ROOT/tests/backup/rows.sql"; }

same_database() {
  local src="$1" dst="$2"
  diff -u <(rows "$src") <(rows "$dst") || return 1
  diff -u <(catalog "$src") <(catalog "$dst") || return 1
  echo "# $dst: $(rows "$dst" | wc -l) rows and $(catalog "$dst" | wc -l) catalog facts, as in $src"
}

# backup_source DB INSTALLER [ROLE:SETUP_FILE ...]: saas_core and the fixture data.
backup_source() {
  local db="$1" installer="$2" step; shift 2
  psql_q -d postgres -c "CREATE DATABASE $db" || return 1
  for step in "$@"; do
    psql_q -U "${step%%:*}" -d "$db" -v DBNAME="$db" -f "${step#*:}" >/dev/null || return 1
  done
  psql_q -U "$installer" -d "$db" -c "CREATE EXTENSION saas_core" || return 1
  psql_q -d "$db" -f tests/fixtures/data.sql >/dev/null
}

# The defaults: pg_dump -Fc + pg_restore into an empty database, and pg_dump | psql.
backup_test_plain() {
  local dump="$CLUSTER_DIR/plain.dump" err="$CLUSTER_DIR/restore.err"
  backup_source backup_src postgres || return 1
  "$PG_BIN/pg_dump" -Fc -d backup_src -f "$dump" || return 1
  psql_q -d postgres -c "CREATE DATABASE backup_restored" || return 1
  "$PG_BIN/pg_restore" -d backup_restored "$dump" 2>"$err" || { cat "$err"; return 1; }
  [ ! -s "$err" ] || { cat "$err"; return 1; }
  same_database backup_src backup_restored || return 1
  psql_q -d postgres -c "CREATE DATABASE backup_piped" || return 1
  "$PG_BIN/pg_dump" -d backup_src | "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -d backup_piped >/dev/null || return 1
  same_database backup_src backup_piped
}

# A Supabase-shaped target: its auth schema (GoTrue's) exists already, so the source's auth
# schema is dumped apart: its accounts as data only, into GoTrue's table; then the rest, as
# postgres (which owns saas_core on Supabase), without the privileges the target already has.
backup_test_supabase() {
  local accounts="$CLUSTER_DIR/accounts.dump" app="$CLUSTER_DIR/app.dump" err="$CLUSTER_DIR/restore.err"
  local setup=("supabase_admin:tests/supabase/auth_init.sql" "supabase_admin:tests/supabase/gotrue_migrations.sql")
  backup_source sb_backup_src postgres "${setup[@]}" || return 1
  "$PG_BIN/pg_dump" -Fc -d sb_backup_src --data-only --table=auth.users -f "$accounts" || return 1
  "$PG_BIN/pg_dump" -Fc -d sb_backup_src --exclude-schema=auth -f "$app" || return 1
  psql_q -d postgres -c "CREATE DATABASE sb_backup_restored" || return 1
  local step
  for step in "${setup[@]}"; do
    psql_q -U "${step%%:*}" -d sb_backup_restored -v DBNAME=sb_backup_restored -f "${step#*:}" >/dev/null || return 1
  done
  "$PG_BIN/pg_restore" -d sb_backup_restored "$accounts" 2>"$err" || { cat "$err"; return 1; }
  "$PG_BIN/pg_restore" -U postgres -d sb_backup_restored --no-privileges "$app" 2>>"$err" || { cat "$err"; return 1; }
  [ ! -s "$err" ] || { cat "$err"; return 1; }
  same_database sb_backup_src sb_backup_restored
}
