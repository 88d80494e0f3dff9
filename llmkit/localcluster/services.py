"""How to run each store on loopback: redis-server, redis-sentinel, clickhouse-server and PostgreSQL.

Shared by `scripts/ha-local.sh` (llmkit.localcluster.cluster) and the test fixtures (tests/servers.py,
tests/postgres.py), so both start the same servers the same way."""

from __future__ import annotations

import os
import pwd
import re
import subprocess
from pathlib import Path
from typing import Any

SENTINEL_SERVICE = "mymaster"
CLICKHOUSE_BINARIES = ("clickhouse-server", "/usr/sbin/clickhouse-server", "/usr/bin/clickhouse-server")
PG_ROOT = Path("/usr/lib/postgresql")
# The Debian package's system user: initdb and postgres refuse to run as root, and CI runs as root.
PG_SYSTEM_USER = "postgres"


def redis_args(binary: str, port: int, workdir: Path, replica_of: int | None = None) -> list[str]:
    """A redis-server on 127.0.0.1 without persistence (optionally the replica of another port)."""
    args = [
        binary,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(workdir),
        "--protected-mode",
        "no",
        # A replica's first sync starts at once (Redis 7 waits 5 s for more replicas by default).
        "--repl-diskless-sync-delay",
        "0",
    ]
    if replica_of is not None:
        args += ["--replicaof", "127.0.0.1", str(replica_of)]
    return args


def write_sentinel_config(
    folder: Path, port: int, master_port: int, down_after_ms: int = 1000, failover_timeout_ms: int = 3000
) -> Path:
    """A sentinel.conf watching the master on 127.0.0.1 (quorum 2); each sentinel needs its own file,
    writable, since sentinels rewrite it."""
    folder.mkdir(parents=True, exist_ok=True)
    conf = folder / "sentinel.conf"
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\nprotected-mode no\ndir {folder}\n"
        f"sentinel monitor {SENTINEL_SERVICE} 127.0.0.1 {master_port} 2\n"
        f"sentinel down-after-milliseconds {SENTINEL_SERVICE} {down_after_ms}\n"
        f"sentinel failover-timeout {SENTINEL_SERVICE} {failover_timeout_ms}\n"
    )
    return conf


def sentinel_url(ports: list[int], db: int = 0, query: str = "") -> str:
    """redis+sentinel://127.0.0.1:P1,127.0.0.1:P2,.../mymaster/<db>[?query]."""
    hosts = ",".join(f"127.0.0.1:{port}" for port in ports)
    return f"redis+sentinel://{hosts}/{SENTINEL_SERVICE}/{db}" + (f"?{query}" if query else "")


def sentinel_master(port: int) -> dict[str, Any]:
    """SENTINEL MASTER <service> from the sentinel on 127.0.0.1:port, as a dict."""
    import redis

    with redis.Redis(port=port, socket_timeout=2, decode_responses=True) as client:
        info: dict[str, Any] = client.sentinel_master(SENTINEL_SERVICE)
        return info


def sentinels_ready(ports: list[int]) -> bool:
    """Every sentinel knows the others and at least one replica (else a failover cannot happen)."""
    try:
        infos = [sentinel_master(port) for port in ports]
    except Exception:  # a sentinel still starting, or in the middle of a failover
        return False
    return all(info["num-other-sentinels"] == len(ports) - 1 and info["num-slaves"] >= 1 for info in infos)


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


def write_clickhouse_config(workdir: Path, http_port: int, tcp_port: int) -> Path:
    """config.xml and users.xml for a clickhouse-server on 127.0.0.1 with its data in workdir; config.xml."""
    workdir.mkdir(parents=True, exist_ok=True)
    values = {"dir": workdir, "http_port": http_port, "tcp_port": tcp_port}
    (workdir / "config.xml").write_text(_CH_CONFIG.format(**values))
    (workdir / "users.xml").write_text(_CH_USERS.format(**values))
    return workdir / "config.xml"


def postgres_bindir() -> Path | None:
    """The bin directory of the newest PostgreSQL under /usr/lib/postgresql, None when there is none."""
    found = [path.parent for path in PG_ROOT.glob("*/bin/initdb") if os.access(path, os.X_OK)]
    found.sort(key=lambda bindir: [int(part) for part in re.findall(r"\d+", bindir.parent.name)] or [0])
    return found[-1] if found else None


def postgres_user_args() -> dict[str, Any]:
    """Popen arguments that run a PostgreSQL tool as the postgres user when we are root, else none."""
    if os.geteuid() == 0:
        return {"user": PG_SYSTEM_USER, "group": PG_SYSTEM_USER, "extra_groups": []}
    return {}


def chown_to_postgres(*paths: Path) -> None:
    """Give paths to the postgres user when we are root (it must own its data directory)."""
    if os.geteuid() == 0:
        entry = pwd.getpwnam(PG_SYSTEM_USER)
        for path in paths:
            os.chown(path, entry.pw_uid, entry.pw_gid)


def initdb(bindir: Path, data: Path, user: str, password: str, cwd: Path) -> None:
    """initdb a cluster with a scram-sha-256 password user; RuntimeError with its output on failure."""
    pwfile = cwd / "password"
    pwfile.write_text(password + "\n")
    chown_to_postgres(cwd, pwfile)
    try:
        run_pg_tool(
            cwd,
            bindir / "initdb",
            f"--pgdata={data}",
            f"--username={user}",
            f"--pwfile={pwfile}",
            "--auth=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        )
    finally:
        pwfile.unlink()


def run_pg_tool(cwd: Path, *args: str | Path) -> None:
    """Run a PostgreSQL tool to completion (as the postgres user under root), failing with its output."""
    done = subprocess.run(
        [str(arg) for arg in args], capture_output=True, cwd=cwd, check=False, **postgres_user_args()
    )
    if done.returncode != 0:
        output = (done.stdout + done.stderr).decode(errors="replace")
        raise RuntimeError(f"{Path(args[0]).name} exited with {done.returncode}:\n{output}")


def postgres_args(bindir: Path, data: Path, port: int, socket_dir: Path, max_connections: int) -> list[str]:
    """postgres on 127.0.0.1:port, durability off (a throwaway cluster: fsync costs seconds)."""
    settings = {
        "listen_addresses": "127.0.0.1",
        "port": str(port),
        "unix_socket_directories": str(socket_dir),
        "max_connections": str(max_connections),
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
    }
    args = [str(bindir / "postgres"), "-D", str(data)]
    for name, value in settings.items():
        args += ["-c", f"{name}={value}"]
    return args


def postgres_ready(bindir: Path, port: int) -> bool:
    """pg_isready on 127.0.0.1:port (accepting logins, not merely the port)."""
    isready = [str(bindir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port)]
    return subprocess.run(isready, check=False).returncode == 0
