"""One contract for every priority queue backend: order, capacity, position, cancel, stats, waiting."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest

from llmkit.core.queue import DuplicateItem, Priority, PriorityQueue, QueueItem, queue_from_url
from llmkit.errors import QueueFull

MakeQueue = Callable[..., PriorityQueue]


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def make_queue(request: pytest.FixtureRequest, redis_prefix: str) -> AsyncIterator[MakeQueue]:
    """Queues on the backend under test (sharing state when they share a name); all closed after."""
    if request.param == "memory":
        url = "memory://"
        shared: dict[str, PriorityQueue] = {}
    else:
        url = f"{request.getfixturevalue('redis_server').url}?prefix={redis_prefix}"
    made: list[PriorityQueue] = []

    def make(name: str = "jobs", capacity: int = 100) -> PriorityQueue:
        if request.param == "memory" and name in shared:
            return shared[name]  # memory queues share state only through the same object
        queue = queue_from_url(url, name, capacity)
        made.append(queue)
        if request.param == "memory":
            shared[name] = queue
        return queue

    yield make
    for queue in made:
        await queue.close()


async def drain(queue: PriorityQueue) -> list[QueueItem]:
    items = []
    while (item := await queue.get(timeout=0)) is not None:
        items.append(item)
    return items


async def test_levels_are_served_in_order_and_fifo_within_a_level(make_queue: MakeQueue) -> None:
    queue = make_queue()
    puts: list[tuple[str, str | int]] = [
        ("n1", "normal"),
        ("l1", "low"),
        ("h1", "high"),
        ("n2", "normal"),
        ("c1", "critical"),
        ("h2", Priority.HIGH),
        ("l2", "LOW"),
        ("c2", 0),
        ("n3", "normal"),
    ]
    for item_id, priority in puts:
        await queue.put(item_id, item_id.encode(), priority)
    items = await drain(queue)
    assert [item.id for item in items] == ["c1", "c2", "h1", "h2", "n1", "n2", "n3", "l1", "l2"]
    assert [item.priority for item in items[:3]] == [Priority.CRITICAL, Priority.CRITICAL, Priority.HIGH]
    assert all(item.payload == item.id.encode() for item in items)


async def test_put_returns_the_position_in_pop_order(make_queue: MakeQueue) -> None:
    queue = make_queue()
    assert await queue.put("n1", b"", "normal") == 0
    assert await queue.put("n2", b"", "normal") == 1
    assert await queue.put("c1", b"", "critical") == 0
    assert await queue.put("l1", b"", "low") == 3
    assert await queue.put("h1", b"", "high") == 1


async def test_position_follows_the_queue(make_queue: MakeQueue) -> None:
    queue = make_queue()
    for item_id, priority in [("n1", "normal"), ("n2", "normal"), ("l1", "low"), ("c1", "critical")]:
        await queue.put(item_id, b"", priority)
    assert [await queue.position(i) for i in ("c1", "n1", "n2", "l1")] == [0, 1, 2, 3]
    assert await queue.position("missing") is None
    first = await queue.get(timeout=0)
    assert first is not None and first.id == "c1"
    assert await queue.position("c1") is None
    assert [await queue.position(i) for i in ("n1", "n2", "l1")] == [0, 1, 2]


async def test_capacity_refuses_with_queue_full(make_queue: MakeQueue) -> None:
    queue = make_queue(capacity=3)
    for i in range(3):
        await queue.put(f"i{i}", b"x")
    with pytest.raises(QueueFull) as caught:
        await queue.put("over", b"x", "critical")
    assert caught.value.capacity == 3
    assert await queue.size() == 3
    assert await queue.position("over") is None
    await queue.get(timeout=0)
    assert await queue.put("over", b"x", "critical") == 0


async def test_a_queued_id_cannot_be_put_twice(make_queue: MakeQueue) -> None:
    queue = make_queue()
    await queue.put("same", b"first")
    with pytest.raises(DuplicateItem) as caught:
        await queue.put("same", b"second", "critical")
    assert isinstance(caught.value, ValueError)
    assert caught.value.item_id == "same"
    item = await queue.get(timeout=0)
    assert item is not None and item.payload == b"first"
    await queue.put("same", b"again")  # once taken, the id is free
    again = await queue.get(timeout=0)
    assert again is not None and again.payload == b"again"


async def test_cancel_removes_only_queued_items(make_queue: MakeQueue) -> None:
    queue = make_queue()
    for item_id in ("a", "b", "c"):
        await queue.put(item_id, item_id.encode())
    assert await queue.cancel("b") is True
    assert await queue.cancel("b") is False
    assert await queue.cancel("missing") is False
    assert await queue.position("c") == 1
    assert await queue.size() == 2
    first = await queue.get(timeout=0)
    assert first is not None and first.id == "a"
    assert await queue.cancel("a") is False  # already taken
    assert [item.id for item in await drain(queue)] == ["c"]
    await queue.put("b", b"b")  # a cancelled id can be queued again
    assert await queue.size() == 1


async def test_stats_count_levels_and_the_oldest_wait(make_queue: MakeQueue) -> None:
    queue = make_queue(capacity=50)
    empty = await queue.stats()
    assert (empty.total, empty.capacity, empty.oldest_wait) == (0, 50, 0.0)
    assert empty.levels == {"critical": 0, "high": 0, "normal": 0, "low": 0}

    await queue.put("old", b"", "low")
    await asyncio.sleep(0.2)
    for item_id, priority in [("c", "critical"), ("n1", "normal"), ("n2", "normal")]:
        await queue.put(item_id, b"", priority)
    stats = await queue.stats()
    assert stats.levels == {"critical": 1, "high": 0, "normal": 2, "low": 1}
    assert stats.total == await queue.size() == 4
    # The low item is served last but has waited longest; at least the 0.2 s slept since it came.
    assert stats.oldest_wait >= 0.19


async def test_items_keep_their_payload_and_metadata(make_queue: MakeQueue) -> None:
    queue = make_queue()
    payload = bytes(range(256)) + b":with:colons\x00"
    before = time.time()
    await queue.put("bin", payload, "high")
    item = await queue.get(timeout=0)
    assert item is not None
    assert (item.id, item.payload, item.priority) == ("bin", payload, Priority.HIGH)
    # enqueued_at is a Unix timestamp (the Redis server clock on Redis, here the same machine).
    assert before - 5 <= item.enqueued_at <= time.time() + 5


async def test_get_returns_none_when_nothing_comes(make_queue: MakeQueue) -> None:
    queue = make_queue()
    assert await queue.get(timeout=0) is None
    assert await queue.get(timeout=0.1) is None


async def test_a_waiting_get_is_woken_by_put(make_queue: MakeQueue) -> None:
    queue = make_queue()
    waiter = asyncio.create_task(queue.get(timeout=30))
    await asyncio.sleep(0.1)
    assert not waiter.done()
    await queue.put("late", b"hello", "low")
    item = await asyncio.wait_for(waiter, 30)
    assert item is not None and (item.id, item.payload) == ("late", b"hello")
    assert await queue.size() == 0


async def test_each_item_goes_to_one_waiting_consumer(make_queue: MakeQueue) -> None:
    queue = make_queue()
    waiters = [asyncio.create_task(queue.get(timeout=30)) for _ in range(3)]
    await asyncio.sleep(0.1)
    for i in range(3):
        await queue.put(f"i{i}", b"")
    items = await asyncio.wait_for(asyncio.gather(*waiters), 30)
    assert sorted(item.id for item in items if item is not None) == ["i0", "i1", "i2"]


async def test_a_cancelled_get_loses_no_item(make_queue: MakeQueue) -> None:
    queue = make_queue()
    waiter = asyncio.create_task(queue.get(timeout=30))
    await asyncio.sleep(0.1)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    await queue.put("kept", b"")
    item = await queue.get(timeout=5)
    assert item is not None and item.id == "kept"


async def test_two_handles_on_one_queue_share_items(make_queue: MakeQueue) -> None:
    producer, consumer = make_queue("shared"), make_queue("shared")
    await producer.put("x", b"1")
    assert await consumer.position("x") == 0
    item = await consumer.get(timeout=5)
    assert item is not None and item.id == "x"
    assert await producer.size() == 0


async def test_close_wakes_a_waiting_consumer(make_queue: MakeQueue) -> None:
    queue = make_queue("closing")
    waiter = asyncio.create_task(queue.get(timeout=None))
    await asyncio.sleep(0.1)
    await queue.close()
    assert await asyncio.wait_for(waiter, 30) is None


async def test_unknown_priority_is_refused(make_queue: MakeQueue) -> None:
    queue = make_queue()
    with pytest.raises(ValueError, match="critical, high, normal, low"):
        await queue.put("x", b"", "urgent")
    assert await queue.size() == 0


# -- leases ----------------------------------------------------------------------------------------------

LONG = 30.0  # a lease no test outlives
SHORT = 0.3  # a lease a test waits out


async def test_a_leased_item_is_in_flight_not_queued(make_queue: MakeQueue) -> None:
    queue = make_queue()
    await queue.put("a", b"payload", "high")
    await queue.put("b", b"")
    item = await queue.get(timeout=0, lease=LONG)
    assert item is not None
    assert (item.id, item.payload, item.priority, item.deliveries) == ("a", b"payload", Priority.HIGH, 1)
    assert item.token
    assert await queue.size() == 1
    assert await queue.position("a") is None
    assert await queue.position("b") == 0
    stats = await queue.stats()
    assert (stats.total, stats.in_flight) == (1, 1)
    assert stats.levels == {"critical": 0, "high": 0, "normal": 1, "low": 0}
    assert await queue.cancel("a") is False  # no longer queued
    with pytest.raises(DuplicateItem):
        await queue.put("a", b"again")
    nxt = await queue.get(timeout=0, lease=LONG)
    assert nxt is not None and nxt.id == "b" and nxt.token != item.token


async def test_a_plain_get_has_no_lease(make_queue: MakeQueue) -> None:
    queue = make_queue()
    await queue.put("a", b"")
    item = await queue.get(timeout=0)
    assert item is not None and (item.deliveries, item.token) == (1, "")
    assert (await queue.stats()).in_flight == 0
    assert await queue.ack("a", "") is False


async def test_ack_removes_the_item_for_good(make_queue: MakeQueue) -> None:
    queue = make_queue()
    await queue.put("a", b"")
    item = await queue.get(timeout=0, lease=SHORT)
    assert item is not None
    assert await queue.ack(item.id, item.token) is True
    assert await queue.ack(item.id, item.token) is False
    assert await queue.ack("missing", item.token) is False
    await asyncio.sleep(SHORT + 0.1)  # past the lease: nothing comes back
    assert await queue.get(timeout=0) is None
    stats = await queue.stats()
    assert (stats.total, stats.in_flight) == (0, 0)
    await queue.put("a", b"")  # the id is free again, as a new item
    again = await queue.get(timeout=0, lease=LONG)
    assert again is not None and again.deliveries == 1


async def test_an_expired_lease_redelivers_at_the_front_of_its_level(make_queue: MakeQueue) -> None:
    queue = make_queue()
    for item_id in ("a", "b", "c"):
        await queue.put(item_id, item_id.encode())
    await queue.put("h", b"", "high")
    high = await queue.get(timeout=0)
    assert high is not None and high.id == "h"
    first = await queue.get(timeout=0, lease=SHORT)
    assert first is not None and first.id == "a"
    await asyncio.sleep(SHORT + 0.1)
    assert await queue.size() == 3
    assert await queue.position("a") == 0
    assert (await queue.stats()).in_flight == 0
    again = await queue.get(timeout=0, lease=LONG)
    assert again is not None
    assert (again.id, again.payload, again.deliveries) == ("a", b"a", 2)
    assert again.token != first.token
    assert again.enqueued_at == first.enqueued_at
    assert await queue.ack(again.id, again.token) is True
    assert [item.id for item in await drain(queue)] == ["b", "c"]


async def test_a_lease_ends_at_its_deadline(make_queue: MakeQueue) -> None:
    queue = make_queue()
    await queue.put("a", b"")
    item = await queue.get(timeout=0, lease=SHORT)
    assert item is not None
    await asyncio.sleep(SHORT + 0.1)
    # Nobody has looked at the queue since the deadline: the lease is over all the same.
    assert await queue.extend(item.id, item.token, LONG) is False
    assert await queue.ack(item.id, item.token) is False
    assert await queue.release(item.id, item.token) is False
    again = await queue.get(timeout=0)
    assert again is not None and (again.id, again.deliveries) == ("a", 2)


async def test_a_stale_consumer_cannot_touch_a_redelivered_item(make_queue: MakeQueue) -> None:
    queue = make_queue()
    await queue.put("a", b"")
    stale = await queue.get(timeout=0, lease=SHORT)
    assert stale is not None
    await asyncio.sleep(SHORT + 0.1)
    fresh = await queue.get(timeout=0, lease=LONG)
    assert fresh is not None and fresh.id == "a" and fresh.deliveries == 2
    assert await queue.ack("a", stale.token) is False
    assert await queue.extend("a", stale.token, LONG) is False
    assert await queue.release("a", stale.token) is False
    stats = await queue.stats()
    assert (stats.total, stats.in_flight) == (0, 1)  # the new delivery is untouched
    assert await queue.ack("a", fresh.token) is True
    assert (await queue.stats()).in_flight == 0


async def test_extend_keeps_a_long_job_in_flight(make_queue: MakeQueue) -> None:
    queue = make_queue()
    await queue.put("a", b"")
    item = await queue.get(timeout=0, lease=SHORT)
    assert item is not None
    for _ in range(6):  # 0.6 s in all, twice the lease
        await asyncio.sleep(SHORT / 3)
        assert await queue.extend(item.id, item.token, SHORT) is True
    assert await queue.get(timeout=0) is None
    assert (await queue.stats()).in_flight == 1
    assert await queue.ack(item.id, item.token) is True
    with pytest.raises(ValueError, match="lease"):
        await queue.extend(item.id, item.token, 0)


async def test_release_gives_items_back_in_their_places(make_queue: MakeQueue) -> None:
    queue = make_queue()
    for item_id in ("a", "b", "c"):
        await queue.put(item_id, b"")
    a = await queue.get(timeout=0, lease=LONG)
    b = await queue.get(timeout=0, lease=LONG)
    assert a is not None and b is not None and (a.id, b.id) == ("a", "b")
    assert await queue.release(b.id, b.token) is True
    assert await queue.release(b.id, b.token) is False
    assert await queue.position("b") == 0
    assert await queue.release(a.id, a.token) is True
    # Back in arrival order, ahead of the item that came after them.
    assert [await queue.position(i) for i in ("a", "b", "c")] == [0, 1, 2]
    items = await drain(queue)
    assert [(item.id, item.deliveries) for item in items] == [("a", 2), ("b", 2), ("c", 1)]


async def test_a_returned_item_is_never_refused_at_capacity(make_queue: MakeQueue) -> None:
    queue = make_queue(capacity=2)
    await queue.put("a", b"")
    await queue.put("b", b"")
    a = await queue.get(timeout=0, lease=LONG)
    assert a is not None
    await queue.put("c", b"")  # capacity bounds queued items; "a" is in flight
    with pytest.raises(QueueFull):
        await queue.put("d", b"")
    assert await queue.release(a.id, a.token) is True
    stats = await queue.stats()
    assert (stats.total, stats.capacity, stats.in_flight) == (3, 2, 0)
    with pytest.raises(QueueFull):
        await queue.put("d", b"")


async def test_a_waiting_consumer_gets_an_expired_item(make_queue: MakeQueue) -> None:
    queue = make_queue()
    await queue.put("a", b"")
    dead = await queue.get(timeout=0, lease=SHORT)  # a consumer that never comes back
    assert dead is not None
    waiter = asyncio.create_task(make_queue("jobs").get(timeout=30, lease=LONG))
    item = await asyncio.wait_for(waiter, 30)
    assert item is not None and (item.id, item.deliveries) == ("a", 2)


async def test_leased_items_reach_one_of_many_consumers_each(make_queue: MakeQueue) -> None:
    handles = [make_queue("shared", capacity=1000) for _ in range(4)]
    expected = [f"i{i}" for i in range(300)]
    taken: list[str] = []
    refused: list[str] = []

    async def consume(queue: PriorityQueue) -> None:
        while (item := await queue.get(timeout=0.5, lease=LONG)) is not None:
            taken.append(item.id)
            await asyncio.sleep(0)  # let the other consumers run while this one holds the item
            if not await queue.ack(item.id, item.token):
                refused.append(item.id)

    consumers = [asyncio.create_task(consume(handles[i % 4])) for i in range(8)]
    for i, item_id in enumerate(expected):
        await handles[0].put(item_id, b"", ("high", "normal")[i % 2])
        if i % 10 == 0:
            await asyncio.sleep(0)  # consumers take items while others are still coming
    await asyncio.wait_for(asyncio.gather(*consumers), 60)
    assert sorted(taken) == sorted(expected)
    assert refused == []
    stats = await handles[0].stats()
    assert (stats.total, stats.in_flight) == (0, 0)


async def test_a_lease_must_be_positive(make_queue: MakeQueue) -> None:
    queue = make_queue()
    await queue.put("a", b"")
    for lease in (0, -1.0):
        with pytest.raises(ValueError, match="lease"):
            await queue.get(timeout=0, lease=lease)
    assert await queue.size() == 1
