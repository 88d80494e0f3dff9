"""UpstreamSlots: at most N upstream calls at once; the others wait in a core PriorityQueue by priority."""

from __future__ import annotations

import asyncio
import math

from llmkit.core.http import ApiError
from llmkit.core.queue.base import Priority, PriorityQueue
from llmkit.errors import QueueFull

# The ETA before any call was measured: the seed's 30 s per queued request.
DEFAULT_SERVICE_MS = 30_000.0
# Weight of the newest call in the moving average of service time.
EWMA_ALPHA = 0.2


class ServiceTimer:
    """An exponentially weighted moving average of how long one upstream call takes."""

    __slots__ = ("average_ms", "count")

    def __init__(self) -> None:
        self.average_ms = DEFAULT_SERVICE_MS
        self.count = 0

    def observe(self, seconds: float) -> None:
        """Fold one call's duration into the average (the first call replaces the default)."""
        ms = seconds * 1000
        self.average_ms = ms if self.count == 0 else self.average_ms + EWMA_ALPHA * (ms - self.average_ms)
        self.count += 1


class UpstreamSlots:
    """Grants upstream-call slots: at once while one is free and nobody waits, else in priority order."""

    def __init__(self, queue: PriorityQueue, max_concurrent: int) -> None:
        self.queue = queue
        self.max_concurrent = max_concurrent
        self.busy = 0
        self.timer = ServiceTimer()
        # Queued item id -> the future its flight awaits; resolved when a slot is handed to it.
        self._waiters: dict[str, asyncio.Future[None]] = {}

    @property
    def waiting(self) -> int:
        """How many calls wait for a slot."""
        return len(self._waiters)

    async def enter(self, item_id: str, priority: Priority) -> asyncio.Future[None] | None:
        """Take a slot now (None) or queue for one (a future to await); 429 when the queue is full."""
        if self.busy < self.max_concurrent and not self._waiters:
            self.busy += 1
            return None
        try:
            await self.queue.put(item_id, b"", int(priority))
        except QueueFull:
            raise ApiError(
                429,
                "queue_full",
                f"the upstream queue is full ({self.queue.capacity} requests wait for "
                f"{self.max_concurrent} upstream slots); retry later or raise gateway.max_queue_size",
                headers={"Retry-After": str(max(1, math.ceil(self.timer.average_ms / 1000)))},
            ) from None
        waiter = asyncio.get_running_loop().create_future()
        self._waiters[item_id] = waiter
        return waiter

    async def abandon(self, item_id: str, waiter: asyncio.Future[None]) -> None:
        """The flight of a queued waiter was cancelled: leave the queue, or give back a slot just granted."""
        self._waiters.pop(item_id, None)
        if waiter.done() and not waiter.cancelled():
            await self.release()
            return
        waiter.cancel()
        await self.queue.cancel(item_id)

    async def release(self) -> None:
        """A call finished: hand its slot to the first waiter by priority."""
        self.busy -= 1
        while self._waiters and self.busy < self.max_concurrent:
            item = await self.queue.get(timeout=0)
            if item is None:
                return
            waiter = self._waiters.pop(item.id, None)
            if waiter is None or waiter.done():
                continue
            self.busy += 1
            waiter.set_result(None)

    async def position(self, item_id: str) -> int | None:
        """How many waiting calls go before this one, or None when it does not wait."""
        if item_id not in self._waiters:
            return None
        return await self.queue.position(item_id)

    def eta_ms(self, ahead: int) -> int:
        """Milliseconds until a call with `ahead` calls before it gets a slot, from the moving average."""
        rounds = math.ceil((ahead + 1) / self.max_concurrent)
        return round(rounds * self.timer.average_ms)
