#!/usr/bin/env bash
# The OpenTelemetry Collector of Tally's end-to-end tests (tools/e2e/otel/collector: OTLP in over
# gRPC and HTTP, the batch processor, OTLP/HTTP out), built with the machine's Go from the Go
# module proxy into $TALLY_HOME/bin/otelcol-tally (default .tally/bin). Rebuilt only when its
# sources change. Prints the binary's path.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
TALLY_HOME="${TALLY_HOME:-$ROOT/.tally}"
SRC="$ROOT/tools/e2e/otel/collector"
BIN="$TALLY_HOME/bin/otelcol-tally"
say() { echo "tally: otelcol: $*" >&2; }

command -v go >/dev/null || { say "Go is not installed (the machine's Go builds the Collector)"; exit 1; }
stamp="$(cat "$SRC/go.mod" "$SRC/go.sum" "$SRC/main.go" | sha256sum | cut -d' ' -f1)"
if [ ! -x "$BIN" ] || [ "$(cat "$BIN.stamp" 2>/dev/null)" != "$stamp" ]; then
    say "building $BIN from the Go module proxy (about two minutes the first time)"
    mkdir -p "$(dirname "$BIN")"
    (cd "$SRC" && nice -n 10 go build -mod=readonly -trimpath -ldflags="-s -w" -o "$BIN.new" .)
    mv "$BIN.new" "$BIN"
    echo "$stamp" >"$BIN.stamp"
fi
echo "$BIN"
