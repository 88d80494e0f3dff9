"""One contract for every limiter backend: token buckets and concurrency limits behave the same on each."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from llmkit.core.limiter import Limiter, SlotUnavailable, limiter_from_url
from llmkit.errors import RateLimited

# A rate this slow refills one token per 100 s, so nothing refills during a test unless it waits on purpose.
FROZEN = 0.01


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def limiter(request: pytest.FixtureRequest, redis_prefix: str) -> AsyncIterator[Limiter]:
    if request.param == "memory":
        url = "memory://"
    else:
        url = f"{request.getfixturevalue('redis_server').url}?prefix={redis_prefix}"
    made = limiter_from_url(url)
    yield made
    await made.close()


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 10.0) -> None:
    """Wait until `check()` holds; `within` only bounds a failing test."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await check():
        assert loop.time() < deadline, "condition never held"
        await asyncio.sleep(0.01)


# Token buckets


async def test_burst_is_allowed_then_refused_with_retry_after(limiter: Limiter) -> None:
    bucket = limiter.token_bucket("burst", rate=FROZEN, burst=5)
    decisions = [await bucket.acquire("k") for _ in range(5)]
    assert [d.allowed for d in decisions] == [True] * 5
    assert [d.remaining for d in decisions] == [4, 3, 2, 1, 0]
    assert all(d.retry_after == 0 and d.limit == 5 for d in decisions)

    refused = await bucket.acquire("k")
    assert not refused.allowed
    assert refused.remaining == 0
    assert refused.limit == 5
    # One token at 0.01/s is at most 100 s away, and more than 0 since none came back yet.
    assert 0 < refused.retry_after <= 1 / FROZEN


async def test_tokens_refill_over_time(limiter: Limiter) -> None:
    bucket = limiter.token_bucket("refill", rate=2, burst=1)
    assert (await bucket.acquire("k")).allowed
    refused = await bucket.acquire("k")
    assert not refused.allowed
    assert 0 < refused.retry_after <= 0.5
    await asyncio.sleep(refused.retry_after + 0.05)
    assert (await bucket.acquire("k")).allowed


async def test_keys_have_independent_buckets(limiter: Limiter) -> None:
    bucket = limiter.token_bucket("keys", rate=FROZEN, burst=2)
    assert [(await bucket.acquire("a")).allowed for _ in range(3)] == [True, True, False]
    assert [(await bucket.acquire("b")).allowed for _ in range(3)] == [True, True, False]


async def test_buckets_with_different_names_are_independent(limiter: Limiter) -> None:
    first = limiter.token_bucket("first", rate=FROZEN, burst=1)
    second = limiter.token_bucket("second", rate=FROZEN, burst=1)
    assert (await first.acquire("k")).allowed
    assert not (await first.acquire("k")).allowed
    assert (await second.acquire("k")).allowed


async def test_acquire_many_answers_in_order(limiter: Limiter) -> None:
    bucket = limiter.token_bucket("many", rate=FROZEN, burst=2)
    decisions = await bucket.acquire_many(["a", "a", "b", "a", "b", "c"])
    assert [d.allowed for d in decisions] == [True, True, True, False, True, True]
    assert [d.remaining for d in decisions] == [1, 0, 1, 0, 0, 1]
    assert await bucket.acquire_many([]) == []


async def test_concurrent_acquires_allow_exactly_the_burst(limiter: Limiter) -> None:
    bucket = limiter.token_bucket("together", rate=FROZEN, burst=10)
    decisions = await asyncio.gather(*(bucket.acquire("k") for _ in range(25)))
    assert sum(d.allowed for d in decisions) == 10
    assert sorted(d.remaining for d in decisions if d.allowed) == list(range(10))


async def test_cost_takes_several_tokens(limiter: Limiter) -> None:
    bucket = limiter.token_bucket("cost", rate=FROZEN, burst=5)
    first = await bucket.acquire("k", cost=3)
    assert first.allowed and first.remaining == 2
    second = await bucket.acquire("k", cost=3)
    assert not second.allowed and second.remaining == 2
    assert (await bucket.acquire("k", cost=2)).allowed
    with pytest.raises(ValueError, match="cost"):
        await bucket.acquire("k", cost=6)


