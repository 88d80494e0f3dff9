#!/usr/bin/env bash
# Makes sure the tools of bench/simulate.py are there: wrk (Debian package) drives the load, and aimock
# (npm @copilotkit/aimock, pinned by bench/aimock/package-lock.json) is the rival simulator it is compared
# with. As root it installs a missing wrk with apt-get; otherwise it prints the command. Without npm the
# aimock rows of the benchmark say "not available", so a missing npm is reported but is no failure.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v wrk >/dev/null 2>&1; then
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        echo "llmkit: bench/simulate.py needs wrk; install with:" >&2
        echo "  sudo apt-get update && sudo apt-get install -y wrk" >&2
        exit 1
    fi
    echo "llmkit: installing wrk with apt-get" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq wrk >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
fi

if [ ! -f bench/aimock/node_modules/@copilotkit/aimock/dist/cli.js ]; then
    if ! command -v npm >/dev/null 2>&1; then
        echo "llmkit: npm not found; bench/simulate.py will show aimock as not available" >&2
        exit 0
    fi
    echo "llmkit: installing @copilotkit/aimock into bench/aimock/node_modules" >&2
    # npm ci installs exactly the version in the lock file; without one, the latest release.
    npm ci --prefix bench/aimock --no-audit --no-fund --loglevel=error \
        || npm install --prefix bench/aimock --no-audit --no-fund --loglevel=error @copilotkit/aimock
fi
