"""Writing an answer as SSE chunks on the latency model, in batches when there is nothing to wait for."""

from __future__ import annotations

import asyncio
import math
import random
from dataclasses import dataclass
from typing import Protocol

from aiohttp import web

from llmkit.simulate.faults import STREAM_FAULT_KEY, in_stream_error_event
from llmkit.simulate.latency import Latency
from llmkit.simulate.openai import DONE_EVENT

# Tokens per content chunk when no inter-token latency is asked for: fewer, larger events stream faster.
INSTANT_CHUNK_TOKENS = 4
# How often a sleeping stream checks that its client is still there.
_DISCONNECT_POLL = 0.05


class EventWriter(Protocol):
    """Builds the SSE events of one API shape (chat.completion.chunk, text_completion)."""

    def role(self, index: int) -> bytes:
        """The event opening choice `index`, or b"" when the shape has none."""
        ...

    def content(self, index: int, text: str) -> bytes:
        """An event carrying a piece of choice `index`."""
        ...

    def finish(self, index: int, reason: str) -> bytes:
        """The event closing choice `index` with its finish reason."""
        ...


@dataclass(slots=True)
class Progress:
    """How much of a stream reached the socket: content events and completion tokens written."""

    chunks: int = 0
    tokens: int = 0


@dataclass(frozen=True, slots=True)
class StreamPlan:
    """What one stream sends: `n` choices of the same content pieces, a finish reason, maybe usage."""

    pieces: list[str]
    piece_tokens: list[int]
    n: int
    finish_reason: str
    usage_event: bytes | None


def plan_pieces(tokens: list[str], per_chunk: int) -> tuple[list[str], list[int]]:
    """Tokens grouped `per_chunk` to a content piece, and the token count of each piece."""
    if per_chunk <= 1:
        return list(tokens), [1] * len(tokens)
    pieces = ["".join(tokens[i : i + per_chunk]) for i in range(0, len(tokens), per_chunk)]
    counts = [min(per_chunk, len(tokens) - i) for i in range(0, len(tokens), per_chunk)]
    return pieces, counts


class Sender(Protocol):
    """Sends one stream to its response (see StreamSender and PrebuiltStream)."""

    response: web.StreamResponse
    progress: Progress

    async def send(self, latency: Latency, rng: random.Random) -> None:
        """Write the whole stream."""
        ...


class PrebuiltStream:
    """A stream whose events are all known up front (nothing to wait for, no fault): each is `head` and
    one of `rests`, then [DONE], written `capacity` events at a time."""

    def __init__(
        self, response: web.StreamResponse, head: bytes, rests: list[bytes], tokens: int, capacity: int
    ) -> None:
        self.response = response
        self.head = head
        self.rests = rests
        self.tokens = tokens
        self.capacity = max(1, capacity)
        self.progress = Progress()

    async def send(self, latency: Latency, rng: random.Random) -> None:
        """Write every event; the progress counts all tokens once the last write is through."""
        head, rests, capacity = self.head, self.rests, self.capacity
        for start in range(0, len(rests), capacity):
            part = rests[start : start + capacity]
            last = start + capacity >= len(rests)
            # head + head.join(...) puts the head in front of every event in one C-level join.
            await self.response.write(head + head.join(part) + (DONE_EVENT if last else b""))
            self.progress.chunks += len(part) + last
        self.progress.tokens = self.tokens


def client_gone(request: web.Request) -> bool:
    """True once the client's connection is closed."""
    transport = request.transport
    return transport is None or transport.is_closing()


class Ticks:
    """Wakes the sleeping streams of one event loop from one timer per millisecond, not one per token.

    5,000 streams at 50 ms between tokens are 100,000 wake-ups a second: with a timer each, the loop's
    timer heap and the per-sleep objects cost as much as writing the events. Here every sleeper due in the
    same millisecond waits on its own future (so cancelling one never touches the others) in that
    millisecond's list, and one `call_at` completes the whole list. A sleeper wakes at most 1 ms late and
    never early.
    """

    __slots__ = ("_loop", "_slots")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._slots: dict[int, list[asyncio.Future[None]]] = {}

    def until(self, when: float) -> asyncio.Future[None]:
        """A future that completes at the first millisecond boundary at or after loop time `when`."""
        slot = math.ceil(when * 1000.0)
        waiters = self._slots.get(slot)
        if waiters is None:
            waiters = self._slots[slot] = []
            self._loop.call_at(slot / 1000.0, self._fire, slot)
        future = self._loop.create_future()
        waiters.append(future)
        return future

    def _fire(self, slot: int) -> None:
        for future in self._slots.pop(slot):
            if not future.done():  # a cancelled sleeper's future is done already
                future.set_result(None)


_ticks: Ticks | None = None


def ticks_of(loop: asyncio.AbstractEventLoop) -> Ticks:
    """The running loop's Ticks (one per loop; a new loop, as in tests, gets its own)."""
    global _ticks
    ticks = _ticks
    if ticks is None or ticks._loop is not loop:
        ticks = _ticks = Ticks(loop)
    return ticks


