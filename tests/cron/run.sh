# Scheduling with pg_cron (Debian's postgresql-15-cron), sourced by scripts/test.sh. Runs in
# its own cluster, which preloads pg_cron: schedule_usage_maintenance() registers the jobs as
# the service role, pg_cron runs them (both every minute here), and they fold events and
# create partitions; unschedule_usage_maintenance() removes them.
cron_test() {
  # pg_cron's settings exist only once it is loaded: written to the file, not ALTER SYSTEM.
  as_postgres sh -c "cat >> '$CLUSTER_DIR/data/postgresql.conf'" <<'CONF' || return 1
shared_preload_libraries = 'pg_cron'
cron.database_name = 'saas_core_cron'
cron.use_background_workers = on
max_worker_processes = 32
CONF
  as_postgres env RUST_BACKTRACE=1 "$PG_BIN/pg_ctl" -D "$CLUSTER_DIR/data" -l "$CLUSTER_DIR/server.log" -w \
    -o "-p $CLUSTER_PORT -k $CLUSTER_DIR -c listen_addresses=''" restart >/dev/null || return 1
  psql_q -d postgres -c "CREATE DATABASE saas_core_cron" || return 1
  psql_q -d saas_core_cron -c "CREATE EXTENSION pg_cron" -c "CREATE EXTENSION saas_core" -c "CREATE EXTENSION pgtap" || return 1
  pg_prove -d saas_core_cron tests/cron/schedule.sql
}
