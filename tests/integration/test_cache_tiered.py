"""TieredCache against real redis-servers: failover to memory, backoff, reconnection and replay, local TTL."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable

import pytest
import redis.asyncio as aioredis

from llmkit.core.backends import make_redis, parse_backend_url
from llmkit.core.cache import MemoryCache, RedisCache, TieredCache
from tests.clock import Clock
from tests.servers import RedisServer, free_port

LOGGER = "llmkit.cache"


def build(
    port: int,
    prefix: str,
    *,
    local: MemoryCache | None = None,
    **options: float | Callable[[], float],
) -> TieredCache:
    url = parse_backend_url(f"redis://127.0.0.1:{port}/0", "cache", ["redis"])
    remote = RedisCache(make_redis(url, timeout=2.0), prefix=prefix, timeout=2.0)
    return TieredCache(local if local is not None else MemoryCache(max_size_mb=8), remote, **options)  # type: ignore[arg-type]


@pytest.fixture
async def closing() -> AsyncIterator[Callable[[TieredCache], TieredCache]]:
    """Register caches to close after the test, whatever happens."""
    made: list[TieredCache] = []

    def register(cache: TieredCache) -> TieredCache:
        made.append(cache)
        return cache

    yield register
    for cache in made:
        await cache.close()


def warnings_from(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]


async def test_redis_stops_and_comes_back(
    redis_factory: Callable[[], RedisServer],
    closing: Callable[[TieredCache], TieredCache],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    server = redis_factory()
    cache = closing(build(server.port, "t", local_ttl=30, backoff_min=0.05, backoff_max=0.2))
    await cache.set("before", b"1")
    await cache.set("gone", b"will be deleted during the outage")
    assert cache.redis_up

    server.stop()
    for i in range(100):
        await cache.set(f"k{i}", f"v{i}")
        assert await cache.get(f"k{i}") == f"v{i}".encode()
    assert await cache.get("before") == b"1"  # the memory copy keeps serving
    assert await cache.delete("gone") is True
    assert await cache.get("never-set") is None
    stats = await cache.stats()
    assert stats["redis_up"] is False
    assert stats["failovers"] == 1
    assert stats["degraded_ops"] >= 100
    assert stats["remote"] is None
    assert stats["pending_writes"] == 101
    assert len(warnings_from(caplog)) == 1
    assert f"redis://127.0.0.1:{server.port}/0" in warnings_from(caplog)[0]
    assert "serving from memory" in warnings_from(caplog)[0]

    server.start()  # same port, empty (no persistence)
    raw = aioredis.Redis.from_url(server.url)
    try:
        # What another process wrote meanwhile; the delete made during the outage must win over it.
        await raw.set("t:gone", b"stale")
        deadline = time.monotonic() + 20
        while not cache.redis_up:
            assert time.monotonic() < deadline, "the cache never went back to Redis"
            await cache.get("probe")
            await asyncio.sleep(0.02)

        # Writes made during the outage were replayed to Redis.
        assert await raw.get("t:k0") == b"v0"
        assert await raw.get("t:k99") == b"v99"
        assert await raw.get("t:gone") is None
        # Redis is used again for writes and reads.
        await cache.set("after", b"back")
        assert await raw.get("t:after") == b"back"
        await raw.set("t:external", b"from another replica")
        assert await cache.get("external") == b"from another replica"
        stats = await cache.stats()
        assert stats["redis_up"] is True
        assert stats["remote_hits"] == 1
        assert stats["failovers"] == 1
        assert stats["pending_writes"] == 0
        assert stats["replayed"] == 101
        # k0..k99, after, external ("before" went with the restarted server, "gone" was deleted).
        assert stats["remote"]["entries"] == 102
    finally:
        await raw.aclose()
    assert len(warnings_from(caplog)) == 1
    reconnected = [r for r in caplog.records if r.name == LOGGER and "reconnected" in r.getMessage()]
    assert len(reconnected) == 1


async def test_backoff_spaces_out_probes_and_warns_once(
    closing: Callable[[TieredCache], TieredCache], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    clock = Clock()
    cache = closing(build(free_port(), "t", clock=clock, backoff_min=0.5, backoff_max=10))

    await cache.set("k", b"v")  # the first call finds Redis down
    assert cache.failovers == 1
    assert cache.probes == 0
    for wait in (0.5, 1, 2, 4, 8, 10, 10):
        clock.now += wait - 0.01
        for _ in range(50):
            assert await cache.get("k") == b"v"
            assert await cache.get("missing") is None
            await cache.set("k2", b"w")
        probes = cache.probes
        clock.now += 0.01
        await cache.get("missing")  # due now: exactly one probe, which fails and doubles the wait
        assert cache.probes == probes + 1
        await cache.get("missing")
        assert cache.probes == probes + 1
    assert cache.failovers == 1
    assert len(warnings_from(caplog)) == 1
    assert not cache.redis_up


async def test_unreachable_from_the_start_serves_from_memory(
    closing: Callable[[TieredCache], TieredCache],
) -> None:
    cache = closing(build(free_port(), "t"))
    await cache.set("a", b"1", ttl=60)
    assert await cache.get("a") == b"1"
    assert await cache.delete("a") is True
    await cache.set("p:x", b"1")
    await cache.set("p:y", b"1")
    assert await cache.clear("p:") == 2
    stats = await cache.stats()
    assert stats["redis_up"] is False
    assert stats["kind"] == "tiered"
    assert stats["local"]["entries"] == 0
    # The clear supersedes the writes it covers: only the delete of "a" and the clear wait for Redis.
    assert stats["pending_writes"] == 2


async def test_local_copies_expire_after_local_ttl(
    redis_server: RedisServer, redis_prefix: str, closing: Callable[[TieredCache], TieredCache]
) -> None:
    clock = Clock()
    writer = closing(build(redis_server.port, redis_prefix))
    reader = closing(build(redis_server.port, redis_prefix, local=MemoryCache(clock=clock), local_ttl=5))
    await writer.set("k", b"one", ttl=600)
    assert await reader.get("k") == b"one"  # from Redis, copied into the reader's memory
    await writer.set("k", b"two", ttl=600)
    clock.now += 4.9
    assert await reader.get("k") == b"one"  # the local copy, still within local_ttl
    clock.now += 0.1
    assert await reader.get("k") == b"two"  # local copy expired: read through to Redis
    assert reader.local_hits == 1
    assert reader.remote_hits == 2


async def test_a_short_ttl_is_not_extended_by_local_ttl(
    redis_server: RedisServer, redis_prefix: str, closing: Callable[[TieredCache], TieredCache]
) -> None:
    clock = Clock()
    cache = closing(build(redis_server.port, redis_prefix, local=MemoryCache(clock=clock), local_ttl=5))
    await cache.set("k", b"v", ttl=1)
    assert cache.local.peek("k") == (b"v", pytest.approx(1))
    await cache.set("n", b"v", ttl=0)
    assert cache.local.peek("n") == (b"v", pytest.approx(5))


def test_bad_options_are_rejected() -> None:
    local = MemoryCache()
    url = parse_backend_url("redis://127.0.0.1:1/0", "cache", ["redis"])
    remote = RedisCache(make_redis(url), close_client=False)
    with pytest.raises(ValueError, match="local_ttl"):
        TieredCache(local, remote, local_ttl=-1)
    with pytest.raises(ValueError, match="backoff"):
        TieredCache(local, remote, backoff_min=2, backoff_max=1)
