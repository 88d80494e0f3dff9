"""AnalyticsWriter: records go into a bounded buffer on the request path; one task writes them in batches."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from llmkit.errors import BackendError
from llmkit.platform.analytics.base import DAY, AnalyticsStore
from llmkit.platform.analytics.record import Record

log = logging.getLogger("llmkit.platform.analytics")

PURGE_INTERVAL_S = 3600.0
MAX_BACKOFF_S = 5.0
CLOSE_TIMEOUT_S = 5.0


def _reason(exc: BaseException) -> str:
    """The first line of an error, short: driver messages can be long, and logs never carry records."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:300] if lines else ''}"


class AnalyticsWriter:
    """Takes records without waiting and writes them off the request path.

    Memory is bounded by `max_buffer` records: when it is full the oldest record is dropped and counted,
    so a slow or failing store costs analytics rows, never request latency. At every moment
    recorded == written + dropped + buffered + in_flight. The store is opened and closed by its owner.
    """

    def __init__(
        self,
        store: AnalyticsStore,
        *,
        max_buffer: int = 100_000,
        batch_size: int = 1000,
        flush_interval: float = 0.2,
        retention_days: float | None = 90,
        clock: Callable[[], float] = time.time,
        purge_interval: float = PURGE_INTERVAL_S,
        max_backoff: float = MAX_BACKOFF_S,
    ) -> None:
        if max_buffer < 1 or batch_size < 1:
            raise ValueError("max_buffer and batch_size must be >= 1")
        self.store = store
        self.max_buffer = max_buffer
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.retention_days = retention_days
        self.clock = clock
        self.purge_interval = purge_interval
        self.max_backoff = max_backoff
        self.recorded = 0
        self.written = 0
        self.dropped = 0
        self.failed_batches = 0
        self.purged = 0
        self.in_flight = 0
        self.last_error: str | None = None
        self._buffer: collections.deque[Record] = collections.deque()
        self._wake = asyncio.Event()
        self._outage = False
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._purger: asyncio.Task[None] | None = None

    def record(self, rec: Record) -> None:
        """Buffer one record: O(1), never waits, never raises."""
        self.recorded += 1
        buffer = self._buffer
        if self._closing:
            self.dropped += 1
            return
        buffer.append(rec)
        size = len(buffer)
        if size > self.max_buffer:
            buffer.popleft()
            self.dropped += 1
        if size >= self.batch_size and not self._wake.is_set():
            self._wake.set()

    def start(self) -> None:
        """Start the flush task and the retention task (a purge now, then every purge_interval)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="llmkit-analytics-writer")
        if self._purger is None and self.retention_days is not None:
            self._purger = asyncio.create_task(self._purge_loop(), name="llmkit-analytics-purge")

    def stats(self) -> dict[str, Any]:
        """The writer's numbers for /stats."""
        return {
            "store": self.store.kind,
            "recorded": self.recorded,
            "written": self.written,
            "dropped": self.dropped,
            "buffered": len(self._buffer),
            "in_flight": self.in_flight,
            "failed_batches": self.failed_batches,
            "purged": self.purged,
            "last_error": self.last_error,
        }

    def _requeue(self, batch: list[Record]) -> None:
        # Back at the front, where the oldest records live; the bound still holds and drops them first.
        self._buffer.extendleft(reversed(batch))
        while len(self._buffer) > self.max_buffer:
            self._buffer.popleft()
            self.dropped += 1

    async def _wait_for_batch(self) -> None:
        self._wake.clear()
        if len(self._buffer) < self.batch_size and not self._closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.flush_interval)

    async def _write(self, batch: list[Record]) -> bool:
        """Write one batch; False when it failed and went back to the buffer."""
        self.in_flight = len(batch)
        try:
            await self.store.write(batch)
        except asyncio.CancelledError:
            self._requeue(batch)
            raise
        except BackendError as exc:
            self.failed_batches += 1
            self.last_error = _reason(exc)
            self._requeue(batch)
            if not self._outage:
                self._outage = True
                log.warning(
                    "analytics store %s failed; %d records wait for a retry (at most %d are kept): %s",
                    self.store.where,
                    len(self._buffer),
                    self.max_buffer,
                    self.last_error,
                )
            return False
        except Exception as exc:
            # Not the store being down but records it cannot take: retrying them would fail for ever.
            self.failed_batches += 1
            self.dropped += len(batch)
            # The class only: the message of an error about the records may quote them.
            self.last_error = type(exc).__name__
            log.warning(
                "analytics: dropped a batch of %d records the store cannot take: %s",
                len(batch),
                self.last_error,
            )
            return True
        finally:
            self.in_flight = 0
        self.written += len(batch)
        if self._outage:
            self._outage = False
            log.info(
                "analytics store %s is writing again (%d failed batches so far)",
                self.store.where,
                self.failed_batches,
            )
        return True

    async def _run(self) -> None:
        backoff = 0.0
        buffer = self._buffer
        while True:
            if len(buffer) < self.batch_size:
                await self._wait_for_batch()
            if not buffer:
                if self._closing:
                    return
                continue
            batch = [buffer.popleft() for _ in range(min(self.batch_size, len(buffer)))]
            if await self._write(batch):
                backoff = 0.0
                continue
            backoff = min(max(backoff * 2, self.flush_interval, 0.01), self.max_backoff)
            await asyncio.sleep(backoff)

    async def _purge_loop(self) -> None:
        assert self.retention_days is not None
        while True:
            try:
                self.purged += await self.store.purge(self.clock() - self.retention_days * DAY)
            except Exception as exc:
                log.warning(
                    "analytics purge on %s failed; next try in %.0fs: %s",
                    self.store.where,
                    self.purge_interval,
                    _reason(exc),
                )
            await asyncio.sleep(self.purge_interval)

    async def close(self, timeout: float = CLOSE_TIMEOUT_S) -> None:
        """Take no more records, write what is buffered for at most `timeout` seconds, stop the tasks."""
        self._closing = True
        self._wake.set()
        if self._purger is not None:
            purger, self._purger = self._purger, None
            purger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await purger
        if self._task is None and self._buffer:
            self._task = asyncio.create_task(self._run(), name="llmkit-analytics-writer")
        if self._task is not None:
            task, self._task = self._task, None
            done, _ = await asyncio.wait({task}, timeout=timeout)
            if not done:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._buffer:
            log.warning(
                "analytics: %d records were not written within %.1fs of closing (store %s)",
                len(self._buffer),
                timeout,
                self.store.where,
            )
