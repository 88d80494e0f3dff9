"""Redis queue behaviour the contract cannot show: several consumer processes, concurrent producers."""

from __future__ import annotations

import asyncio
import random
import sys
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from llmkit.core.queue import DuplicateItem, queue_from_url
from llmkit.errors import BackendError, QueueFull
from tests.servers import RedisServer, free_port

pytestmark = pytest.mark.redis

WORKER = Path(__file__).with_name("queue_worker.py")


async def test_each_item_reaches_exactly_one_of_several_consumer_processes(
    redis_server: RedisServer, redis_prefix: str, tmp_path: Path
) -> None:
    outs = [tmp_path / f"consumer-{i}.txt" for i in range(3)]
    consumers = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            str(WORKER),
            redis_server.url,
            redis_prefix,
            "work",
            str(out),
            stdout=asyncio.subprocess.PIPE,
        )
        for out in outs
    ]
    queue = queue_from_url(f"{redis_server.url}?prefix={redis_prefix}", "work", capacity=10_000)
    try:
        for consumer in consumers:
            assert consumer.stdout is not None
            assert (await asyncio.wait_for(consumer.stdout.readline(), 60)).strip() == b"ready"
        # Consumers are already waiting, so items go out while they are still being put.
        expected = [f"item-{i}" for i in range(2000)]
        for i, item_id in enumerate(expected):
            await queue.put(item_id, b"payload", ("critical", "high", "normal")[i % 3])
        # One stop item per consumer, at the lowest level: served only once no work item is left.
        for i in range(len(consumers)):
            await queue.put(f"stop-{i}", b"", "low")
        await asyncio.wait_for(asyncio.gather(*(c.wait() for c in consumers)), 120)
    finally:
        for consumer in consumers:
            if consumer.returncode is None:
                consumer.kill()
            await consumer.communicate()
        size = await queue.size()
        await queue.close()
    assert [c.returncode for c in consumers] == [0, 0, 0]
    taken = [line for out in outs for line in out.read_text().splitlines()]
    assert len(taken) == len(set(taken)) == 2000
    assert sorted(taken) == sorted(expected)
    assert size == 0


async def test_concurrent_producers_never_overfill(redis_server: RedisServer, redis_prefix: str) -> None:
    url = f"{redis_server.url}?prefix={redis_prefix}"
    producers = [queue_from_url(url, "bounded", capacity=50) for _ in range(2)]
    try:
        puts = [producers[i % 2].put(f"i{i}", b"") for i in range(120)]
        results = await asyncio.gather(*puts, return_exceptions=True)
        assert sum(isinstance(r, int) for r in results) == 50
        assert sum(isinstance(r, QueueFull) for r in results) == 70
        assert await producers[0].size() == 50
    finally:
        for producer in producers:
            await producer.close()


async def test_concurrent_puts_of_one_id_queue_it_once(redis_server: RedisServer, redis_prefix: str) -> None:
    url = f"{redis_server.url}?prefix={redis_prefix}"
    producers = [queue_from_url(url, "dedup", capacity=100) for _ in range(2)]
    try:
        puts = [producer.put(f"id{i}", b"", "high") for i in range(20) for producer in producers]
        results = await asyncio.gather(*puts, return_exceptions=True)
        assert sum(isinstance(r, int) for r in results) == 20
        assert sum(isinstance(r, DuplicateItem) for r in results) == 20
        assert await producers[1].size() == 20
    finally:
        for producer in producers:
            await producer.close()


async def test_cancelled_consumers_lose_no_item(
    redis_server: RedisServer, redis_prefix: str, redis_client: aioredis.Redis
) -> None:
    # Cancels land at random points of get(): while it pops an item already there, while it waits for one,
    # just as one arrives.
    queue = queue_from_url(f"{redis_server.url}?prefix={redis_prefix}", "cancels", capacity=1000)
    received: list[str] = []
    try:
        for i in range(200):
            if i % 2:
                await queue.put(f"i{i}", b"")
                getter = asyncio.create_task(queue.get(timeout=30))
            else:
                getter = asyncio.create_task(queue.get(timeout=30))
                await asyncio.sleep(random.uniform(0, 0.003))
                await queue.put(f"i{i}", b"")
            await asyncio.sleep(random.uniform(0, 0.001))
            getter.cancel()
            try:
                item = await asyncio.wait_for(getter, 30)
            except asyncio.CancelledError:
                continue
            if item is not None:
                received.append(item.id)
        left: list[str] = []
        while (item := await queue.get(timeout=0)) is not None:
            left.append(item.id)
    finally:
        await queue.close()
    assert sorted(received + left) == sorted(f"i{i}" for i in range(200))
    assert await redis_client.hlen(f"{redis_prefix}:q:cancels:data") == 0


async def test_a_drained_queue_leaves_no_payloads_or_wakeups(
    redis_server: RedisServer, redis_prefix: str, redis_client: aioredis.Redis
) -> None:
    queue = queue_from_url(f"{redis_server.url}?prefix={redis_prefix}", "clean", capacity=100)
    try:
        for i in range(10):
            await queue.put(f"i{i}", b"x" * 100)
        await queue.cancel("i3")
        while await queue.get(timeout=0) is not None:
            pass
    finally:
        await queue.close()
    base = f"{redis_prefix}:q:clean"
    assert await redis_client.exists(f"{base}:items", f"{base}:data", f"{base}:ready") == 0


async def test_an_unreachable_redis_is_a_backend_error() -> None:
    queue = queue_from_url(f"redis://127.0.0.1:{free_port()}/0?timeout=0.5", "down", capacity=10)
    try:
        with pytest.raises(BackendError, match="redis"):
            await queue.put("x", b"")
        with pytest.raises(BackendError):
            await queue.get(timeout=0.1)
        with pytest.raises(BackendError):
            await queue.stats()
    finally:
        await queue.close()
