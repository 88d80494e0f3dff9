"""core.sqlite.run_in_background: a background writer's thread yields a busy core to the event loop."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import aiosqlite

from llmkit.core.sqlite import BACKGROUND_NICE, run_in_background
from llmkit.platform.analytics.sqlite import SqliteAnalyticsStore


def nice_of_thread(native_id: int) -> int:
    return os.getpriority(os.PRIO_PROCESS, native_id)


async def test_the_connection_thread_runs_at_a_lower_priority_and_the_loop_does_not(tmp_path: Path) -> None:
    before = nice_of_thread(threading.get_native_id())
    async with aiosqlite.connect(tmp_path / "x.db") as db:
        assert run_in_background(db)
        native = db._thread.native_id
        assert native is not None and native != threading.get_native_id()
        assert (
            nice_of_thread(native) == min(19, before + BACKGROUND_NICE)
            or nice_of_thread(native) == BACKGROUND_NICE
        )
        assert await (await db.execute("SELECT 1")).fetchall() == [(1,)]  # it still works
    assert nice_of_thread(threading.get_native_id()) == before  # the event loop's thread is untouched


async def test_the_analytics_store_writes_from_a_background_thread(tmp_path: Path) -> None:
    store = SqliteAnalyticsStore(tmp_path / "a.db")
    await store.open()
    try:
        conn = store._db()
        assert nice_of_thread(conn._thread.native_id or 0) >= BACKGROUND_NICE
    finally:
        await store.close()


async def test_something_that_is_not_an_aiosqlite_connection_is_left_alone() -> None:
    assert run_in_background(object()) is False  # type: ignore[arg-type]
