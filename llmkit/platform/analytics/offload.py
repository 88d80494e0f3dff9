"""Analytics written by a child process: the serving process only hands each batch over.

Turning a batch of records into rows and inserting them costs the gateway's event loop thread about as
much as serving the request did in the first place, and an in-process SQLite thread shares its GIL. So
`OffloadedStore` passes each batch, marshalled, over a pipe to `python -m llmkit.platform.analytics.child`,
which owns the writing connection, and waits for its answer: the AnalyticsWriter's accounting (written,
failed, requeued) stays exact. Queries, the retention purge and health go to a store of this process.
A child that dies fails the batch in flight (the writer keeps it and retries) and is started again on
the next write.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import marshal
import struct
import sys
from collections.abc import Sequence

from llmkit.errors import BackendError
from llmkit.platform.analytics.base import JSON, AnalyticsStore
from llmkit.platform.analytics.record import Record

log = logging.getLogger("llmkit.platform.analytics")

# A frame on the pipe: its length (8 bytes, big-endian), then the marshalled list of records. marshal
# keeps floats exactly (NaN and infinities too), big integers and lone surrogates, so the child repairs
# the same records to_row would; it is only ever read from this process's own child.
FRAME = struct.Struct(">Q")
READY = b"ready"
OK = b"ok"
# How long the child may take to open its store, and to finish and exit when closed.
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


def encode(records: Sequence[Record]) -> bytes:
    """One frame of records."""
    try:
        payload = marshal.dumps(records)  # type: ignore[arg-type]  # the gateway's: plain tuples in a list
    except ValueError:  # tuple subclasses (QueryRecord), or another sequence
        payload = marshal.dumps([tuple(rec) for rec in records])
    return FRAME.pack(len(payload)) + payload


def encode_settings(url: str, pool_size: int) -> bytes:
    """The first frame: which store the child writes to."""
    payload = marshal.dumps((url, pool_size))
    return FRAME.pack(len(payload)) + payload


class OffloadedStore:
    """An AnalyticsStore whose writes run in a child process; everything else runs on `local`."""

    def __init__(self, url: str, local: AnalyticsStore, *, pool_size: int = 10) -> None:
        self.url = url
        self.local = local
        self.pool_size = pool_size
        self.kind = local.kind
        self.where = local.where
        self._child: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()
        self.restarts = 0

    @property
    def pid(self) -> int | None:
        """The child's pid while it runs."""
        return self._child.pid if self._child is not None and self._child.returncode is None else None

    async def open(self) -> None:
        """Open this process's store (it creates the table), then start the writing child."""
        await self.local.open()
        try:
            await self._start()
        except BaseException:
            await self.local.close()
            raise

    async def _start(self) -> None:
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "llmkit.platform.analytics.child",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert child.stdin is not None and child.stdout is not None
        # The URL may hold a password: over the pipe, never on the command line (which `ps` shows).
        child.stdin.write(encode_settings(self.url, self.pool_size))
        try:
            line = await asyncio.wait_for(child.stdout.readline(), START_TIMEOUT_S)
        except TimeoutError:
            line = b""
        if line.strip() != READY:
            with contextlib.suppress(ProcessLookupError):
                child.kill()
            await child.wait()
            reason = line.decode(errors="replace").strip() or f"it exited with code {child.returncode}"
            raise BackendError(f"analytics store {self.where}: the writer process did not start: {reason}")
        self._child = child

    async def write(self, records: Sequence[Record]) -> None:
        """Hand the batch to the child and wait until it is written (BackendError if it is not)."""
        if not records:
            return
        async with self._lock:
            if self._child is None or self._child.returncode is not None:
                if self._child is not None:
                    self.restarts += 1
                    log.warning(
                        "analytics writer process exited (code %s); starting it again", self._child.returncode
                    )
                    self._child = None
                await self._start()
            child = self._child
            assert child is not None and child.stdin is not None and child.stdout is not None
            try:
                child.stdin.write(encode(records))
                await child.stdin.drain()
                answer = await child.stdout.readline()
            except (ConnectionError, OSError) as exc:
                raise BackendError(
                    f"analytics store {self.where}: the writer process went away ({exc})"
                ) from exc
        if answer.rstrip(b"\n") == OK:
            return
        if not answer:
            raise BackendError(f"analytics store {self.where}: the writer process exited during a batch")
        kind, _, message = answer.decode(errors="replace").strip().partition(" ")
        if kind == "backend":
            raise BackendError(message)
        raise ValueError(message)  # records the store cannot take: the writer drops the batch

    async def close(self) -> None:
        """Let the child finish, then close this process's store."""
        child, self._child = self._child, None
        try:
            if child is not None and child.returncode is None:
                assert child.stdin is not None
                child.stdin.close()
                try:
                    await asyncio.wait_for(child.wait(), STOP_TIMEOUT_S)
                except TimeoutError:
                    child.kill()
                    await child.wait()
        finally:
            await self.local.close()

    async def popular(self, *, limit: int, days: int, tenant_id: str | None, now: float) -> JSON:
        """The most asked queries (this process's store)."""
        return await self.local.popular(limit=limit, days=days, tenant_id=tenant_id, now=now)

    async def trending(self, *, limit: int, window_hours: int, tenant_id: str | None, now: float) -> JSON:
        """Rising queries (this process's store)."""
        return await self.local.trending(limit=limit, window_hours=window_hours, tenant_id=tenant_id, now=now)

    async def stats(self, *, days: int, tenant_id: str | None, now: float) -> JSON:
        """Totals (this process's store)."""
        return await self.local.stats(days=days, tenant_id=tenant_id, now=now)

    async def timeseries(self, *, interval_hours: int, days: int, tenant_id: str | None, now: float) -> JSON:
        """Buckets (this process's store)."""
        return await self.local.timeseries(
            interval_hours=interval_hours, days=days, tenant_id=tenant_id, now=now
        )

    async def purge(self, older_than: float) -> int:
        """Retention (this process's store)."""
        return await self.local.purge(older_than)
