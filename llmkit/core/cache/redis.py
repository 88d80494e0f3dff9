"""Redis cache: keys stored as `{prefix}:{key}`, TTLs in milliseconds, driver errors as BackendError."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar, cast

from redis.asyncio import BlockingConnectionPool

from llmkit.core.backends import driver_failure
from llmkit.core.cache.base import as_bytes, effective_ttl, hit_rate
from llmkit.errors import BackendError

if TYPE_CHECKING:
    import redis.asyncio as aioredis

T = TypeVar("T")

_GLOB_SPECIALS = "\\*?[]"


def escape_glob(text: str) -> str:
    """`text` as a literal inside a Redis MATCH pattern."""
    return "".join("\\" + ch if ch in _GLOB_SPECIALS else ch for ch in text)


def _ttl_ms(seconds: float) -> int:
    # Round up so a tiny TTL never becomes PX 0, which Redis rejects.
    return max(1, math.ceil(seconds * 1000))


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


class RedisCache:
    """A cache on a Redis server shared by every process that uses the same prefix."""

    kind = "redis"

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str = "llmkit",
        default_ttl: float | None = None,
        timeout: float | None = None,
        scan_count: int = 1000,
        close_client: bool = True,
    ) -> None:
        effective_ttl(default_ttl, None)  # rejects a negative default now
        self.client = client
        self.prefix = prefix
        self.default_ttl = default_ttl
        # The pool's socket timeout bounds each read; this bounds the whole call (connect, pool, retries).
        self.timeout = timeout
        self.scan_count = scan_count
        self._close_client = close_client
        self._key_prefix = f"{prefix}:" if prefix else ""
        self.hits = 0
        self.misses = 0
        self.sets = 0
        pool = client.connection_pool
        # A plain ConnectionPool (what make_redis builds) raises "Too many connections" instead of waiting
        # once max_connections commands are in flight; queue callers here instead, under the timeout.
        limit = getattr(pool, "max_connections", None)
        self._slots: asyncio.Semaphore | None = None
        if isinstance(limit, int) and not isinstance(pool, BlockingConnectionPool):
            self._slots = asyncio.Semaphore(limit)
        kwargs = pool.connection_kwargs
        # Never the password: this lands in logs and error messages.
        self.address = f"redis://{kwargs.get('host', '?')}:{kwargs.get('port', '?')}/{kwargs.get('db', 0)}"

    def full_key(self, key: str) -> str:
        """The Redis key that holds cache key `key`."""
        return self._key_prefix + key

    def relative_key(self, raw: bytes | str) -> str:
        """The cache key of a full Redis key found by `scan` (undecodable bytes shown as escapes)."""
        text = raw.decode("utf-8", "backslashreplace") if isinstance(raw, bytes) else raw
        return text[len(self._key_prefix) :]

    async def _call(self, what: str, method: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        """Run one driver call under the timeout, wrapping driver errors as BackendError."""
        try:
            async with asyncio.timeout(self.timeout):
                if self._slots is None:
                    return await method(*args, **kwargs)
                # The coroutine is made only once a slot is held, so a timeout never leaves one unawaited.
                async with self._slots:
                    return await method(*args, **kwargs)
        except Exception as exc:
            if not driver_failure(exc):
                raise
            reason = f"timed out after {self.timeout}s" if isinstance(exc, TimeoutError) else _one_line(exc)
            raise BackendError(f"redis cache at {self.address}: {what} failed: {reason}") from exc

    async def get(self, key: str) -> bytes | None:
        """The value of `key`, or None if it is missing or expired."""
        # The client is built without decode_responses, so values are bytes.
        value = cast("bytes | None", await self._call("GET", self.client.get, self._key_prefix + key))
        if value is None:
            self.misses += 1
        else:
            self.hits += 1
        return value

    async def set(self, key: str, value: bytes | str, ttl: float | None = None) -> None:
        """Store `value` under `key` with `ttl` seconds (None = default_ttl, 0 = no expiry)."""
        seconds = effective_ttl(ttl, self.default_ttl)
        px = None if seconds is None else _ttl_ms(seconds)
        await self._call("SET", self.client.set, self._key_prefix + key, as_bytes(value), px=px)
        self.sets += 1

    async def set_many(self, items: Iterable[tuple[str, bytes, float | None]]) -> int:
        """Store `(key, value, ttl)` triples in one pipeline round trip; the number stored."""
        pipe = self.client.pipeline(transaction=False)
        count = 0
        for key, value, ttl in items:
            seconds = effective_ttl(ttl, self.default_ttl)
            pipe.set(self._key_prefix + key, value, px=None if seconds is None else _ttl_ms(seconds))
            count += 1
        if count:
            await self._call("SET (pipeline)", pipe.execute)
            self.sets += count
        return count

    async def delete(self, key: str) -> bool:
        """Remove `key`; True if it was there."""
        removed: int = await self._call("DEL", self.client.delete, self._key_prefix + key)
        return removed > 0

    async def delete_many(self, keys: Iterable[str]) -> int:
        """Remove several keys in one round trip; the number that were there."""
        full = [self._key_prefix + key for key in keys]
        if not full:
            return 0
        removed: int = await self._call("UNLINK", self.client.unlink, *full)
        return removed

    async def scan(self, pattern: str = "*", count: int | None = None) -> AsyncIterator[list[bytes | str]]:
        """Pages of full Redis keys under the prefix whose rest matches glob `pattern` (SCAN, not KEYS)."""
        match = escape_glob(self._key_prefix) + pattern
        cursor = 0
        while True:
            cursor, page = await self._call(
                "SCAN", self.client.scan, cursor, match=match, count=count or self.scan_count
            )
            if page:
                yield page
            if cursor == 0:
                return

    async def keys(self, pattern: str = "*", limit: int | None = None) -> list[str]:
        """Cache keys (without the prefix) matching the glob `pattern`, at most `limit` of them."""
        found: list[str] = []
        async for page in self.scan(pattern):
            found.extend(self.relative_key(raw) for raw in page)
            if limit is not None and len(found) >= limit:
                return found[:limit]
        return found

    async def ttls(self, keys: Iterable[str]) -> dict[str, float | None]:
        """Remaining TTL in seconds (None = no expiry) of each key that exists, in one pipeline."""
        keys = list(keys)
        if not keys:
            return {}
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.pttl(self._key_prefix + key)
        replies: list[int] = await self._call("PTTL (pipeline)", pipe.execute)
        # PTTL answers -2 for a missing key (it may expire between SCAN and PTTL), -1 for no expiry.
        pairs = zip(keys, replies, strict=True)
        return {key: (None if ms == -1 else ms / 1000) for key, ms in pairs if ms != -2}

    async def clear(self, prefix: str = "") -> int:
        """Remove every key starting with `prefix` (all keys under the cache prefix if empty)."""
        removed = 0
        # UNLINK frees memory in a background thread, so a big clear never blocks Redis; one batch per
        # SCAN page keeps each command small.
        async for page in self.scan(escape_glob(prefix) + "*"):
            removed += await self._call("UNLINK", self.client.unlink, *page)
        return removed

    async def count(self, pattern: str = "*") -> int:
        """How many keys under the prefix match `pattern` (a full SCAN: O(keys in the database))."""
        total = 0
        async for page in self.scan(pattern):
            total += len(page)
        return total

    async def ping(self) -> None:
        """Raise BackendError unless Redis answers."""
        await self._call("PING", self.client.ping)

    async def stats(self) -> dict[str, Any]:
        """Client-side hits and misses, keys under the prefix, and the server's memory and evictions."""
        return {
            "kind": self.kind,
            "hits": self.hits,
            "misses": self.misses,
            "hit_rate": hit_rate(self.hits, self.misses),
            "sets": self.sets,
            "entries": await self.count(),
            **await self.server_stats(),
            "prefix": self.prefix,
            "address": self.address,
            "default_ttl": self.default_ttl,
        }

    async def server_stats(self) -> dict[str, Any]:
        """The server's memory use, evictions, expirations and key count (Redis has no per-prefix figures)."""
        memory: dict[str, Any] = await self._call("INFO memory", self.client.info, "memory")
        server: dict[str, Any] = await self._call("INFO stats", self.client.info, "stats")
        db_keys: int = await self._call("DBSIZE", self.client.dbsize)
        return {
            "bytes": int(memory.get("used_memory", 0)),
            "bytes_human": str(memory.get("used_memory_human", "")),
            "evictions": int(server.get("evicted_keys", 0)),
            "expirations": int(server.get("expired_keys", 0)),
            "db_keys": db_keys,
        }

    async def close(self) -> None:
        """Close the client and its pool (unless built with close_client=False)."""
        if self._close_client:
            # A client built on an explicit pool (as make_redis does) leaves the pool open by default.
            await self.client.aclose(close_connection_pool=True)
