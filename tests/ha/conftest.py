"""The whole HA topology, started once for tests/ha by `scripts/ha-local.sh up` as a user runs it."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from llmkit.localcluster.cluster import StartError
from llmkit.localcluster.launch import binaries

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

    def run(self, command: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """`scripts/ha-local.sh COMMAND --dir DIR`."""
        return subprocess.run(
            [str(SCRIPT), command, "--dir", str(self.dir)],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    try:
        binaries()
    except StartError as exc:  # `make test-ha` installs them; a missing one is an error, never a skip
        pytest.fail(f"the HA cluster cannot start: {exc}", pytrace=False)
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
