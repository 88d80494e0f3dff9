"""AnalyticsWriter: drop-oldest accounting, batching, retries after a failing store, close, retention."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

import pytest

from llmkit.errors import BackendError
from llmkit.platform.analytics.base import DAY
from llmkit.platform.analytics.record import QueryRecord, to_row
from llmkit.platform.analytics.writer import AnalyticsWriter


def rec(i: int, query: str = "q") -> QueryRecord:
    return QueryRecord(
        ts=float(i),
        tenant_id="t",
        key_id="k",
        route="/v1/chat/completions",
        model="m",
        query=query,
        status=200,
        latency_ms=1.0,
        ttfb_ms=None,
        tokens_in=1,
        tokens_out=1,
        cached=False,
        coalesced=False,
        upstream="u",
    )


class FakeStore:
    """Keeps what it is given (as rows, like a real store builds them); can fail or hang on demand."""

    kind, where = "fake", "fake://"

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.fail_next = 0
        self.down = False
        self.gate = asyncio.Event()
        self.gate.set()
        self.purges: list[float] = []
        self.purge_error: Exception | None = None

    @property
    def written(self) -> list[int]:
        return [i for batch in self.batches for i in batch]

    async def write(self, records: Sequence[QueryRecord]) -> None:
        await self.gate.wait()
        if self.down or self.fail_next:
            self.fail_next = max(0, self.fail_next - 1)
            raise BackendError("cannot reach the store at fake://")
        rows = [to_row(r) for r in records]
        self.batches.append([int(row[0]) for row in rows])

    async def purge(self, older_than: float) -> int:
        self.purges.append(older_than)
        if self.purge_error is not None:
            raise self.purge_error
        return 2


async def until(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


def balanced(writer: AnalyticsWriter) -> bool:
    s = writer.stats()
    return bool(s["recorded"] == s["written"] + s["dropped"] + s["buffered"] + s["in_flight"])


def make(store: FakeStore, **kw: Any) -> AnalyticsWriter:
    kw.setdefault("flush_interval", 0.01)
    kw.setdefault("retention_days", None)
    return AnalyticsWriter(store, **kw)  # type: ignore[arg-type]


async def test_a_full_buffer_drops_the_oldest_and_counts_it() -> None:
    store = FakeStore()
    writer = make(store, max_buffer=3)
    for i in range(5):
        writer.record(rec(i))
    assert writer.stats() | {"last_error": None} == {
        "store": "fake",
        "recorded": 5,
        "written": 0,
        "dropped": 2,
        "buffered": 3,
        "in_flight": 0,
        "failed_batches": 0,
        "purged": 0,
        "last_error": None,
    }
    writer.start()
    await writer.close()
    assert store.written == [2, 3, 4]
    assert writer.stats()["written"] == 3 and balanced(writer)


async def test_full_batches_are_written_without_waiting_for_the_interval() -> None:
    store = FakeStore()
    writer = make(store, batch_size=1000, flush_interval=30.0)
    writer.start()
    for i in range(2500):
        writer.record(rec(i))
    await until(lambda: len(store.written) >= 2000)
    assert [len(b) for b in store.batches] == [1000, 1000]
    await writer.close()
    assert [len(b) for b in store.batches] == [1000, 1000, 500]
    assert store.written == list(range(2500))


async def test_a_partial_batch_goes_after_the_flush_interval() -> None:
    store = FakeStore()
    writer = make(store, batch_size=1000, flush_interval=0.02)
    writer.start()
    for i in range(5):
        writer.record(rec(i))
    await until(lambda: store.written == [0, 1, 2, 3, 4])
    assert writer.stats()["buffered"] == 0
    await writer.close()


async def test_a_failing_store_is_retried_and_warned_about_once(caplog: pytest.LogCaptureFixture) -> None:
    store = FakeStore()
    store.fail_next = 3
    writer = make(store, batch_size=4, max_backoff=0.02)
    caplog.set_level(logging.INFO, logger="llmkit.platform.analytics")
    for i in range(10):
        writer.record(rec(i, query="a secret question"))
    writer.start()
    await until(lambda: writer.stats()["written"] == 10)
    stats = writer.stats()
    assert stats["failed_batches"] == 3 and stats["dropped"] == 0
    assert stats["last_error"] == "BackendError: cannot reach the store at fake://"
    assert store.written == list(range(10))  # the failed batch went back in front, in order
    failed = [r for r in caplog.records if "wait for a retry" in r.getMessage()]
    assert len(failed) == 1
    assert any("writing again" in r.getMessage() for r in caplog.records)
    assert "secret question" not in caplog.text
    await writer.close()


async def test_an_outage_keeps_at_most_max_buffer_records() -> None:
    store = FakeStore()
    store.down = True
    writer = make(store, max_buffer=50, batch_size=10, max_backoff=0.01)
    writer.start()
    for i in range(200):
        writer.record(rec(i))
        if i % 20 == 0:
            await asyncio.sleep(0.002)
    await until(lambda: writer.stats()["failed_batches"] >= 3)
    stats = writer.stats()
    assert stats["buffered"] + stats["in_flight"] <= 50 and balanced(writer)
    store.down = False
    await until(lambda: writer.stats()["buffered"] == 0 and writer.stats()["in_flight"] == 0)
    stats = writer.stats()
    assert stats["written"] == 50 and stats["dropped"] == 150
    assert store.written == list(range(150, 200))  # the newest survive
    await writer.close()


async def test_close_writes_what_is_buffered() -> None:
    store = FakeStore()
    writer = make(store, batch_size=3, flush_interval=30.0)
    writer.start()
    for i in range(7):
        writer.record(rec(i))
    await writer.close()
    assert store.written == list(range(7)) and writer.stats()["buffered"] == 0


async def test_close_without_start_still_flushes() -> None:
    store = FakeStore()
    writer = make(store)
    writer.record(rec(1))
    await writer.close()
    assert store.written == [1]


async def test_close_is_bounded_when_the_store_hangs() -> None:
    store = FakeStore()
    store.gate.clear()
    writer = make(store, batch_size=2)
    writer.start()
    for i in range(5):
        writer.record(rec(i))
    started = time.monotonic()
    await writer.close(timeout=0.1)
    assert time.monotonic() - started < 2.0
    stats = writer.stats()
    assert stats["written"] == 0 and stats["buffered"] == 5 and balanced(writer)


async def test_record_never_raises() -> None:
    store = FakeStore()
    writer = make(store)
    writer.start()
    writer.record(rec(1))
    writer.record(None)  # type: ignore[arg-type]  # a caller bug: the batch it lands in cannot be stored
    await until(lambda: writer.stats()["buffered"] == 0 and writer.stats()["in_flight"] == 0)
    writer.record(rec(2))
    await writer.close()
    writer.record(rec(3))  # after close: counted as dropped, not raised
    stats = writer.stats()
    assert stats["recorded"] == 4 and balanced(writer)
    assert 2 in store.written and 3 not in store.written
    assert stats["dropped"] >= 2  # the poisoned batch and the late record


async def test_retention_purges_at_start_and_every_interval(caplog: pytest.LogCaptureFixture) -> None:
    store = FakeStore()
    now = 1000 * DAY
    writer = AnalyticsWriter(
        store,  # type: ignore[arg-type]
        retention_days=90,
        clock=lambda: now,
        purge_interval=0.02,
        flush_interval=0.01,
    )
    writer.start()
    await until(lambda: len(store.purges) >= 1)
    assert store.purges[0] == now - 90 * DAY
    store.purge_error = BackendError("purge refused")
    await until(lambda: len(store.purges) >= 3)
    assert any("purge" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    await writer.close()
    assert writer.stats()["purged"] >= 2


async def test_no_retention_never_purges() -> None:
    store = FakeStore()
    writer = make(store, retention_days=None)
    writer.start()
    await asyncio.sleep(0.05)
    await writer.close()
    assert store.purges == []