async def test_reset_refills_a_bucket(limiter: Limiter) -> None:
    bucket = limiter.token_bucket("reset", rate=FROZEN, burst=1)
    assert (await bucket.acquire("k")).allowed
    assert not (await bucket.acquire("k")).allowed
    await bucket.reset("k")
    assert (await bucket.acquire("k")).allowed


async def test_same_name_gives_the_same_bucket(limiter: Limiter) -> None:
    bucket = limiter.token_bucket("same", rate=1, burst=2)
    assert limiter.token_bucket("same", rate=1, burst=2) is bucket
    with pytest.raises(ValueError, match="same"):
        limiter.token_bucket("same", rate=1, burst=3)
    with pytest.raises(ValueError, match="rate"):
        limiter.token_bucket("broken", rate=0, burst=3)


# Concurrency limits


async def test_acquire_times_out_when_all_slots_are_held(limiter: Limiter) -> None:
    limit = limiter.concurrency_limit("full", 2)
    holders = [await limit.acquire(timeout=1), await limit.acquire(timeout=1)]
    assert len(set(holders)) == 2
    assert await limit.in_use() == 2
    with pytest.raises(SlotUnavailable) as caught:
        await limit.acquire(timeout=0.1)
    assert isinstance(caught.value, RateLimited)
    assert caught.value.retry_after > 0
    with pytest.raises(SlotUnavailable):
        await limit.acquire(timeout=0)
    assert await limit.in_use() == 2
    for holder in holders:
        await limit.release(holder)


async def test_release_frees_a_slot(limiter: Limiter) -> None:
    limit = limiter.concurrency_limit("release", 1)
    holder = await limit.acquire(timeout=1)
    await limit.release(holder)
    assert await limit.in_use() == 0
    again = await limit.acquire(timeout=0)
    await limit.release(again)
    await limit.release(again)  # twice is harmless
    assert await limit.in_use() == 0


async def test_a_waiter_gets_the_slot_when_it_is_released(limiter: Limiter) -> None:
    limit = limiter.concurrency_limit("handoff", 1)
    holder = await limit.acquire(timeout=1)
    waiter = asyncio.create_task(limit.acquire(timeout=30))

    async def waiting() -> bool:
        return (await limit.stats()).waiting == 1

    await eventually(waiting)
    assert not waiter.done()
    await limit.release(holder)
    second = await asyncio.wait_for(waiter, 30)
    assert second != holder
    stats = await limit.stats()
    assert (stats.name, stats.limit, stats.in_use, stats.waiting) == ("handoff", 1, 1, 0)
    await limit.release(second)


async def test_slot_context_holds_and_releases(limiter: Limiter) -> None:
    limit = limiter.concurrency_limit("context", 1)
    async with limit.slot(timeout=1):
        assert await limit.in_use() == 1
        with pytest.raises(SlotUnavailable):
            async with limit.slot(timeout=0.05):
                pass
    assert await limit.in_use() == 0
    with pytest.raises(KeyError):
        async with limit.slot(timeout=1):
            raise KeyError("the body failed")
    assert await limit.in_use() == 0


async def test_a_cancelled_waiter_does_not_keep_a_slot(limiter: Limiter) -> None:
    limit = limiter.concurrency_limit("cancel", 1)
    holder = await limit.acquire(timeout=1)
    waiter = asyncio.create_task(limit.acquire(timeout=30))
    await asyncio.sleep(0.05)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    await limit.release(holder)
    assert await limit.in_use() == 0
    again = await limit.acquire(timeout=0)
    await limit.release(again)


async def test_same_name_gives_the_same_limit(limiter: Limiter) -> None:
    limit = limiter.concurrency_limit("same", 3)
    assert limiter.concurrency_limit("same", 3) is limit
    with pytest.raises(ValueError, match="same"):
        limiter.concurrency_limit("same", 4)
    with pytest.raises(ValueError, match="slot"):
        limiter.concurrency_limit("none", 0)
