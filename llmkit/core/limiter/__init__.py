"""Token buckets, concurrency limits, quota counters; `*_from_url` pick backends through scheme tables."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from llmkit.core.backends import BackendURL, parse_backend_url
from llmkit.core.limiter.base import (
    ConcurrencyLimit,
    Decision,
    Limiter,
    LimitStats,
    QuotaCounter,
    QuotaDecision,
    Slot,
    SlotUnavailable,
    TokenBucket,
    Window,
    WindowState,
)
from llmkit.errors import ConfigError

if TYPE_CHECKING:
    from llmkit.core.limiter.quota_redis import RedisQuotaCounter

__all__ = [
    "QUOTA_SCHEMES",
    "SCHEMES",
    "ConcurrencyLimit",
    "Decision",
    "LimitStats",
    "Limiter",
    "QuotaCounter",
    "QuotaDecision",
    "Slot",
    "SlotUnavailable",
    "TokenBucket",
    "Window",
    "WindowState",
    "limiter_from_url",
    "quota_counter_from_url",
    "redis_quota_counter",
]


def _memory(url: BackendURL) -> Limiter:
    from llmkit.core.limiter.memory import MemoryLimiter

    url.check_params(["sweep_interval"])
    return MemoryLimiter(sweep_interval=url.get("sweep_interval", float, 60.0))


def _redis(url: BackendURL) -> Limiter:
    from llmkit.core.backends import make_redis
    from llmkit.core.limiter.redis import RedisLimiter

    url.check_params(["prefix", "timeout", "max_connections", "batch", "lease"])
    timeout = url.get("timeout", float, 2.0)
    lease = url.get("lease", float, 30.0)
    if timeout <= 0 or lease <= 0:
        raise ConfigError(
            f"limiter URL: timeout and lease must be > 0 seconds; got {timeout:g} and {lease:g}"
        )
    prefix, batch = url.get("prefix", str, "llmkit"), url.get("batch", bool, True)
    client = make_redis(url, timeout=timeout, max_connections=url.get("max_connections", int, 64))
    return RedisLimiter(client, prefix=prefix, batch=batch, lease=lease, close_client=True)


# The one table of limiter backends; backend modules are imported only when their scheme is used.
SCHEMES: dict[str, Callable[[BackendURL], Limiter]] = {
    "memory": _memory,
    "redis": _redis,
    "redis+sentinel": _redis,
}


def limiter_from_url(url: str) -> Limiter:
    """`memory://` or `redis://host:6379/0?prefix=llmkit&timeout=2` -> a Limiter; else a ConfigError."""
    parsed = parse_backend_url(url, "limiter", SCHEMES)
    return SCHEMES[parsed.scheme](parsed)


def _memory_quota(url: BackendURL) -> QuotaCounter:
    from llmkit.core.limiter.quota_memory import MemoryQuotaCounter

    url.check_params(["sweep_interval"])
    return MemoryQuotaCounter(sweep_interval=url.get("sweep_interval", float, 60.0))


def redis_quota_counter(url: BackendURL) -> RedisQuotaCounter:
    """The Redis quota counter a parsed `redis://...?prefix=&timeout=&max_connections=&margin=` names."""
    from llmkit.core.backends import make_redis
    from llmkit.core.limiter.quota_redis import RedisQuotaCounter

    url.check_params(["prefix", "timeout", "max_connections", "margin"])
    timeout, margin = url.get("timeout", float, 2.0), url.get("margin", float, 60.0)
    if timeout <= 0 or margin < 0:
        raise ConfigError(
            f"quota counter URL: timeout must be > 0 and margin >= 0 seconds; got {timeout:g} and {margin:g}"
        )
    client = make_redis(url, timeout=timeout, max_connections=url.get("max_connections", int, 64))
    prefix = url.get("prefix", str, "llmkit")
    return RedisQuotaCounter(client, prefix=prefix, margin=margin, close_client=True)


# The one table of quota counter backends, imported lazily like SCHEMES.
QUOTA_SCHEMES: dict[str, Callable[[BackendURL], QuotaCounter]] = {
    "memory": _memory_quota,
    "redis": redis_quota_counter,
    "redis+sentinel": redis_quota_counter,
}


def quota_counter_from_url(url: str) -> QuotaCounter:
    """`memory://` or `redis://host:6379/0?prefix=llmkit&timeout=2` -> a QuotaCounter; else a ConfigError."""
    parsed = parse_backend_url(url, "quota counter", QUOTA_SCHEMES)
    return QUOTA_SCHEMES[parsed.scheme](parsed)
