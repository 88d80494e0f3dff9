"""What the Ollama, Anthropic and Responses API shapes share: answer preparation, timing, event streams."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from llmkit.core.http import request_id_of
from llmkit.core.tokenizer import tokenize
from llmkit.simulate.latency import Latency
from llmkit.simulate.metrics import count_generated
from llmkit.simulate.openai import cut_answer
from llmkit.simulate.reply import answer_mode_for, pick_answer, wait_or_gone
from llmkit.simulate.state import SimulateState
from llmkit.simulate.stream import (
    INSTANT_CHUNK_TOKENS,
    Progress,
    first_token,
    next_token,
    plan_pieces,
    pumpable,
    run_tokens,
)

log = logging.getLogger("llmkit.simulate")


@dataclass(frozen=True, slots=True)
class Answer:
    """An answer cut for one request: its tokens, why it ended, and the prompt's token count."""

    tokens: list[str]
    # "stop" (the answer ended or a stop sequence cut it) or "length" (the max tokens cut it).
    finish: str
    # The stop sequence that cut the answer, if one did.
    stop_sequence: str | None
    prompt_tokens: int
    rng: random.Random

    @property
    def text(self) -> str:
        """The whole answer text."""
        return "".join(self.tokens)


@dataclass(slots=True)
class Clock:
    """Monotonic nanosecond marks of one request, for the duration fields some API shapes report."""

    started: int = field(default_factory=time.perf_counter_ns)
    ready: int = 0  # slot held and answer picked
    first: int = 0  # first token due
    done: int = 0

    def mark_ready(self) -> None:
        """The answer is known; what follows is generation time."""
        self.ready = time.perf_counter_ns()

    def mark_first(self) -> None:
        """The time to first token has passed."""
        self.first = time.perf_counter_ns()

    def mark_done(self) -> None:
        """The last token is out."""
        self.done = time.perf_counter_ns()


def json_text(text: str) -> str:
    """`text` itself when it is a JSON object or array, else `{"answer": text}`: JSON mode's output."""
    try:
        if isinstance(orjson.loads(text), (dict, list)):
            return text
    except orjson.JSONDecodeError:
        pass
    return orjson.dumps({"answer": text}).decode()


def _first_stop(text: str, stop: tuple[str, ...]) -> tuple[str, str | None]:
    found = [(i, s) for s in stop if s and (i := text.find(s)) >= 0]
    if not found:
        return text, None
    index, sequence = min(found)
    return text[:index], sequence


async def prepare_answer(
    request: web.Request,
    state: SimulateState,
    prompt: str,
    prompt_tokens: int,
    *,
    stop: tuple[str, ...] = (),
    max_tokens: int | None = None,
    as_json: bool = False,
) -> Answer:
    """Pick the source's answer, cut it at the first stop sequence and `max_tokens`, count it in the stats."""
    text, rng = await pick_answer(state, prompt, answer_mode_for(request.headers, state.settings))
    if as_json:
        text = json_text(text)
    return finish_answer(request, state, prompt, text, rng, prompt_tokens, stop=stop, max_tokens=max_tokens)


def finish_answer(
    request: web.Request,
    state: SimulateState,
    prompt: str,
    text: str,
    rng: random.Random,
    prompt_tokens: int,
    *,
    stop: tuple[str, ...] = (),
    max_tokens: int | None = None,
) -> Answer:
    """`text` cut at the first stop sequence and `max_tokens`, counted in the stats."""
    text, sequence = _first_stop(text, stop)
    tokens, finish = cut_answer(text, (), max_tokens)
    if finish == "length":
        sequence = None
    count_answer(state, prompt_tokens, finish)
    if state.settings.tracking:
        log.info(
            "request %s %s: prompt %.80r -> answer of %d tokens (%s)",
            request.path,
            request_id_of(request),
            prompt,
            len(tokens),
            finish,
        )
    return Answer(tokens, finish, sequence, prompt_tokens, rng)


def count_answer(state: SimulateState, prompt_tokens: int, finish: str) -> None:
    """Count one answer's prompt tokens and its finish reason in the stats."""
    stats = state.stats
    stats.prompt_tokens += prompt_tokens
    stats.finish_reasons[finish] = stats.finish_reasons.get(finish, 0) + 1


