#!/usr/bin/env bash
# Tally's local PostgreSQL: the machine's Debian cluster (<version>/main), set up so that
# Tally's roles (deploy/postgres/roles.sql) and the postgres superuser can connect over loopback
# TCP without a password: postgres://tally_api@127.0.0.1:5432/tally and so on.
#
#   scripts/postgres.sh install        install the server (apt) and set the cluster up
#   scripts/postgres.sh start          install if needed, start the cluster, wait
#   scripts/postgres.sh wait           wait until it accepts connections on 127.0.0.1
#   scripts/postgres.sh stop           stop the cluster, but only if this script started it
#   scripts/postgres.sh status         print running/stopped (exit 0 when running, 3 when stopped)
#   scripts/postgres.sh createdb NAME  create database NAME, owned by tally_owner, if it is
#                                      missing (one made before Tally had roles is handed over)
#
# What `install` changes in the cluster (all of it idempotent; rerun at will):
#   * pg_hba.conf: a block between "# BEGIN tally" and "# END tally" at the very top, so it
#     comes before every other rule:
#         host all postgres,tally_owner,tally_ingest,... 127.0.0.1/32 trust
#         host all postgres,tally_owner,tally_ingest,... ::1/128      trust
#     i.e. the superuser and Tally's roles may connect over loopback TCP without a password.
#     That is what a local development stack wants; the cluster still listens on localhost
#     only. In production each role has a password (docs/security.md).
#   * Tally's roles (deploy/postgres/roles.sql), made by `start`.
#   * conf.d/tally.conf (Debian's postgresql.conf includes conf.d/):
#         max_connections >= 200  (services, end-to-end tests and the load generator each
#                                  hold a pool; the default of 100 runs out)
#         fsync = on, synchronous_commit = on, full_page_writes = on
#                                 PostgreSQL's defaults, written down so that nothing set
#                                 earlier in postgresql.conf can trade durability for
#                                 speed: usage is money and a commit must survive a crash.
#     After start, `start` checks these values; one overridden by ALTER SYSTEM
#     (postgresql.auto.conf) is reset there.
#
# Environment: TALLY_HOME (default <repo>/.tally), TALLY_PG_PORT (default 5432),
# TALLY_PG_WAIT_SECS (default 30).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

TALLY_HOME=${TALLY_HOME:-$ROOT/.tally}
case $TALLY_HOME in /*) ;; *) TALLY_HOME=$ROOT/$TALLY_HOME ;; esac
PORT=${TALLY_PG_PORT:-5432}
WAIT_SECS=${TALLY_PG_WAIT_SECS:-30}
CLUSTER=main
MIN_CONNECTIONS=200
# Who may connect without a password over loopback: the superuser and Tally's roles.
TRUSTED=postgres,tally_owner,tally_ingest,tally_projector,tally_api,tally_reporter
# Present while the cluster runs because this script started it: `stop` stops only then.
STARTED=$TALLY_HOME/run/postgres.started

say() { echo "tally: postgres: $*"; }
die() { echo "tally: postgres: error: $*" >&2; exit 1; }

export PGCONNECT_TIMEOUT=5
psql_q() { psql -X -h 127.0.0.1 -p "$PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -qtAc "$1"; }

# Highest installed server major version, or nothing.
server_version() {
  local bin
  bin=$(compgen -G '/usr/lib/postgresql/*/bin/postgres' | sort -V | tail -n1) || true
  [[ -n $bin ]] && basename "$(dirname "$(dirname "$bin")")"
}

VER=
conf_dir() { echo "/etc/postgresql/$VER/$CLUSTER"; }
cluster_exists() { [[ -f $(conf_dir)/postgresql.conf ]]; }
cluster_online() { pg_lsclusters -h "$VER" "$CLUSTER" 2>/dev/null | awk '{print $4}' | grep -q '^online'; }

# Replace $1 by the content of $2 if they differ, keeping owner and mode. Returns 1 when
# nothing changed.
replace_if_changed() {
  local file=$1 new=$2
  if [[ -f $file ]] && cmp -s "$file" "$new"; then
    rm -f "$new"
    return 1
  fi
  if [[ -f $file ]]; then
    chown --reference="$file" "$new"
    chmod --reference="$file" "$new"
  else
    chown postgres:postgres "$new"
    chmod 644 "$new"
  fi
  mv "$new" "$file"
}

