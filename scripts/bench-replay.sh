#!/usr/bin/env bash
# The replay benchmark (BENCHMARKS.md): a month of trace events written straight into the log of a
# namespace of its own, folded by the real aggregator and projected into a database of its own,
# then recomputed by `replay verify`, which must find every invoice identical.
#
#   scripts/bench-replay.sh          (through `make bench-replay`, which builds first)
#
# Environment (defaults in brackets): TALLY_KAFKA_BROKERS [127.0.0.1:9092, the stack `make up`
# runs], TALLY_MONTH_EVENTS [10000000], TALLY_MONTH_ORGS [1000], TALLY_BENCH_DB
# [tally_bench_replay, dropped and created afresh]. The namespace's topics stay on the broker
# (about 3 GB for 10 M events) until `make clean-data`.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export TALLY_KAFKA_BROKERS=${TALLY_KAFKA_BROKERS:-127.0.0.1:9092}
export TALLY_MONTH_EVENTS=${TALLY_MONTH_EVENTS:-10000000}
export TALLY_MONTH_ORGS=${TALLY_MONTH_ORGS:-1000}
DB=${TALLY_BENCH_DB:-tally_bench_replay}
export TALLY_NAMESPACE=bench-replay-$(date +%s).
export TALLY_DATABASE_URL=postgres://postgres@127.0.0.1:5432/$DB
export TALLY_AGGREGATOR_ADDR=127.0.0.1:9201 TALLY_PROJECTOR_ADDR=127.0.0.1:9202
LOGS=$ROOT/.tally/bench-replay
mkdir -p "$LOGS"
say() { echo "bench-replay: $*"; }

dropdb -h 127.0.0.1 -U postgres --if-exists --force "$DB"
scripts/postgres.sh createdb "$DB" >/dev/null
# The schema, as its owner; the services and replay below connect as the superuser (a bench).
TALLY_DATABASE_URL=postgres://tally_owner@127.0.0.1:5432/$DB target/release/tally-migrate >/dev/null
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
for service in aggregator projector; do
  target/release/$service >"$LOGS/$service.log" 2>&1 &
  pids+=($!)
done
for addr in $TALLY_AGGREGATOR_ADDR $TALLY_PROJECTOR_ADDR; do
  for _ in $(seq 1 120); do curl -sf "http://$addr/readyz" >/dev/null && break; sleep 0.5; done
  curl -sf "http://$addr/readyz" >/dev/null || { say "a service did not start; see $LOGS"; exit 1; }
done
say "namespace $TALLY_NAMESPACE, database $DB; writing $TALLY_MONTH_EVENTS deliveries"
target/release/tally-loadgen month-log
say "waiting for the aggregator and projector to finalize October's invoices"
started=$(date +%s)
while :; do
  n=$(psql -h 127.0.0.1 -U postgres -d "$DB" -Atc "SELECT count(*) FROM invoices WHERE period = '2026-10'")
  [[ $n -ge $TALLY_MONTH_ORGS ]] && break
  (( $(date +%s) - started > 1800 )) && { say "only $n invoices after 30 min"; exit 1; }
  sleep 2
done
say "the live pipeline finalized $n invoices in $(( $(date +%s) - started )) s"
cleanup; pids=()
say "replay verify --period 2026-10 (the live services stopped; only replay runs)"
# GNU time adds CPU and memory figures where it is installed (Debian's `time` package).
timed=()
[[ -x /usr/bin/time ]] && timed=(/usr/bin/time -f "bench-replay: %e s wall, %U s user, %S s system, %M KiB max resident")
set +e
"${timed[@]}" target/release/replay verify --period 2026-10 --json >"$LOGS/verify.json"
code=$?
set -e
python3 - "$LOGS/verify.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
secs = r["elapsed_ms"] / 1000
print(f"bench-replay: verify: {r['orgs']} orgs, {r['identical']} identical, {r['different']} different; "
      f"{r['records']:,} records folded in {secs:.2f} s = {r['records'] / secs:,.0f} records/s")
PY
exit $code
