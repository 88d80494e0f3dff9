"""A real PostgreSQL server (Debian's postgresql package) on a free loopback port, for the test session."""

from __future__ import annotations

import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from llmkit.localcluster import services
from llmkit.localcluster.services import PG_ROOT
from tests.servers import free_port

# Per-test databases and pools add up over a session; the default of 100 leaves little headroom.
MAX_CONNECTIONS = 300


def postgres_bindir() -> Path:
    """The bin directory of the newest PostgreSQL under /usr/lib/postgresql; a missing one fails the test."""
    found = services.postgres_bindir()
    if found is None:
        pytest.fail(
            f"PostgreSQL is not installed (no {PG_ROOT}/*/bin/initdb); run `make test` (it installs it) "
            "or apt-get install postgresql",
            pytrace=False,
        )
    return found


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
        self._as: dict[str, Any] = services.postgres_user_args()

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
        services.initdb(self.bindir, data, self.user, self.password, self.workdir)
        log = open(self.workdir / "postgres.log", "wb")
        args = services.postgres_args(self.bindir, data, self.port, self.workdir, MAX_CONNECTIONS)
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir, **self._as)
        log.close()
        self._wait_ready()

    def _wait_ready(self, timeout: float = 30.0) -> None:
        """Block until the server accepts connections (not merely the port: startup refuses logins)."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited with {self.proc.returncode}:\n{self._log_tail()}")
            if services.postgres_ready(self.bindir, self.port):
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
