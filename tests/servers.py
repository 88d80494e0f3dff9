"""Real redis-server, redis-sentinel and clickhouse-server processes on free loopback ports, for the tests."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

CLICKHOUSE_BINARIES = ("clickhouse-server", "/usr/sbin/clickhouse-server", "/usr/bin/clickhouse-server")


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def find_binary(*names: str) -> str:
    """The first binary found; a missing one fails the test, never skips it (`make test` installs it)."""
    for name in names:
        found = shutil.which(name) or (name if os.path.isabs(name) and os.access(name, os.X_OK) else None)
        if found:
            return found
    pytest.fail(
        f"{names[0]} is not installed; run `make test` (it installs it) or apt-get install {names[0]}",
        pytrace=False,
    )


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """Block until something accepts on 127.0.0.1:port, or fail naming the process."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{proc.args} did not listen on {port} within {timeout}s")


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
        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.workdir),
            "--protected-mode",
            "no",
            # A replica's first sync starts at once (Redis 7 waits 5 s for more replicas by default).
            "--repl-diskless-sync-delay",
            "0",
        ]
        if replica_of is not None:
            args += ["--replicaof", "127.0.0.1", str(replica_of)]
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

    SERVICE = "mymaster"
    SENTINELS = 3

    def __init__(self, workdir: Path) -> None:
        self.binary = find_binary("redis-sentinel")
        self.workdir = workdir
        self.master = RedisServer(workdir / "master")
        self.replica = RedisServer(workdir / "replica")
        self.sentinel_ports = [free_port() for _ in range(self.SENTINELS)]
        self.sentinels: list[subprocess.Popen[bytes]] = []

    def url(self, db: int = 0, **params: str) -> str:
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        query = "&".join(f"{k}={v}" for k, v in params.items())
        return f"redis+sentinel://{hosts}/{self.SERVICE}/{db}" + (f"?{query}" if query else "")

    def start(self) -> None:
        self.master.start()
        self.replica.start(replica_of=self.master.port)
        for i, port in enumerate(self.sentinel_ports):
            folder = self.workdir / f"sentinel-{i}"
            folder.mkdir(parents=True, exist_ok=True)
            conf = folder / "sentinel.conf"  # sentinels rewrite their file: each its own, writable
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\nprotected-mode no\ndir {folder}\n"
                f"sentinel monitor {self.SERVICE} 127.0.0.1 {self.master.port} 2\n"
                f"sentinel down-after-milliseconds {self.SERVICE} 1000\n"
                f"sentinel failover-timeout {self.SERVICE} 3000\n"
            )
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
        import redis

        with redis.Redis(port=port, socket_timeout=2, decode_responses=True) as client:
            info: dict[str, Any] = client.sentinel_master(self.SERVICE)
            return info

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


_CH_CONFIG = """<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>{dir}/server.log</log><errorlog>{dir}/error.log</errorlog>
    <size>10M</size><count>1</count></logger>
  <http_port>{http_port}</http_port>
  <tcp_port>{tcp_port}</tcp_port>
  <listen_host>127.0.0.1</listen_host>
  <path>{dir}/data/</path>
  <tmp_path>{dir}/tmp/</tmp_path>
  <user_files_path>{dir}/user_files/</user_files_path>
  <format_schema_path>{dir}/format_schemas/</format_schema_path>
  <users_config>{dir}/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <mark_cache_size>268435456</mark_cache_size>
  <max_concurrent_queries>100</max_concurrent_queries>
  <timezone>UTC</timezone>
</yandex>
"""

_CH_USERS = """<?xml version="1.0"?>
<yandex>
  <profiles><default><max_memory_usage>4000000000</max_memory_usage></default></profiles>
  <users><default><password></password><networks><ip>::1</ip><ip>127.0.0.1</ip></networks>
    <profile>default</profile><quota>default</quota></default></users>
  <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors>
    <result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time>
  </interval></default></quotas>
</yandex>
"""


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
        self.workdir.mkdir(parents=True, exist_ok=True)
        values = {"dir": self.workdir, "http_port": self.http_port, "tcp_port": self.tcp_port}
        (self.workdir / "config.xml").write_text(_CH_CONFIG.format(**values))
        (self.workdir / "users.xml").write_text(_CH_USERS.format(**values))
        log = open(self.workdir / "stdout.log", "wb")
        self.proc = subprocess.Popen(
            [self.binary, f"--config-file={self.workdir / 'config.xml'}"],
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