ensure_packages() {
  VER=$(server_version) || true
  if [[ -z $VER ]] || ! command -v pg_ctlcluster >/dev/null; then
    say "installing PostgreSQL with apt-get"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    VER=$(server_version) || true
    [[ -n $VER ]] || die "apt-get installed postgresql, but no /usr/lib/postgresql/*/bin/postgres"
  fi
}

ensure_cluster() {
  if ! cluster_exists; then
    say "creating cluster $VER/$CLUSTER on port $PORT"
    pg_createcluster -p "$PORT" "$VER" "$CLUSTER" >/dev/null
  fi
  local port
  port=$(pg_conftool -s "$VER" "$CLUSTER" show port 2>/dev/null || echo 5432)
  if [[ $port != "$PORT" ]]; then
    cluster_online && die "cluster $VER/$CLUSTER runs on port $port, not $PORT; stop it first"
    say "moving cluster $VER/$CLUSTER from port $port to $PORT"
    pg_conftool "$VER" "$CLUSTER" set port "$PORT"
  fi
}

# Writes conf.d/tally.conf; returns 0 when it changed (a restart is needed).
ensure_settings() {
  local dir conf current want
  dir=$(conf_dir)
  grep -Eq "^[[:space:]]*include_dir[[:space:]]*=[[:space:]]*'conf\.d'" "$dir/postgresql.conf" ||
    echo "include_dir = 'conf.d'  # added by tally scripts/postgres.sh" >>"$dir/postgresql.conf"
  mkdir -p "$dir/conf.d"
  conf=$dir/conf.d/tally.conf
  current=$(pg_conftool -s "$VER" "$CLUSTER" show max_connections 2>/dev/null || echo 100)
  [[ $current =~ ^[0-9]+$ ]] || current=100
  want=$((current > MIN_CONNECTIONS ? current : MIN_CONNECTIONS))
  cat >"$conf.tmp" <<EOF
# Written by Tally's scripts/postgres.sh; rewritten by every 'scripts/postgres.sh install'.
# Connection pools of the services, the end-to-end tests and the load generator add up.
max_connections = $want
# PostgreSQL's defaults, spelled out: usage is money, and a commit must survive a crash.
fsync = on
synchronous_commit = on
full_page_writes = on
EOF
  replace_if_changed "$conf" "$conf.tmp"
}

# Puts Tally's trust rules at the top of pg_hba.conf; returns 0 when the file changed.
ensure_hba() {
  local hba new
  hba=$(conf_dir)/pg_hba.conf
  new=$hba.tally.tmp
  {
    echo "# BEGIN tally (scripts/postgres.sh): Tally, as its roles, and its tests connect over"
    echo "# loopback TCP without a password. First, so that no later rule asks for one."
    echo "host    all             $TRUSTED        127.0.0.1/32            trust"
    echo "host    all             $TRUSTED        ::1/128                 trust"
    echo "# END tally"
    awk '/^# BEGIN tally/{skip=1} !skip{print} /^# END tally/{skip=0}' "$hba"
  } >"$new"
  replace_if_changed "$hba" "$new"
}

cmd_install() {
  ensure_packages
  ensure_cluster
  local restart=0 reload=0
  if ensure_settings; then restart=1; say "wrote $(conf_dir)/conf.d/tally.conf"; fi
  if ensure_hba; then reload=1; say "added Tally's trust rules to $(conf_dir)/pg_hba.conf"; fi
  if cluster_online; then
    if ((restart)); then
      say "restarting $VER/$CLUSTER for max_connections"
      pg_ctlcluster "$VER" "$CLUSTER" restart
    elif ((reload)); then
      pg_ctlcluster "$VER" "$CLUSTER" reload
    fi
  fi
  [[ ${1:-} == quiet ]] || say "installed (PostgreSQL $VER, cluster $VER/$CLUSTER, port $PORT)"
}

cmd_wait() {
  local deadline=$((SECONDS + WAIT_SECS))
  until pg_isready -q -h 127.0.0.1 -p "$PORT" -t 2; do
    if ((SECONDS >= deadline)); then
      echo "tally: postgres: error: not accepting connections on 127.0.0.1:$PORT after ${WAIT_SECS}s" >&2
      local log=/var/log/postgresql/postgresql-$VER-$CLUSTER.log
      if [[ -n $VER && -f $log ]]; then
        echo "tally: postgres: last lines of $log:" >&2
        tail -n 30 "$log" | sed 's/^/    /' >&2
      fi
      exit 1
    fi
    sleep 0.5
  done
  say "ready on 127.0.0.1:$PORT"
}

