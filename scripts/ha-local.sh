#!/usr/bin/env bash
# The HA topology as plain processes on 127.0.0.1 (see docs/ha.md, "Running the cluster on one machine").
#   scripts/ha-local.sh up [--replicas 3] [--workers 1] [--dir DIR]   start it; the last line is JSON
#   scripts/ha-local.sh status [--dir DIR]                              the same JSON with health; exit 1 if down
#   scripts/ha-local.sh restart ROLE N [--dir DIR]                      start one llmkit server again
#   scripts/ha-local.sh down [--dir DIR]                                stop what up started, remove DIR
#   scripts/ha-local.sh haproxy-config [--local]                        render deploy/haproxy.cfg.in
# Needs `make install` (the repository's .venv) and the Debian packages scripts/ensure-services.sh installs.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="$root/.venv/bin/python"
if [[ ! -x "$python" ]]; then
    echo "ha-local: $python not found; run 'make install' in $root first" >&2
    exit 2
fi
exec "$python" -m llmkit.localcluster "$@"
