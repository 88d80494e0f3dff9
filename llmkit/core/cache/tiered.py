"""A memory tier in front of Redis, which keeps serving from memory while Redis is unreachable."""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from llmkit.core.cache.base import as_bytes, effective_ttl, hit_rate
from llmkit.core.cache.memory import MemoryCache
from llmkit.core.cache.redis import RedisCache
from llmkit.errors import BackendError

log = logging.getLogger("llmkit.cache")


class TieredCache:
    """MemoryCache in front of RedisCache; Redis is the shared truth, memory a short-lived copy.

    Healthy: reads hit memory first, then Redis (filling memory for `local_ttl` seconds so replicas see
    each other's changes soon); writes go to Redis, then memory. Redis down: every operation is served by
    memory alone, writes are remembered, and Redis is retried only after an exponential backoff (one
    probe at a time). When a probe succeeds, the remembered writes are replayed to Redis first.
    """

    kind = "tiered"

    def __init__(
        self,
        local: MemoryCache,
        remote: RedisCache,
        *,
        local_ttl: float | None = 5.0,
        backoff_min: float = 0.5,
        backoff_max: float = 10.0,
        max_pending: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if local_ttl is not None and local_ttl < 0:
            raise ValueError(f"local_ttl must be >= 0 seconds (0 = as long as in Redis), got {local_ttl}")
        if not 0 < backoff_min <= backoff_max:
            raise ValueError(f"need 0 < backoff_min <= backoff_max, got {backoff_min} and {backoff_max}")
        self.local = local
        self.remote = remote
        self.local_ttl = local_ttl or None
        self.default_ttl = remote.default_ttl
        self.backoff_min = backoff_min
        self.backoff_max = backoff_max
        self.max_pending = max_pending
        self._clock = clock
        self._down = False
        self._probing = False
        self._retry_at = 0.0
        self._backoff = backoff_min
        # Writes made while Redis was down, replayed when it is back: key -> True (set) or False (delete).
        # Values are not copied here: the replay reads them from memory, so a later write wins.
        # Ordered: dropping the oldest of a plain dict (next(iter(d))) rescans freed slots under churn.
        self._pending: OrderedDict[str, bool] = OrderedDict()
        self._pending_clears: list[str] = []
        # Bumped by every write, so a read that raced with one does not copy a stale value into memory.
        self._writes = 0
        self.local_hits = 0
        self.remote_hits = 0
        self.misses = 0
        self.failovers = 0
        self.probes = 0
        self.degraded_ops = 0
        self.replayed = 0
        self.pending_dropped = 0

    @property
    def redis_up(self) -> bool:
        """False from a failed Redis call until a probe succeeds."""
        return not self._down

    async def get(self, key: str) -> bytes | None:
        """From memory if there, else from Redis (copied into memory for `local_ttl` seconds)."""
        value = self.local.get_nowait(key)
        if value is not None:
            self.local_hits += 1
            return value
        if self._down and not await self._recover():
            self.degraded_ops += 1
            self.misses += 1
            return None
        writes = self._writes
        try:
            value = await self.remote.get(key)
        except BackendError as exc:
            self._failed(exc)
            self.degraded_ops += 1
            self.misses += 1
            return None
        if value is None:
            self.misses += 1
            return None
        self.remote_hits += 1
        if writes == self._writes:
            # Redis does not tell the remaining TTL with GET; the local copy lives local_ttl at most.
            self.local.set_nowait(key, value, self._local_ttl(self.default_ttl))
        return value

    async def set(self, key: str, value: bytes | str, ttl: float | None = None) -> None:
        """Store in Redis and memory; in memory alone (replayed later) while Redis is down."""
        data = as_bytes(value)
        seconds = effective_ttl(ttl, self.default_ttl)
        self._writes += 1
        if not self._down or await self._recover():
            try:
                await self.remote.set(key, data, 0 if seconds is None else seconds)
            except BackendError as exc:
                self._failed(exc)
            else:
                self.local.set_nowait(key, data, self._local_ttl(seconds))
                return
        self.degraded_ops += 1
        self.local.set_nowait(key, data, 0 if seconds is None else seconds)
        self._remember(key, True)

    async def delete(self, key: str) -> bool:
        """Remove from memory and Redis; True if either had it."""
        in_memory = self.local.delete_nowait(key)
        self._writes += 1
        if not self._down or await self._recover():
            try:
                return await self.remote.delete(key) or in_memory
            except BackendError as exc:
                self._failed(exc)
        self.degraded_ops += 1
        self._remember(key, False)
        return in_memory

    async def clear(self, prefix: str = "") -> int:
        """Remove keys starting with `prefix` from both tiers; how many Redis (memory if down) had."""
        in_memory = self.local.clear_nowait(prefix)
        self._writes += 1
        if not self._down or await self._recover():
            try:
                return await self.remote.clear(prefix)
            except BackendError as exc:
                self._failed(exc)
        self.degraded_ops += 1
        # Writes remembered before this clear are void; the clear itself is replayed.
        for key in [k for k in self._pending if k.startswith(prefix)]:
            del self._pending[key]
        self._pending_clears.append(prefix)
        return in_memory

    async def stats(self) -> dict[str, Any]:
        """Tiered counters, with the memory tier's and (if reachable) Redis's stats nested."""
        local = await self.local.stats()
        remote: dict[str, Any] | None = None
        if not self._down:
            try:
                remote = await self.remote.stats()
            except BackendError as exc:
                self._failed(exc)
        hits = self.local_hits + self.remote_hits
        return {
            "kind": self.kind,
            "hits": hits,
            "misses": self.misses,
            "hit_rate": hit_rate(hits, self.misses),
            "local_hits": self.local_hits,
            "remote_hits": self.remote_hits,
            "entries": remote["entries"] if remote else local["entries"],
            "bytes": remote["bytes"] if remote else local["bytes"],
            "evictions": local["evictions"],
            "redis_up": not self._down,
            "failovers": self.failovers,
            "probes": self.probes,
            "degraded_ops": self.degraded_ops,
            "pending_writes": len(self._pending) + len(self._pending_clears),
            "replayed": self.replayed,
            "pending_dropped": self.pending_dropped,
            "local_ttl": self.local_ttl,
            "local": local,
            "remote": remote,
        }

    async def close(self) -> None:
        """Close both tiers (writes still waiting for Redis are dropped)."""
        await self.local.close()
        await self.remote.close()

    def _local_ttl(self, seconds: float | None) -> float:
        """The memory TTL (0 = none) of a copy whose Redis TTL is `seconds` (None = none)."""
        if self.local_ttl is None:
            return 0.0 if seconds is None else seconds
        return self.local_ttl if seconds is None else min(seconds, self.local_ttl)

    def _remember(self, key: str, is_set: bool) -> None:
        pending = self._pending
        pending.pop(key, None)  # re-insert at the end: replay order follows write order
        if len(pending) >= self.max_pending:
            pending.popitem(last=False)
            self.pending_dropped += 1
        pending[key] = is_set

    def _failed(self, exc: BackendError) -> None:
        """A Redis call failed: switch to memory (one warning per outage) and schedule a probe."""
        if self._down:
            return  # an in-flight call of the same outage; the first one already switched
        self._down = True
        self.failovers += 1
        self._backoff = self.backoff_min
        self._retry_at = self._clock() + self._backoff
        log.warning("%s; serving from memory, retrying Redis with backoff up to %ss", exc, self.backoff_max)

    async def _recover(self) -> bool:
        """While down: True once a probe (the replay, or PING) succeeds; at most one probe in flight."""
        if self._probing or self._clock() < self._retry_at:
            return False
        self._probing = True
        self.probes += 1
        before = self.replayed
        try:
            await self._replay()
        except BackendError as exc:
            self._backoff = min(self._backoff * 2, self.backoff_max)
            self._retry_at = self._clock() + self._backoff
            log.debug("Redis still unreachable (%s); next try in %ss", exc, self._backoff)
            return False
        finally:
            self._probing = False
        self._down = False
        self._backoff = self.backoff_min
        log.info(
            "redis cache at %s reconnected; replayed %d pending writes",
            self.remote.address,
            self.replayed - before,
        )
        return True

    async def _replay(self) -> None:
        """Send the writes remembered during the outage to Redis (PING if none), oldest first."""
        if not self._pending and not self._pending_clears:
            await self.remote.ping()
            return
        # Loop: writes that arrive while a round is awaiting Redis are remembered for the next round.
        while self._pending or self._pending_clears:
            clears, self._pending_clears = self._pending_clears, []
            pending, self._pending = self._pending, OrderedDict()
            sets: list[tuple[str, bytes, float | None]] = []
            for key, is_set in pending.items():
                found = self.local.peek(key) if is_set else None
                if found is not None:
                    sets.append((key, found[0], 0 if found[1] is None else found[1]))
            deletes = [key for key, is_set in pending.items() if not is_set]
            try:
                for prefix in clears:
                    await self.remote.clear(prefix)
                await self.remote.delete_many(deletes)
                await self.remote.set_many(sets)
            except BackendError:
                self._restore(clears, pending)
                raise
            self.replayed += len(clears) + len(deletes) + len(sets)
            for key, value, seconds in sets:
                # Now in Redis: shorten the memory copy to local_ttl, unless it was overwritten meanwhile.
                current = self.local.peek(key)
                if current is not None and current[0] is value:
                    self.local.set_nowait(key, value, self._local_ttl(seconds or None))

    def _restore(self, clears: list[str], pending: OrderedDict[str, bool]) -> None:
        """Put back a replay round that failed, in front of what arrived during it."""
        newer_clears = self._pending_clears
        for prefix in newer_clears:
            for key in [k for k in pending if k.startswith(prefix)]:
                del pending[key]
        pending.update(self._pending)
        self._pending = pending
        self._pending_clears = clears + newer_clears
