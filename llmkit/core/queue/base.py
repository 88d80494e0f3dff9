"""What every priority queue backend provides: levels, FIFO within each, capacity, position, cancel, lease."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Protocol

from llmkit.errors import LlmkitError


class Priority(IntEnum):
    """Queue levels; a lower value is served first."""

    CRITICAL = 0
    HIGH = 1
    NORMAL = 2
    LOW = 3

    @classmethod
    def parse(cls, value: str | int) -> Priority:
        """`"high"`, `"HIGH"`, `Priority.HIGH` or `1` -> Priority.HIGH; anything else is a ValueError."""
        if isinstance(value, str):
            found = cls.__members__.get(value.upper())
            if found is not None:
                return found
        elif isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(cls):
            return cls(value)
        names = ", ".join(level.name.lower() for level in cls)
        raise ValueError(f"unknown priority {value!r}; valid priorities: {names}")


@dataclass(frozen=True, slots=True)
class QueueItem:
    """One item as delivered; `enqueued_at` is a Unix timestamp in seconds (the Redis clock on Redis)."""

    id: str
    payload: bytes
    priority: Priority
    enqueued_at: float
    # How many times the item has been handed out, this time included: a consumer dead-letters above a limit.
    deliveries: int = 1
    # Names this lease for ack / extend / release; "" when the item was taken without a lease.
    token: str = ""


@dataclass(frozen=True, slots=True)
class QueueStats:
    """A queue right now: items per level, total, capacity, the oldest item's wait, and items in flight."""

    name: str
    levels: dict[str, int]
    total: int
    capacity: int
    oldest_wait: float
    in_flight: int = 0


class DuplicateItem(LlmkitError, ValueError):
    """An item with this id is already queued or in flight."""

    def __init__(self, message: str, item_id: str) -> None:
        super().__init__(message)
        self.item_id = item_id


class QueueClosed(LlmkitError):
    """`put` on a queue after `close()`."""


class PriorityQueue(Protocol):
    """A bounded priority queue of (id, payload) items, served critical > high > normal > low, FIFO within.

    Leases (reliable delivery): `get(lease=S)` hands out the first item but keeps it "in flight" for S
    seconds. It is then neither queued (size, position, levels, cancel) nor free for another `get`; stats
    count it in `in_flight`, and `put` of its id is a DuplicateItem. The consumer ends the lease with
    `ack(id, token)` (done: the item is gone), `release(id, token)` (give it back now) or lets it run out.
    A released or expired item is queued again in its place by arrival, ahead of every item that came after
    it (it was first in line when taken), with `deliveries` one higher at its next delivery. A lease ends
    at its deadline, by the queue's clock (the Redis server's for Redis): from then on ack / extend /
    release with its token return False, as they do for a token another delivery has replaced, so a late
    or stale consumer can neither remove nor hold an item that went to someone else. Expired leases are
    reclaimed by whichever consumer looks next, so a consumer that died needs no cleanup. Capacity bounds
    queued items only; an item coming back is never refused, so the queue may briefly hold more.
    Without a lease `get` removes the item at once, as before leases existed.
    """

    name: str
    capacity: int

    async def put(self, item_id: str, payload: bytes, priority: str | int = "normal") -> int:
        """Queue an item, return its position; QueueFull at capacity, DuplicateItem if queued or in flight."""
        ...

    async def get(self, timeout: float | None = None, lease: float | None = None) -> QueueItem | None:
        """Take the first item, waiting up to `timeout` s (None: forever), leased `lease` s; None if none."""
        ...

    async def ack(self, item_id: str, token: str) -> bool:
        """Finish a leased item: True if this lease still held it (it is gone for good), else False."""
        ...

    async def extend(self, item_id: str, token: str, lease: float) -> bool:
        """Move a held lease's deadline to `lease` seconds from now (a heartbeat); False if it is not held."""
        ...

    async def release(self, item_id: str, token: str) -> bool:
        """Give a leased item back at once, in its place; False if this lease no longer held it."""
        ...

    async def position(self, item_id: str) -> int | None:
        """How many items are served before this one, or None if it is not queued."""
        ...

    async def cancel(self, item_id: str) -> bool:
        """Remove a queued item; True only if it was still queued (False for an item in flight)."""
        ...

    async def size(self) -> int:
        """How many items are queued."""
        ...

    async def stats(self) -> QueueStats:
        """Items per level, total, capacity, the oldest queued item's wait, and items in flight."""
        ...

    async def close(self) -> None:
        """Wake waiting consumers (their `get` returns None) and release the store."""
        ...


def check_capacity(capacity: int) -> None:
    """Reject a queue that could never hold an item."""
    if capacity < 1:
        raise ValueError(f"a queue needs capacity >= 1; got {capacity!r}")


def full_message(name: str, capacity: int) -> str:
    """The QueueFull message, the same for every backend."""
    return f"queue {name!r} is full ({capacity} items); retry later or raise queue.capacity"


def check_lease(lease: float | None) -> None:
    """Reject a lease that would expire before the consumer even has the item."""
    if lease is not None and not lease > 0:
        raise ValueError(f"a lease must be > 0 seconds; got {lease!r}")
