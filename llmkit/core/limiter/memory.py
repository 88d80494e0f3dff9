"""Token buckets and concurrency limits in this process only: plain dicts, no locks, no I/O."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import Callable, Sequence
from contextlib import suppress

from llmkit.core.limiter.base import (
    Decision,
    LimitStats,
    NamedLimits,
    Slot,
    check_bucket,
    check_cost,
    check_limit,
    no_slot,
)

# Allowed decisions differ only in `remaining`, so buckets build them once up to this many tokens.
_CACHED_DECISIONS = 4096


class MemoryTokenBucket:
    """A token bucket per key kept in a dict of key -> [tokens, last update]."""

    __slots__ = ("_allowed", "_buckets", "_clock", "_next_sweep", "_sweep_interval", "burst", "name", "rate")

    def __init__(
        self,
        name: str,
        rate: float,
        burst: int,
        sweep_interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        check_bucket(rate, burst)
        self.name = name
        self.rate = float(rate)
        self.burst = int(burst)
        self._clock = clock
        self._buckets: dict[str, list[float]] = {}
        self._sweep_interval = sweep_interval
        self._next_sweep = clock() + sweep_interval
        cached = range(min(self.burst, _CACHED_DECISIONS) + 1)
        self._allowed = tuple(Decision(True, n, 0.0, self.burst) for n in cached)

    def take(self, key: str, cost: int = 1) -> Decision:
        """The synchronous `acquire`: take `cost` tokens from the bucket of `key` if it holds that many."""
        if cost != 1:
            check_cost(cost, self.burst)
        now = self._clock()
        if now >= self._next_sweep:
            self._sweep(now)
        burst = self.burst
        state = self._buckets.get(key)
        if state is None:
            tokens: float = burst
        else:
            tokens = state[0] + (now - state[1]) * self.rate
            if tokens > burst:
                tokens = burst
        if tokens < cost:
            # A refusal changes nothing: the stored [tokens, last] still describes the bucket exactly.
            return Decision(False, int(tokens), (cost - tokens) / self.rate, burst)
        tokens -= cost
        if state is None:
            self._buckets[key] = [tokens, now]
        else:
            state[0] = tokens
            state[1] = now
        remaining = int(tokens)
        if remaining < _CACHED_DECISIONS:
            return self._allowed[remaining]
        return Decision(True, remaining, 0.0, burst)

    async def acquire(self, key: str, cost: int = 1) -> Decision:
        """Take `cost` tokens from the bucket of `key` if it holds that many."""
        return self.take(key, cost)

    async def acquire_many(self, keys: Sequence[str], cost: int = 1) -> list[Decision]:
        """`acquire` for each key, in order."""
        take = self.take
        return [take(key, cost) for key in keys]

    async def reset(self, key: str) -> None:
        """Refill the bucket of `key`."""
        self._buckets.pop(key, None)

    def __len__(self) -> int:
        return len(self._buckets)

    def _sweep(self, now: float) -> None:
        # A full bucket behaves exactly like a missing one, so dropping it loses nothing and keeps the
        # dict as large as the set of keys seen within about one sweep interval.
        rate, burst = self.rate, self.burst
        full = [key for key, (tokens, last) in self._buckets.items() if tokens + (now - last) * rate >= burst]
        for key in full:
            del self._buckets[key]
        self._next_sweep = now + self._sweep_interval


class MemoryConcurrencyLimit:
    """An asyncio semaphore with a wait timeout that hands freed slots to the longest waiter."""

    def __init__(self, name: str, limit: int) -> None:
        check_limit(limit)
        self.name = name
        self.limit = limit
        self._holders: set[str] = set()
        self._waiters: deque[asyncio.Future[str]] = deque()
        self._ids = itertools.count(1)

    async def acquire(self, timeout: float | None = None) -> str:
        """Wait up to `timeout` seconds (None: forever) for a slot; else raise SlotUnavailable."""
        # Newcomers queue behind existing waiters so nobody starves.
        if len(self._holders) < self.limit and not self._waiters:
            return self._hold()
        if timeout is not None and timeout <= 0:
            raise no_slot(self.name, self.limit, timeout)
        fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            async with asyncio.timeout(timeout):
                return await fut
        except TimeoutError:
            self._abandon(fut)
            raise no_slot(self.name, self.limit, timeout) from None
        except asyncio.CancelledError:
            self._abandon(fut)
            raise

    def try_acquire(self) -> str | None:
        """A slot's holder id if one is free right now (and nobody waits), else None; never waits."""
        if len(self._holders) < self.limit and not self._waiters:
            holder = str(next(self._ids))  # _hold(), inlined: this runs on every simulator request
            self._holders.add(holder)
            return holder
        return None

    async def release(self, holder: str) -> None:
        """Give the slot of `holder` back; releasing twice is harmless."""
        self._release(holder)

    def release_nowait(self, holder: str) -> None:
        """`release` without a coroutine."""
        if not self._waiters and holder in self._holders:
            self._holders.discard(holder)  # _release() when nobody waits, inlined for the request path
            return
        self._release(holder)

    def slot(self, timeout: float | None = None) -> Slot:
        """`async with limit.slot(timeout=...)`: hold a slot for the body of the block."""
        return Slot(self, timeout)

    async def in_use(self) -> int:
        """How many slots are held."""
        return len(self._holders)

    async def stats(self) -> LimitStats:
        """Size, slots in use and waiters."""
        return LimitStats(self.name, self.limit, len(self._holders), len(self._waiters))

    def _hold(self) -> str:
        holder = str(next(self._ids))
        self._holders.add(holder)
        return holder

    def _release(self, holder: str) -> None:
        if holder not in self._holders:
            return
        self._holders.discard(holder)
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(self._hold())
                return

    def _abandon(self, fut: asyncio.Future[str]) -> None:
        # The slot may have been handed over just as the wait timed out or was cancelled: pass it on.
        if fut.done() and not fut.cancelled():
            self._release(fut.result())
            return
        fut.cancel()
        with suppress(ValueError):
            self._waiters.remove(fut)


class MemoryLimiter(NamedLimits[MemoryTokenBucket, MemoryConcurrencyLimit]):
    """Makes token buckets and concurrency limits that live in this process."""

    def __init__(self, sweep_interval: float = 60.0) -> None:
        super().__init__()
        self.sweep_interval = sweep_interval

    def _new_bucket(self, name: str, rate: float, burst: int) -> MemoryTokenBucket:
        return MemoryTokenBucket(name, rate, burst, self.sweep_interval)

    def _new_limit(self, name: str, limit: int) -> MemoryConcurrencyLimit:
        return MemoryConcurrencyLimit(name, limit)

    async def close(self) -> None:
        """Nothing to release; present for the Limiter protocol."""
