"""Writing an answer as SSE chunks on the latency model, in batches when there is nothing to wait for."""

from __future__ import annotations

import asyncio
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


async def pause(request: web.Request, seconds: float) -> None:
    """Sleep `seconds`, but raise ConnectionResetError soon after the client disconnects."""
    if seconds <= 0:
        return
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while True:
        if client_gone(request):
            raise ConnectionResetError("client disconnected")
        left = end - loop.time()
        if left <= 0:
            return
        await asyncio.sleep(min(left, _DISCONNECT_POLL))


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
        await pause(self.request, latency.first_token(rng))
        for k in range(steps):
            if k:
                await pause(self.request, latency.next_token(rng))
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
