"""Caches chosen by URL: `memory://`, `redis://`, `rediss://`, `redis+sentinel://`, `tiered+redis://` (and
`tiered+rediss://`, `tiered+redis+sentinel://`) through one table."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from llmkit.core.backends import BackendURL, make_redis, parse_backend_url
from llmkit.core.cache.base import Cache
from llmkit.core.cache.memory import MemoryCache
from llmkit.core.cache.redis import RedisCache
from llmkit.core.cache.tiered import TieredCache
from llmkit.errors import ConfigError
from llmkit.settings import mask_url

__all__ = [
    "SCHEMES",
    "Cache",
    "MemoryCache",
    "RedisCache",
    "TieredCache",
    "cache_from_url",
    "redis_cache_from_url",
]

DEFAULT_PREFIX = "llmkit"
MEMORY_PARAMS = ("max_entries", "max_size_mb")
REDIS_PARAMS = ("max_connections", "prefix", "timeout")
TIERED_PARAMS = (*REDIS_PARAMS, "local_max_entries", "local_max_size_mb", "local_ttl")


def _memory(url: BackendURL, default_ttl: float | None) -> MemoryCache:
    url.check_params(MEMORY_PARAMS)
    max_entries = url.get("max_entries", int, 0)
    return MemoryCache(
        max_entries=max_entries or None,
        max_size_mb=url.get("max_size_mb", float, 256.0) or None,
        default_ttl=default_ttl,
    )


def _redis_part(url: BackendURL, default_ttl: float | None, prefix: str | None = None) -> RedisCache:
    """The RedisCache of a redis://, rediss:// or tiered+redis(s):// URL (params already checked)."""
    timeout = url.get("timeout", float, 2.0)
    if timeout <= 0:
        raise ConfigError(f"{mask_url(url.raw)}: parameter timeout must be > 0 seconds; got {timeout}")
    extra: dict[str, Any] = {}
    if url.scheme.endswith("rediss"):
        from redis.asyncio import SSLConnection

        extra["connection_class"] = SSLConnection
    client = make_redis(url, timeout=timeout, max_connections=url.get("max_connections", int, 64), **extra)
    return RedisCache(
        client,
        prefix=url.get("prefix", str, DEFAULT_PREFIX) if prefix is None else prefix,
        default_ttl=default_ttl,
        timeout=timeout,
    )


def _redis(url: BackendURL, default_ttl: float | None) -> RedisCache:
    url.check_params(REDIS_PARAMS)
    return _redis_part(url, default_ttl)


def _tiered(url: BackendURL, default_ttl: float | None) -> TieredCache:
    url.check_params(TIERED_PARAMS)
    local = MemoryCache(
        max_entries=url.get("local_max_entries", int, 0) or None,
        max_size_mb=url.get("local_max_size_mb", float, 64.0) or None,
        default_ttl=default_ttl,
    )
    local_ttl = url.get("local_ttl", float, 5.0)
    if local_ttl < 0:
        raise ConfigError(f"{mask_url(url.raw)}: parameter local_ttl must be >= 0 seconds; got {local_ttl}")
    # The Redis client is built last, so a bad parameter never leaves an open client behind.
    return TieredCache(local, _redis_part(url, default_ttl), local_ttl=local_ttl)


# The one table of cache backends: scheme -> (builder, the query parameters it accepts).
SCHEMES: dict[str, tuple[Callable[[BackendURL, float | None], Cache], tuple[str, ...]]] = {
    "memory": (_memory, MEMORY_PARAMS),
    "redis": (_redis, REDIS_PARAMS),
    "rediss": (_redis, REDIS_PARAMS),
    "tiered+redis": (_tiered, TIERED_PARAMS),
    "tiered+rediss": (_tiered, TIERED_PARAMS),
    "redis+sentinel": (_redis, REDIS_PARAMS),
    "tiered+redis+sentinel": (_tiered, TIERED_PARAMS),
}


def cache_from_url(url: str, *, default_ttl: float | None = None) -> Cache:
    """Build the cache a URL names; a bad scheme, parameter or value is a ConfigError saying what is known."""
    parsed = parse_backend_url(url, "cache", SCHEMES)
    builder, _ = SCHEMES[parsed.scheme]
    try:
        return builder(parsed, default_ttl)
    except ValueError as exc:
        raise ConfigError(f"cache URL {mask_url(url)!r}: {exc}") from None


def redis_cache_from_url(
    url: str, *, prefix: str | None = None, default_ttl: float | None = None
) -> RedisCache:
    """The Redis part of a redis://, rediss:// or tiered+redis:// URL, for tools that work on Redis."""
    parsed = parse_backend_url(url, "cache", SCHEMES)
    builder, params = SCHEMES[parsed.scheme]
    if builder is _memory:
        raise ConfigError(f"cache URL {mask_url(url)!r} is in-process memory; a Redis URL is needed here")
    parsed.check_params(params)
    try:
        return _redis_part(parsed, default_ttl, prefix)
    except ValueError as exc:
        raise ConfigError(f"cache URL {mask_url(url)!r}: {exc}") from None
