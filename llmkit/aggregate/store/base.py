"""What an event store does: store batches in one transaction with dedup by (topic, event_id), count, list."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol

# One validated event: (topic, event_id, source, ts_ms, doc). ts_ms is the event's timestamp in
# milliseconds since the epoch (naive timestamps read as UTC); doc is the event's JSON as /events returns it.
Row = tuple[str, str, str, int, bytes]
# One stored event as listed: (seq, doc); seq grows with arrival and is the `after` cursor.
Listed = tuple[int, bytes]


@dataclass(frozen=True, slots=True)
class TopicCounts:
    """One topic's numbers, all derived from what is committed.

    received: events published to the topic (duplicates included); unique: events stored, ever (purged
    ones included); stored: events in the store now. received - unique events were dropped as duplicates.
    """

    topic: str
    received: int
    unique: int
    stored: int


@dataclass(frozen=True, slots=True)
class EventQuery:
    """A filter for listing events in arrival order: seq > after, at most `limit` (None: all)."""

    topic: str | None = None
    source: str | None = None
    since_ms: int | None = None  # event timestamp >= since
    until_ms: int | None = None  # event timestamp < until
    after: int = 0
    limit: int | None = None


class EventStore(Protocol):
    """A durable, deduplicating event store. Methods raise BackendError when the store fails."""

    kind: str  # "sqlite" or "clickhouse"
    where: str  # a path or a URL without credentials, for messages and /stats

    async def open(self) -> None:
        """Connect and create the schema if it is missing."""

    async def write(self, batches: Sequence[Sequence[Row]]) -> list[int]:
        """Store every batch in one transaction: rows whose (topic, event_id) is new (in the store or
        earlier in the same call) are kept, the rest dropped; every row counts as received.

        Returns how many rows of each batch were new. All or nothing on SQLite (one transaction); on
        ClickHouse an error between the events and their receipts can leave events stored and not yet
        counted received, until the publisher's retry counts them as duplicates.
        """
        ...

    async def counts(self) -> list[TopicCounts]:
        """Per-topic numbers, ordered by topic."""
        ...

    def pages(self, query: EventQuery, page_size: int) -> AsyncIterator[list[Listed]]:
        """The events `query` selects in arrival order, `page_size` at a time (stops at query.limit)."""
        ...

    async def purge(self, before_ms: int | None, keep: int | None) -> int:
        """Delete events stored before `before_ms` (epoch ms) and the oldest beyond the newest `keep`;
        how many were deleted. Their ids leave the dedup window."""
        ...

    async def size_bytes(self) -> int:
        """Bytes the store takes on disk (0 when unknown)."""
        ...

    async def close(self) -> None:
        """Close connections; idempotent."""
