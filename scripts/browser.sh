#!/usr/bin/env bash
# The browser and the tools for Tally's page tests and screenshots: Debian's chromium (Playwright's
# own browser download is not used: playwright-core drives the system's chromium), and the npm
# packages of tools/e2e/browser (playwright-core, axe-core) from its lockfile.
#
#   scripts/browser.sh install   install chromium (apt, when missing) and tools/e2e/browser's packages
#   scripts/browser.sh path      print the chromium executable
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "tally: browser: $*"; }
die() { echo "tally: browser: error: $*" >&2; exit 1; }

chromium_path() {
  for c in /usr/bin/chromium /usr/bin/chromium-browser; do
    [[ -x $c ]] && { echo "$c"; return 0; }
  done
  return 1
}

case ${1:-} in
  install)
    if ! chromium_path >/dev/null; then
      command -v apt-get >/dev/null || die "chromium is missing and apt-get is not available; install Debian's chromium package"
      sudo_=""; [[ $(id -u) -ne 0 ]] && sudo_=sudo
      say "installing chromium (apt)"
      $sudo_ apt-get update -qq || true
      DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq chromium >/dev/null
    fi
    chromium_path >/dev/null || die "chromium did not install"
    if [[ ! -d tools/e2e/browser/node_modules ]] || [[ tools/e2e/browser/package-lock.json -nt tools/e2e/browser/node_modules ]]; then
      say "installing tools/e2e/browser's packages (npm ci)"
      (cd tools/e2e/browser && npm ci --no-audit --no-fund --loglevel=error)
      touch tools/e2e/browser/node_modules
    fi
    say "ready: $(chromium_path) ($("$(chromium_path)" --version 2>/dev/null | head -n1))"
    ;;
  path)
    chromium_path || die "chromium is not installed (scripts/browser.sh install)"
    ;;
  *)
    echo "usage: scripts/browser.sh install|path" >&2
    exit 2
    ;;
esac
