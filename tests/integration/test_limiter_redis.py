"""Redis limiter behaviour the contract cannot show: one global limit across processes, leases, key expiry."""

from __future__ import annotations

import asyncio
import json
import random
import sys
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from llmkit.core.limiter import SlotUnavailable, limiter_from_url
from llmkit.errors import BackendError
from tests.servers import RedisServer, free_port

pytestmark = pytest.mark.redis

WORKER = Path(__file__).with_name("limiter_worker.py")
FROZEN = 0.01


async def spawn(*args: object) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        str(WORKER),
        *(str(arg) for arg in args),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )


async def expect_line(proc: asyncio.subprocess.Process, text: str) -> None:
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 60)
    assert line.decode().strip() == text


async def stop(procs: list[asyncio.subprocess.Process]) -> None:
    for proc in procs:
        if proc.returncode is None:
            proc.kill()
        await proc.communicate()


async def test_two_processes_share_one_global_rate(redis_server: RedisServer, redis_prefix: str) -> None:
    rate, burst, seconds = 50, 10, 2.0
    procs = [
        await spawn("bucket", redis_server.url, redis_prefix, "global", rate, burst, seconds) for _ in "ab"
    ]
    try:
        for proc in procs:
            await expect_line(proc, "ready")
        outputs = await asyncio.wait_for(asyncio.gather(*(p.communicate(b"go\n") for p in procs)), 60)
    finally:
        await stop(procs)
    assert [proc.returncode for proc in procs] == [0, 0]
    results = [json.loads(out) for out, _ in outputs]

    # Both processes competed for the same tokens...
    assert all(r["allowed"] > 0 and r["refused"] > 0 for r in results)
    # ...and together got what one bucket gives over the window measured on the Redis clock: the burst plus
    # `rate` per second. The window is measured just outside the first and last calls, so it can only be
    # slightly too long; the total may never exceed it and may fall short by less than one burst.
    elapsed = max(r["end"] for r in results) - min(r["start"] for r in results)
    expected = burst + rate * elapsed
    allowed = sum(r["allowed"] for r in results)
    assert expected - burst <= allowed <= expected + 1


async def test_slots_of_a_killed_process_come_back_after_its_lease(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    lease = 1.0
    holder = await spawn("hold", redis_server.url, redis_prefix, "crash", 1, lease)
    limiter = limiter_from_url(f"{redis_server.url}?prefix={redis_prefix}&lease={lease}")
    limit = limiter.concurrency_limit("crash", 1)
    try:
        await expect_line(holder, "held")
        # The live holder renews its lease, so the slot stays taken well past one lease.
        await asyncio.sleep(2.5 * lease)
        assert await limit.in_use() == 1
        with pytest.raises(SlotUnavailable):
            await limit.acquire(timeout=0)
        holder.kill()  # no release: the slot is freed only by its lease running out
        await holder.wait()
        got = await limit.acquire(timeout=30)
        assert await limit.in_use() == 1
        await limit.release(got)
        assert await limit.in_use() == 0
    finally:
        await stop([holder])
        await limiter.close()


async def test_bucket_keys_expire_once_they_would_be_full(
    redis_server: RedisServer, redis_prefix: str, redis_client: aioredis.Redis
) -> None:
    limiter = limiter_from_url(f"{redis_server.url}?prefix={redis_prefix}")
    try:
        bucket = limiter.token_bucket("ttl", rate=10, burst=5)
        assert (await bucket.acquire("k")).remaining == 4
        key = f"{redis_prefix}:tb:ttl:k"
        # One token at 10/s is back in 100 ms; after that the key is not needed.
        assert 0 < await redis_client.pttl(key) <= 101
        await asyncio.sleep(0.3)
        assert await redis_client.exists(key) == 0
        assert (await bucket.acquire("k")).remaining == 4
    finally:
        await limiter.close()


@pytest.mark.parametrize("batch", ["true", "false"])
async def test_scripts_are_reloaded_when_redis_forgets_them(
    redis_server: RedisServer, redis_prefix: str, redis_client: aioredis.Redis, batch: str
) -> None:
    limiter = limiter_from_url(f"{redis_server.url}?prefix={redis_prefix}&batch={batch}")
    try:
        bucket = limiter.token_bucket("flush", rate=FROZEN, burst=3)
        limit = limiter.concurrency_limit("flush", 1)
        assert (await bucket.acquire("k")).remaining == 2
        await redis_client.script_flush()
        assert (await bucket.acquire("k")).remaining == 1
        await redis_client.script_flush()
        assert [d.allowed for d in await bucket.acquire_many(["k", "k", "other"])] == [True, False, True]
        await redis_client.script_flush()
        holder = await limit.acquire(timeout=1)
        await limit.release(holder)
    finally:
        await limiter.close()


async def test_cancelled_waiters_never_keep_a_slot(redis_server: RedisServer, redis_prefix: str) -> None:
    # Cancels land at random points of the wait loop, including inside Redis calls.
    limiter = limiter_from_url(f"{redis_server.url}?prefix={redis_prefix}")
    limit = limiter.concurrency_limit("cancels", 1)
    holder = await limit.acquire(timeout=1)
    try:
        for _ in range(100):
            waiter = asyncio.create_task(limit.acquire(timeout=30))
            await asyncio.sleep(random.uniform(0, 0.02))
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(waiter, 30)
        assert await limit.in_use() == 1
        assert (await limit.stats()).waiting == 0
    finally:
        await limit.release(holder)
        await limiter.close()


async def test_an_unreachable_redis_is_a_backend_error() -> None:
    limiter = limiter_from_url(f"redis://127.0.0.1:{free_port()}/0?timeout=0.5")
    try:
        bucket = limiter.token_bucket("down", rate=1, burst=1)
        with pytest.raises(BackendError, match="redis"):
            await bucket.acquire("k")
        with pytest.raises(BackendError):
            await bucket.acquire_many(["a", "b"])
        with pytest.raises(BackendError):
            await limiter.concurrency_limit("down", 1).acquire(timeout=1)
    finally:
        await limiter.close()
