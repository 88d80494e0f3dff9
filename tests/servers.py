"""Real redis-server, redis-sentinel and clickhouse-server processes on free loopback ports, for the tests."""

from __future__ import annotations

import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from llmkit.localcluster import processes, services
from llmkit.localcluster.processes import free_port, wait_for_port
from llmkit.localcluster.services import CLICKHOUSE_BINARIES

__all__ = ["CLICKHOUSE_BINARIES", "free_port", "wait_for_port"]


def find_binary(*names: str) -> str:
    """The first binary found; a missing one fails the test, never skips it (`make test` installs it)."""
    found = processes.find_binary(*names)
    if found is None:
        pytest.fail(
            f"{names[0]} is not installed; run `make test` (it installs it) or apt-get install {names[0]}",
            pytrace=False,
        )
    return found


class RedisServer:
    """One redis-server without persistence, which a test may stop and start again on the same port."""

    def __init__(self, workdir: Path) -> None:
        self.binary = find_binary("redis-server")
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, replica_of: int | None = None) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        args = services.redis_args(self.binary, self.port, self.workdir, replica_of)
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port, self.proc)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


class SentinelCluster:
    """A Redis master, one replica and three redis-sentinels watching them (quorum 2), all on loopback.

    Failover is quick for tests: a master that answers nothing for 1 s is down, and a failover may take
    3 s. The RedisServers can be stopped (a crash: SIGKILL) to make the sentinels promote the replica."""

    SERVICE = services.SENTINEL_SERVICE
    SENTINELS = 3

    def __init__(self, workdir: Path) -> None:
        self.binary = find_binary("redis-sentinel")
        self.workdir = workdir
        self.master = RedisServer(workdir / "master")
        self.replica = RedisServer(workdir / "replica")
        self.sentinel_ports = [free_port() for _ in range(self.SENTINELS)]
        self.sentinels: list[subprocess.Popen[bytes]] = []

    def url(self, db: int = 0, **params: str) -> str:
        query = "&".join(f"{k}={v}" for k, v in params.items())
        return services.sentinel_url(self.sentinel_ports, db, query)

    def start(self) -> None:
        self.master.start()
        self.replica.start(replica_of=self.master.port)
        for i, port in enumerate(self.sentinel_ports):
            conf = services.write_sentinel_config(self.workdir / f"sentinel-{i}", port, self.master.port)
            proc = subprocess.Popen(
                [self.binary, str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            self.sentinels.append(proc)
            wait_for_port(port, proc)
        # Ready when every sentinel knows the other two and the replica (else a failover cannot happen).
        self.wait_for(
            lambda info: info["num-other-sentinels"] == self.SENTINELS - 1 and info["num-slaves"] >= 1
        )

    def sentinel_info(self, port: int) -> dict[str, Any]:
        """SENTINEL MASTER <service> from one sentinel, as a dict."""
        return services.sentinel_master(port)

    def master_port(self) -> int:
        """The port of the server the sentinels call master now."""
        return int(self.sentinel_info(self.sentinel_ports[0])["port"])

    def wait_for(self, ready: Callable[[dict[str, Any]], bool], timeout: float = 30.0) -> None:
        """Until `ready` holds for what every sentinel says of the master."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if all(ready(self.sentinel_info(port)) for port in self.sentinel_ports):
                    return
            except Exception:  # a sentinel still starting, or in the middle of a failover
                pass
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"sentinels not ready within {timeout}s: {self.sentinel_info(self.sentinel_ports[0])}"
                )
            time.sleep(0.1)

    def crash_master(self) -> int:
        """SIGKILL the current master and wait until the sentinels promoted the other server; its port."""
        old = self.master_port()
        victim = self.master if self.master.port == old else self.replica
        assert victim.proc is not None
        victim.proc.kill()
        victim.proc.wait()
        victim.proc = None
        self.wait_for(lambda info: int(info["port"]) != old and "s_down" not in info["flags"])
        return self.master_port()

    def stop(self) -> None:
        for proc in self.sentinels:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        self.sentinels.clear()
        self.master.stop()
        self.replica.stop()


class ClickHouseServer:
    """Debian's clickhouse-server with a temporary config and data directory."""

    def __init__(self, workdir: Path) -> None:
        self.binary = find_binary(*CLICKHOUSE_BINARIES)
        self.workdir = workdir
        self.tcp_port = free_port()
        self.http_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"clickhouse://127.0.0.1:{self.tcp_port}/default"

    def drop_database(self, name: str) -> None:
        """Drop a database a test made."""
        from clickhouse_driver import Client

        client = Client("127.0.0.1", port=self.tcp_port)
        try:
            client.execute(f"DROP DATABASE IF EXISTS {name}")
        finally:
            client.disconnect()

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self) -> None:
        config = services.write_clickhouse_config(self.workdir, self.http_port, self.tcp_port)
        log = open(self.workdir / "stdout.log", "wb")
        self.proc = subprocess.Popen(
            [self.binary, f"--config-file={config}"],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
        )
        log.close()
        wait_for_port(self.tcp_port, self.proc, timeout=60)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.http_url}/ping", timeout=1) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("clickhouse-server did not answer /ping within 30s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
