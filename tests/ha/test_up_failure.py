"""An `up` that fails part-way stops what it had started, names the process and shows its log."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.ha.conftest import SCRIPT

# An up that starts the stores and every server, then a stop: more than the default 120 s on a loaded machine.
pytestmark = pytest.mark.timeout(300)


def processes_in(folder: Path) -> list[str]:
    """Every live process whose working directory or command line is inside folder."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(entry / "cwd")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and (str(folder) in cmdline or cwd.startswith(str(folder))):
            found.append(f"{entry.name}: {cmdline}")
    return found


def test_up_that_fails_part_way_stops_what_it_started() -> None:
    folder = Path(tempfile.mkdtemp(prefix="llmkit-ha-fail-"))
    try:
        # The stores, HAProxy and the other servers start; every gateway refuses its analytics URL and exits.
        env = {**os.environ, "LLMKIT_GATEWAY_ANALYTICS_URL": "bogus://nowhere"}
        done = subprocess.run(
            [str(SCRIPT), "up", "--replicas", "1", "--dir", str(folder)],
            capture_output=True,
            text=True,
            timeout=240,
            env=env,
            check=False,
        )
        assert done.returncode == 1, done.stdout + done.stderr
        assert "up failed: gateway-1 exited" in done.stderr, done.stderr
        assert f"last lines of {folder}/logs/gateway-1.log" in done.stderr
        assert "unknown scheme 'bogus'" in done.stderr  # the gateway's own complaint, from its log
        assert "every process it had started was stopped" in done.stderr
        assert not done.stdout.strip().endswith("}")  # no JSON line: the cluster never came up
        assert processes_in(folder) == []
        assert not (folder / "state.json").exists()
        assert (folder / "logs" / "postgres-1.log").exists()  # the logs stay, for a look
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_up_refuses_a_directory_it_did_not_make() -> None:
    folder = Path(tempfile.mkdtemp(prefix="llmkit-ha-foreign-"))
    try:
        (folder / "notes.txt").write_text("mine\n")
        done = subprocess.run(
            [str(SCRIPT), "up", "--dir", str(folder)], capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode == 1 and "not empty and was not made by ha-local" in done.stderr, done.stderr
        assert [path.name for path in folder.iterdir()] == ["notes.txt"]
    finally:
        shutil.rmtree(folder)
