"""`llmkit gateway` refuses to start, promptly and clearly, when its platform store cannot serve it."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
from pathlib import Path

from llmkit.platform.store import platform_store_from_url
from llmkit.platform.store.migrations import LATEST
from tests.serve_process import LLMKIT
from tests.servers import free_port


def start(tmp_path: Path, url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LLMKIT_GATEWAY_PLATFORM_URL": url}
    return subprocess.run(
        [LLMKIT, "gateway", "--port", "0"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )


def test_a_store_migrated_by_a_newer_llmkit_exits_2(tmp_path: Path) -> None:
    async def migrate() -> None:
        store = platform_store_from_url(f"sqlite:///{tmp_path}/p.db")
        await store.open()
        await store.close()

    asyncio.run(migrate())
    with sqlite3.connect(tmp_path / "p.db") as conn:
        conn.execute("INSERT INTO llmkit_schema (version) VALUES (?)", (LATEST + 1,))
    done = start(tmp_path, f"sqlite:///{tmp_path}/p.db")
    assert done.returncode == 2, done.stderr
    assert f"schema version {LATEST + 1}" in done.stderr and "upgrade llmkit" in done.stderr


def test_an_unreachable_postgresql_fails_without_showing_its_password(tmp_path: Path) -> None:
    url = f"postgresql://llmkit:hunter2secret@127.0.0.1:{free_port()}/db"
    done = start(tmp_path, url)
    assert done.returncode != 0 and "platform store" in done.stderr
    assert "hunter2secret" not in done.stderr + done.stdout


def test_an_unsupported_database_exits_2_naming_the_supported_ones(tmp_path: Path) -> None:
    done = start(tmp_path, "mysql://u:p@127.0.0.1/db")
    assert done.returncode == 2 and "sqlite:///" in done.stderr and "postgresql://" in done.stderr
