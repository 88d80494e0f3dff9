"""A priority queue in this process: a deque of ids per level, a dict of items, futures for consumers."""

from __future__ import annotations

import asyncio
import bisect
import heapq
import itertools
import time
from collections import deque
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, replace

from llmkit.core.ids import fresh_hex
from llmkit.core.queue.base import (
    DuplicateItem,
    Priority,
    QueueClosed,
    QueueItem,
    QueueStats,
    check_capacity,
    check_lease,
    full_message,
)
from llmkit.errors import QueueFull


@dataclass(slots=True)
class _Lease:
    """An item in flight: as it was delivered (with its token) and when its lease runs out."""

    item: QueueItem
    deadline: float


class MemoryPriorityQueue:
    """A bounded priority queue living in this process; consumers wait on futures, never poll."""

    def __init__(self, name: str, capacity: int, clock: Callable[[], float] = time.time) -> None:
        check_capacity(capacity)
        self.name = name
        self.capacity = capacity
        self._clock = clock
        self._levels: tuple[deque[str], ...] = tuple(deque() for _ in Priority)
        # Queued items as their next delivery will see them (`deliveries` already counts it).
        self._items: dict[str, QueueItem] = {}
        # Arrival number of every item queued or in flight: a returned item goes back in arrival order.
        self._arrival: dict[str, int] = {}
        self._next_arrival = itertools.count().__next__
        self._leases: dict[str, _Lease] = {}
        # (deadline, id, token), one per lease granted or extended; entries a later change made stale are
        # skipped when they come up.
        self._expiries: list[tuple[float, str, str]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._timer_due = 0.0
        self._getters: deque[asyncio.Future[None]] = deque()
        self._closed = False

    async def put(self, item_id: str, payload: bytes, priority: str | int = "normal") -> int:
        """Queue an item, return its position; QueueFull at capacity, DuplicateItem if queued or in flight."""
        level = Priority.parse(priority)
        if self._closed:
            raise QueueClosed(f"queue {self.name!r} is closed")
        if item_id in self._items or item_id in self._leases:
            raise DuplicateItem(f"item {item_id!r} is already in queue {self.name!r}", item_id)
        if len(self._items) >= self.capacity:
            raise QueueFull(full_message(self.name, self.capacity), self.capacity)
        self._items[item_id] = QueueItem(item_id, bytes(payload), level, self._clock())
        self._arrival[item_id] = self._next_arrival()
        self._levels[level].append(item_id)
        self._wake_one()
        return sum(len(ids) for ids in self._levels[: level + 1]) - 1

    async def get(self, timeout: float | None = None, lease: float | None = None) -> QueueItem | None:
        """Take the first item, waiting up to `timeout` s (None: forever), leased `lease` s; None if none."""
        check_lease(lease)
        item = self._take(lease)
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
                return self._take(lease)
            except asyncio.CancelledError:
                if self._forget(fut):
                    self._wake_one()
                raise
            item = self._take(lease)
            if item is not None or self._closed:
                return item

    async def ack(self, item_id: str, token: str) -> bool:
        """Finish a leased item: True if this lease still held it (it is gone for good), else False."""
        if self._held(item_id, token) is None:
            return False
        del self._leases[item_id], self._arrival[item_id]
        return True

    async def extend(self, item_id: str, token: str, lease: float) -> bool:
        """Move a held lease's deadline to `lease` seconds from now (a heartbeat); False if it is not held."""
        check_lease(lease)
        held = self._held(item_id, token)
        if held is None:
            return False
        held.deadline = self._clock() + lease
        self._schedule(held)
        return True

    async def release(self, item_id: str, token: str) -> bool:
        """Give a leased item back at once, in its place; False if this lease no longer held it."""
        held = self._held(item_id, token)
        if held is None:
            return False
        del self._leases[item_id]
        self._requeue(held.item)
        return True

    async def position(self, item_id: str) -> int | None:
        """How many items are served before this one, or None if it is not queued."""
        self._reclaim()
        item = self._items.get(item_id)
        if item is None:
            return None
        ahead = sum(len(ids) for ids in self._levels[: item.priority])
        return ahead + self._levels[item.priority].index(item_id)

    async def cancel(self, item_id: str) -> bool:
        """Remove a queued item; True only if it was still queued (False for an item in flight)."""
        self._reclaim()
        item = self._items.pop(item_id, None)
        if item is None:
            return False
        del self._arrival[item_id]
        # O(n) in the level, but cancels are rare next to puts and gets, and it keeps the deques exact.
        self._levels[item.priority].remove(item_id)
        return True

    async def size(self) -> int:
        """How many items are queued."""
        self._reclaim()
        return len(self._items)

    async def stats(self) -> QueueStats:
        """Items per level, total, capacity, the oldest queued item's wait, and items in flight."""
        self._reclaim()
        heads = [self._items[ids[0]].enqueued_at for ids in self._levels if ids]
        oldest_wait = max(0.0, self._clock() - min(heads)) if heads else 0.0
        return QueueStats(
            name=self.name,
            levels={level.name.lower(): len(self._levels[level]) for level in Priority},
            total=len(self._items),
            capacity=self.capacity,
            oldest_wait=oldest_wait,
            in_flight=len(self._leases),
        )

    async def close(self) -> None:
        """Wake every waiting consumer (their `get` returns None); later puts raise QueueClosed."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._getters:
            fut = self._getters.popleft()
            if not fut.done():
                fut.set_result(None)

    def _take(self, lease: float | None) -> QueueItem | None:
        self._reclaim()
        for ids in self._levels:
            if ids:
                item = self._items.pop(ids.popleft())
                break
        else:
            return None
        if lease is None:
            del self._arrival[item.id]
            return item
        item = replace(item, token=fresh_hex())
        held = self._leases[item.id] = _Lease(item, self._clock() + lease)
        self._schedule(held)
        return item

    def _held(self, item_id: str, token: str) -> _Lease | None:
        """The lease on `item_id` if `token` names it and it has not run out."""
        self._reclaim()
        held = self._leases.get(item_id)
        return held if held is not None and held.item.token == token else None

    def _requeue(self, delivered: QueueItem) -> None:
        """Queue an item that was in flight again, by arrival: ahead of every item that came after it."""
        item = replace(delivered, deliveries=delivered.deliveries + 1, token="")
        self._items[item.id] = item
        ids = self._levels[item.priority]
        # Usually index 0: only items that also came back can be ahead of one that was first in line.
        ids.insert(bisect.bisect(ids, self._arrival[item.id], key=self._arrival.__getitem__), item.id)
        self._wake_one()

    def _reclaim(self) -> None:
        """Queue again every item whose lease has run out."""
        now = self._clock()
        while self._expiries and self._expiries[0][0] <= now:
            _, item_id, token = heapq.heappop(self._expiries)
            held = self._leases.get(item_id)
            # Acked, released, re-leased or extended since this entry was pushed: not an expiry.
            if held is None or held.item.token != token or held.deadline > now:
                continue
            del self._leases[item_id]
            self._requeue(held.item)

    def _schedule(self, held: _Lease) -> None:
        """Record a lease deadline; a timer at the earliest one wakes consumers waiting for an item."""
        heapq.heappush(self._expiries, (held.deadline, held.item.id, held.item.token))
        if len(self._expiries) > 2 * len(self._leases) + 64:
            # Acks leave their entries behind until their deadline; long leases would pile them up.
            self._expiries = [(h.deadline, h.item.id, h.item.token) for h in self._leases.values()]
            heapq.heapify(self._expiries)
        self._arm()

    def _arm(self) -> None:
        if self._closed or not self._expiries:
            return
        due = self._expiries[0][0]
        if self._timer is not None:
            if self._timer_due <= due:
                return
            self._timer.cancel()
        # At least 1 ms, so a clock that has not yet reached `due` cannot make the timer spin.
        delay = max(0.001, due - self._clock())
        self._timer = asyncio.get_running_loop().call_later(delay, self._on_timer)
        self._timer_due = due

    def _on_timer(self) -> None:
        self._timer = None
        self._reclaim()
        self._arm()

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
