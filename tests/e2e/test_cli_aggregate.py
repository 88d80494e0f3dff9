"""`llmkit aggregate` as users start it: help, the seed's environment variables, bad usage."""

from __future__ import annotations

import json
import subprocess
import urllib.request
from pathlib import Path

from tests.serve_process import LLMKIT, ServerProcess
from tests.servers import free_port


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [LLMKIT, "aggregate", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **(env or {})},
    )


def test_help_shows_examples() -> None:
    done = run("--help")
    assert done.returncode == 0
    assert "llmkit aggregate --port 8000" in done.stdout and "--ack" in done.stdout


def test_store_and_db_together_is_a_usage_error(tmp_path: Path) -> None:
    done = run("--store", f"sqlite:///{tmp_path}/a.db", "--db", str(tmp_path / "b.db"))
    assert done.returncode == 2 and "not both" in done.stderr


def test_a_bad_app_port_or_store_url_is_a_configuration_error(tmp_path: Path) -> None:
    done = run(env={"APP_PORT": "eighty"})
    assert done.returncode == 2 and "APP_PORT" in done.stderr
    done = run("--store", "postgres://x/y", "--port", "0")
    assert done.returncode == 2 and "known schemes: sqlite://, clickhouse://" in done.stderr


def test_flags_win_over_the_seed_variables(tmp_path: Path) -> None:
    env = {"APP_PORT": str(free_port()), "DEDUPLICATION_DB_PATH": str(tmp_path / "env.db")}
    args = ("--port", "0", "--db", str(tmp_path / "flag.db"), "--ack", "queued", "--channel-capacity", "5")
    with ServerProcess(tmp_path, *args, env=env, command="aggregate") as server:
        url = server.wait_listening()
        assert url != f"http://127.0.0.1:{env['APP_PORT']}"
        with urllib.request.urlopen(f"{url}/stats", timeout=10) as response:
            stats = json.loads(response.read())
    assert stats["store"]["where"] == str(tmp_path / "flag.db")
    assert (stats["ack"], stats["channel_capacity"]) == ("queued", 5)
    assert not (tmp_path / "env.db").exists()
