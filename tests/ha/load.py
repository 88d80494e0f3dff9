"""Bounded load through HAProxy for the fault tests: concurrent aiohttp clients, every request's outcome kept,
and the numbers of the report (sent, failed, p50/p99 before, during and after a fault)."""

from __future__ import annotations

import asyncio
import csv
import io
import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

# No request may hang: a client gives up after this long, and that counts as a failure.
CLIENT_TIMEOUT_S = 30.0


class Failed(Exception):
    """A request that got an answer, but not the one it wanted (a status, an incomplete stream)."""


@dataclass(slots=True)
class Outcome:
    """One request: when it started (monotonic), how long it took, and why it failed ('' when it did not)."""

    start: float
    latency: float
    error: str = ""
    kind: str = "request"

    @property
    def ok(self) -> bool:
        return not self.error


Send = Callable[[aiohttp.ClientSession, int], Awaitable[None]]


@dataclass
class Load:
    """`clients` concurrent clients calling `send(session, n)` (n counts from 0) until at least `minimum` were
    sent and `stop()` was called, never more than `maximum` nor for longer than `max_s` seconds."""

    send: Send
    clients: int
    minimum: int
    maximum: int
    kind: str = "request"
    max_s: float = 240.0
    outcomes: list[Outcome] = field(default_factory=list)
    _stopped: bool = False

    def stop(self) -> None:
        self._stopped = True

    @property
    def sent(self) -> int:
        return len(self.outcomes)

    async def run(self) -> list[Outcome]:
        counter = itertools.count()
        deadline = time.monotonic() + self.max_s
        timeout = aiohttp.ClientTimeout(total=CLIENT_TIMEOUT_S)
        # One connection per client, kept alive to HAProxy (it opens a new one to the server each request).
        connector = aiohttp.TCPConnector(limit=self.clients, force_close=False)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:

            async def client() -> None:
                while True:
                    n = next(counter)
                    done = n >= self.minimum and self._stopped
                    if done or n >= self.maximum or time.monotonic() > deadline:
                        return
                    start = time.monotonic()
                    error = ""
                    try:
                        await self.send(session, n)
                    except Failed as exc:
                        error = str(exc)
                    except (aiohttp.ClientError, TimeoutError) as exc:
                        error = f"{type(exc).__name__}: {exc}"
                    self.outcomes.append(Outcome(start, time.monotonic() - start, error, self.kind))

            await asyncio.gather(*(client() for _ in range(self.clients)))
        return self.outcomes

    async def until_sent(self, count: int, timeout: float = 120) -> None:
        """Wait until `count` requests have finished."""
        deadline = time.monotonic() + timeout
        while self.sent < count:
            assert time.monotonic() < deadline, f"only {self.sent} of {count} requests in {timeout}s"
            await asyncio.sleep(0.05)


async def expect_ok(response: aiohttp.ClientResponse) -> bytes:
    """The body of a 2xx answer; Failed naming the status otherwise."""
    body = await response.read()
    if not 200 <= response.status < 300:
        raise Failed(f"HTTP {response.status}: {body[:200]!r}")
    return body


async def read_stream(response: aiohttp.ClientResponse) -> int:
    """Read an SSE answer to its end; its number of data events. Failed unless it ended with [DONE]."""
    if response.status != 200:
        raise Failed(f"HTTP {response.status}: {(await response.read())[:200]!r}")
    events = 0
    last = b""
    async for line in response.content:
        if line.startswith(b"data:"):
            events += 1
            last = line[5:].strip()
    if last != b"[DONE]":
        raise Failed(f"stream ended after {events} events without [DONE]")
    return events


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) by nearest rank; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def phase_stats(outcomes: list[Outcome]) -> dict[str, Any]:
    latencies = [o.latency for o in outcomes]
    return {
        "sent": len(outcomes),
        "failed": sum(not o.ok for o in outcomes),
        "p50_ms": round(percentile(latencies, 50) * 1000, 1),
        "p99_ms": round(percentile(latencies, 99) * 1000, 1),
    }


def phases(outcomes: list[Outcome], fault_at: float, recovered_at: float) -> dict[str, dict[str, Any]]:
    """Before (started before the fault), during (until recovery) and after, each with phase_stats."""
    return {
        "before": phase_stats([o for o in outcomes if o.start < fault_at]),
        "during": phase_stats([o for o in outcomes if fault_at <= o.start < recovered_at]),
        "after": phase_stats([o for o in outcomes if o.start >= recovered_at]),
    }


def errors(outcomes: list[Outcome], most: int = 5) -> list[str]:
    """The first few distinct failure reasons."""
    seen: list[str] = []
    for outcome in outcomes:
        if outcome.error and outcome.error not in seen:
            seen.append(outcome.error)
    return seen[:most]


class ServerWatch:
    """Polls HAProxy's stats CSV for one server (`backend/server`): every status it showed, with when."""

    def __init__(self, stats_url: str, name: str, every: float = 0.1) -> None:
        self.url = f"{stats_url};csv"
        self.name = name
        self.every = every
        self.seen: list[tuple[float, str]] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> ServerWatch:
        self._task = asyncio.create_task(self._poll())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def _poll(self) -> None:
        backend, server = self.name.split("/")
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            while True:
                try:
                    async with session.get(self.url) as r:
                        text = await r.text()
                except (aiohttp.ClientError, TimeoutError):
                    text = ""
                for row in csv.DictReader(io.StringIO(text.lstrip("# "))):
                    if row["pxname"] == backend and row["svname"] == server:
                        status = f"{row['status']} {row['check_status']}".strip()
                        if not self.seen or self.seen[-1][1] != status:
                            self.seen.append((time.monotonic(), status))
                await asyncio.sleep(self.every)

    def first(self, *prefixes: str, after: float = 0.0) -> float | None:
        """When the server first showed a status starting with one of `prefixes` (at or after `after`)."""
        for when, status in self.seen:
            if when >= after and status.startswith(prefixes):
                return when
        return None

    async def wait_for(self, *prefixes: str, after: float = 0.0, timeout: float = 30) -> float:
        deadline = time.monotonic() + timeout
        while (when := self.first(*prefixes, after=after)) is None:
            assert time.monotonic() < deadline, f"{self.name} never {prefixes} in {timeout}s: {self.seen}"
            await asyncio.sleep(0.05)
        return when

    def statuses(self) -> list[str]:
        return [status for _, status in self.seen]
