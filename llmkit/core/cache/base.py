"""The cache protocol every backend implements, and the TTL rules they share."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Cache(Protocol):
    """An async byte cache with per-entry TTL; keys are str, values bytes (str is stored as UTF-8).

    TTL rules, the same for every backend: `ttl=None` uses the cache's `default_ttl` (itself None or 0 =
    no expiry); `ttl=0` means no expiry; a positive `ttl` expires the entry after that many seconds.
    """

    async def get(self, key: str) -> bytes | None:
        """The value of `key`, or None if it is missing or expired."""
        ...

    async def set(self, key: str, value: bytes | str, ttl: float | None = None) -> None:
        """Store `value` under `key`, replacing any previous value."""
        ...

    async def delete(self, key: str) -> bool:
        """Remove `key`; True if it was there."""
        ...

    async def clear(self, prefix: str = "") -> int:
        """Remove every key starting with `prefix` (all keys if empty); the number removed."""
        ...

    async def stats(self) -> dict[str, Any]:
        """JSON-able counters: kind, hits, misses, entries, bytes, evictions, and backend extras."""
        ...

    async def close(self) -> None:
        """Release connections and memory; the cache must not be used afterwards."""
        ...


def as_bytes(value: bytes | str) -> bytes:
    """A cache value as bytes: str is encoded as UTF-8, bytes-like objects are copied to bytes."""
    if type(value) is bytes:
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"cache values must be bytes or str, got {type(value).__name__}")


def effective_ttl(ttl: float | None, default_ttl: float | None) -> float | None:
    """The TTL in seconds an entry gets (None = never expires); a negative TTL is a ValueError."""
    if ttl is None:
        ttl = default_ttl
    if ttl is None or ttl == 0:
        return None
    if ttl < 0:
        raise ValueError(f"cache ttl must be >= 0 seconds (0 = no expiry), got {ttl}")
    return float(ttl)


def hit_rate(hits: int, misses: int) -> float:
    """Hits over lookups, 0.0 before the first lookup."""
    total = hits + misses
    return round(hits / total, 4) if total else 0.0
