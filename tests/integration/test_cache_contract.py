"""One contract every cache backend keeps: memory, Redis and tiered (memory in front of Redis)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import redis.asyncio as aioredis

from llmkit.core.cache import Cache, cache_from_url
from tests.servers import RedisServer

BACKENDS = ["memory", "redis", "tiered"]

CacheFactory = Callable[..., Cache]


@pytest.fixture(params=BACKENDS)
async def make_cache(request: pytest.FixtureRequest, redis_prefix: str) -> AsyncIterator[CacheFactory]:
    """Build caches of the parametrized kind (Redis ones under a prefix of their own); closes them after."""
    kind: str = request.param
    made: list[Cache] = []
    server: RedisServer | None = None if kind == "memory" else request.getfixturevalue("redis_server")

    def make(default_ttl: float | None = None) -> Cache:
        if server is None:
            url = "memory://?max_size_mb=64"
        else:
            scheme = "redis" if kind == "redis" else "tiered+redis"
            url = f"{scheme}://127.0.0.1:{server.port}/0?prefix={redis_prefix}&timeout=5"
        cache = cache_from_url(url, default_ttl=default_ttl)
        made.append(cache)
        return cache

    yield make
    for cache in made:
        await cache.close()


@pytest.fixture
def cache(make_cache: CacheFactory) -> Cache:
    return make_cache()


async def eventually_none(get: Callable[[], Awaitable[bytes | None]], within: float = 10.0) -> None:
    """Wait until `get()` answers None (an entry expired), failing after `within` seconds."""
    deadline = time.monotonic() + within
    while await get() is not None:
        assert time.monotonic() < deadline, "the entry did not expire"
        await asyncio.sleep(0.02)


async def test_is_a_cache(cache: Cache) -> None:
    assert isinstance(cache, Cache)


async def test_missing_key_is_none(cache: Cache) -> None:
    assert await cache.get("nope") is None


async def test_set_then_get(cache: Cache) -> None:
    await cache.set("k", b"value")
    assert await cache.get("k") == b"value"


async def test_str_values_are_stored_as_utf8(cache: Cache) -> None:
    await cache.set("k", "héllo ✓")
    assert await cache.get("k") == "héllo ✓".encode()


async def test_binary_values_round_trip(cache: Cache) -> None:
    value = bytes(range(256)) * 4 + b"\x00\xff\xfe"
    await cache.set("bin", value)
    assert await cache.get("bin") == value


async def test_empty_value_is_a_hit_not_a_miss(cache: Cache) -> None:
    await cache.set("empty", b"")
    assert await cache.get("empty") == b""


async def test_large_value_round_trips(cache: Cache) -> None:
    value = b"x" * (2 * 1024 * 1024)
    await cache.set("big", value)
    assert await cache.get("big") == value


async def test_unicode_keys(cache: Cache) -> None:
    await cache.set("ключ:答え", b"1")
    assert await cache.get("ключ:答え") == b"1"
    assert await cache.get("ключ") is None


async def test_overwrite_replaces_the_value(cache: Cache) -> None:
    await cache.set("k", b"one")
    await cache.set("k", b"two")
    assert await cache.get("k") == b"two"


async def test_delete(cache: Cache) -> None:
    await cache.set("k", b"v")
    assert await cache.delete("k") is True
    assert await cache.get("k") is None
    assert await cache.delete("k") is False


async def test_ttl_expires_the_entry(cache: Cache) -> None:
    await cache.set("short", b"v", ttl=0.2)
    await cache.set("long", b"v", ttl=600)
    assert await cache.get("short") == b"v"
    await eventually_none(lambda: cache.get("short"))
    assert await cache.get("long") == b"v"


async def test_default_ttl_applies_and_zero_means_no_expiry(make_cache: CacheFactory) -> None:
    cache = make_cache(default_ttl=0.2)
    await cache.set("default", b"v")
    await cache.set("forever", b"v", ttl=0)
    await eventually_none(lambda: cache.get("default"))
    assert await cache.get("forever") == b"v"


async def test_overwrite_resets_the_ttl(cache: Cache) -> None:
    await cache.set("k", b"v", ttl=0.2)
    await cache.set("k", b"v2", ttl=600)
    await asyncio.sleep(0.4)
    assert await cache.get("k") == b"v2"


async def test_negative_ttl_is_rejected(cache: Cache) -> None:
    with pytest.raises(ValueError, match="ttl"):
        await cache.set("k", b"v", ttl=-1)
    assert await cache.get("k") is None


async def test_non_bytes_values_are_rejected(cache: Cache) -> None:
    with pytest.raises(TypeError, match="bytes or str"):
        await cache.set("k", 42)  # type: ignore[arg-type]


async def test_clear_prefix_removes_only_matching_keys(cache: Cache) -> None:
    for key in ("file:a.md", "file:b.md", "file_list", "db_responses"):
        await cache.set(key, b"v")
    assert await cache.clear("file:") == 2
    assert await cache.get("file:a.md") is None
    assert await cache.get("file:b.md") is None
    assert await cache.get("file_list") == b"v"
    assert await cache.get("db_responses") == b"v"


async def test_clear_treats_glob_characters_literally(cache: Cache) -> None:
    await cache.set("a*[b]?", b"1")
    await cache.set("a-other", b"2")
    assert await cache.clear("a*") == 1
    assert await cache.get("a*[b]?") is None
    assert await cache.get("a-other") == b"2"


async def test_clear_everything_counts_many_keys(cache: Cache) -> None:
    # More keys than one SCAN page, so Redis clears in several batches.
    for i in range(2500):
        await cache.set(f"k{i}", b"v")
    assert await cache.clear() == 2500
    assert await cache.get("k0") is None
    assert await cache.get("k2499") is None
    assert await cache.clear() == 0


async def test_clear_does_not_count_expired_entries(cache: Cache) -> None:
    await cache.set("gone", b"v", ttl=0.05)
    await cache.set("kept", b"v")
    await eventually_none(lambda: cache.get("gone"))
    assert await cache.clear() == 1


async def test_stats_counts_hits_misses_and_entries(cache: Cache) -> None:
    await cache.set("a", b"12345")
    await cache.set("b", b"v")
    assert await cache.get("a") == b"12345"
    assert await cache.get("a") == b"12345"
    assert await cache.get("missing") is None
    stats = await cache.stats()
    assert stats["hits"] == 2
    assert stats["misses"] == 1
    assert stats["hit_rate"] == pytest.approx(2 / 3, abs=1e-3)
    assert stats["entries"] == 2
    assert stats["bytes"] > 0
    assert stats["evictions"] >= 0
    assert stats["kind"] in BACKENDS


async def test_stats_is_json_serialisable(cache: Cache) -> None:
    import orjson

    await cache.set("a", b"v")
    assert orjson.loads(orjson.dumps(await cache.stats()))["entries"] == 1


async def test_concurrent_operations(cache: Cache) -> None:
    await asyncio.gather(*(cache.set(f"c{i}", str(i)) for i in range(200)))
    values = await asyncio.gather(*(cache.get(f"c{i}") for i in range(200)))
    assert values == [str(i).encode() for i in range(200)]


async def test_redis_backends_store_under_prefix(
    make_cache: CacheFactory, redis_client: aioredis.Redis, redis_prefix: str
) -> None:
    cache = make_cache()
    await cache.set("file:a.md", b"# A")
    stored = await redis_client.get(f"{redis_prefix}:file:a.md")
    if (await cache.stats())["kind"] == "memory":
        assert stored is None
    else:
        assert stored == b"# A"
        # Keys of another prefix are never touched by clear().
        await redis_client.set(f"{redis_prefix}other:x", b"keep")
        assert await cache.clear() == 1
        assert await redis_client.get(f"{redis_prefix}other:x") == b"keep"
        await redis_client.delete(f"{redis_prefix}other:x")
