"""MemoryPriorityQueue details on a controlled clock, Priority parsing, and queue_from_url's table."""

from __future__ import annotations

import pytest

from llmkit.core.queue import Priority, QueueClosed, queue_from_url
from llmkit.core.queue.memory import MemoryPriorityQueue
from llmkit.core.queue.redis import RedisPriorityQueue
from llmkit.errors import ConfigError
from tests.clock import Clock


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("critical", Priority.CRITICAL),
        ("High", Priority.HIGH),
        (2, Priority.NORMAL),
        (Priority.LOW, Priority.LOW),
    ],
)
def test_priorities_parse_from_names_and_values(value: str | int, expected: Priority) -> None:
    assert Priority.parse(value) is expected


@pytest.mark.parametrize("value", ["urgent", "", 4, -1, True])
def test_unknown_priorities_list_the_valid_ones(value: str | int) -> None:
    with pytest.raises(ValueError, match="valid priorities: critical, high, normal, low"):
        Priority.parse(value)


async def test_oldest_wait_is_measured_from_the_oldest_item_of_any_level() -> None:
    clock = Clock(1_700_000_000.0)
    queue = MemoryPriorityQueue("q", 10, clock=clock)
    await queue.put("low", b"", "low")
    clock.now += 30
    await queue.put("critical", b"", "critical")
    clock.now += 12
    stats = await queue.stats()
    assert stats.oldest_wait == 42
    item = await queue.get(timeout=0)
    assert item is not None and (item.id, item.enqueued_at) == ("critical", 1_700_000_030.0)


async def test_a_closed_queue_refuses_puts_and_answers_none() -> None:
    queue = MemoryPriorityQueue("q", 10)
    await queue.put("a", b"")
    await queue.close()
    with pytest.raises(QueueClosed):
        await queue.put("b", b"")
    assert await queue.get(timeout=None) is not None  # what was queued can still be taken
    assert await queue.get(timeout=None) is None


async def test_positions_are_exact_in_a_long_queue() -> None:
    queue = MemoryPriorityQueue("q", 10_000)
    for i in range(5000):
        await queue.put(f"n{i}", b"", "normal" if i % 2 else "low")
    # Normal items (odd i) come first in arrival order, then low ones.
    assert await queue.position("n4999") == 2499
    assert await queue.position("n0") == 2500
    assert await queue.cancel("n1")
    assert await queue.position("n4999") == 2498


async def test_leases_run_on_the_queue_clock_and_are_reclaimed_by_any_look() -> None:
    clock = Clock(1_700_000_000.0)
    queue = MemoryPriorityQueue("q", 10, clock=clock)
    await queue.put("a", b"")
    item = await queue.get(timeout=0, lease=10)
    assert item is not None
    clock.now += 9.999
    assert (await queue.size(), (await queue.stats()).in_flight) == (0, 1)
    clock.now += 0.001  # exactly at the deadline the lease is over
    assert await queue.position("a") == 0
    stats = await queue.stats()
    assert (stats.total, stats.in_flight) == (1, 0)
    assert stats.oldest_wait == 10  # it still counts from when it was first queued
    assert await queue.ack("a", item.token) is False
    await queue.close()


async def test_extend_counts_from_now() -> None:
    clock = Clock(1_700_000_000.0)
    queue = MemoryPriorityQueue("q", 10, clock=clock)
    await queue.put("a", b"")
    item = await queue.get(timeout=0, lease=10)
    assert item is not None
    clock.now += 8
    assert await queue.extend("a", item.token, 5) is True  # deadline now + 5, not the old one + 5
    clock.now += 4.5
    assert await queue.size() == 0
    assert await queue.extend("a", item.token, 1) is True  # shortening is allowed too
    clock.now += 1
    assert await queue.size() == 1
    assert await queue.extend("a", item.token, 5) is False
    await queue.close()


async def test_returned_items_line_up_by_arrival_within_their_level() -> None:
    clock = Clock(1_700_000_000.0)
    queue = MemoryPriorityQueue("q", 10, clock=clock)
    for item_id, priority in [("n1", "normal"), ("n2", "normal"), ("n3", "normal"), ("h1", "high")]:
        await queue.put(item_id, b"", priority)
    taken = [await queue.get(timeout=0, lease=10) for _ in range(3)]
    assert [item.id for item in taken if item is not None] == ["h1", "n1", "n2"]
    await queue.put("n4", b"")
    h1, n1, n2 = (item for item in taken if item is not None)
    assert await queue.release(n2.id, n2.token)
    clock.now += 10  # n1 and h1 run out after n2 came back
    items = [await queue.get(timeout=0) for _ in range(5)]
    assert [(item.id, item.deliveries) for item in items if item is not None] == [
        ("h1", 2),
        ("n1", 2),
        ("n2", 2),
        ("n3", 1),
        ("n4", 1),
    ]
    await queue.close()


async def test_acked_leases_leave_no_expiry_entries_piling_up() -> None:
    queue = MemoryPriorityQueue("q", 10)
    for i in range(1000):
        await queue.put(f"i{i}", b"")
        item = await queue.get(timeout=0, lease=3600)
        assert item is not None and await queue.ack(item.id, item.token)
    # Each ack leaves an entry due in an hour; the heap is compacted rather than holding all 1000.
    assert len(queue._expiries) < 100
    await queue.close()


async def test_queue_urls_go_through_one_table() -> None:
    memory = queue_from_url("memory://", "jobs", 5)
    assert isinstance(memory, MemoryPriorityQueue) and memory.capacity == 5
    redis = queue_from_url("redis://127.0.0.1:1/2?prefix=app&timeout=0.5", "jobs", 7)
    assert isinstance(redis, RedisPriorityQueue) and redis.capacity == 7
    await redis.close()
    with pytest.raises(ConfigError, match="known schemes: memory://, redis://"):
        queue_from_url("sqs://queue", "jobs", 5)
    with pytest.raises(ConfigError, match="valid parameters: none"):
        queue_from_url("memory://?prefix=x", "jobs", 5)
    with pytest.raises(ConfigError, match="capacity"):
        queue_from_url("memory://", "jobs", 0)
