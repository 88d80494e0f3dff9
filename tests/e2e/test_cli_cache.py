"""`llmkit cache ...` against a real redis-server: in-process with CliRunner, and as a real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import redis
from typer.testing import CliRunner

from llmkit.cli.cache import app
from tests.servers import RedisServer, free_port

LLMKIT = Path(sys.executable).parent / "llmkit"
ANSWERS = {"hello.md": "# Hello\n\nHi there.\n", "pasta.md": "# Pasta\n\nBoil water. ✓\n", "zed.md": "z\n"}


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    for name in list(os.environ):
        if name.startswith("LLMKIT_"):
            monkeypatch.delenv(name)
    return CliRunner()


@pytest.fixture
def answers(tmp_path: Path) -> Path:
    folder = tmp_path / "answers"
    folder.mkdir()
    for name, text in ANSWERS.items():
        (folder / name).write_text(text, encoding="utf-8")
    (folder / "notes.txt").write_text("not markdown")
    return folder


@pytest.fixture
def raw(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A plain (sync) redis-py client, to check what the CLI wrote."""
    with redis.Redis.from_url(redis_server.url) as client:
        yield client


@pytest.fixture
def url(redis_server: RedisServer, redis_prefix: str) -> str:
    return f"{redis_server.url}?prefix={redis_prefix}"


def test_warm_then_keys_get_stats_clear(
    runner: CliRunner, answers: Path, url: str, redis_prefix: str, raw: redis.Redis
) -> None:
    result = runner.invoke(app, ["warm", "--from", str(answers), "--url", url])
    assert result.exit_code == 0, result.output
    assert "warmed 3 files" in result.stdout
    # The simulator's key names and TTLs: files with cache.ttl (3600 s by default), the list with 600 s.
    assert raw.get(f"{redis_prefix}:file:hello.md") == ANSWERS["hello.md"].encode()
    assert orjson.loads(raw.get(f"{redis_prefix}:file_list") or b"") == sorted(ANSWERS)
    assert 3590_000 < raw.pttl(f"{redis_prefix}:file:pasta.md") <= 3600_000
    assert 590_000 < raw.pttl(f"{redis_prefix}:file_list") <= 600_000

    result = runner.invoke(app, ["keys", "--url", url])
    assert result.exit_code == 0
    assert result.stdout.splitlines() == ["file:hello.md", "file:pasta.md", "file:zed.md", "file_list"]
    result = runner.invoke(app, ["keys", "file:*a*", "--url", url])
    assert result.stdout.splitlines() == ["file:pasta.md"]

    result = runner.invoke(app, ["get", "file:pasta.md", "--url", url])
    assert result.exit_code == 0
    assert result.stdout == ANSWERS["pasta.md"]
    result = runner.invoke(app, ["get", f"{redis_prefix}:file_list", "--url", url])
    assert orjson.loads(result.stdout) == sorted(ANSWERS)

    result = runner.invoke(app, ["stats", "--json", "--url", url])
    assert result.exit_code == 0
    report = orjson.loads(result.stdout)
    assert report["prefix"] == redis_prefix
    assert report["keys"] == 4
    assert report["segments"] == {"file": 3, "file_list": 1}
    assert report["ttl"]["no_ttl"] == 0
    assert 590 < report["ttl"]["min"] <= 600
    assert 3590 < report["ttl"]["max"] <= 3600
    assert report["memory"]["used_bytes"] > 0

    result = runner.invoke(app, ["stats", "--url", url])
    assert result.exit_code == 0
    assert "file_list" in result.stdout
    assert "Redis memory used" in result.stdout

    result = runner.invoke(app, ["clear", "--yes", "--url", url])
    assert result.exit_code == 0
    assert "deleted 4 keys" in result.stdout
    assert raw.exists(f"{redis_prefix}:file:hello.md", f"{redis_prefix}:file_list") == 0


