"""OpenAI's legacy `POST /v1/completions`: text prompts in, `text_completion` bodies or SSE chunks out."""

from __future__ import annotations

import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from llmkit.core.http import add_route, json_response, openapi, read_json, stream_response
from llmkit.core.ids import fresh_hex
from llmkit.core.sampling import INT64_MAX
from llmkit.core.tokenizer import count_tokens, tokenize
from llmkit.simulate.bounds import MAX_LEGACY_LOGPROBS, bounded_int, check_numbers
from llmkit.simulate.latency import Latency, latency_for
from llmkit.simulate.lengths import fit_text, want_of
from llmkit.simulate.logprobs import (
    TokenLogprob,
    legacy_logprobs,
    legacy_piece_logprobs,
    logprob_rng,
    token_logprobs,
)
from llmkit.simulate.openai import (
    MAX_N,
    SYSTEM_FINGERPRINT,
    check_bool,
    check_model,
    check_stop,
    cut_answer,
    int_param,
    invalid,
    length_fields,
    usage,
)
from llmkit.simulate.openapi import COMPLETIONS_DOC
from llmkit.simulate.reply import (
    answer_mode_for,
    limit_headers,
    pick_answer,
    run_stream,
    sse_headers,
    wait_or_gone,
)
from llmkit.simulate.slot import request_slot
from llmkit.simulate.state import STATE_KEY, SimulateState
from llmkit.simulate.stream import INSTANT_CHUNK_TOKENS, StreamPlan, StreamSender, plan_pieces

# OpenAI's default for this endpoint: without max_tokens an answer stops after 16 tokens.
DEFAULT_MAX_TOKENS = 16
MAX_PROMPTS = 2048


@dataclass(frozen=True, slots=True)
class CompletionRequest:
    """A validated legacy completion request."""

    model: str
    prompts: tuple[str, ...]
    n: int = 1
    max_tokens: int = DEFAULT_MAX_TOKENS
    stop: tuple[str, ...] = ()
    echo: bool = False
    stream: bool = False
    include_usage: bool = False
    # vLLM's fields and OpenAI's seed; max_tokens_set: the body gave max_tokens (else the default 16,
    # or a length drawn from simulate.output_tokens when that is set).
    ignore_eos: bool = False
    min_tokens: int | None = None
    seed: int | None = None
    max_tokens_set: bool = False
    # logprobs: N (0..5): the legacy logprobs object, with N alternatives per token; None: no logprobs.
    logprobs: int | None = None


@dataclass(frozen=True, slots=True)
class Lane:
    """The answer to one prompt, shared by its `n` choices: the prompt, answer tokens, finish reason."""

    prompt: str
    tokens: list[str]
    finish_reason: str
    # With logprobs: those of the choice's tokens (the echoed prompt's first).
    logprobs: list[TokenLogprob] | None = None


def _check_prompts(data: Mapping[str, Any]) -> tuple[str, ...]:
    prompt = data.get("prompt")
    if prompt is None:
        raise invalid(
            "prompt", 'you must provide a prompt, e.g. "prompt": "Say hello"', "missing_required_parameter"
        )
    if isinstance(prompt, str):
        return (prompt,)
    if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        if len(prompt) > MAX_PROMPTS:
            raise invalid("prompt", f"prompt may hold at most {MAX_PROMPTS} strings; got {len(prompt)}")
        return tuple(prompt)
    if isinstance(prompt, list) and prompt and all(isinstance(p, (int, list)) for p in prompt):
        raise invalid(
            "prompt", "token-array prompts are not supported by the simulator; send the prompt as text"
        )
    raise invalid("prompt", f"prompt must be a string or a non-empty array of strings; got {prompt!r:.80}")


def parse_completion_request(data: Mapping[str, Any]) -> CompletionRequest:
    """Validate a legacy completion body; raise a 400 ApiError that names the parameter to fix."""
    model = check_model(data)
    prompts = _check_prompts(data)
    n = bounded_int(data, "n", 1, MAX_N) or 1
    if len(prompts) * n > MAX_N:
        raise invalid("n", f"prompts x n must be at most {MAX_N} choices; got {len(prompts)} x {n}")
    max_tokens = int_param(data, "max_tokens", 0)
    stream_options = data.get("stream_options")
    if stream_options is not None and not isinstance(stream_options, dict):
        raise invalid("stream_options", f"stream_options must be an object; got {stream_options!r}")
    ignore_eos, min_tokens = length_fields(data, max_tokens)
    check_numbers(data)
    logprobs = bounded_int(data, "logprobs", 0, MAX_LEGACY_LOGPROBS)
    return CompletionRequest(
        model=model,
        prompts=prompts,
        n=n,
        max_tokens=DEFAULT_MAX_TOKENS if max_tokens is None else max_tokens,
        stop=check_stop(data),
        echo=check_bool(data, "echo"),
        stream=check_bool(data, "stream"),
        include_usage=check_bool(stream_options or {}, "include_usage", "stream_options.include_usage"),
        ignore_eos=ignore_eos,
        min_tokens=min_tokens,
        seed=int_param(data, "seed", -INT64_MAX - 1),
        max_tokens_set=max_tokens is not None,
        logprobs=logprobs,
    )


