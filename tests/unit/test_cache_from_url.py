"""The cache URL table: every scheme, its parameters, and the errors for unknown ones (no connection made)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest
from redis.asyncio import SSLConnection

from llmkit.core.cache import (
    SCHEMES,
    Cache,
    MemoryCache,
    RedisCache,
    TieredCache,
    cache_from_url,
    redis_cache_from_url,
)
from llmkit.errors import ConfigError

MB = 1024 * 1024


@pytest.fixture
async def build() -> AsyncIterator[Callable[..., Cache]]:
    """cache_from_url, closing whatever it built after the test."""
    made: list[Cache] = []

    def make(url: str, **kwargs: float | None) -> Cache:
        cache = cache_from_url(url, **kwargs)  # type: ignore[arg-type]
        made.append(cache)
        return cache

    yield make
    for cache in made:
        await cache.close()


def pool_kwargs(cache: RedisCache) -> dict[str, object]:
    return dict(cache.client.connection_pool.connection_kwargs)


def test_the_table_lists_every_scheme() -> None:
    assert set(SCHEMES) == {
        "memory",
        "redis",
        "rediss",
        "redis+sentinel",
        "tiered+redis",
        "tiered+rediss",
        "tiered+redis+sentinel",
    }


async def test_memory_defaults(build: Callable[..., Cache]) -> None:
    cache = build("memory://", default_ttl=30)
    assert isinstance(cache, MemoryCache)
    assert cache.max_bytes == 256 * MB
    assert cache.max_entries is None
    assert cache.default_ttl == 30


async def test_memory_params(build: Callable[..., Cache]) -> None:
    cache = build("memory://?max_size_mb=1.5&max_entries=1000")
    assert isinstance(cache, MemoryCache)
    assert cache.max_bytes == int(1.5 * MB)
    assert cache.max_entries == 1000


async def test_memory_zero_means_no_limit(build: Callable[..., Cache]) -> None:
    cache = build("memory://?max_size_mb=0&max_entries=0")
    assert isinstance(cache, MemoryCache)
    assert (cache.max_bytes, cache.max_entries) == (None, None)


async def test_redis(build: Callable[..., Cache]) -> None:
    cache = build("redis://:s3cret@10.1.2.3:6380/2?prefix=sim&timeout=0.5&max_connections=8", default_ttl=60)
    assert isinstance(cache, RedisCache)
    assert cache.prefix == "sim"
    assert cache.full_key("file:a.md") == "sim:file:a.md"
    assert cache.timeout == 0.5
    assert cache.default_ttl == 60
    kwargs = pool_kwargs(cache)
    assert (kwargs["host"], kwargs["port"], kwargs["db"], kwargs["password"]) == (
        "10.1.2.3",
        6380,
        2,
        "s3cret",
    )
    assert kwargs["socket_timeout"] == 0.5
    assert cache.client.connection_pool.max_connections == 8
    assert cache.address == "redis://10.1.2.3:6380/2"


async def test_redis_defaults(build: Callable[..., Cache]) -> None:
    cache = build("redis://localhost")
    assert isinstance(cache, RedisCache)
    assert cache.prefix == "llmkit"
    assert cache.timeout == 2.0
    assert pool_kwargs(cache)["port"] == 6379


async def test_rediss_uses_tls(build: Callable[..., Cache]) -> None:
    cache = build("rediss://cache.example.com:6380/0")
    assert isinstance(cache, RedisCache)
    assert cache.client.connection_pool.connection_class is SSLConnection


async def test_tiered(build: Callable[..., Cache]) -> None:
    cache = build(
        "tiered+redis://redis:6379/0?prefix=llmkit&local_max_size_mb=64&local_ttl=5&local_max_entries=500",
        default_ttl=3600,
    )
    assert isinstance(cache, TieredCache)
    assert cache.local.max_bytes == 64 * MB
    assert cache.local.max_entries == 500
    assert cache.local_ttl == 5
    assert cache.default_ttl == 3600
    assert cache.remote.prefix == "llmkit"
    assert pool_kwargs(cache.remote)["host"] == "redis"


async def test_tiered_defaults_and_tls(build: Callable[..., Cache]) -> None:
    cache = build("tiered+rediss://redis:6379/0")
    assert isinstance(cache, TieredCache)
    assert cache.local.max_bytes == 64 * MB
    assert cache.local_ttl == 5
    assert cache.remote.client.connection_pool.connection_class is SSLConnection


@pytest.mark.parametrize(
    ("profile", "kind"), [("default", MemoryCache), ("local", RedisCache), ("ha", TieredCache)]
)
async def test_shipped_profile_urls_build(profile: str, kind: type, build: Callable[..., Cache]) -> None:
    from llmkit.settings import load_settings

    settings = load_settings(profile, env={})
    assert isinstance(build(settings.cache.url, default_ttl=settings.cache.ttl), kind)


@pytest.mark.parametrize("url", ["memcached://localhost", "http://localhost", "redis-cluster://x", "nothing"])
def test_unknown_scheme_lists_the_known_ones(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        cache_from_url(url)
    message = str(info.value)
    assert "unknown scheme" in message
    for scheme in SCHEMES:
        assert f"{scheme}://" in message


@pytest.mark.parametrize(
    ("url", "valid"),
    [
        ("memory://?max_size=1", "max_entries, max_size_mb"),
        ("redis://h/0?local_ttl=5", "max_connections, prefix, timeout"),
        ("tiered+redis://h/0?ttl=5", "local_max_entries, local_max_size_mb, local_ttl"),
    ],
)
def test_unknown_param_lists_the_valid_ones(url: str, valid: str) -> None:
    with pytest.raises(ConfigError, match="unknown parameter") as info:
        cache_from_url(url)
    assert valid in str(info.value)


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("memory://?max_entries=lots", "max_entries must be int"),
        ("memory://?max_size_mb=-1", "max_size_mb"),
        ("redis://h/0?timeout=0", "timeout must be > 0"),
        ("redis://h/0?timeout=soon", "timeout must be float"),
        ("redis://h/cache", "database number"),
        ("tiered+redis://h/0?local_ttl=-1", "local_ttl"),
    ],
)
def test_bad_values(url: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        cache_from_url(url)


def test_negative_default_ttl_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="ttl"):
        cache_from_url("memory://", default_ttl=-5)


def test_errors_mask_the_password() -> None:
    with pytest.raises(ConfigError) as info:
        cache_from_url("redis://:hunter2@h/0?bogus=1")
    assert "hunter2" not in str(info.value)
    assert "****" in str(info.value)


async def test_redis_cache_from_url_takes_the_redis_part() -> None:
    tiered = redis_cache_from_url("tiered+redis://h:7000/3?prefix=a&local_ttl=5")
    overridden = redis_cache_from_url("redis://h/0?prefix=a", prefix="b")
    try:
        assert isinstance(tiered, RedisCache)
        assert (tiered.prefix, tiered.address) == ("a", "redis://h:7000/3")
        assert overridden.prefix == "b"
    finally:
        await tiered.close()
        await overridden.close()


def test_redis_cache_from_url_refuses_memory() -> None:
    with pytest.raises(ConfigError, match="Redis URL is needed"):
        redis_cache_from_url("memory://")
