"""The whole HA topology, started once for tests/ha by `scripts/ha-local.sh up` as a user runs it."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from llmkit.localcluster.cluster import StartError
from llmkit.localcluster.launch import binaries
from tests.ha import report

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "ha-local.sh"
REPLICAS = 3


@dataclass
class LocalCluster:
    """What `up` printed, and how to run the script's other commands on the same directory."""

    dir: Path
    info: dict[str, Any]

    def urls(self, role: str) -> list[str]:
        """The direct URLs of every process of a role, in start order."""
        return [p["url"] for p in self.info["processes"] if p["role"] == role]

    def pids(self, role: str | None = None) -> list[int]:
        return [int(p["pid"]) for p in self.info["processes"] if role is None or p["role"] == role]

    def process(self, role: str, index: int) -> dict[str, Any]:
        """The index-th (from 1) process of a role."""
        return [p for p in self.info["processes"] if p["role"] == role][index - 1]

    def run(self, command: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """`scripts/ha-local.sh COMMAND [ARGS] --dir DIR`."""
        return subprocess.run(
            [str(SCRIPT), command, *args, "--dir", str(self.dir)],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def restart(self, role: str, index: int) -> None:
        """`restart ROLE N`: start one server again (it waits until HAProxy has it UP); info follows."""
        done = self.run("restart", role, str(index))
        assert done.returncode == 0, f"restart {role} {index}: {done.stdout}\n{done.stderr}"
        self.info = json.loads(done.stdout.strip().splitlines()[-1])

    async def exit_code(self, pid: int, timeout: float = 60) -> int:
        """The exit code of a cluster process once it ends (this process adopted it: see adopt_orphans)."""
        deadline = time.monotonic() + timeout
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done == pid:
                return os.waitstatus_to_exitcode(status)
            assert time.monotonic() < deadline, f"pid {pid} still running after {timeout}s"
            await asyncio.sleep(0.05)


def adopt_orphans() -> None:
    """Make this process the child subreaper of what it starts (Linux prctl PR_SET_CHILD_SUBREAPER).

    `up` starts the servers and exits; its orphans are then re-parented here instead of to init, so a test
    can wait for a server it stopped and read its exit code."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(36, 1, 0, 0, 0) != 0:  # PR_SET_CHILD_SUBREAPER
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def reap_orphans() -> None:
    """Collect the exit status of every adopted process that has ended (no zombies left behind)."""
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass


@contextlib.contextmanager
def local_cluster(env: Mapping[str, str] | None = None) -> Iterator[LocalCluster]:
    """`up --replicas 3` (with `env` added to the servers' environment); `down` after the block."""
    try:
        binaries()
    except StartError as exc:  # `make test-ha` installs them; a missing one is an error, never a skip
        pytest.fail(f"the HA cluster cannot start: {exc}", pytrace=False)
    adopt_orphans()
    # Under /tmp, not pytest's tmp_path (0700 below /tmp/pytest-of-root: the postgres user cannot enter).
    folder = Path(tempfile.mkdtemp(prefix="llmkit-ha-test-"))
    local = LocalCluster(folder, {})
    try:
        done = subprocess.run(
            [str(SCRIPT), "up", "--replicas", str(REPLICAS), "--dir", str(folder)],
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
            env={**os.environ, **(env or {})},
        )
        if done.returncode != 0:
            pytest.fail(
                f"ha-local.sh up exited {done.returncode}:\n{done.stdout}\n{done.stderr}", pytrace=False
            )
        local.info = json.loads(done.stdout.strip().splitlines()[-1])
        yield local
    finally:
        # Also after an up that timed out: what it had started is in the state file, and down stops it.
        if folder.exists():  # the last test runs `down` itself
            local.run("down")
            shutil.rmtree(folder, ignore_errors=True)
        reap_orphans()


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with local_cluster() as local:
        yield local


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Write the fault report of what ran (docs/ha.md too after a whole passing run of every fault)."""
    written = report.write(passed=exitstatus == 0)
    if written is not None:
        session.config.get_terminal_writer().line(f"ha fault report: {written}")