class TextChunkWriter:
    """Builds the `text_completion` SSE events of one stream."""

    __slots__ = ("_head", "_open", "_tails")

    def __init__(self, model: str, completion_id: str, choices: int) -> None:
        header = {
            "id": completion_id,
            "object": "text_completion",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": SYSTEM_FINGERPRINT,
        }
        self._head = b"data: " + orjson.dumps(header)[:-1]
        self._open = self._head + b',"choices":[{"text":'
        self._tails = [b',"index":%d,"logprobs":null,"finish_reason":' % i for i in range(choices)]

    def role(self, index: int) -> bytes:
        """Text completions have no role event."""
        return b""

    def content(self, index: int, text: str) -> bytes:
        """An event carrying a piece of choice `index`'s text."""
        return self._open + orjson.dumps(text) + self._tails[index] + b"null}]}\n\n"

    def content_logprobs(self, index: int, text: str, logprobs: bytes) -> bytes:
        """A piece of choice `index`'s text with the JSON legacy `logprobs` of its own tokens."""
        tail = self._tails[index].replace(b'"logprobs":null', b'"logprobs":' + logprobs)
        return self._open + orjson.dumps(text) + tail + b"null}]}\n\n"

    def finish(self, index: int, reason: str) -> bytes:
        """The last event of a choice: empty text and its finish reason."""
        return self._open + b'""' + self._tails[index] + orjson.dumps(reason) + b"}]}\n\n"

    def usage(self, prompt_tokens: int, completion_tokens: int) -> bytes:
        """The usage event: no choices, the stream's usage."""
        body = orjson.dumps(usage(prompt_tokens, completion_tokens))
        return self._head + b',"choices":[],"usage":' + body + b"}\n\n"


