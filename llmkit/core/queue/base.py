"""What every priority queue backend provides: four levels, FIFO within each, capacity, position, cancel."""

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
    """One queued item; `enqueued_at` is a Unix timestamp in seconds (the Redis clock for Redis queues)."""

    id: str
    payload: bytes
    priority: Priority
    enqueued_at: float


@dataclass(frozen=True, slots=True)
class QueueStats:
    """A queue right now: items per level, total, capacity, and how long its oldest item has waited."""

    name: str
    levels: dict[str, int]
    total: int
    capacity: int
    oldest_wait: float


class DuplicateItem(LlmkitError, ValueError):
    """An item with this id is already queued."""

    def __init__(self, message: str, item_id: str) -> None:
        super().__init__(message)
        self.item_id = item_id


class QueueClosed(LlmkitError):
    """`put` on a queue after `close()`."""


class PriorityQueue(Protocol):
    """A bounded priority queue of (id, payload) items, served critical > high > normal > low, FIFO within."""

    name: str
    capacity: int

    async def put(self, item_id: str, payload: bytes, priority: str | int = "normal") -> int:
        """Queue an item and return its 0-based position; QueueFull at capacity, DuplicateItem if queued."""
        ...

    async def get(self, timeout: float | None = None) -> QueueItem | None:
        """Take the first item, waiting up to `timeout` seconds (None: forever); None if nothing came."""
        ...

    async def position(self, item_id: str) -> int | None:
        """How many items are served before this one, or None if it is not queued."""
        ...

    async def cancel(self, item_id: str) -> bool:
        """Remove a queued item; True only if it was still queued."""
        ...

    async def size(self) -> int:
        """How many items are queued."""
        ...

    async def stats(self) -> QueueStats:
        """Items per level, total, capacity and the oldest item's wait."""
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
