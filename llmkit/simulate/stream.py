"""Writing an answer as SSE chunks on the latency model, in batches when there is nothing to wait for."""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from aiohttp import web
from aiohttp.http_writer import StreamWriter

from llmkit.simulate.faults import STREAM_FAULT_KEY, in_stream_error_event
from llmkit.simulate.latency import Latency
from llmkit.simulate.metrics import mark_first_token
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
    timer heap and the per-sleep objects cost as much as writing the events. Every sleeper due in the same
    millisecond is in that millisecond's list, and one `call_at` wakes the whole list. A sleeper is either a
    future (a task waits on it, so cancelling one never touches the others) or a TokenRun, whose next event
    is written right here, with no task to wake. A sleeper wakes at most 1 ms late and never early.
    """

    __slots__ = ("_loop", "_slots")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._slots: dict[int, list[asyncio.Future[None] | TokenRun]] = {}

    def _slot(self, when: float) -> list[asyncio.Future[None] | TokenRun]:
        slot = math.ceil(when * 1000.0)
        waiters = self._slots.get(slot)
        if waiters is None:
            waiters = self._slots[slot] = []
            self._loop.call_at(slot / 1000.0, self._fire, slot)
        return waiters

    def until(self, when: float) -> asyncio.Future[None]:
        """A future that completes at the first millisecond boundary at or after loop time `when`."""
        future = self._loop.create_future()
        self._slot(when).append(future)
        return future

    def run_at(self, when: float, run: TokenRun) -> None:
        """Call `run.tick(now)` at the first millisecond boundary at or after loop time `when`."""
        self._slot(when).append(run)

    def _fire(self, slot: int) -> None:
        now = self._loop.time()
        for waiter in self._slots.pop(slot):
            if isinstance(waiter, TokenRun):
                waiter.tick(now)
            elif not waiter.done():  # a cancelled sleeper's future is done already
                waiter.set_result(None)


# What ends a TokenRun's wait: all its steps written, the client gone, or a socket to drain first.
RUN_DONE, RUN_GONE, RUN_DRAIN = 0, 1, 2
# A run hands back to its task to await the drain once this much waits in the socket's buffer.
_RUN_HIGH_WATER = 64 * 1024


class TokenRun:
    """Writes steps `k`..`steps - 1` of a stream one inter-token latency apart, from Ticks' timer.

    With one task per stream, each token costs a task wake-up through several coroutines and an await of
    aiohttp's write; here a token is one call: build its events, frame them as a chunk of the chunked body
    and hand them to the transport (what aiohttp's StreamWriter does, counted the same). `future` completes
    with RUN_DONE after the last step, RUN_GONE once the client has closed its connection (checked at least
    every 50 ms), or RUN_DRAIN when the socket's buffer is full, so that the stream's task awaits the drain
    and starts a new run. Cancelling the task cancels the future, and the run stops at its next tick.
    """

    __slots__ = (
        "step",
        "progress",
        "writer",
        "transport",
        "latency",
        "rng",
        "ticks",
        "due",
        "k",
        "steps",
        "future",
        "at_due",
    )

    def __init__(
        self,
        step: Callable[[int], tuple[list[bytes], int]],
        progress: Progress,
        writer: StreamWriter,
        transport: asyncio.Transport,
        latency: Latency,
        rng: random.Random,
        due: float,
        k: int,
        steps: int,
    ) -> None:
        self.step, self.progress = step, progress
        self.writer, self.transport = writer, transport
        self.latency, self.rng = latency, rng
        loop = asyncio.get_running_loop()
        self.ticks = ticks_of(loop)
        self.due, self.k, self.steps = due, k, steps
        self.future: asyncio.Future[int] = loop.create_future()
        self.at_due = False
        self._arm(loop.time())

    def _arm(self, now: float) -> None:
        # Wake at the next token, or sooner to look for a closed connection when the gap is long.
        due = self.due
        self.at_due = due - now <= _DISCONNECT_POLL
        self.ticks.run_at(due if self.at_due else now + _DISCONNECT_POLL, self)

    def tick(self, now: float) -> None:
        """Write the step that is due (Ticks calls it); never raises, a failure ends the run's future."""
        future = self.future
        if future.done():  # the stream's task was cancelled
            return
        try:
            if self.transport.is_closing():
                future.set_result(RUN_GONE)
            elif not self.at_due:
                self._arm(now)
            else:
                self._write(now)
        except Exception as exc:  # handed to the stream's task, which raises it
            future.set_exception(exc)

    def _write(self, now: float) -> None:
        events, tokens = self.step(self.k)
        data = b"".join(events)
        frame = b"%x\r\n%b\r\n" % (len(data), data)
        writer = self.writer
        writer.buffer_size += len(frame)
        writer.output_size += len(frame)
        self.transport.write(frame)
        progress = self.progress
        progress.chunks += len(events)
        progress.tokens += tokens
        self.k += 1
        if self.k >= self.steps:
            self.future.set_result(RUN_DONE)
        elif self.transport.get_write_buffer_size() > _RUN_HIGH_WATER:
            self.future.set_result(RUN_DRAIN)
        else:
            # The stream's own timeline, as next_token keeps it.
            self.due = max(self.due + self.latency.next_token(self.rng), now)
            self._arm(now)


def pumpable(request: web.Request) -> StreamWriter | None:
    """The request's StreamWriter when a TokenRun can write to its transport directly: a chunked body,
    not compressed, with nothing hooked on each chunk sent, its headers on the wire; else None."""
    writer = request.writer
    if type(writer) is not StreamWriter or request.transport is None:
        return None
    if not writer.chunked or writer.length is not None:
        return None
    if getattr(writer, "_compress", None) is not None or getattr(writer, "_on_chunk_sent", None) is not None:
        return None
    return writer if getattr(writer, "_headers_written", False) else None


async def run_tokens(
    request: web.Request,
    writer: StreamWriter,
    step: Callable[[int], tuple[list[bytes], int]],
    progress: Progress,
    latency: Latency,
    rng: random.Random,
    due: float,
    k: int,
    steps: int,
) -> None:
    """Write steps k..steps - 1 of a stream, step k - 1 having been due at `due`, from Ticks' timer
    (TokenRun) while the calling task sleeps; ConnectionResetError once the client has gone."""
    transport = request.transport
    while transport is not None:
        due = max(due + latency.next_token(rng), asyncio.get_running_loop().time())
        run = TokenRun(step, progress, writer, transport, latency, rng, due, k, steps)
        outcome = await run.future
        if outcome == RUN_DONE:
            return
        if outcome == RUN_GONE:
            break
        k, due = run.k, run.due
        await writer.drain()
        transport = request.transport
    raise ConnectionResetError("client disconnected")


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
    mark_first_token(request)
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
            mark_first_token(self.request)
            await self._send_batched(roles)
            return
        due = await first_token(self.request, latency, rng)
        for k in range(steps):
            if k:
                writer = pumpable(self.request)
                if writer is not None:
                    await run_tokens(
                        self.request, writer, self._step, self.progress, latency, rng, due, k, steps
                    )
                    break
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
