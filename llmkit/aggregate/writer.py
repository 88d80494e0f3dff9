"""GroupWriter: one task that commits whatever publishes are waiting in one transaction (group commit)."""

from __future__ import annotations

import asyncio
import collections
import logging
import math
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from llmkit.aggregate.store.base import EventStore, Row
from llmkit.core import telemetry
from llmkit.errors import BackendError, RateLimited

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

log = logging.getLogger("llmkit.aggregate")

# A batch waiting in the channel, and the future of its publisher (None when it does not wait).
# A batch, the future its publish waits on, and the publish's span (a traceparent) when traced.
Item = tuple[Sequence[Row], "asyncio.Future[int] | None", "str | None"]


class ChannelFull(RateLimited):
    """The channel holds `capacity` events already; the publisher should retry after `retry_after`."""


class Closing(BackendError):
    """The aggregator is shutting down and takes no more events."""


class GroupWriter:
    """A bounded channel of batches and the one task that drains it into the store.

    Publishes that arrive while a transaction commits wait for the next one, so N concurrent publishes
    cost one commit (one fsync), not N. Memory is bounded: `capacity` events wait at most.
    """

    def __init__(self, store: EventStore, capacity: int, group_max_events: int) -> None:
        self.store = store
        self.capacity = capacity
        self.group_max_events = group_max_events
        self.pending = 0  # events accepted into the channel and not yet committed (or failed)
        self.commits = 0
        self.committed_events = 0
        self.failures = 0
        self.last_group_events = 0
        self._items: collections.deque[Item] = collections.deque()
        self._wake = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        # Rough commit time per event, for Retry-After when the channel is full.
        self._seconds_per_event = 1e-5

    def start(self) -> None:
        """Start the writer task."""
        self._task = asyncio.create_task(self._run(), name="llmkit-aggregate-writer")

    def offer(self, rows: Sequence[Row], wait: bool = True) -> asyncio.Future[int] | None:
        """Queue a batch; with `wait`, a future of how many of its rows were new once committed.

        Raises ChannelFull when the batch does not fit (an empty channel takes any batch), Closing on
        shutdown.
        """
        if self._closing:
            raise Closing("the aggregator is shutting down; retry against another instance or later")
        size = len(rows)
        if self.pending and self.pending + size > self.capacity:
            seconds = max(1.0, math.ceil(self.pending * self._seconds_per_event))
            raise ChannelFull(
                f"the aggregator has {self.pending} events waiting to be stored (aggregate.channel_capacity "
                f"is {self.capacity}); retry after {seconds:g}s or send smaller batches",
                retry_after=seconds,
            )
        future = asyncio.get_running_loop().create_future() if wait else None
        self.pending += size
        self._items.append((rows, future, telemetry.traceparent()))
        self._wake.set()
        return future

    def _take_group(self) -> list[Item]:
        group: list[Item] = []
        events = 0
        items = self._items
        while items and (not group or events + len(items[0][0]) <= self.group_max_events):
            item = items.popleft()
            events += len(item[0])
            group.append(item)
        return group

    async def _commit(self, group: list[Item]) -> None:
        size = sum(len(rows) for rows, _, _ in group)
        loop = asyncio.get_running_loop()
        start = loop.time()
        try:
            # One commit for several publishes: its span links to each of them.
            parents = [parent for _, _, parent in group if parent]
            with telemetry.linked_span("aggregate commit", parents, {"llmkit.batch.events": size}):
                new_counts = await self.store.write([rows for rows, _, _ in group])
        except Exception as exc:
            self.failures += 1
            log.error("storing %d events failed: %s", size, exc)
            error = exc if isinstance(exc, BackendError) else BackendError(f"storing events failed: {exc}")
            for _, future, _ in group:
                if future is not None and not future.done():
                    future.set_exception(error)
        else:
            self.commits += 1
            self.committed_events += size
            self.last_group_events = size
            elapsed = loop.time() - start
            self._seconds_per_event = 0.8 * self._seconds_per_event + 0.2 * elapsed / max(size, 1)
            for (_, future, _), new in zip(group, new_counts, strict=True):
                if future is not None and not future.done():
                    future.set_result(new)
        finally:
            self.pending -= size

    async def _run(self) -> None:
        while True:
            if not self._items:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            group = self._take_group()
            # Shielded: a cancelled writer must still finish the transaction it started and answer it.
            await asyncio.shield(self._commit(group))

    def collect(self) -> Iterator[Metric]:
        """Prometheus families of the channel and the commits, built at scrape time."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        prefix = "llmkit_aggregate_"
        yield GaugeMetricFamily(f"{prefix}queue_depth", "Events not yet committed.", value=self.pending)
        counters = (
            ("commits", "Group-commit transactions.", self.commits),
            ("committed_events", "Events stored or dropped as duplicates.", self.committed_events),
            ("commit_failures", "Transactions the store failed.", self.failures),
        )
        for name, text, value in counters:
            yield CounterMetricFamily(prefix + name, text, value=value)

    async def close(self) -> None:
        """Refuse new batches, commit every waiting one, then stop the task."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None
