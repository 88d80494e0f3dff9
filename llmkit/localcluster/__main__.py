"""`python -m llmkit.localcluster up|status|down|haproxy-config` (what scripts/ha-local.sh runs)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

from llmkit.localcluster import haproxy
from llmkit.localcluster.cluster import HTTP_ROLES, MARKER, Cluster, StartError, default_dir
from llmkit.localcluster.launch import restart, stop, up
from llmkit.localcluster.processes import log_tail

EPILOG = """examples:
  scripts/ha-local.sh up --replicas 3          # ends with one JSON line: fronts, admin key, processes
  scripts/ha-local.sh status                   # the same with each process's health; exit 1 if one is down
  scripts/ha-local.sh restart gateway 2        # start gateway-2 again (after a kill) until HAProxy has it UP
  scripts/ha-local.sh down                     # stop everything up started, remove its directory
  scripts/ha-local.sh haproxy-config > deploy/haproxy.cfg   # after editing deploy/haproxy.cfg.in
"""


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(
        prog="scripts/ha-local.sh",
        description="The HA topology (HAProxy, Redis with Sentinel, PostgreSQL, ClickHouse and replicas of "
        "every llmkit server) as processes on 127.0.0.1.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = main.add_subparsers(dest="command", required=True)
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument(
        "--dir", type=Path, default=None, help=f"the cluster's directory (default {default_dir()})"
    )
    start = commands.add_parser(
        "up",
        parents=[where],
        help="start the cluster; the last line of output is its JSON",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    start.add_argument(
        "--replicas", type=int, default=3, help="replicas of simulate, gateway, orchestrate API"
    )
    start.add_argument("--workers", type=int, default=1, help="--workers of each llmkit server (default 1)")
    commands.add_parser("status", parents=[where], help="the JSON of up with health; exit 1 if one is down")
    again = commands.add_parser(
        "restart", parents=[where], help="start one llmkit server again; the JSON of up with its new pid"
    )
    again.add_argument("role", choices=HTTP_ROLES, help="the role of the server")
    again.add_argument("index", type=int, help="which one, from 1 (as in logs/ROLE-N.log)")
    commands.add_parser("down", parents=[where], help="stop what up started and remove the directory")
    render = commands.add_parser("haproxy-config", help="print deploy/haproxy.cfg rendered from its template")
    render.add_argument("--template", type=Path, default=haproxy.TEMPLATE)
    return main


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "haproxy-config":
        sys.stdout.write(haproxy.docker_config(args.template.read_text()))
        return 0
    root = (args.dir or default_dir()).resolve()
    if args.command == "up":
        return _up(root, args.replicas, args.workers)
    if args.command == "status":
        return _status(root)
    if args.command == "restart":
        return _restart(root, args.role, args.index)
    return _down(root)


def _up(root: Path, replicas: int, workers: int) -> int:
    if replicas < 1 or workers < 1:
        print("ha-local: --replicas and --workers must be at least 1", file=sys.stderr)
        return 2
    print(f"ha-local: starting {replicas} replicas of each server in {root} (logs in {root / 'logs'})")
    try:
        cluster = up(root, replicas, workers, os.environ)
    except StartError as exc:
        print(f"ha-local: up failed: {exc}", file=sys.stderr)
        if exc.process is not None:
            print(f"--- last lines of {exc.process.log} ---\n{log_tail(exc.process.log)}", file=sys.stderr)
        print("ha-local: every process it had started was stopped", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("ha-local: interrupted; every process it had started was stopped", file=sys.stderr)
        return 130
    for name, url in cluster.info["front"].items():
        print(f"ha-local: {name:<12} {url}")
    print(f"ha-local: haproxy stats {cluster.info['haproxy_stats']}")
    print(json.dumps(cluster.summary()), flush=True)
    return 0


def _load(root: Path) -> Cluster | None:
    try:
        return Cluster.load(root)
    except FileNotFoundError:
        print(f"ha-local: no cluster in {root} (start one with: scripts/ha-local.sh up)", file=sys.stderr)
        return None


def _status(root: Path) -> int:
    cluster = _load(root)
    if cluster is None:
        return 1
    rows = cluster.health()
    print(json.dumps({**cluster.summary(), "processes": rows}))
    return 0 if all(row["health"] == "up" for row in rows) else 1


def _restart(root: Path, role: str, index: int) -> int:
    cluster = _load(root)
    if cluster is None:
        return 1
    try:
        process = restart(cluster, role, index, os.environ)
    except StartError as exc:
        print(f"ha-local: restart failed: {exc}", file=sys.stderr)
        if exc.process is not None:
            print(f"--- last lines of {exc.process.log} ---\n{log_tail(exc.process.log)}", file=sys.stderr)
        return 1
    print(f"ha-local: {process.name} restarted (pid {process.pid}), healthy and UP in haproxy")
    print(json.dumps(cluster.summary()), flush=True)
    return 0


def _down(root: Path) -> int:
    if not (root / MARKER).exists():
        print(f"ha-local: no cluster in {root}", file=sys.stderr)
        return 1
    cluster = Cluster.load(root) if (root / "state.json").exists() else Cluster(root)
    killed = stop(cluster)
    for process in killed:
        print(f"ha-local: {process.name} (pid {process.pid}) did not stop in time: killed", file=sys.stderr)
    left = [process.name for process in cluster.processes if process.alive()]
    if left:
        print(f"ha-local: still running: {', '.join(left)}; {root} kept", file=sys.stderr)
        return 1
    shutil.rmtree(root)
    print(f"ha-local: stopped {len(cluster.processes)} processes, removed {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