def test_prefix_option_overrides_the_url(
    runner: CliRunner, answers: Path, redis_server: RedisServer, redis_prefix: str, raw: redis.Redis
) -> None:
    url = f"{redis_server.url}?prefix=ignored"
    result = runner.invoke(app, ["warm", "--from", str(answers), "--url", url, "--prefix", redis_prefix])
    assert result.exit_code == 0, result.output
    assert raw.exists(f"{redis_prefix}:file_list") == 1
    assert raw.exists("ignored:file_list") == 0


def test_warm_uses_the_profile_ttl(
    runner: CliRunner,
    answers: Path,
    tmp_path: Path,
    redis_server: RedisServer,
    redis_prefix: str,
    raw: redis.Redis,
) -> None:
    profile = tmp_path / "p.yml"
    profile.write_text(f"cache:\n  url: {redis_server.url}?prefix={redis_prefix}\n  ttl: 120\n")
    result = runner.invoke(app, ["warm", "--from", str(answers), "--profile", str(profile)])
    assert result.exit_code == 0, result.output
    assert 110_000 < raw.pttl(f"{redis_prefix}:file:zed.md") <= 120_000
    assert 590_000 < raw.pttl(f"{redis_prefix}:file_list") <= 600_000


def test_get_prints_binary_values_as_they_are(
    runner: CliRunner, url: str, redis_prefix: str, raw: redis.Redis
) -> None:
    raw.set(f"{redis_prefix}:bin", b"\x00\xff\xfe")
    result = runner.invoke(app, ["get", "bin", "--url", url])
    assert result.exit_code == 0
    assert result.stdout_bytes == b"\x00\xff\xfe\n"


def test_get_missing_key_exits_1(runner: CliRunner, url: str, redis_prefix: str) -> None:
    result = runner.invoke(app, ["get", "nope", "--url", url])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == f"llmkit: no key {redis_prefix}:nope at {url}\n"


def test_keys_limit_says_the_list_was_cut(
    runner: CliRunner, url: str, redis_prefix: str, raw: redis.Redis
) -> None:
    raw.mset({f"{redis_prefix}:k{i}": b"v" for i in range(5)})
    result = runner.invoke(app, ["keys", "--limit", "3", "--url", url])
    assert result.exit_code == 0
    assert len(result.stdout.splitlines()) == 3
    assert "first 3 keys" in result.stderr


@pytest.mark.parametrize("answer", ["n\n", ""])
def test_clear_not_confirmed_deletes_nothing(
    runner: CliRunner, url: str, redis_prefix: str, raw: redis.Redis, answer: str
) -> None:
    raw.set(f"{redis_prefix}:k", b"v")
    result = runner.invoke(app, ["clear", "--url", url], input=answer)
    assert result.exit_code == 1
    assert "Delete 1 key matching" in result.stdout
    assert "nothing deleted" in result.stderr
    assert raw.get(f"{redis_prefix}:k") == b"v"


def test_clear_confirmed_and_only(runner: CliRunner, url: str, redis_prefix: str, raw: redis.Redis) -> None:
    raw.mset({f"{redis_prefix}:file:a": b"1", f"{redis_prefix}:file:b": b"1", f"{redis_prefix}:other": b"1"})
    result = runner.invoke(app, ["clear", "--only", "file:", "--url", url], input="y\n")
    assert result.exit_code == 0
    assert "deleted 2 keys" in result.stdout
    assert raw.get(f"{redis_prefix}:other") == b"1"
    result = runner.invoke(app, ["clear", "--only", "file:", "--url", url])
    assert result.exit_code == 0
    assert "nothing to delete" in result.stdout


def test_memory_url_exits_2(runner: CliRunner) -> None:
    result = runner.invoke(app, ["stats", "--url", "memory://?max_size_mb=10"])
    assert result.exit_code == 2
    assert "needs a Redis URL" in result.stderr
    assert "--profile local" in result.stderr


