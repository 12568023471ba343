#!/usr/bin/env bash
# What Tally's tests run against, fresh for every run and beside any stack that `make up` started:
# a test broker on 19092 (controller 19093) with its data in .tally/test, the database tally_test,
# the Python environment of the stand-in's contract test, and Chromium with the browser tools'
# packages. Mostly downloads and waiting: `make test` runs it while the workspace compiles.
#
#   scripts/test-env.sh         prepare (idempotent installs, then a fresh broker and database)
#   scripts/test-env.sh stop    stop the test broker
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

TEST_HOME="$ROOT/.tally/test"
DATABASE=tally_test
test_kafka() {
  TALLY_HOME="$TEST_HOME" TALLY_KAFKA_PORT=19092 TALLY_KAFKA_CONTROLLER_PORT=19093 scripts/kafka.sh "$@"
}

case ${1:-prepare} in
  prepare)
    scripts/kafka.sh install
    test_kafka stop
    rm -rf "$TEST_HOME"
    test_kafka start
    scripts/postgres.sh install
    scripts/postgres.sh start
    dropdb -h 127.0.0.1 -U postgres --if-exists --force "$DATABASE"
    scripts/postgres.sh createdb "$DATABASE"
    scripts/python-env.sh
    scripts/browser.sh install
    ;;
  stop)
    test_kafka stop
    ;;
  *)
    echo "usage: scripts/test-env.sh [prepare|stop]" >&2
    exit 2
    ;;
esac
