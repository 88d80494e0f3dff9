"""offload.OffloadedStore: analytics batches written by a child process, and what happens when it fails."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from llmkit.errors import BackendError
from llmkit.platform.analytics import analytics_store_from_url
from llmkit.platform.analytics.offload import OffloadedStore
from llmkit.platform.analytics.record import QueryRecord
from llmkit.platform.analytics.writer import AnalyticsWriter

NOW = 1_718_452_800.0


def records(n: int, start: int = 0) -> list[QueryRecord]:
    return [
        QueryRecord(
            NOW - 60, "t", "k", "/v1/chat/completions", "m", f"q{i}", 200, 1.0, None, 1, 2, False, False, "u"
        )
        for i in range(start, start + n)
    ]


async def stored(store: OffloadedStore) -> int:
    return int((await store.stats(days=1, tenant_id=None, now=NOW))["requests"])


async def offloaded(tmp_path: Path, name: str = "a.db") -> OffloadedStore:
    url = f"sqlite:///{tmp_path}/{name}"
    store = OffloadedStore(url, analytics_store_from_url(url))
    await store.open()
    return store


def cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


async def test_batches_go_to_a_child_that_holds_no_url_on_its_command_line(tmp_path: Path) -> None:
    url = f"postgresql://llmkit:s3cret-pw@127.0.0.1:1/db?x={tmp_path}"  # never opened: only its command line
    store = await offloaded(tmp_path)
    try:
        assert store.pid is not None and store.pid != os.getpid()
        assert "sqlite" not in cmdline(store.pid) and "llmkit.platform.analytics.child" in cmdline(store.pid)
        await store.write(records(50))
        assert await stored(store) == 50
    finally:
        await store.close()
    assert store.pid is None
    refused = OffloadedStore(url, analytics_store_from_url(f"sqlite:///{tmp_path}/b.db"))
    with pytest.raises(BackendError) as failed:
        await refused.open()  # the child cannot reach that PostgreSQL: it says so, and nothing leaks
    assert "did not start" in str(failed.value) and "s3cret-pw" not in str(failed.value)


async def test_a_killed_child_is_started_again_and_the_writer_loses_nothing(tmp_path: Path) -> None:
    store = await offloaded(tmp_path)
    writer = AnalyticsWriter(store, batch_size=100, flush_interval=0.05, max_backoff=0.1, retention_days=None)
    writer.start()
    try:
        for rec in records(300):
            writer.record(rec)
        for _ in range(200):
            if writer.written == 300:
                break
            await asyncio.sleep(0.02)
        first = store.pid
        assert first is not None and writer.written == 300
        os.kill(first, signal.SIGKILL)
        for rec in records(300, start=300):
            writer.record(rec)
        for _ in range(400):
            if writer.written == 600:
                break
            await asyncio.sleep(0.02)
        assert writer.written == 600 and writer.dropped == 0
        assert store.pid not in (None, first) and store.restarts >= 1
        assert await stored(store) == 600
    finally:
        await writer.close()
        await store.close()


async def test_a_batch_the_child_could_not_finish_is_a_backend_error_then_written(tmp_path: Path) -> None:
    store = await offloaded(tmp_path)
    try:
        assert store.pid is not None
        os.kill(store.pid, signal.SIGKILL)
        await asyncio.sleep(0.1)  # dead, perhaps not yet reaped: the write meets a closed pipe or a restart
        try:
            await store.write(records(10))
        except BackendError as exc:
            assert "writer process" in str(exc)
            await store.write(records(10))  # the writer retries it: a new child takes it
        assert await stored(store) == 10
    finally:
        await store.close()


async def test_closing_lets_the_child_finish_and_exit(tmp_path: Path) -> None:
    store = await offloaded(tmp_path)
    child = store._child
    assert child is not None
    await store.write(records(5))
    await store.close()
    assert child.returncode == 0
    await store.close()  # twice is harmless


def test_the_gateway_setting_chooses_the_child_process_or_this_one(tmp_path: Path) -> None:
    from llmkit.platform.service import Platform, PlatformConfig
    from llmkit.settings import load_settings

    env = {"LLMKIT_GATEWAY_PLATFORM_URL": f"sqlite:///{tmp_path}/p.db"}
    default = Platform(PlatformConfig.from_settings(load_settings(None, env=env)))
    assert isinstance(default.analytics, OffloadedStore)  # the default: batches written by a child
    off = load_settings(None, env={**env, "LLMKIT_GATEWAY_ANALYTICS_WRITER_PROCESS": "false"})
    here = Platform(PlatformConfig.from_settings(off))
    assert here.analytics is not None and not isinstance(here.analytics, OffloadedStore)