def test_default_profile_is_memory_so_exits_2(runner: CliRunner) -> None:
    result = runner.invoke(app, ["keys"])
    assert result.exit_code == 2
    assert "needs a Redis URL" in result.stderr


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("redis://127.0.0.1/0?bogus=1", "unknown parameter bogus"),
        ("ftp://127.0.0.1/0", "known schemes: memory://"),
    ],
)
def test_bad_url_exits_2(runner: CliRunner, url: str, fragment: str) -> None:
    result = runner.invoke(app, ["keys", "--url", url])
    assert result.exit_code == 2
    assert fragment in result.stderr
    assert len(result.stderr.splitlines()) == 1


def test_warm_needs_a_directory_of_markdown(runner: CliRunner, tmp_path: Path, url: str) -> None:
    result = runner.invoke(app, ["warm", "--from", str(tmp_path / "missing"), "--url", url])
    assert result.exit_code == 2
    assert "not a directory" in result.stderr
    result = runner.invoke(app, ["warm", "--from", str(tmp_path), "--url", url])
    assert result.exit_code == 1
    assert "no *.md files" in result.stderr


def test_unreachable_redis_exits_1_in_one_line(runner: CliRunner) -> None:
    port = free_port()
    result = runner.invoke(app, ["stats", "--url", f"redis://:hunter2@127.0.0.1:{port}/0?timeout=1"])
    assert result.exit_code == 1
    masked = f"redis://:****@127.0.0.1:{port}/0?timeout=1"
    assert result.stderr.startswith(f"llmkit: cannot reach Redis at {masked}: ")
    assert len(result.stderr.splitlines()) == 1
    assert "hunter2" not in result.stderr


# The same, as a user runs it: the installed console script in a child process.


def llmkit(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run the console script with no stdin (as in CI) and no LLMKIT_* variables from this environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMKIT_")}
    return subprocess.run(
        [str(LLMKIT), *args],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_subprocess_session(
    answers: Path, tmp_path: Path, url: str, redis_prefix: str, raw: redis.Redis
) -> None:
    done = llmkit("cache", "warm", "--from", str(answers), "--url", url, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "warmed 3 files" in done.stdout

    done = llmkit("cache", "keys", "file:*", "--url", url, cwd=tmp_path)
    assert done.returncode == 0
    assert done.stdout.splitlines() == ["file:hello.md", "file:pasta.md", "file:zed.md"]

    done = llmkit("cache", "get", "file:hello.md", "--url", url, cwd=tmp_path)
    assert done.returncode == 0
    assert done.stdout == ANSWERS["hello.md"]

    done = llmkit("cache", "stats", "--json", "--url", url, cwd=tmp_path)
    assert done.returncode == 0
    assert orjson.loads(done.stdout)["segments"] == {"file": 3, "file_list": 1}

    done = llmkit("cache", "clear", "--url", url, cwd=tmp_path)  # stdin is empty: not confirmed
    assert done.returncode == 1
    assert raw.exists(f"{redis_prefix}:file_list") == 1

    done = llmkit("cache", "clear", "--yes", "--url", url, cwd=tmp_path)
    assert done.returncode == 0
    assert "deleted 4 keys" in done.stdout
    assert raw.exists(f"{redis_prefix}:file_list") == 0


def test_subprocess_unreachable_redis(tmp_path: Path) -> None:
    port = free_port()
    done = llmkit("cache", "keys", "--url", f"redis://:pw@127.0.0.1:{port}/0", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"llmkit: cannot reach Redis at redis://:****@127.0.0.1:{port}/0")
    assert "Traceback" not in done.stderr


def test_subprocess_memory_url_exits_2(tmp_path: Path) -> None:
    done = llmkit("cache", "stats", "--url", "memory://", cwd=tmp_path)
    assert done.returncode == 2
    assert len(done.stderr.splitlines()) == 1
    assert "needs a Redis URL" in done.stderr


def test_subprocess_help_lists_the_commands(tmp_path: Path) -> None:
    done = llmkit("cache", "--help", cwd=tmp_path)
    assert done.returncode == 0
    for command in ("stats", "keys", "get", "clear", "warm"):
        assert command in done.stdout