async def wait_whole(request: web.Request, state: SimulateState, latency: Latency, answer: Answer) -> bool:
    """Sleep as long as the whole answer takes to generate; False (counted) if the client left meanwhile."""
    if not latency.instant:
        seconds = latency.whole_answer(len(answer.tokens), answer.rng)
        if not await wait_or_gone(request, state, seconds):
            return False
    state.stats.tokens_sent += len(answer.tokens)
    return True


def sse_event(name: str, data: Mapping[str, Any]) -> bytes:
    """One named server-sent event: `event: name` and a JSON `data:` line."""
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


async def send_stream(
    request: web.Request,
    state: SimulateState,
    response: web.StreamResponse,
    latency: Latency,
    answer: Answer,
    *,
    head: list[bytes],
    piece: Callable[[str], bytes],
    tail: Callable[[], list[bytes]],
    clock: Clock | None = None,
) -> None:
    """Stream `head`, one `piece` event per content piece on the latency model, then `tail()`.

    A client that disconnects ends the stream quietly (counted in stats.disconnects).
    """
    # One token per event when tokens arrive one by one; a few per event when nothing waits between them.
    pieces, counts = plan_pieces(answer.tokens, 1 if latency.itl > 0 else INSTANT_CHUNK_TOKENS)
    steps = ((piece(text), counts[k]) for k, text in enumerate(pieces))
    await send_events(
        request, state, response, latency, answer.rng, head=head, steps=steps, tail=tail, clock=clock
    )


async def send_events(
    request: web.Request,
    state: SimulateState,
    response: web.StreamResponse,
    latency: Latency,
    rng: random.Random,
    *,
    head: list[bytes],
    steps: Iterable[tuple[bytes, int]],
    tail: Callable[[], list[bytes]],
    clock: Clock | None = None,
) -> None:
    """Stream `head`, then each step (an event and its tokens) on the latency model, then `tail()`."""
    stats = state.stats
    progress = Progress()
    stats.active_streams += 1
    try:
        await response.prepare(request)
        if head:
            # The opening events go out at once, as the real APIs do, before the time to first token.
            await response.write(b"".join(head))
        due = await first_token(request, latency, rng)
        if clock is not None:
            clock.mark_first()
        rest: list[bytes] = []
        rest_tokens = 0
        if latency.itl > 0:
            await _paced(request, response, latency, rng, due, list(steps), progress)
        else:
            capacity = max(1, state.settings.channel_capacity)
            rest, rest_tokens = await _batched(response, steps, capacity, progress)
        if clock is not None:
            clock.mark_done()
        # The last batch goes out with the closing events.
        await response.write(b"".join([*rest, *tail()]))
        progress.tokens += rest_tokens
        await response.write_eof()
    except ConnectionResetError:
        # The client went away: stop here; aiohttp closes the connection quietly.
        stats.disconnects += 1
    finally:
        stats.active_streams -= 1
        stats.tokens_sent += progress.tokens
        count_generated(request, progress.tokens)


async def _paced(
    request: web.Request,
    response: web.StreamResponse,
    latency: Latency,
    rng: random.Random,
    due: float,
    plan: list[tuple[bytes, int]],
    progress: Progress,
) -> None:
    # One event a token, an inter-token latency apart: after the first, from Ticks' timer (run_tokens).
    def step(k: int) -> tuple[list[bytes], int]:
        event, tokens = plan[k]
        return [event], tokens

    for k in range(len(plan)):
        if k:
            writer = pumpable(request)
            if writer is not None:
                await run_tokens(request, writer, step, progress, latency, rng, due, k, len(plan))
                return
            due = await next_token(request, due, latency, rng)
        event, tokens = plan[k]
        await response.write(event)
        progress.chunks += 1
        progress.tokens += tokens


async def _batched(
    response: web.StreamResponse, steps: Iterable[tuple[bytes, int]], capacity: int, progress: Progress
) -> tuple[list[bytes], int]:
    # Nothing to wait for: `capacity` events a write; the events of a last, partial batch and their tokens.
    batch: list[bytes] = []
    batch_tokens = 0
    for event, tokens in steps:
        batch.append(event)
        batch_tokens += tokens
        if len(batch) >= capacity:
            await response.write(b"".join(batch))
            progress.chunks += len(batch)
            progress.tokens += batch_tokens
            batch, batch_tokens = [], 0
    return batch, batch_tokens


def argument_pieces(arguments: str, per_chunk: int) -> tuple[list[str], list[int]]:
    """A tool call's JSON arguments as streamed fragments and the tokens of each."""
    return plan_pieces(tokenize(arguments), per_chunk)
