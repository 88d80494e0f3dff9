"""Token buckets and concurrency limits; `limiter_from_url` picks the backend through one table of schemes."""

from __future__ import annotations

from collections.abc import Callable

from llmkit.core.backends import BackendURL, parse_backend_url
from llmkit.core.limiter.base import (
    ConcurrencyLimit,
    Decision,
    Limiter,
    LimitStats,
    Slot,
    SlotUnavailable,
    TokenBucket,
)
from llmkit.errors import ConfigError

__all__ = [
    "SCHEMES",
    "ConcurrencyLimit",
    "Decision",
    "LimitStats",
    "Limiter",
    "Slot",
    "SlotUnavailable",
    "TokenBucket",
    "limiter_from_url",
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
}


def limiter_from_url(url: str) -> Limiter:
    """`memory://` or `redis://host:6379/0?prefix=llmkit&timeout=2` -> a Limiter; else a ConfigError."""
    parsed = parse_backend_url(url, "limiter", SCHEMES)
    return SCHEMES[parsed.scheme](parsed)
