from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import typer
from typer.testing import CliRunner

from llmkit import __version__
from llmkit.cli.main import app

runner = CliRunner()


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"llmkit {__version__}"


def test_help_lists_the_commands_and_completion() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for name in ("config", "cache", "stats", "--install-completion", "--show-completion"):
        assert name in result.stdout


def _all_commands(group: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [path]
    if isinstance(group, typer.core.TyperGroup):
        for name, command in group.commands.items():
            found.extend(_all_commands(command, (*path, name)))
    return found


def test_every_command_has_help_with_an_example() -> None:
    root = typer.main.get_command(app)
    commands = _all_commands(root)
    assert ("config", "show") in commands
    for path in commands:
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, path
        assert "Example" in result.stdout, f"`llmkit {' '.join(path)} --help` has no example"


def test_flags_read_as_switches_in_every_help_page() -> None:
    for path in _all_commands(typer.main.get_command(app)):
        result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
        assert "<bool>" not in result.stdout, f"`llmkit {' '.join(path)} --help` shows a flag as a value"
    result = runner.invoke(app, ["orchestrate", "submit", "--help"], env={"COLUMNS": "200"})
    assert re.search(r"--wait +--no-wait", result.stdout)
    assert re.search(r"--json +Print JSON", result.stdout)


def test_config_show_json_tells_origins(tmp_path: Path) -> None:
    profile = tmp_path / "mine.yml"
    profile.write_text("queue:\n  capacity: 5\nclickhouse:\n  password: s3cret\n")
    result = runner.invoke(
        app, ["config", "show", "--profile", str(profile), "--json"], env={"LLMKIT_CACHE_TTL": "42"}
    )
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["profile"] == str(profile)
    settings = body["settings"]
    assert settings["queue.capacity"] == {"value": 5, "origin": f"profile {profile}"}
    assert settings["cache.ttl"] == {"value": 42.0, "origin": "env LLMKIT_CACHE_TTL"}
    assert settings["server.host"]["origin"] == "default"
    assert settings["clickhouse.password"]["value"] == "********"
    assert "s3cret" not in result.stdout


def test_config_show_table() -> None:
    result = runner.invoke(app, ["config", "show", "--profile", "local"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "cache.url" in result.stdout and "redis://127.0.0.1:6379/0?prefix=llmkit" in result.stdout


def test_config_errors_exit_2_with_the_message(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text("server:\n  wokers: 2\n")
    result = runner.invoke(app, ["config", "show", "--profile", str(bad)])
    assert result.exit_code == 2
    assert f"profile file {bad}: unknown key server.wokers" in result.stderr
    assert "valid keys in server: host, workers" in result.stderr
    result = runner.invoke(app, ["config", "show"], env={"LLMKIT_SERVER_WORKERS": "two"})
    assert result.exit_code == 2
    assert "LLMKIT_SERVER_WORKERS: must be an integer" in result.stderr


def test_startup_imports_nothing_heavy() -> None:
    # `llmkit --help` must stay as fast as a bare Typer app: servers and clients load when a command runs.
    import subprocess
    import sys

    code = (
        "import sys, llmkit.cli.main\n"
        "print(' '.join(m for m in ('asyncio', 'aiohttp', 'redis', 'rich', 'orjson', 'uvloop', "
        "'prometheus_client', 'yaml', 'clickhouse_driver', 'aiosqlite', 'llmkit.settings', 'llmkit.core', "
        "'llmkit.simulate') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""


def test_config_show_piped_prints_values_whole() -> None:
    # A pipe is no terminal: rich would cut the table to 80 columns and values with it.
    import subprocess
    import sys

    long_url = "redis://127.0.0.1:6379/0?prefix=" + "a-very-long-prefix-" * 8
    llmkit = str(Path(sys.executable).with_name("llmkit"))
    env = {"PATH": "/usr/bin:/bin", "LLMKIT_CACHE_URL": long_url}
    done = subprocess.run([llmkit, "config", "show"], capture_output=True, text=True, env=env, check=True)
    assert long_url in done.stdout
    assert "…" not in done.stdout
