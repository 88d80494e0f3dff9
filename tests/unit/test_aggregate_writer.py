"""GroupWriter: group commit, the capacity bound, failures reach every waiter, close drains the channel."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from llmkit.aggregate.store.base import Row
from llmkit.aggregate.writer import ChannelFull, Closing, GroupWriter
from llmkit.errors import BackendError


def rows(*ids: str) -> list[Row]:
    return [("t", i, "s", 0, b"{}") for i in ids]


class RecordingStore:
    """Remembers keys like a unique index; each write waits for `gate`."""

    kind, where = "memory", "test"

    def __init__(self) -> None:
        self.keys: set[tuple[str, str]] = set()
        self.calls: list[list[int]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.error: Exception | None = None

    async def write(self, batches: Sequence[Sequence[Row]]) -> list[int]:
        await self.gate.wait()
        if self.error is not None:
            raise self.error
        self.calls.append([len(b) for b in batches])
        new = []
        for batch in batches:
            before = len(self.keys)
            self.keys.update((row[0], row[1]) for row in batch)
            new.append(len(self.keys) - before)
        return new


async def test_waiting_batches_are_committed_together_with_their_own_new_counts() -> None:
    store = RecordingStore()
    writer = GroupWriter(store, capacity=100, group_max_events=100)  # type: ignore[arg-type]
    writer.start()
    store.gate.clear()
    first = writer.offer(rows("a"))
    await asyncio.sleep(0)
    later = [writer.offer(rows("b", "c")), writer.offer(rows("c", "d")), writer.offer(rows("a"))]
    store.gate.set()
    assert await first == 1
    assert [await f for f in later if f is not None] == [2, 1, 0]
    assert store.calls == [[1], [2, 2, 1]]
    await writer.close()


async def test_group_max_events_splits_groups() -> None:
    store = RecordingStore()
    writer = GroupWriter(store, capacity=100, group_max_events=3)  # type: ignore[arg-type]
    futures = [writer.offer(rows(f"{i}a", f"{i}b")) for i in range(3)]
    writer.start()
    await asyncio.gather(*[f for f in futures if f is not None])
    assert store.calls == [[2], [2], [2]]
    await writer.close()


async def test_capacity_refuses_what_does_not_fit_but_an_empty_channel_takes_any_batch() -> None:
    store = RecordingStore()
    store.gate.clear()
    writer = GroupWriter(store, capacity=3, group_max_events=10)  # type: ignore[arg-type]
    writer.start()
    big = writer.offer(rows("1", "2", "3", "4", "5"))
    with pytest.raises(ChannelFull) as caught:
        writer.offer(rows("6"))
    assert caught.value.retry_after >= 1 and "channel_capacity" in str(caught.value)
    store.gate.set()
    assert big is not None and await big == 5
    assert writer.pending == 0
    await writer.offer(rows("6"))  # type: ignore[misc]
    await writer.close()


async def test_a_failed_commit_fails_every_waiter_and_the_writer_goes_on() -> None:
    store = RecordingStore()
    store.error = RuntimeError("boom")
    writer = GroupWriter(store, capacity=10, group_max_events=10)  # type: ignore[arg-type]
    writer.start()
    future = writer.offer(rows("a"))
    with pytest.raises(BackendError, match="boom"):
        await future  # type: ignore[misc]
    store.error = None
    assert await writer.offer(rows("a")) == 1  # type: ignore[misc]
    assert writer.failures == 1 and writer.pending == 0
    await writer.close()


async def test_close_commits_what_waits_and_refuses_more() -> None:
    store = RecordingStore()
    writer = GroupWriter(store, capacity=10, group_max_events=10)  # type: ignore[arg-type]
    writer.start()
    assert writer.offer(rows("q1", "q2"), wait=False) is None
    await writer.close()
    assert store.keys == {("t", "q1"), ("t", "q2")}
    with pytest.raises(Closing):
        writer.offer(rows("late"))
