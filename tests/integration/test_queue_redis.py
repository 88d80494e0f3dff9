"""Redis queue behaviour the contract cannot show: several consumer processes, concurrent producers."""

from __future__ import annotations

import asyncio
import random
import signal
import sys
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from llmkit.core.queue import DuplicateItem, queue_from_url
from llmkit.errors import BackendError, QueueFull
from tests.servers import RedisServer, free_port

pytestmark = pytest.mark.redis

WORKER = Path(__file__).with_name("queue_worker.py")


async def start_consumer(
    redis_server: RedisServer, redis_prefix: str, name: str, out: Path, *options: str
) -> asyncio.subprocess.Process:
    """A queue_worker.py process, once it says it is connected."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(WORKER),
        redis_server.url,
        redis_prefix,
        name,
        str(out),
        *options,
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    assert (await asyncio.wait_for(process.stdout.readline(), 60)).strip() == b"ready"
    return process


async def stop_all(consumers: list[asyncio.subprocess.Process]) -> None:
    for consumer in consumers:
        if consumer.returncode is None:
            consumer.kill()
        await consumer.communicate()


@pytest.mark.parametrize("lease", [None, 30.0], ids=["plain", "leased"])
async def test_each_item_reaches_exactly_one_of_several_consumer_processes(
    redis_server: RedisServer, redis_prefix: str, tmp_path: Path, lease: float | None
) -> None:
    outs = [tmp_path / f"consumer-{i}.txt" for i in range(3)]
    options = [] if lease is None else [str(lease)]
    consumers = [await start_consumer(redis_server, redis_prefix, "work", out, *options) for out in outs]
    queue = queue_from_url(f"{redis_server.url}?prefix={redis_prefix}", "work", capacity=10_000)
    try:
        # Consumers are already waiting, so items go out while they are still being put.
        expected = [f"item-{i}" for i in range(2000)]
        for i, item_id in enumerate(expected):
            await queue.put(item_id, b"payload", ("critical", "high", "normal")[i % 3])
        # One stop item per consumer, at the lowest level: served only once no work item is left.
        for i in range(len(consumers)):
            await queue.put(f"stop-{i}", b"", "low")
        await asyncio.wait_for(asyncio.gather(*(c.wait() for c in consumers)), 120)
    finally:
        await stop_all(consumers)
        stats = await queue.stats()
        await queue.close()
    # Exit 2 would mean a refused ack: with leases, every item was acked by the one consumer that took it.
    assert [c.returncode for c in consumers] == [0, 0, 0]
    lines = [line for out in outs for line in out.read_text().splitlines()]
    taken = [line.split()[0] for line in lines]
    assert len(taken) == len(set(taken)) == 2000
    assert sorted(taken) == sorted(expected)
    if lease is not None:
        assert all(line.endswith(" 1") for line in lines)  # no lease ran out: each item went out once
    assert (stats.total, stats.in_flight) == (0, 0)


async def test_the_job_of_a_killed_consumer_goes_to_another_after_its_lease(
    redis_server: RedisServer, redis_prefix: str, tmp_path: Path
) -> None:
    queue = queue_from_url(f"{redis_server.url}?prefix={redis_prefix}", "jobs", capacity=100)
    victim_out, survivor_out = tmp_path / "victim.txt", tmp_path / "survivor.txt"
    survivor_out.touch()
    consumers: list[asyncio.subprocess.Process] = []
    try:
        for i in range(5):
            await queue.put(f"job-{i}", b"")
        victim = await start_consumer(redis_server, redis_prefix, "jobs", victim_out, "0.5", "hold")
        consumers.append(victim)
        assert victim.stdout is not None
        assert (await asyncio.wait_for(victim.stdout.readline(), 30)).strip() == b"took job-0"
        victim.send_signal(signal.SIGKILL)  # mid-job: no ack, no release, no cleanup
        await victim.wait()
        survivor = await start_consumer(redis_server, redis_prefix, "jobs", survivor_out, "30")
        consumers.append(survivor)
        # The survivor reclaims job-0 itself once the dead consumer's lease has run out (while it waits on
        # an empty queue, or at once if it started after that): nothing else touches the queue meanwhile.
        while "job-0" not in survivor_out.read_text():
            assert survivor.returncode is None
            await asyncio.sleep(0.05)
        await queue.put("stop-0", b"", "low")
        assert await asyncio.wait_for(survivor.wait(), 30) == 0
    finally:
        await stop_all(consumers)
        stats = await queue.stats()
        await queue.close()
    lines = survivor_out.read_text().splitlines()
    assert sorted(lines) == ["job-0 2", "job-1 1", "job-2 1", "job-3 1", "job-4 1"]
    assert (stats.total, stats.in_flight) == (0, 0)


async def test_lease_deadlines_follow_the_redis_clock(
    redis_server: RedisServer, redis_prefix: str, redis_client: aioredis.Redis
) -> None:
    queue = queue_from_url(f"{redis_server.url}?prefix={redis_prefix}", "clock", capacity=10)
    try:
        await queue.put("a", b"")
        item = await queue.get(timeout=0, lease=30)
        assert item is not None
        seconds, micros = await redis_client.time()
        deadline = await redis_client.zscore(f"{redis_prefix}:q:clock:leases", "a")
    finally:
        await queue.close()
    assert deadline is not None
    assert abs(deadline - (seconds * 1_000_000 + micros + 30_000_000)) < 5_000_000


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


@pytest.mark.parametrize("lease", [None, 30.0], ids=["plain", "leased"])
async def test_cancelled_consumers_lose_no_item(
    redis_server: RedisServer, redis_prefix: str, redis_client: aioredis.Redis, lease: float | None
) -> None:
    # Cancels land at random points of get(): while it pops an item already there, while it waits for one,
    # just as one arrives. A leased item popped for a cancelled get must not stay in flight either.
    queue = queue_from_url(f"{redis_server.url}?prefix={redis_prefix}", "cancels", capacity=1000)
    received: list[str] = []
    try:
        for i in range(200):
            if i % 2:
                await queue.put(f"i{i}", b"")
                getter = asyncio.create_task(queue.get(timeout=30, lease=lease))
            else:
                getter = asyncio.create_task(queue.get(timeout=30, lease=lease))
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
                assert lease is None or await queue.ack(item.id, item.token)
        left: list[str] = []
        while (item := await queue.get(timeout=0)) is not None:
            left.append(item.id)
            assert item.deliveries == 1  # a delivery that reached nobody is not counted
        stats = await queue.stats()
    finally:
        await queue.close()
    assert sorted(received + left) == sorted(f"i{i}" for i in range(200))
    assert stats.in_flight == 0
    base = f"{redis_prefix}:q:cancels"
    assert await redis_client.exists(f"{base}:data", f"{base}:leases", f"{base}:held", f"{base}:tries") == 0


async def test_a_drained_queue_leaves_no_payloads_or_wakeups(
    redis_server: RedisServer, redis_prefix: str, redis_client: aioredis.Redis
) -> None:
    queue = queue_from_url(f"{redis_server.url}?prefix={redis_prefix}", "clean", capacity=100)
    try:
        for i in range(10):
            await queue.put(f"i{i}", b"x" * 100)
        await queue.cancel("i3")
        # Leased items, some released or left to expire first, end acked or taken plainly.
        expiring = await queue.get(timeout=0, lease=0.2)
        released = await queue.get(timeout=0, lease=30)
        assert expiring is not None and released is not None
        assert await queue.release(released.id, released.token)
        await asyncio.sleep(0.3)
        while (item := await queue.get(timeout=0, lease=30)) is not None:
            if item.id in ("i5", "i6"):
                assert await queue.release(item.id, item.token)
                break
            assert await queue.ack(item.id, item.token)
        while await queue.get(timeout=0) is not None:
            pass
    finally:
        await queue.close()
    base = f"{redis_prefix}:q:clean"
    keys = [f"{base}:{part}" for part in ("items", "data", "ready", "leases", "held", "tries")]
    assert await redis_client.exists(*keys) == 0


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
