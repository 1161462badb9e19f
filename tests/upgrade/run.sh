# The upgrade test (sourced by scripts/test.sh, cluster running): install 0.1.0, check that
# the new library serves it, load data into every table, ALTER EXTENSION saas_core UPDATE,
# then prove (a) the catalog equals a fresh 0.2.0 install, (b) every row survived,
# (c) the pgTAP suites pass on the updated database.
#
#   upgrade_test LABEL INSTALLER [ROLE:SETUP_FILE ...]
# SETUP files (e.g. a Supabase-shaped auth schema) run on both databases before the install,
# as ROLE; INSTALLER is the role that installs and updates.
upgrade_test() {
  local label="$1" installer="$2"; shift 2
  local up="${label}_upgraded" fresh="${label}_fresh" db step
  for db in "$up" "$fresh"; do
    psql_q -d postgres -c "CREATE DATABASE $db" || return 1
    for step in "$@"; do
      psql_q -U "${step%%:*}" -d "$db" -v DBNAME="$db" -f "${step#*:}" >/dev/null || return 1
    done
  done
  psql_q -U "$installer" -d "$up" -c "CREATE EXTENSION saas_core VERSION '0.1.0'" || return 1
  pg_prove -d "$up" tests/upgrade/serves_v0_1.sql || return 1
  psql_q -d "$up" -f tests/fixtures/data.sql >/dev/null || return 1
  psql_q -d "$up" -f tests/upgrade/quirks_v0_1.sql >/dev/null || return 1
  psql_q -d "$up" -f tests/upgrade/snapshot.sql || return 1
  psql_q -U "$installer" -d "$up" -c "ALTER EXTENSION saas_core UPDATE TO '0.2.0'" || return 1
  psql_q -U "$installer" -d "$fresh" -c "CREATE EXTENSION saas_core" || return 1
  echo "# catalog of the updated database vs a fresh 0.2.0 install:"
  diff -u <(catalog "$fresh") <(catalog "$up") || return 1
  echo "# identical ($(catalog "$up" | wc -l) facts)"
  pg_prove -d "$up" tests/upgrade/rows_survive.sql || return 1
  psql_q -d "$up" -f tests/upgrade/reset_catalog.sql || return 1
  pg_prove -d "$up" tests/sql/*.sql || return 1
}
