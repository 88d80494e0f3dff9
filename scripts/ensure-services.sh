#!/usr/bin/env bash
# Makes sure the Debian packages redis-server, redis-sentinel, clickhouse-server, postgresql, haproxy, prometheus (with promtool), curl, chromium and chromium-driver are installed, because
# the test suite starts real servers (and runs the README's curl examples). As root it installs what is missing with apt-get; otherwise it prints the one command.
set -euo pipefail

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v redis-sentinel >/dev/null 2>&1 || missing+=(redis-sentinel)
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || missing+=(haproxy)
command -v curl >/dev/null 2>&1 || missing+=(curl)
# Debian's prometheus ships both: tests/prometheus.py starts prometheus, test_prometheus.py runs promtool.
{ command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; } || missing+=(prometheus)
# tests/browser and bench/admin_page.py drive the admin page in Debian's Chromium through its chromedriver.
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
if ! command -v clickhouse-server >/dev/null 2>&1 && [ ! -x /usr/sbin/clickhouse-server ] \
    && [ ! -x /usr/bin/clickhouse-server ]; then
    missing+=(clickhouse-server)
fi
# tests/postgres.py runs initdb and postgres from the newest /usr/lib/postgresql/<version>/bin (not on PATH).
if ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
    missing+=(postgresql)
fi

if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "llmkit: the test suite needs ${missing[*]}; install with:" >&2
    echo "  sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
    exit 1
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "llmkit: the test suite needs ${missing[*]} and this machine has no apt-get; install them and retry" >&2
    exit 1
fi

echo "llmkit: installing ${missing[*]} with apt-get" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# policy-rc.d may forbid starting services (containers); the tests start their own servers anyway.
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
