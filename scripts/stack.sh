#!/usr/bin/env bash
# Tally's whole local stack: Kafka, PostgreSQL, the Stripe stand-in and the four services, on
# this machine.
#
#   scripts/stack.sh up      start whatever is not running yet, wait until all are ready
#   scripts/stack.sh down    stop the services, Kafka, and PostgreSQL if we started it
#   scripts/stack.sh logs    tail .tally/logs/*.log (LOGS_FOLLOW=0: print and exit)
#   scripts/stack.sh status  one line per service
#   scripts/stack.sh billing-reporter status|reconcile [--period YYYY-MM]|retry-failed
#                            the billing reporter's commands, with the stack's settings
#   scripts/stack.sh replay invoice|verify|correct|rebuild ...
#                            the replay tool (docs/replay.md), with the stack's settings
#
# `up` does not build: run it through `make up`, which builds target/release/* first.
# Environment (defaults in brackets): TALLY_HOME [<repo>/.tally], TALLY_ADMIN_TOKEN [kept
# in .tally/admin-token], TALLY_API_ADDR [127.0.0.1:8080], TALLY_API_OPS_ADDR [127.0.0.1:9105],
# TALLY_INGEST_OPS_ADDR [127.0.0.1:9104], TALLY_INGEST_ADDR
# [127.0.0.1:4318], TALLY_AGGREGATOR_ADDR [127.0.0.1:9101], TALLY_PROJECTOR_ADDR
# [127.0.0.1:9102], TALLY_KAFKA_BROKERS, TALLY_DATABASE_URL, TALLY_READY_SECS [60],
# STRIPE_STANDIN_ADDR [127.0.0.1:12111], STRIPE_STANDIN_STATE_FILE [.tally/stripe-standin.json].
# Unless TALLY_STRIPE_API_BASE is set (real Stripe), the stand-in is started and Tally is pointed
# at it with a generated sk_test_ key (.tally/stripe-secret-key) and webhook secret
# (.tally/stripe-webhook-secret), and the stand-in delivers its webhooks to the api; it keeps its
# state (customers, meters, meter events, subscriptions, ...) in STRIPE_STANDIN_STATE_FILE across
# `down` and `up`, as Stripe would, until `make clean-data` deletes it with the database. `up`
# then runs `billing-reporter setup-stripe` there (ids in .tally/stripe-setup.json) and starts
# the billing reporter (TALLY_BILLING_REPORTER_ADDR [127.0.0.1:9103]). With real Stripe, the
# reporter starts when TALLY_STRIPE_SECRET_KEY is set.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

