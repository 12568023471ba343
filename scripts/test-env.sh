#!/usr/bin/env bash
# What Tally's tests run against, fresh for every run and beside any stack that `make up` started:
# a test broker on 19092 (controller 19093) with its data in .tally/test and the database
# tally_test; a second broker on 19094 (controller 19095, data in .tally/test-faults) with the
# database tally_test_faults, for the end-to-end tests that stop and kill the broker, which run
# beside the others; the Python environment (Stripe's library for the stand-in's contract test,
# OpenTelemetry's SDK for the OTLP test); OpenTelemetry's Node.js SDK (tools/e2e/otel/node, from
# its lockfile); an OpenTelemetry Collector (scripts/otelcol.sh, built with Go from the module
# proxy into .tally/bin); and Chromium with the browser tools' packages. Mostly downloads and waiting: `make test` runs it while the
# workspace compiles.
#
#   scripts/test-env.sh         prepare (idempotent installs, then fresh brokers and databases)
#   scripts/test-env.sh stop    stop the test brokers
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

# data folder, port, controller port, database: keep in step with the Makefile's TEST_ENV
# and FAULTS_ENV.
ENVIRONMENTS=(
  "$ROOT/.tally/test 19092 19093 tally_test"
  "$ROOT/.tally/test-faults 19094 19095 tally_test_faults"
)
test_kafka() {
  local home=$1 port=$2 controller=$3
  shift 3
  TALLY_HOME="$home" TALLY_KAFKA_PORT=$port TALLY_KAFKA_CONTROLLER_PORT=$controller scripts/kafka.sh "$@"
}

case ${1:-prepare} in
  prepare)
    scripts/kafka.sh install
    for environment in "${ENVIRONMENTS[@]}"; do
      read -r home port controller _ <<<"$environment"
      test_kafka "$home" "$port" "$controller" stop
      rm -rf "$home"
      test_kafka "$home" "$port" "$controller" start
    done
    scripts/postgres.sh install
    scripts/postgres.sh start
    for environment in "${ENVIRONMENTS[@]}"; do
      read -r _ _ _ database <<<"$environment"
      dropdb -h 127.0.0.1 -U postgres --if-exists --force "$database"
      scripts/postgres.sh createdb "$database"
    done
    scripts/python-env.sh
    node_sdk=tools/e2e/otel/node
    if [[ ! -d $node_sdk/node_modules ]] || [[ $node_sdk/package-lock.json -nt $node_sdk/node_modules ]]; then
      echo "tally: otel: installing $node_sdk's packages (npm ci)"
      (cd "$node_sdk" && npm ci --no-audit --no-fund --loglevel=error)
      touch "$node_sdk/node_modules"
    fi
    scripts/otelcol.sh >/dev/null
    scripts/browser.sh install
    ;;
  stop)
    for environment in "${ENVIRONMENTS[@]}"; do
      read -r home port controller _ <<<"$environment"
      test_kafka "$home" "$port" "$controller" stop
    done
    ;;
  *)
    echo "usage: scripts/test-env.sh [prepare|stop]" >&2
    exit 2
    ;;
esac