# Durability settings must be on, whatever postgresql.auto.conf says.
check_settings() {
  local name value fixed=0
  for name in fsync synchronous_commit full_page_writes; do
    value=$(psql_q "SHOW $name")
    if [[ $value != on ]]; then
      say "warning: $name is '$value'; resetting it (ALTER SYSTEM RESET $name)"
      psql_q "ALTER SYSTEM RESET $name" >/dev/null
      fixed=1
    fi
  done
  ((fixed)) && psql_q "SELECT pg_reload_conf()" >/dev/null
  value=$(psql_q "SHOW max_connections")
  ((value >= MIN_CONNECTIONS)) ||
    say "warning: max_connections is $value (< $MIN_CONNECTIONS); postgresql.auto.conf overrides it?"
}

cmd_start() {
  cmd_install quiet
  if cluster_online; then
    say "cluster $VER/$CLUSTER already running"
  else
    say "starting cluster $VER/$CLUSTER"
    pg_ctlcluster "$VER" "$CLUSTER" start
    mkdir -p "$(dirname "$STARTED")"
    echo "$VER $CLUSTER" >"$STARTED"
  fi
  cmd_wait
  psql_q "SELECT 1" >/dev/null ||
    die "cannot connect as postgres@127.0.0.1:$PORT without a password; see $(conf_dir)/pg_hba.conf"
  check_settings
  psql -X -h 127.0.0.1 -p "$PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -q \
    -f "$ROOT/deploy/postgres/roles.sql" >/dev/null || die "cannot make Tally's roles"
}

cmd_stop() {
  VER=$(server_version) || true
  if [[ ! -f $STARTED ]]; then
    if [[ -n $VER ]] && cluster_online; then
      say "leaving cluster $VER/$CLUSTER running: scripts/postgres.sh did not start it"
    else
      say "not running"
    fi
    return 0
  fi
  if [[ -n $VER ]] && cluster_online; then
    say "stopping cluster $VER/$CLUSTER"
    pg_ctlcluster "$VER" "$CLUSTER" stop
  else
    say "not running"
  fi
  rm -f "$STARTED"
}

cmd_status() {
  VER=$(server_version) || true
  if pg_isready -q -h 127.0.0.1 -p "$PORT" -t 2 2>/dev/null; then
    local by="not started by tally"
    [[ -f $STARTED ]] && by="started by tally"
    say "running (127.0.0.1:$PORT, $by)"
  else
    say "stopped"
    return 3
  fi
}

cmd_createdb() {
  local name=${1:-}
  [[ $name =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || die "usage: scripts/postgres.sh createdb NAME (letters, digits, _)"
  local owner
  owner=$(psql_q "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = '$name'")
  if [[ -z $owner ]]; then
    createdb -h 127.0.0.1 -p "$PORT" -U postgres -O tally_owner "$name"
    say "created database $name (owner tally_owner)"
  elif [[ $owner == tally_owner ]]; then
    say "database $name exists"
  else
    # Made before Tally had roles: tally_owner takes over the database and its tables, so that
    # tally-migrate, running as it, can change them.
    psql -X -h 127.0.0.1 -p "$PORT" -U postgres -d "$name" -v ON_ERROR_STOP=1 -q <<'SQL'
DO $$
DECLARE
    t record;
BEGIN
    EXECUTE format('ALTER DATABASE %I OWNER TO tally_owner', current_database());
    FOR t IN SELECT c.oid::regclass AS name, c.relkind FROM pg_class c
               JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = 'public' AND c.relkind IN ('r', 'v', 'p')
                AND pg_get_userbyid(c.relowner) <> 'tally_owner' LOOP
        EXECUTE format('ALTER %s %s OWNER TO tally_owner',
                       CASE t.relkind WHEN 'v' THEN 'VIEW' ELSE 'TABLE' END, t.name);
    END LOOP;
END
$$;
SQL
    say "database $name (owned by $owner) handed over to tally_owner"
  fi
}

case ${1:-} in
  install) cmd_install ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  wait) VER=$(server_version) || true; cmd_wait ;;
  createdb) cmd_createdb "${2:-}" ;;
  *)
    echo "usage: scripts/postgres.sh install|start|stop|status|wait|createdb NAME" >&2
    exit 2
    ;;
esac
