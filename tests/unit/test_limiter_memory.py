"""MemoryTokenBucket arithmetic on a controlled clock, its sweep of idle buckets, and slot hand-off order."""

from __future__ import annotations

import asyncio

import pytest

from llmkit.core.limiter import SlotUnavailable
from llmkit.core.limiter.memory import MemoryConcurrencyLimit, MemoryTokenBucket
from tests.clock import Clock


def test_refill_is_rate_times_elapsed_capped_at_the_burst() -> None:
    clock = Clock()
    bucket = MemoryTokenBucket("b", rate=2, burst=4, clock=clock)
    assert [bucket.take("k").remaining for _ in range(4)] == [3, 2, 1, 0]
    refused = bucket.take("k")
    assert (refused.allowed, refused.remaining, refused.retry_after) == (False, 0, 0.5)
    clock.now += 0.25  # half a token
    assert bucket.take("k").retry_after == pytest.approx(0.25)
    clock.now += 0.25
    assert bucket.take("k").allowed
    clock.now += 100  # refills to the burst, never beyond
    assert bucket.take("k").remaining == 3


def test_cost_is_checked_against_the_burst() -> None:
    clock = Clock()
    bucket = MemoryTokenBucket("b", rate=1, burst=3, clock=clock)
    refused_after = bucket.take("k", cost=2)
    assert refused_after.remaining == 1
    refused = bucket.take("k", cost=3)
    assert (refused.allowed, refused.retry_after) == (False, 2.0)
    assert bucket.take("k", cost=0).allowed  # a peek
    with pytest.raises(ValueError):
        bucket.take("k", cost=4)
    with pytest.raises(ValueError):
        bucket.take("k", cost=-1)


def test_the_sweep_drops_only_buckets_that_are_full_again() -> None:
    clock = Clock()
    bucket = MemoryTokenBucket("b", rate=1, burst=10, sweep_interval=60, clock=clock)
    for i in range(1000):
        bucket.take(f"idle-{i}")  # one token short; full again after 1 s
    for _ in range(10):
        bucket.take("drained")  # ten tokens short; full again after 10 s
    assert len(bucket) == 1001
    clock.now += 5
    bucket.take("new")
    assert len(bucket) == 1002  # no sweep before the interval
    clock.now += 56
    bucket.take("new")
    # After 61 s every bucket is full again, except "new" which was just used.
    assert len(bucket) == 1


def test_a_swept_key_behaves_like_a_full_bucket() -> None:
    clock = Clock()
    bucket = MemoryTokenBucket("b", rate=1, burst=2, sweep_interval=1, clock=clock)
    bucket.take("k")
    clock.now += 5
    bucket.take("other")  # triggers the sweep
    assert len(bucket) == 1
    assert [bucket.take("k").remaining for _ in range(2)] == [1, 0]


def test_a_bucket_needs_a_rate_and_a_burst() -> None:
    with pytest.raises(ValueError, match="rate"):
        MemoryTokenBucket("b", rate=0, burst=1)
    with pytest.raises(ValueError, match="burst"):
        MemoryTokenBucket("b", rate=1, burst=0)


async def test_freed_slots_go_to_waiters_in_arrival_order() -> None:
    limit = MemoryConcurrencyLimit("c", 1)
    first = await limit.acquire()
    order: list[int] = []

    async def wait(n: int) -> None:
        holder = await limit.acquire(timeout=10)
        order.append(n)
        await limit.release(holder)

    waiters = [asyncio.create_task(wait(n)) for n in range(5)]
    await asyncio.sleep(0)
    assert (await limit.stats()).waiting == 5
    # A newcomer queues behind the waiters instead of taking a slot as it frees.
    with pytest.raises(SlotUnavailable):
        await limit.acquire(timeout=0)
    await limit.release(first)
    await asyncio.gather(*waiters)
    assert order == [0, 1, 2, 3, 4]
    assert await limit.in_use() == 0


async def test_a_timed_out_waiter_leaves_the_line() -> None:
    limit = MemoryConcurrencyLimit("c", 1)
    holder = await limit.acquire()
    with pytest.raises(SlotUnavailable, match="busy"):
        await limit.acquire(timeout=0.01)
    assert (await limit.stats()).waiting == 0
    await limit.release(holder)
    assert await limit.acquire(timeout=0)
