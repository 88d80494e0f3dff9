"""`scripts/ha-local.sh`: start the HA topology as processes on 127.0.0.1, report on it, stop it.

Everything it starts is recorded in DIR/state.json as it starts (pid and kernel start time), so `status`
and `down` find exactly those processes, and an `up` that fails part-way stops what it had started."""

from __future__ import annotations

import json
import os
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from llmkit.core.haproxy_stats import csv_url, stats_rows
from llmkit.localcluster import haproxy, services
from llmkit.localcluster.processes import (
    Started,
)

MARKER = ".llmkit-ha-local"
STATE = "state.json"
PG_USER = "llmkit"
PG_DATABASE = "llmkit"
SENTINELS = 3
ORCHESTRATE_WORKERS = 2
# What the llmkit servers are started with besides --profile ha (profiles/ha.yml) and their --port.
MODEL = "gpt-4o-mini"
HTTP_ROLES = ("simulate", "gateway", "orchestrate-api", "orchestrate-worker", "aggregate")
# Roles behind an HAProxy backend, by backend.
BEHIND = {
    "simulate": "simulate",
    "gateway": "gateway",
    "orchestrate-api": "orchestrate",
    "aggregate": "aggregate",
}


class StartError(Exception):
    """A process did not come up; `process` names it (its log has the why)."""

    def __init__(self, message: str, process: Started | None = None) -> None:
        super().__init__(message)
        self.process = process


def default_dir() -> Path:
    """Where the cluster lives without --dir: one fixed temp path per user, so status and down find it."""
    return Path(tempfile.gettempdir()) / f"llmkit-ha-local-{os.getuid()}"


class Cluster:
    """The processes of one local cluster and their state file."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.processes: list[Started] = []
        self.info: dict[str, Any] = {}

    # -- state ------------------------------------------------------------------------------------------
    @classmethod
    def load(cls, root: Path) -> Cluster:
        """The cluster recorded in root/state.json; FileNotFoundError when there is none."""
        data = json.loads((root / STATE).read_text())
        cluster = cls(root)
        cluster.info = data["info"]
        cluster.processes = [Started(**item) for item in data["processes"]]
        return cluster

    def save(self) -> None:
        """Write the state atomically, readable by its owner only (it holds the admin key)."""
        tmp = self.root / f".{STATE}.tmp"
        tmp.write_text(json.dumps({"info": self.info, "processes": [asdict(p) for p in self.processes]}))
        tmp.chmod(0o600)
        tmp.replace(self.root / STATE)

    def add(self, process: Started) -> Started:
        self.processes.append(process)
        self.save()
        return process

    def of(self, role: str) -> list[Started]:
        return [process for process in self.processes if process.role == role]

    def summary(self) -> dict[str, Any]:
        """The JSON line `up` ends with."""
        return {
            "front": self.info["front"],
            "haproxy_stats": self.info["haproxy_stats"],
            "admin_key": self.info["admin_key"],
            "processes": [{"role": p.role, "url": p.url, "pid": p.pid} for p in self.processes],
        }

    def log(self, role: str, index: int) -> Path:
        return self.root / "logs" / f"{role}-{index}.log"

    # -- health -----------------------------------------------------------------------------------------
    def haproxy_servers(self) -> dict[str, dict[str, str]]:
        """HAProxy's view of each server, `backend/server` -> its CSV row ({} when HAProxy is down)."""
        try:
            with urllib.request.urlopen(csv_url(self.info["haproxy_stats"]), timeout=2) as resp:
                text = resp.read().decode()
        except OSError:
            return {}
        rows = stats_rows(text)
        return {f"{row['pxname']}/{row['svname']}": row for row in rows}

    def healthy(self, process: Started) -> bool:
        """Whether one process is alive and answers its health check."""
        if not process.alive():
            return False
        check = _CHECKS.get(process.role, _http_health)
        return check(self, process)

    def health(self) -> list[dict[str, Any]]:
        """Every process with `health` (up or down) and, behind HAProxy, `haproxy` (its status there)."""
        servers = self.haproxy_servers()
        return [self.status_of(process, servers) for process in self.processes]

    def status_of(self, process: Started, servers: dict[str, dict[str, str]] | None = None) -> dict[str, Any]:
        """One row of `health()`: the process, its `health` and, behind HAProxy, its status there."""
        row: dict[str, Any] = {"role": process.role, "url": process.url, "pid": process.pid}
        up = self.healthy(process)
        if process.role in BEHIND:
            seen = (self.haproxy_servers() if servers is None else servers).get(haproxy_name(process), {})
            row["haproxy"] = seen.get("status", "unknown")
            # HAProxy's last check of it (L7OK; L7TOUT, L4CON... say why it did not pass).
            row["haproxy_check"] = seen.get("check_status", "unknown")
            up = up and _passing(seen)
        row["health"] = "up" if up else "down"
        return row


def haproxy_name(process: Started) -> str:
    """`backend/server`, the process's row in HAProxy's stats."""
    return f"{BEHIND[process.role]}/{haproxy.server_name(BEHIND[process.role], process.index)}"


def _passing(row: dict[str, str]) -> bool:
    """HAProxy calls the server UP and its last check passed (a server starts UP before any check)."""
    return row.get("status") == "UP" and row.get("check_status") == "L7OK"


def http_status(url: str) -> int:
    """The status of GET url (0 when nothing answers)."""
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


def _http_health(cluster: Cluster, process: Started) -> bool:
    return http_status(f"{process.url}/health") == 200


def _redis_ping(cluster: Cluster, process: Started) -> bool:
    import redis

    try:
        with redis.Redis(port=process.extra["port"], socket_timeout=2) as client:
            return bool(client.ping())
    except redis.RedisError:
        return False


def _postgres_health(cluster: Cluster, process: Started) -> bool:
    return services.postgres_ready(Path(process.extra["bindir"]), process.extra["port"])


def _clickhouse_health(cluster: Cluster, process: Started) -> bool:
    return http_status(f"http://127.0.0.1:{process.extra['http_port']}/ping") == 200


def _haproxy_health(cluster: Cluster, process: Started) -> bool:
    return http_status(process.url) == 200


_CHECKS: dict[str, Callable[[Cluster, Started], bool]] = {
    "redis-master": _redis_ping,
    "redis-replica": _redis_ping,
    "sentinel": _redis_ping,
    "postgres": _postgres_health,
    "clickhouse": _clickhouse_health,
    "haproxy": _haproxy_health,
}


def wait_until(what: str, ready: Callable[[], bool], timeout: float, process: Started | None = None) -> None:
    """Poll `ready` until it holds; StartError naming `what` after `timeout` or when `process` died."""
    deadline = time.monotonic() + timeout
    while not ready():
        if process is not None and not process.alive():
            raise StartError(f"{process.name} exited before {what}", process)
        if time.monotonic() > deadline:
            raise StartError(f"{what}: not within {timeout:.0f}s", process)
        time.sleep(0.1)
