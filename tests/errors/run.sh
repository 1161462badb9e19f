# No Rust internals reach a client (sourced by scripts/test.sh; the server runs with
# RUST_BACKTRACE=1): every statement of tests/errors/no_rust_internals.sql fails with a plain
# PostgreSQL error.
no_rust_internals_test() {
  local out="$CLUSTER_DIR/errors.out" expected
  psql_q -d postgres -c "CREATE DATABASE errors_test" || return 1
  psql_q -d errors_test -c "CREATE EXTENSION saas_core" || return 1
  "$PG_BIN/psql" -X -d errors_test -f tests/errors/no_rust_internals.sql >"$out" 2>&1
  expected=$(grep -c "^SELECT \(check_feature_access\|create_organization\|transfer_ownership\|aggregate_usage\|sync_auth_users\|accept_invitation\|lookup_invitation\|remove_member\|update_member_role\|create_team\|mark_notification_read\|redeem_coupon\|apply_billing_event\)\|^UPDATE users\|^INSERT INTO \(organization_members\|usage_events\)" tests/errors/no_rust_internals.sql)
  # One statement of the file succeeds on purpose (the first 'taken-slug').
  local errors; errors=$(grep -c " ERROR: " "$out")
  if [ "$errors" -ne $((expected - 1)) ]; then
    echo "expected $((expected - 1)) errors, got $errors:"; cat "$out"; return 1
  fi
  if grep -nE "backtrace|\.rs:|panicked|called \`|/root/|/home/|\.cargo|registry|rustc|RUST_" "$out"; then
    echo "Rust internals reached the client (above)"; return 1
  fi
  echo "# $errors errors, each with a message and a SQLSTATE only:"
  grep -E " ERROR: " "$out" | sed 's/^/#   /'
}
