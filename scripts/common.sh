# Shared by the scripts in this folder: toolchain set-up and throwaway PostgreSQL clusters.
# Source it; it does nothing by itself.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PG_CONFIG="${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}"
PG_BIN="$("$PG_CONFIG" --bindir 2>/dev/null || echo /usr/lib/postgresql/15/bin)"
PGXS_TEST="/usr/lib/postgresql/15/lib/pgxs/src/test"
PGRX_VERSION="0.18.1"
export PATH="$HOME/.cargo/bin:$PATH"

log() { printf '\n==> %s\n' "$*"; }

# Everything a fresh Debian 12 machine with only Rust needs. Idempotent and quick when done.
setup_toolchain() {
  local pkgs=(postgresql-15 postgresql-server-dev-15 clang libclang-dev sudo postgresql-15-pgtap pgtap postgresql-15-cron)
  local missing=()
  for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    log "apt-get install ${missing[*]}"
    local SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  if ! cargo pgrx --version 2>/dev/null | grep -q "$PGRX_VERSION"; then
    log "cargo install cargo-pgrx $PGRX_VERSION (about 5 minutes, once)"
    cargo install cargo-pgrx --version "$PGRX_VERSION" --locked
  fi
  if ! grep -qs "pg15" "${PGRX_HOME:-$HOME/.pgrx}/config.toml"; then
    log "cargo pgrx init --pg15 $PG_CONFIG"
    cargo pgrx init --pg15 "$PG_CONFIG"
  fi
}

# Builds and installs the extension into the system PostgreSQL 15 (release build with --release),
# with the released install scripts beside it: the upgrade test installs 0.1.0 first.
install_extension() {
  log "cargo pgrx install $*"
  (cd "$ROOT" && cargo pgrx install --pg-config "$PG_CONFIG" "$@" >/dev/null)
  local extdir; extdir="$("$PG_CONFIG" --sharedir)/extension"
  local SUDO=""; [ -w "$extdir" ] || SUDO="sudo"
  $SUDO cp "$ROOT"/sql/saas_core--0.1.0.sql "$extdir/"
}

# Runs a command as the postgres OS user (initdb refuses root).
as_postgres() {
  if [ "$(id -un)" = "postgres" ]; then "$@"; else runuser -u postgres -- "$@"; fi
}

# start_cluster DIR PORT [SUPERUSER]: a fresh cluster in DIR listening on a Unix socket in DIR,
# whose bootstrap superuser is SUPERUSER (postgres; Supabase's is supabase_admin). The server
# runs with RUST_BACKTRACE=1, so every test also checks that no backtrace reaches a client.
start_cluster() {
  CLUSTER_DIR="$1"; CLUSTER_PORT="$2"; CLUSTER_SUPERUSER="${3:-postgres}"
  rm -rf "$CLUSTER_DIR"; mkdir -p "$CLUSTER_DIR"; chown postgres "$CLUSTER_DIR" 2>/dev/null || true
  as_postgres "$PG_BIN/initdb" -D "$CLUSTER_DIR/data" -U "$CLUSTER_SUPERUSER" --auth=trust --locale=C.UTF-8 >/dev/null
  as_postgres env RUST_BACKTRACE=1 "$PG_BIN/pg_ctl" -D "$CLUSTER_DIR/data" -l "$CLUSTER_DIR/server.log" -w \
    -o "-p $CLUSTER_PORT -k $CLUSTER_DIR -c listen_addresses=''" start >/dev/null
  export PGHOST="$CLUSTER_DIR" PGPORT="$CLUSTER_PORT" PGUSER="$CLUSTER_SUPERUSER"
  trap stop_cluster EXIT
}

stop_cluster() {
  [ -n "${CLUSTER_DIR:-}" ] && as_postgres "$PG_BIN/pg_ctl" -D "$CLUSTER_DIR/data" -m fast stop >/dev/null 2>&1 || true
}

psql_q() { "$PG_BIN/psql" -X -v ON_ERROR_STOP=1 -q "$@"; }

# The normalized catalog of what saas_core put in database $1 (tests/upgrade/catalog.sql).
catalog() { "$PG_BIN/psql" -X -q -d "$1" -f "$ROOT/tests/upgrade/catalog.sql"; }

# check NAME COMMAND...: runs a test step, records a failure without stopping the run.
check() {
  local name="$1"; shift
  if "$@"; then echo "ok - $name"; else echo "FAILED - $name"; FAILED+=("$name"); fi
}
FAILED=()