class LaneSender(StreamSender):
    """A StreamSender whose choices answer different prompts: choice i follows lane i // n (with
    `logprobs`, each lane's pieces carry the JSON logprobs of their own tokens)."""

    def __init__(
        self,
        *args: Any,
        lanes: list[tuple[list[str], list[int], str]],
        per_lane: int,
        logprobs: list[list[bytes]] | None = None,
    ) -> None:
        super().__init__(*args)
        self.lanes = lanes
        self.per_lane = per_lane
        self.logprobs = logprobs

    def _steps(self) -> int:
        return max((len(pieces) for pieces, _, _ in self.lanes), default=0)

    def _step(self, k: int) -> tuple[list[bytes], int]:
        events: list[bytes] = []
        tokens = 0
        for lane, (pieces, counts, _) in enumerate(self.lanes):
            if k < len(pieces):
                choices = range(lane * self.per_lane, (lane + 1) * self.per_lane)
                if self.logprobs is None:
                    events.extend(self.writer.content(i, pieces[k]) for i in choices)
                else:
                    logprobs = self.logprobs[lane][k]
                    assert isinstance(self.writer, TextChunkWriter)
                    events.extend(self.writer.content_logprobs(i, pieces[k], logprobs) for i in choices)
                tokens += counts[k] * self.per_lane
        return events, tokens

    def _finishes(self) -> list[bytes]:
        return [self.writer.finish(i, self.lanes[i // self.per_lane][2]) for i in range(self.plan.n)]


async def _lanes(state: SimulateState, req: CompletionRequest, mode: str) -> tuple[list[Lane], random.Random]:
    lanes: list[Lane] = []
    rng = random.Random()
    lengths = state.output_lengths
    # The default of 16 tokens gives way to simulate.output_tokens and to a larger min_tokens; a max_tokens
    # in the body never does.
    max_tokens: int | None = req.max_tokens
    if not req.max_tokens_set:
        max_tokens = None if lengths is not None else max(req.max_tokens, req.min_tokens or 0)
    for prompt in req.prompts:
        text, rng = await pick_answer(state, prompt, mode, req.seed)
        want = want_of(max_tokens, req.ignore_eos, req.min_tokens, lengths, mode == "lorem", rng)
        if want is None:
            tokens, reason = cut_answer(text, req.stop, max_tokens)
        else:
            cut = fit_text(text, req.stop, want)
            tokens, reason = cut.tokens, cut.finish_reason
        entries = None
        if req.logprobs is not None:
            shown = [*tokenize(prompt), *tokens] if req.echo else tokens
            entries = token_logprobs(shown, logprob_rng(req.seed, shown, rng))
        lanes.append(Lane(prompt, tokens, reason, entries))
    return lanes, rng


def _body(req: CompletionRequest, lanes: list[Lane], prompt_tokens: int) -> dict[str, Any]:
    choices = []
    for p, lane in enumerate(lanes):
        text = (lane.prompt if req.echo else "") + "".join(lane.tokens)
        logprobs = None
        if req.logprobs is not None and lane.logprobs is not None:
            logprobs = legacy_logprobs(lane.logprobs, req.logprobs, first_unknown=req.echo)
        for j in range(req.n):
            choice = {
                "text": text,
                "index": p * req.n + j,
                "logprobs": logprobs,
                "finish_reason": lane.finish_reason,
            }
            choices.append(choice)
    completion_tokens = sum(len(lane.tokens) for lane in lanes) * req.n
    return {
        "id": f"cmpl-{fresh_hex()}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": req.model,
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "choices": choices,
        "usage": usage(prompt_tokens, completion_tokens),
    }


def _cost(req: CompletionRequest, prompt_tokens: int) -> int:
    # What the limits count up front (as ratelimit.estimate_tokens): the prompts and max_tokens.
    return prompt_tokens + req.max_tokens


@openapi(**COMPLETIONS_DOC)
async def completions(request: web.Request) -> web.StreamResponse:
    """OpenAI's legacy text completions, answered from the source on the latency model."""
    state = request.app[STATE_KEY]
    latency = latency_for(request.headers, state.settings, state.load)
    req = parse_completion_request(await read_json(request))
    mode = answer_mode_for(request.headers, state.settings)
    async with request_slot(state, request, in_stream=req.stream):
        lanes, rng = await _lanes(state, req, mode)
        prompt_tokens = sum(count_tokens(p) for p in req.prompts)
        stats = state.stats
        stats.prompt_tokens += prompt_tokens
        for lane in lanes:
            stats.finish_reasons[lane.finish_reason] = stats.finish_reasons.get(lane.finish_reason, 0) + req.n
        if req.stream:
            return await _stream(request, state, req, latency, rng, lanes, prompt_tokens)
        longest = max(len(lane.tokens) for lane in lanes)
        if not await wait_or_gone(request, state, latency.whole_answer(longest, rng)):
            return web.Response(status=499)
        body = _body(req, lanes, prompt_tokens)
        stats.tokens_sent += body["usage"]["completion_tokens"]
        return json_response(body, headers=limit_headers(state, req.model, _cost(req, prompt_tokens)))


async def _stream(
    request: web.Request,
    state: SimulateState,
    req: CompletionRequest,
    latency: Latency,
    rng: random.Random,
    lanes: list[Lane],
    prompt_tokens: int,
) -> web.StreamResponse:
    choices = len(lanes) * req.n
    writer = TextChunkWriter(req.model, f"cmpl-{fresh_hex()}", choices)
    per_chunk = 1 if latency.itl > 0 else INSTANT_CHUNK_TOKENS
    planned = []
    logprobs: list[list[bytes]] | None = None if req.logprobs is None else []
    for lane in lanes:
        pieces, counts = plan_pieces(lane.tokens, per_chunk)
        spans = counts
        if req.echo:
            # The echoed prompt opens the choice's text and costs no completion tokens.
            pieces, counts = [lane.prompt, *pieces], [0, *counts]
            spans = [count_tokens(lane.prompt), *spans]
        planned.append((pieces, counts, lane.finish_reason))
        if logprobs is not None and req.logprobs is not None and lane.logprobs is not None:
            logprobs.append(legacy_piece_logprobs(lane.logprobs, req.logprobs, spans, req.echo))
    completion_tokens = sum(len(lane.tokens) for lane in lanes) * req.n
    with_usage = req.include_usage or state.settings.usage_chunk == "always"
    usage_event = writer.usage(prompt_tokens, completion_tokens) if with_usage else None
    plan = StreamPlan([], [], choices, lanes[0].finish_reason, usage_event)
    response = stream_response(request, sse_headers(state, req.model, _cost(req, prompt_tokens)))
    capacity = state.settings.channel_capacity
    sender = LaneSender(
        request, response, writer, plan, capacity, lanes=planned, per_lane=req.n, logprobs=logprobs
    )
    return await run_stream(request, state, sender, latency, rng)


def add_routes(app: web.Application) -> None:
    """Register POST /v1/completions."""
    add_route(app, "POST", "/v1/completions", completions)
