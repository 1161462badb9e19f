# pg_notify (sourced by scripts/test.sh, cluster running): each new notification is announced on
# saas_core_notifications once its transaction commits, with the row's id, user, organization
# and type as the payload.
notify_test() {
  psql_q -d postgres -c "CREATE DATABASE notify_test" || return 1
  psql_q -d notify_test -c "CREATE EXTENSION saas_core" || return 1
  local out received row
  out=$("$PG_BIN/psql" -X -q -d notify_test -f tests/notify/listen.sql 2>&1) || { echo "$out"; return 1; }
  received=$(grep 'Asynchronous notification "saas_core_notifications"' <<<"$out" | sed -E 's/.*with payload "(.*)" received from server process.*/\1/')
  row=$(grep '^row: ' <<<"$out" | sed 's/^row: //')
  if [ "$(grep -c 'Asynchronous notification' <<<"$out")" -ne 1 ] || [ -z "$row" ] || [ "$received" != "$row" ]; then
    echo "expected one notification with payload $row, got:"; echo "$out"; return 1
  fi
  echo "# received after commit: $received"
}
