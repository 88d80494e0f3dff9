"""A real PostgreSQL server (Debian's postgresql package) on a free loopback port, for the test session."""

from __future__ import annotations

import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from tests.servers import free_port

PG_ROOT = Path("/usr/lib/postgresql")
# The Debian package's system user: initdb and postgres refuse to run as root, and CI runs as root.
PG_SYSTEM_USER = "postgres"
# Per-test databases and pools add up over a session; the default of 100 leaves little headroom.
MAX_CONNECTIONS = 300


def postgres_bindir() -> Path:
    """The bin directory of the newest PostgreSQL under /usr/lib/postgresql; a missing one fails the test."""
    found = [path.parent for path in PG_ROOT.glob("*/bin/initdb") if os.access(path, os.X_OK)]
    found.sort(key=lambda bindir: [int(part) for part in re.findall(r"\d+", bindir.parent.name)] or [0])
    if not found:
        pytest.fail(
            f"PostgreSQL is not installed (no {PG_ROOT}/*/bin/initdb); run `make test` (it installs it) "
            "or apt-get install postgresql",
            pytrace=False,
        )
    return found[-1]


class PostgresServer:
    """One postgres in a temporary directory, with a password user over TCP on 127.0.0.1 only."""

    def __init__(self, user: str = "llmkit") -> None:
        self.bindir = postgres_bindir()
        self.user = user
        self.password = secrets.token_hex(16)
        self.port = free_port()
        self.workdir: Path | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        # As root, every process that touches the data directory runs as the Debian postgres user.
        self._as: dict[str, Any] = {}
        if os.geteuid() == 0:
            self._as = {"user": PG_SYSTEM_USER, "group": PG_SYSTEM_USER, "extra_groups": []}

    @property
    def host(self) -> str:
        return "127.0.0.1"

    def url_for(self, database: str, password: str | None = None) -> str:
        """A postgresql:// URL to one database, with the server's password unless another is given."""
        secret = self.password if password is None else password
        return f"postgresql://{self.user}:{secret}@{self.host}:{self.port}/{database}"

    @property
    def url(self) -> str:
        """The URL of the maintenance database `postgres` (create test databases through it)."""
        return self.url_for("postgres")

    async def create_database(self) -> str:
        """A fresh database `t_<hex>`; its name."""
        import asyncpg

        name = f"t_{secrets.token_hex(8)}"
        admin = await asyncpg.connect(self.url)
        try:
            await admin.execute(f"CREATE DATABASE {name}")
        finally:
            await admin.close()
        return name

    async def drop_databases(self, *names: str) -> None:
        """Drop test databases; FORCE, so a connection a test left open cannot keep one for the session."""
        import asyncpg

        admin = await asyncpg.connect(self.url)
        try:
            for name in names:
                await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        finally:
            await admin.close()

    def start(self) -> None:
        # A fresh directory under /tmp, not pytest's tmp_path: /tmp/pytest-of-root is 0700, so the postgres
        # user could not reach a data directory below it.
        self.workdir = Path(tempfile.mkdtemp(prefix="llmkit-pg-"))
        data = self.workdir / "data"
        pwfile = self.workdir / "password"
        pwfile.write_text(self.password + "\n")
        if self._as:
            entry = pwd.getpwnam(PG_SYSTEM_USER)
            for path in (self.workdir, pwfile):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        self._run(
            self.bindir / "initdb",
            f"--pgdata={data}",
            f"--username={self.user}",
            f"--pwfile={pwfile}",
            "--auth=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        )
        pwfile.unlink()
        log = open(self.workdir / "postgres.log", "wb")
        settings = {
            "listen_addresses": self.host,
            "port": str(self.port),
            "unix_socket_directories": str(self.workdir),
            "max_connections": str(MAX_CONNECTIONS),
            # Durability buys nothing for a throwaway test cluster and costs seconds per session.
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
        }
        args = [str(self.bindir / "postgres"), "-D", str(data)]
        for name, value in settings.items():
            args += ["-c", f"{name}={value}"]
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir, **self._as)
        log.close()
        self._wait_ready()

    def _run(self, *args: str | Path) -> None:
        """Run a PostgreSQL tool to completion (as the postgres user under root), failing with its output."""
        done = subprocess.run(
            [str(arg) for arg in args], capture_output=True, cwd=self.workdir, check=False, **self._as
        )
        if done.returncode != 0:
            output = (done.stdout + done.stderr).decode(errors="replace")
            raise RuntimeError(f"{Path(args[0]).name} exited with {done.returncode}:\n{output}")

    def _wait_ready(self, timeout: float = 30.0) -> None:
        """Block until the server accepts connections (not merely the port: startup refuses logins)."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        isready = [str(self.bindir / "pg_isready"), "-q", "-h", self.host, "-p", str(self.port)]
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited with {self.proc.returncode}:\n{self._log_tail()}")
            if subprocess.run(isready, check=False).returncode == 0:
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"postgres did not accept connections within {timeout}s:\n{self._log_tail()}")

    def _log_tail(self, lines: int = 30) -> str:
        path = self.workdir / "postgres.log" if self.workdir else None
        if path is None or not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            # SIGINT is PostgreSQL's fast shutdown: sessions are disconnected, no waiting for clients.
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None
