"""Priority queues; `queue_from_url` picks the backend through one table of schemes."""

from __future__ import annotations

from collections.abc import Callable

from llmkit.core.backends import BackendURL, parse_backend_url
from llmkit.core.queue.base import (
    DuplicateItem,
    Priority,
    PriorityQueue,
    QueueClosed,
    QueueItem,
    QueueStats,
)
from llmkit.errors import ConfigError

__all__ = [
    "SCHEMES",
    "DuplicateItem",
    "Priority",
    "PriorityQueue",
    "QueueClosed",
    "QueueItem",
    "QueueStats",
    "queue_from_url",
]


def _memory(url: BackendURL, name: str, capacity: int) -> PriorityQueue:
    from llmkit.core.queue.memory import MemoryPriorityQueue

    url.check_params([])
    return MemoryPriorityQueue(name, capacity)


def _redis(url: BackendURL, name: str, capacity: int) -> PriorityQueue:
    from llmkit.core.backends import make_redis, replicas_of
    from llmkit.core.queue.redis import RedisPriorityQueue

    url.check_params(["prefix", "timeout", "max_connections", "replicas"])
    timeout = url.get("timeout", float, 2.0)
    if timeout <= 0:
        raise ConfigError(f"queue URL: timeout must be > 0 seconds; got {timeout:g}")
    replicas = replicas_of(url)
    client = make_redis(url, timeout=timeout, max_connections=url.get("max_connections", int, 64))
    # A blocked consumer's BLPOP must return before the socket timeout would cut it off.
    block = min(1.0, timeout / 2)
    prefix = url.get("prefix", str, "llmkit")
    return RedisPriorityQueue(
        client,
        name,
        capacity,
        prefix=prefix,
        block=block,
        close_client=True,
        # WAIT must return before the socket timeout would cut the connection.
        replicas=replicas,
        replica_wait=timeout / 2,
    )


# The one table of queue backends; backend modules are imported only when their scheme is used.
SCHEMES: dict[str, Callable[[BackendURL, str, int], PriorityQueue]] = {
    "memory": _memory,
    "redis": _redis,
    "redis+sentinel": _redis,
}


def queue_from_url(url: str, name: str, capacity: int) -> PriorityQueue:
    """`memory://` or `redis://host:6379/0?prefix=llmkit` -> the queue `name`; else a ConfigError."""
    if capacity < 1:
        raise ConfigError(f"queue {name!r}: capacity must be >= 1; got {capacity}")
    parsed = parse_backend_url(url, "queue", SCHEMES)
    return SCHEMES[parsed.scheme](parsed, name, capacity)