export TALLY_HOME=${TALLY_HOME:-$ROOT/.tally}
case $TALLY_HOME in /*) ;; *) TALLY_HOME=$ROOT/$TALLY_HOME ;; esac
LOGS=$TALLY_HOME/logs
RUN=$TALLY_HOME/run
TOKEN_FILE=$TALLY_HOME/admin-token
READY_SECS=${TALLY_READY_SECS:-60}
STOP_SECS=15

# Start order; `down` stops them in reverse.
SERVICES=(api aggregator projector ingest)
export STRIPE_STANDIN_ADDR=${STRIPE_STANDIN_ADDR:-127.0.0.1:12111}
# What the stand-in remembers survives a restart, as Tally's database does.
export STRIPE_STANDIN_STATE_FILE=${STRIPE_STANDIN_STATE_FILE:-$TALLY_HOME/stripe-standin.json}
if [[ -z ${TALLY_STRIPE_API_BASE:-} ]]; then
  SERVICES=(stripe-standin "${SERVICES[@]}")
  export TALLY_STRIPE_API_BASE=http://$STRIPE_STANDIN_ADDR
  USE_STANDIN=1
else
  USE_STANDIN=0
fi

export TALLY_API_ADDR=${TALLY_API_ADDR:-127.0.0.1:8080}
export TALLY_INGEST_ADDR=${TALLY_INGEST_ADDR:-127.0.0.1:4318}
# Ingest's and the api's probes and metrics: a listener of their own, on loopback.
export TALLY_API_OPS_ADDR=${TALLY_API_OPS_ADDR:-127.0.0.1:9105}
export TALLY_INGEST_OPS_ADDR=${TALLY_INGEST_OPS_ADDR:-127.0.0.1:9104}
export TALLY_AGGREGATOR_ADDR=${TALLY_AGGREGATOR_ADDR:-127.0.0.1:9101}
export TALLY_PROJECTOR_ADDR=${TALLY_PROJECTOR_ADDR:-127.0.0.1:9102}
export TALLY_BILLING_REPORTER_ADDR=${TALLY_BILLING_REPORTER_ADDR:-127.0.0.1:9103}
# Locally the reporter runs a cycle every 10 s (60 s by default), so `make demo` shows Stripe's
# meters catching up within seconds.
export TALLY_REPORT_INTERVAL_SECS=${TALLY_REPORT_INTERVAL_SECS:-10}
# The billing reporter starts last, once Stripe has Tally's meters and prices; `down` stops it first.
ALL_SERVICES=("${SERVICES[@]}" billing-reporter)
export TALLY_KAFKA_BROKERS=${TALLY_KAFKA_BROKERS:-127.0.0.1:${TALLY_KAFKA_PORT:-9092}}
# The schema owner's URL: tally-migrate and replay use it as it is; each service gets it with
# its own role instead (store/migrations/0009_roles.sql, docs/security.md).
export TALLY_DATABASE_URL=${TALLY_DATABASE_URL:-postgres://tally_owner@127.0.0.1:${TALLY_PG_PORT:-5432}/tally}

say() { echo "tally: $*"; }
die() { echo "tally: error: $*" >&2; exit 1; }

addr_of() {
  case $1 in
    api) echo "$TALLY_API_ADDR" ;;
    ingest) echo "$TALLY_INGEST_ADDR" ;;
    aggregator) echo "$TALLY_AGGREGATOR_ADDR" ;;
    projector) echo "$TALLY_PROJECTOR_ADDR" ;;
    billing-reporter) echo "$TALLY_BILLING_REPORTER_ADDR" ;;
    stripe-standin) echo "$STRIPE_STANDIN_ADDR" ;;
  esac
}
# Where a service answers /readyz and /metrics.
ops_of() {
  case $1 in
    api) echo "$TALLY_API_OPS_ADDR" ;;
    ingest) echo "$TALLY_INGEST_OPS_ADDR" ;;
    *) addr_of "$1" ;;
  esac
}
bin_of() { echo "$ROOT/target/release/$1"; }
# The PostgreSQL role each program connects as; none for those that do not use PostgreSQL.
role_of() {
  case $1 in
    ingest) echo tally_ingest ;;
    projector) echo tally_projector ;;
    api) echo tally_api ;;
    billing-reporter) echo tally_reporter ;;
  esac
}
# TALLY_DATABASE_URL with the user replaced by $1 (the local cluster trusts Tally's roles on
# loopback; elsewhere set each service's URL, with its password, yourself).
url_as() {
  local url=$TALLY_DATABASE_URL
  [[ $url == *://*@* ]] || die "TALLY_DATABASE_URL must name a user (postgres://USER@HOST/DB)"
  echo "${url%%://*}://$1@${url#*@}"
}
# Runs "$@" with the database URL of program $1's role (or none).
with_db_of() {
  local role
  role=$(role_of "$1")
  shift
  if [[ -n $role ]]; then
    TALLY_DATABASE_URL=$(url_as "$role") "$@"
  else
    env -u TALLY_DATABASE_URL "$@"
  fi
}
pidfile_of() { echo "$RUN/$1.pid"; }
log_of() { echo "$LOGS/$1.log"; }

# True while the process exists and is not a zombie (this machine's init reaps slowly).
alive() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [[ ${stat:0:1} != Z ]]
}

# The pid from the service's pid file, if that process is alive and runs its binary.
running_pid() {
  local pid args
  pid=$(cat "$(pidfile_of "$1")" 2>/dev/null) || return 1
  [[ $pid =~ ^[0-9]+$ ]] && alive "$pid" || return 1
  args=$'\n'$(tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null)$'\n' || return 1
  [[ $args == *$'\n'"$(bin_of "$1")"$'\n'* ]] || return 1
  echo "$pid"
}

http_code() { curl -s -o /dev/null -w '%{http_code}' -m 2 "http://$1$2" 2>/dev/null || true; }

ensure_admin_token() {
  mkdir -p "$TALLY_HOME"
  if [[ -n ${TALLY_ADMIN_TOKEN:-} ]]; then
    # Keep the file in step with the token the services get, for `make demo` and friends.
    [[ -f $TOKEN_FILE && $(cat "$TOKEN_FILE") == "$TALLY_ADMIN_TOKEN" ]] ||
      (umask 077 && printf '%s\n' "$TALLY_ADMIN_TOKEN" >"$TOKEN_FILE")
  elif [[ ! -s $TOKEN_FILE ]]; then
    local token
    if command -v openssl >/dev/null; then
      token=$(openssl rand -hex 32)
    else
      token=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
    fi
    (umask 077 && printf '%s\n' "$token" >"$TOKEN_FILE")
    say "generated an admin token in $TOKEN_FILE"
  fi
  TALLY_ADMIN_TOKEN=$(head -n1 "$TOKEN_FILE")
  export TALLY_ADMIN_TOKEN
}

start_service() {
  local name=$1 bin pid log pidfile
  bin=$(bin_of "$name")
  log=$(log_of "$name")
  pidfile=$(pidfile_of "$name")
  if pid=$(running_pid "$name"); then
    if [[ $(readlink "/proc/$pid/exe" 2>/dev/null) == *" (deleted)" ]]; then
      say "$name: already running (pid $pid), but from an older build; 'make down' then 'make up' to restart it"
    else
      say "$name: already running (pid $pid)"
    fi
    return 0
  fi
  rm -f "$pidfile"
  [[ -x $bin ]] || die "$bin is missing; build it first: make build (or make up)"
  say "$name: starting on $(addr_of "$name") (log $log)"
  echo "---- $(date -u +%Y-%m-%dT%H:%M:%SZ) scripts/stack.sh up: starting $name" >>"$log"
  # setsid: its own session, so a Ctrl-C aimed at make does not reach it. The inner bash
  # writes its pid and then becomes the service, so the pid file names the service itself.
  # NO_COLOR: tracing-subscriber writes no ANSI colour codes into the log file.
  # shellcheck disable=SC2016  # expanded by the inner bash
  NO_COLOR=1 with_db_of "$name" nohup setsid bash -c 'echo $$ >"$0"; exec "$@"' "$pidfile" "$bin" >>"$log" 2>&1 </dev/null &
  for _ in $(seq 50); do [[ -s $pidfile ]] && break; sleep 0.1; done
  [[ -s $pidfile ]] || die "$name did not start"
}

fail_service() {
  local name=$1
  shift
  echo "tally: error: $name: $*" >&2
  echo "tally: last 30 lines of $(log_of "$name"):" >&2
  tail -n 30 "$(log_of "$name")" 2>/dev/null | sed 's/^/    /' >&2
  exit 1
}

wait_ready() {
  local name=$1 addr deadline code pidfile
  addr=$(ops_of "$name")
  pidfile=$(pidfile_of "$name")
  deadline=$((SECONDS + READY_SECS))
  while :; do
    code=$(http_code "$addr" /readyz)
    if [[ $code == 200 ]]; then
      say "$name: ready on http://$addr"
      return 0
    fi
    if [[ -f $pidfile ]] && ! running_pid "$name" >/dev/null; then
      rm -f "$pidfile"
      fail_service "$name" "exited before it was ready"
    fi
    ((SECONDS < deadline)) ||
      fail_service "$name" "GET http://$addr/readyz did not answer 200 within ${READY_SECS}s (last: ${code:-no answer})"
    sleep 0.5
  done
}

stop_pid() {
  local label=$1 pid=$2
  say "$label: stopping (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq $((STOP_SECS * 10))); do
    alive "$pid" || return 0
    sleep 0.1
  done
  say "$label: still running after ${STOP_SECS}s; killing it"
  kill -KILL "$pid" 2>/dev/null || true
  while alive "$pid"; do sleep 0.1; done
}

# A secret kept in a file under $TALLY_HOME (mode 600), generated once: <prefix><64 hex>.
kept_secret() {
  local file=$TALLY_HOME/$1 prefix=$2
  if [[ ! -s $file ]]; then
    (umask 077 && printf '%s%s\n' "$prefix" "$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')" >"$file")
  fi
  head -n1 "$file"
}

ensure_stripe_secrets() {
  ((USE_STANDIN)) || return 0
  mkdir -p "$TALLY_HOME"
  TALLY_STRIPE_SECRET_KEY=${TALLY_STRIPE_SECRET_KEY:-$(kept_secret stripe-secret-key sk_test_)}
  TALLY_STRIPE_WEBHOOK_SECRET=${TALLY_STRIPE_WEBHOOK_SECRET:-$(kept_secret stripe-webhook-secret whsec_)}
  STRIPE_STANDIN_API_KEY=$TALLY_STRIPE_SECRET_KEY
  # The stand-in delivers its events, signed, to the api's webhook endpoint.
  STRIPE_STANDIN_WEBHOOK_URL=http://$TALLY_API_ADDR/v1/stripe/webhooks
  STRIPE_STANDIN_WEBHOOK_SECRET=$TALLY_STRIPE_WEBHOOK_SECRET
  export TALLY_STRIPE_SECRET_KEY TALLY_STRIPE_WEBHOOK_SECRET STRIPE_STANDIN_API_KEY STRIPE_STANDIN_WEBHOOK_URL STRIPE_STANDIN_WEBHOOK_SECRET
}

setup_stripe() {
  [[ -n ${TALLY_STRIPE_SECRET_KEY:-} ]] || return 0
  local out=$TALLY_HOME/stripe-setup.json
  if with_db_of billing-reporter "$ROOT/target/release/billing-reporter" setup-stripe >"$out.tmp" 2>>"$LOGS/billing-reporter.log"; then
    mv "$out.tmp" "$out"
    say "stripe: meters, products and prices set up at $TALLY_STRIPE_API_BASE (ids in $out)"
  else
    rm -f "$out.tmp"
    die "billing-reporter setup-stripe failed (see $LOGS/billing-reporter.log)"
  fi
}

cmd_up() {
  scripts/kafka.sh install
  scripts/postgres.sh install
  scripts/kafka.sh start
  scripts/postgres.sh start
  scripts/postgres.sh createdb tally
  "$(bin_of tally-migrate)" || die "tally-migrate failed"
  ensure_admin_token
  ensure_stripe_secrets
  mkdir -p "$LOGS" "$RUN"
  local name
  for name in "${SERVICES[@]}"; do start_service "$name"; done
  for name in "${SERVICES[@]}"; do wait_ready "$name"; done
  setup_stripe
  if [[ -n ${TALLY_STRIPE_SECRET_KEY:-} ]]; then
    start_service billing-reporter
    wait_ready billing-reporter
  fi
  cat <<EOF

tally: the stack is up
  ingest       http://$TALLY_INGEST_ADDR        (POST trace events; metrics http://$TALLY_INGEST_OPS_ADDR/metrics)
  api          http://$TALLY_API_ADDR        (metrics http://$TALLY_API_OPS_ADDR/metrics)
  aggregator   http://$TALLY_AGGREGATOR_ADDR/metrics
  projector    http://$TALLY_PROJECTOR_ADDR/metrics
  reporter     http://$TALLY_BILLING_REPORTER_ADDR/metrics   (billing-reporter status | reconcile)
  stripe       $TALLY_STRIPE_API_BASE$( ((USE_STANDIN)) && echo "   (the stand-in; key in $TALLY_HOME/stripe-secret-key)")
  kafka        $TALLY_KAFKA_BROKERS
  postgres     $TALLY_DATABASE_URL (each service as its own role: tally_api, ...)
  admin token  $TALLY_ADMIN_TOKEN
               (kept in $TOKEN_FILE; send it as: Authorization: Bearer <token>)
  logs         make logs   (files in $LOGS)
  stop         make down
EOF
}

cmd_down() {
  local i name pid
  for ((i = ${#ALL_SERVICES[@]} - 1; i >= 0; i--)); do
    name=${ALL_SERVICES[i]}
    if pid=$(running_pid "$name"); then
      stop_pid "$name" "$pid"
    fi
    rm -f "$(pidfile_of "$name")"
  done
  scripts/kafka.sh stop
  scripts/postgres.sh stop
  say "the stack is down"
}

cmd_logs() {
  shopt -s nullglob
  local files=("$LOGS"/*.log)
  ((${#files[@]})) || die "no logs yet in $LOGS"
  if [[ ${LOGS_FOLLOW:-1} == 0 ]]; then
    exec tail -n 50 "${files[@]}"
  fi
  exec tail -n 50 -F "${files[@]}"
}

cmd_status() {
  scripts/kafka.sh status || true
  scripts/postgres.sh status || true
  local name pid addr ready
  for name in "${ALL_SERVICES[@]}"; do
    addr=$(ops_of "$name")
    if pid=$(running_pid "$name"); then
      ready="not ready"
      [[ $(http_code "$addr" /readyz) == 200 ]] && ready=ready
      say "$name: running (pid $pid, http://$addr, $ready)"
    else
      say "$name: stopped"
    fi
  done
}

# `scripts/stack.sh billing-reporter status|reconcile|...`: the reporter's commands with the
# stack's settings (the generated Stripe key included).
cmd_billing_reporter() {
  ensure_stripe_secrets
  TALLY_DATABASE_URL=$(url_as tally_reporter) exec "$(bin_of billing-reporter)" "$@"
}

# `scripts/stack.sh replay invoice|verify|correct|rebuild ...`: the replay tool (docs/replay.md)
# against the stack's log and database.
cmd_replay() {
  exec "$(bin_of replay)" "$@"
}

case ${1:-} in
  up) cmd_up ;;
  billing-reporter) shift; cmd_billing_reporter "$@" ;;
  replay) shift; cmd_replay "$@" ;;
  down) cmd_down ;;
  logs) cmd_logs ;;
  status) cmd_status ;;
  *)
    echo "usage: scripts/stack.sh up|down|logs|status|billing-reporter <command>|replay <command>" >&2
    exit 2
    ;;
esac