async def pause(request: web.Request, seconds: float) -> None:
    """Sleep `seconds`, but raise ConnectionResetError soon after the client disconnects."""
    if seconds > 0:
        await pause_until(request, asyncio.get_running_loop().time() + seconds)


async def pause_until(request: web.Request, end: float) -> None:
    """Sleep until loop time `end` (at most 1 ms more), but raise ConnectionResetError soon after the
    client disconnects."""
    loop = asyncio.get_running_loop()
    ticks = ticks_of(loop)
    while True:
        if client_gone(request):
            raise ConnectionResetError("client disconnected")
        now = loop.time()
        if end <= now:
            return
        await ticks.until(end if end - now <= _DISCONNECT_POLL else now + _DISCONNECT_POLL)


async def first_token(request: web.Request, latency: Latency, rng: random.Random) -> float:
    """Sleep out the time to first token; the loop time the first token was due."""
    due = asyncio.get_running_loop().time() + latency.first_token(rng)
    await pause_until(request, due)
    return due


async def next_token(request: web.Request, due: float, latency: Latency, rng: random.Random) -> float:
    """Sleep until the next token, an inter-token latency after the last one was `due`; its due time.

    Tokens keep to the stream's own timeline, so the time spent writing one is not added to every gap. A
    stream that fell behind (a busy loop) goes on from now, without a burst of catch-up events.
    """
    loop = asyncio.get_running_loop()
    due = max(due + latency.next_token(rng), loop.time())
    await pause_until(request, due)
    return due


class StreamSender:
    """Sends one planned stream to a prepared response, counting what was written."""

    def __init__(
        self,
        request: web.Request,
        response: web.StreamResponse,
        writer: EventWriter,
        plan: StreamPlan,
        capacity: int,
    ) -> None:
        self.request = request
        self.response = response
        self.writer = writer
        self.plan = plan
        # At most this many events are joined into one write (each write awaits the socket's drain).
        self.capacity = max(1, capacity)
        self.progress = Progress()
        # An injected fault (500, 503, disconnect) cuts the stream after half of its content.
        self.fault: str | None = request.get(STREAM_FAULT_KEY)

    def _steps(self) -> int:
        return len(self.plan.pieces)

    def _step(self, k: int) -> tuple[list[bytes], int]:
        # The events of step k of every choice, and the completion tokens they carry.
        plan, writer = self.plan, self.writer
        return [writer.content(i, plan.pieces[k]) for i in range(plan.n)], plan.piece_tokens[k] * plan.n

    def _finishes(self) -> list[bytes]:
        return [self.writer.finish(i, self.plan.finish_reason) for i in range(self.plan.n)]

    def _tail(self) -> list[bytes]:
        plan = self.plan
        events = self._finishes()
        if plan.usage_event is not None:
            events.append(plan.usage_event)
        events.append(DONE_EVENT)
        return events

    async def _write(self, events: list[bytes], tokens: int) -> None:
        await self.response.write(b"".join(events))
        self.progress.chunks += len(events)
        self.progress.tokens += tokens

    def _planned_steps(self) -> int:
        steps = self._steps()
        return steps // 2 if self.fault else steps

    def _ending(self) -> list[bytes]:
        # A faulted stream ends with OpenAI's in-stream error event, or with nothing before the cut.
        if self.fault in ("500", "503"):
            return [in_stream_error_event(self.fault)]
        return [] if self.fault else self._tail()

    async def send(self, latency: Latency, rng: random.Random) -> None:
        """Write the whole stream: role, content, finish, usage and [DONE] events (or the injected fault)."""
        await self._send(latency, rng)
        if self.fault == "disconnect":
            transport = self.request.transport
            if transport is not None:
                transport.abort()
            raise ConnectionResetError("injected fault disconnect")

    async def _send(self, latency: Latency, rng: random.Random) -> None:
        roles = [event for event in (self.writer.role(i) for i in range(self.plan.n)) if event]
        steps = self._planned_steps()
        if latency.itl <= 0:
            await pause(self.request, latency.first_token(rng))
            await self._send_batched(roles)
            return
        due = await first_token(self.request, latency, rng)
        for k in range(steps):
            if k:
                due = await next_token(self.request, due, latency, rng)
            events, tokens = self._step(k)
            await self._write([*roles, *events] if k == 0 else events, tokens)
        if not steps and roles:
            await self._write(roles, 0)
        await self._write(self._ending(), 0)

    async def _send_batched(self, head: list[bytes]) -> None:
        # Nothing to wait for: build the events and send them `capacity` at a time.
        capacity = self.capacity
        batch, tokens = list(head), 0
        for k in range(self._planned_steps()):
            events, step_tokens = self._step(k)
            batch.extend(events)
            tokens += step_tokens
            if len(batch) >= capacity:
                await self._write(batch, tokens)
                batch, tokens = [], 0
        batch.extend(self._ending())
        await self._write(batch, tokens)
