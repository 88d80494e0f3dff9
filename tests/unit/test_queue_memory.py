"""MemoryPriorityQueue details on a controlled clock, Priority parsing, and queue_from_url's table."""

from __future__ import annotations

import pytest

from llmkit.core.queue import Priority, QueueClosed, queue_from_url
from llmkit.core.queue.memory import MemoryPriorityQueue
from llmkit.core.queue.redis import RedisPriorityQueue
from llmkit.errors import ConfigError


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


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
    clock = Clock()
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
