"""A priority queue in this process: a deque of ids per level, a dict of items, futures for consumers."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from contextlib import suppress

from llmkit.core.queue.base import (
    DuplicateItem,
    Priority,
    QueueClosed,
    QueueItem,
    QueueStats,
    check_capacity,
    full_message,
)
from llmkit.errors import QueueFull


class MemoryPriorityQueue:
    """A bounded priority queue living in this process; consumers wait on futures, never poll."""

    def __init__(self, name: str, capacity: int, clock: Callable[[], float] = time.time) -> None:
        check_capacity(capacity)
        self.name = name
        self.capacity = capacity
        self._clock = clock
        self._levels: tuple[deque[str], ...] = tuple(deque() for _ in Priority)
        self._items: dict[str, QueueItem] = {}
        self._getters: deque[asyncio.Future[None]] = deque()
        self._closed = False

    async def put(self, item_id: str, payload: bytes, priority: str | int = "normal") -> int:
        """Queue an item and return its 0-based position; QueueFull at capacity, DuplicateItem if queued."""
        level = Priority.parse(priority)
        if self._closed:
            raise QueueClosed(f"queue {self.name!r} is closed")
        if item_id in self._items:
            raise DuplicateItem(f"item {item_id!r} is already in queue {self.name!r}", item_id)
        if len(self._items) >= self.capacity:
            raise QueueFull(full_message(self.name, self.capacity), self.capacity)
        self._items[item_id] = QueueItem(item_id, bytes(payload), level, self._clock())
        self._levels[level].append(item_id)
        self._wake_one()
        return sum(len(ids) for ids in self._levels[: level + 1]) - 1

    async def get(self, timeout: float | None = None) -> QueueItem | None:
        """Take the first item, waiting up to `timeout` seconds (None: forever); None if nothing came."""
        item = self._pop()
        if item is not None or self._closed or (timeout is not None and timeout <= 0):
            return item
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            fut: asyncio.Future[None] = loop.create_future()
            self._getters.append(fut)
            try:
                async with asyncio.timeout_at(deadline):
                    await fut
            except TimeoutError:
                self._forget(fut)
                # Woken just as the timeout fired: take the item rather than strand it.
                return self._pop()
            except asyncio.CancelledError:
                if self._forget(fut):
                    self._wake_one()
                raise
            item = self._pop()
            if item is not None or self._closed:
                return item

    async def position(self, item_id: str) -> int | None:
        """How many items are served before this one, or None if it is not queued."""
        item = self._items.get(item_id)
        if item is None:
            return None
        ahead = sum(len(ids) for ids in self._levels[: item.priority])
        return ahead + self._levels[item.priority].index(item_id)

    async def cancel(self, item_id: str) -> bool:
        """Remove a queued item; True only if it was still queued."""
        item = self._items.pop(item_id, None)
        if item is None:
            return False
        # O(n) in the level, but cancels are rare next to puts and gets, and it keeps the deques exact.
        self._levels[item.priority].remove(item_id)
        return True

    async def size(self) -> int:
        """How many items are queued."""
        return len(self._items)

    async def stats(self) -> QueueStats:
        """Items per level, total, capacity and the oldest item's wait."""
        heads = [self._items[ids[0]].enqueued_at for ids in self._levels if ids]
        oldest_wait = max(0.0, self._clock() - min(heads)) if heads else 0.0
        return QueueStats(
            name=self.name,
            levels={level.name.lower(): len(self._levels[level]) for level in Priority},
            total=len(self._items),
            capacity=self.capacity,
            oldest_wait=oldest_wait,
        )

    async def close(self) -> None:
        """Wake every waiting consumer (their `get` returns None); later puts raise QueueClosed."""
        self._closed = True
        while self._getters:
            fut = self._getters.popleft()
            if not fut.done():
                fut.set_result(None)

    def _pop(self) -> QueueItem | None:
        for ids in self._levels:
            if ids:
                return self._items.pop(ids.popleft())
        return None

    def _wake_one(self) -> None:
        while self._getters:
            fut = self._getters.popleft()
            if not fut.done():
                fut.set_result(None)
                return

    def _forget(self, fut: asyncio.Future[None]) -> bool:
        """Drop a getter's future; True if it had been woken (so the wake-up must go to someone else)."""
        if fut.done() and not fut.cancelled():
            return True
        fut.cancel()
        with suppress(ValueError):
            self._getters.remove(fut)
        return False
