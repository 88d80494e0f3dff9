"""Flights: one upstream call shared by every identical request, and the Tickets its listeners hold.

A Flight keeps every piece the upstream sent so far: a streaming listener that joins late first gets
what it missed, then the rest live. A listener that leaves calls `Ticket.close()`; when the last one
leaves a flight that has not finished, the upstream call is cancelled.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from llmkit.core import telemetry
from llmkit.core.queue.base import Priority
from llmkit.gateway.calls import ChatCall, Outcome

QUEUED, RUNNING, DONE = "queued", "running", "done"


class Flight:
    """One upstream call in progress (or just finished), with the pieces it produced."""

    __slots__ = (
        "_changed",
        "_finished",
        "call",
        "error",
        "id",
        "key",
        "listeners",
        "outcome",
        "pieces",
        "priority",
        "served",
        "state",
        "store",
        "task",
    )

    def __init__(self, flight_id: str, key: str, call: ChatCall, priority: Priority) -> None:
        self.id = flight_id
        self.key = key
        self.call = call
        self.priority = priority
        self.state = QUEUED
        self.pieces: list[str] = []
        self.outcome: Outcome | None = None
        self.error: BaseException | None = None
        # Listeners holding a ticket now, and every request this call has served (the batch size).
        self.listeners = 0
        self.served = 0
        # Whether a listener asked for the cache: the answer is stored when it is complete.
        self.store = False
        self.task: asyncio.Task[None] | None = None
        # Replaced on every change: waiters hold the old one, which is set (asyncio.Event waits are
        # cancellation-safe per waiter, unlike a shared future).
        self._changed = asyncio.Event()
        self._finished = asyncio.Event()

    @property
    def done(self) -> bool:
        """Whether the call has finished, well or not."""
        return self.state == DONE

    def piece(self, text: str) -> None:
        """Store a piece from the upstream and wake the streaming listeners."""
        self.pieces.append(text)
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def finish(self, outcome: Outcome | None, error: BaseException | None = None) -> None:
        """End the flight with its outcome or its error; wakes every listener."""
        if self.state == DONE:
            return
        self.state = DONE
        self.outcome = outcome
        self.error = error
        self._finished.set()
        self._changed.set()

    def join(self, store: bool) -> Ticket:
        """A ticket for one more listener."""
        self.listeners += 1
        self.served += 1
        self.store = self.store or store
        return Ticket(self, None)

    def leave(self) -> None:
        """One listener left: cancel the upstream call when it was the last one and the call still runs."""
        self.listeners -= 1
        if self.listeners <= 0 and self.state != DONE and self.task is not None:
            self.task.cancel()

    async def wait(self) -> Outcome:
        """The outcome once the flight is done; its error raised if it failed."""
        if self.state != DONE:
            await self._finished.wait()
        if self.error is not None:
            raise self.error
        assert self.outcome is not None
        return self.outcome

    async def follow(self) -> AsyncIterator[list[str]]:
        """The pieces as batches: what was missed first, then each new batch as it arrives."""
        sent = 0
        while True:
            count = len(self.pieces)
            if count > sent:
                batch = self.pieces[sent:count]
                sent = count
                yield batch
                continue
            if self.state == DONE:
                if self.error is not None:
                    raise self.error
                return
            await self._changed.wait()


class Ticket:
    """A listener's hold on an answer: a cached Outcome, or a place among a flight's listeners."""

    __slots__ = ("cached", "closed", "flight", "followed", "joined")

    def __init__(self, flight: Flight | None, cached: Outcome | None, joined: bool = False) -> None:
        self.flight = flight
        self.cached = cached
        # True when the ticket joined a flight another request started (coalesced).
        self.joined = joined
        # True once a stream followed the flight to its end, in a `coalescing wait` span of its own.
        self.followed = False
        self.closed = False

    @property
    def hit(self) -> bool:
        """Whether the answer came from the response cache."""
        return self.cached is not None

    async def result(self) -> Outcome:
        """The whole answer."""
        if self.cached is not None:
            return self.cached
        assert self.flight is not None
        if self.joined and not self.followed:
            # Waiting for a call another request started: its own child span, the call is under that one.
            with telemetry.span("coalescing wait"):
                return await self.flight.wait()
        return await self.flight.wait()

    def close(self) -> None:
        """Leave the flight (idempotent); the last listener to leave an unfinished flight cancels it."""
        if not self.closed:
            self.closed = True
            if self.flight is not None:
                self.flight.leave()
