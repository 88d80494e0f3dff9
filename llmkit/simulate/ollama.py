"""Ollama's API: /api/chat and /api/generate (NDJSON streams); the model and embedding routes are
ollama_models.py's and ollama_embed.py's, registered here too."""

from __future__ import annotations

import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from llmkit.core.http import add_route, json_response, openapi, set_error_format, stream_response
from llmkit.core.sampling import INT64_MAX, is_int
from llmkit.core.tokenizer import count_prompt_tokens, tokenize
from llmkit.simulate import ollama_embed, ollama_models
from llmkit.simulate.latency import Latency, latency_for
from llmkit.simulate.ollama_wire import (
    NDJSON_HEADERS,
    bad,
    check_model,
    check_stream,
    ollama_error_body,
    read_body,
    timestamp,
)
from llmkit.simulate.openai import last_user_text
from llmkit.simulate.openapi import OLLAMA_CHAT_DOC, OLLAMA_ERROR, OLLAMA_GENERATE_DOC
from llmkit.simulate.reply import answer_mode_for, pick_answer
from llmkit.simulate.shapes import (
    Answer,
    Clock,
    count_answer,
    finish_answer,
    send_events,
    send_stream,
    wait_whole,
)
from llmkit.simulate.slot import request_slot
from llmkit.simulate.state import STATE_KEY, SimulateState
from llmkit.simulate.structured import MAX_TOOLS, ResponseFormat, Tool, ToolCall, format_content, tool_problem
from llmkit.simulate.tool_calls import ToolPolicy, cite, make_calls, rate_for

ROLES = ("system", "user", "assistant", "tool")


@dataclass(frozen=True, slots=True)
class OllamaRequest:
    """A validated /api/chat or /api/generate request: what the simulator acts on."""

    model: str
    prompt: str
    prompt_tokens: int
    stream: bool
    max_tokens: int | None
    stop: tuple[str, ...]
    as_json: bool
    # Nothing to answer (no messages, no prompt): Ollama then just loads the model.
    load_only: bool
    # format: a JSON schema object the answer follows.
    schema: dict[str, Any] | None = None
    tools: tuple[Tool, ...] = ()
    seed: int | None = None
    # (tool name, output) of the tool messages ending the conversation.
    results: tuple[tuple[str, str], ...] = ()
    texts: tuple[str, ...] = ()


def _check_options(data: Mapping[str, Any]) -> tuple[int | None, tuple[str, ...]]:
    options = data.get("options")
    if options is None:
        return None, ()
    if not isinstance(options, dict):
        raise bad(f'options must be an object such as {{"num_predict": 64}}; got {options!r}')
    num_predict = options.get("num_predict")
    if num_predict is not None and not is_int(num_predict, -INT64_MAX):
        raise bad(f"options.num_predict must be an integer (-1 for no limit); got {num_predict!r}")
    stop = options.get("stop")
    if stop is None:
        stop = []
    elif isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
        raise bad(f"options.stop must be an array of strings; got {stop!r}")
    # Ollama reads -1 as "no limit" and -2 as "fill the context": neither cuts a simulated answer.
    max_tokens = num_predict if num_predict is not None and num_predict > 0 else None
    return max_tokens, tuple(s for s in stop if s)


def _check_format_schema(data: Mapping[str, Any]) -> dict[str, Any] | None:
    # A schema the sampler cannot satisfy is a 400 when the answer is made (format_content).
    fmt = data.get("format")
    return fmt if isinstance(fmt, dict) else None


def _check_seed(data: Mapping[str, Any]) -> int | None:
    options = data.get("options")
    seed = options.get("seed") if isinstance(options, dict) else None
    if seed is not None and not is_int(seed, -INT64_MAX):
        raise bad(f"options.seed must be an integer; got {seed!r}")
    return seed


def _check_tools(data: Mapping[str, Any]) -> tuple[Tool, ...]:
    raw = data.get("tools")
    if raw is None:
        return ()
    if not isinstance(raw, list) or len(raw) > MAX_TOOLS:
        raise bad(f"tools must be an array of up to {MAX_TOOLS} function tools; got {raw!r:.80}")
    tools = []
    for i, tool in enumerate(raw):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or tool.get("type", "function") != "function":
            raise bad(
                f'tools[{i}] must be {{"type": "function", "function": {{"name": ..., "parameters": ...}}}}'
            )
        name, description, schema = (
            function.get("name"),
            function.get("description"),
            function.get("parameters"),
        )
        problem = tool_problem(name, description, schema, f"tools[{i}].function", "parameters")
        if problem is not None:
            raise bad(problem)
        tools.append(Tool(str(name), schema if schema is not None else {"type": "object"}, description or ""))
    if len({t.name for t in tools}) != len(tools):
        raise bad("tools: function names must be unique")
    return tuple(tools)


def _tool_results(messages: list[dict[str, Any]]) -> tuple[tuple[str, str], ...]:
    results = []
    for message in reversed(messages):
        if message.get("role") != "tool":
            break
        results.append((str(message.get("tool_name") or ""), str(message.get("content") or "")))
    return tuple(results[::-1])


def _check_common(data: Mapping[str, Any]) -> tuple[bool, bool]:
    stream = check_stream(data)
    fmt = data.get("format")
    if fmt is not None and fmt not in ("", "json") and not isinstance(fmt, dict):
        raise bad(f'format must be "json" or a JSON schema object; got {fmt!r}')
    return stream, fmt == "json" or isinstance(fmt, dict)


def _check_messages(data: Mapping[str, Any]) -> list[dict[str, Any]]:
    messages = data.get("messages")
    if not isinstance(messages, list):
        raise bad(
            'messages is required: an array such as [{"role": "user", "content": "Why is the sky blue?"}]; '
            f"got {messages!r}"
        )
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise bad(f"messages[{i}] must be an object whose role is one of {', '.join(ROLES)}")
        content = message.get("content")
        if content is not None and not isinstance(content, str):
            raise bad(f"messages[{i}].content must be a string; got {type(content).__name__}")
    return messages


def parse_chat(data: Mapping[str, Any]) -> OllamaRequest:
    """Validate an /api/chat body; a 400 says what to fix."""
    model = check_model(data)
    messages = _check_messages(data)
    stream, as_json = _check_common(data)
    max_tokens, stop = _check_options(data)
    prompt = last_user_text(messages)
    tokens = count_prompt_tokens(messages)
    texts = (prompt, *(str(m.get("content") or "") for m in messages if m.get("role") == "system"))
    return OllamaRequest(
        model,
        prompt,
        tokens,
        stream,
        max_tokens,
        stop,
        as_json,
        not messages,
        _check_format_schema(data),
        _check_tools(data),
        _check_seed(data),
        _tool_results(messages) if messages else (),
        texts,
    )


def parse_generate(data: Mapping[str, Any]) -> OllamaRequest:
    """Validate an /api/generate body; a 400 says what to fix."""
    model = check_model(data)
    stream, as_json = _check_common(data)
    max_tokens, stop = _check_options(data)
    prompt, system = data.get("prompt"), data.get("system")
    # Checked before defaulting: `or ""` let {} and [] through as an empty prompt.
    if not isinstance(prompt, str | None) or not isinstance(system, str | None):
        raise bad("prompt and system must be strings")
    prompt, system = prompt or "", system or ""
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": prompt})
    tokens = count_prompt_tokens(messages)
    schema = _check_format_schema(data)
    texts = (prompt, system)
    return OllamaRequest(
        model,
        prompt,
        tokens,
        stream,
        max_tokens,
        stop,
        as_json,
        not prompt,
        schema,
        (),
        _check_seed(data),
        (),
        texts,
    )


def _final(req: OllamaRequest, answer: Answer | None, clock: Clock, nominal_ttft: float) -> dict[str, Any]:
    """The fields of the last object: done, done_reason and the nanosecond durations."""
    end = clock.done or time.perf_counter_ns()
    ready = clock.ready or end
    # Non-streamed answers have no first-token mark: split their wait by the latency model's ttft.
    first = clock.first or min(end, ready + int(nominal_ttft * 1e9))
    return {
        "done": True,
        "done_reason": "load" if answer is None else answer.finish,
        "total_duration": end - clock.started,
        # Time spent waiting for a slot and the answer source: the closest thing to loading a model.
        "load_duration": ready - clock.started,
        "prompt_eval_count": req.prompt_tokens,
        "prompt_eval_duration": first - ready,
        "eval_count": 0 if answer is None else len(answer.tokens),
        # Never 0: clients divide by it to report tokens per second.
        "eval_duration": max(1, end - first),
    }


class _Shape:
    """The one difference between /api/chat and /api/generate: how a piece of content is wrapped."""

    def __init__(self, chat: bool) -> None:
        self.chat = chat

    def content(self, text: str, calls: Sequence[ToolCall] = ()) -> dict[str, Any]:
        if self.chat:
            message: dict[str, Any] = {"role": "assistant", "content": text}
            if calls:
                message["tool_calls"] = [
                    {"function": {"name": c.name, "arguments": orjson.loads(c.arguments)}} for c in calls
                ]
            return {"message": message}
        return {"response": text}

    def final(self) -> dict[str, Any]:
        return self.content("") if self.chat else {"response": "", "context": []}


async def _answer(request: web.Request, req: OllamaRequest, shape: _Shape) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    latency = latency_for(request.headers, state.settings, state.load)
    clock = Clock()
    async with request_slot(state, request):
        if req.load_only:
            clock.mark_ready()
            body = {"model": req.model, "created_at": timestamp(), **shape.final()}
            return json_response({**body, **_final(req, None, clock, 0.0)})
        text, rng = await pick_answer(state, req.prompt, answer_mode_for(request.headers, state.settings))
        if req.tools:
            policy = ToolPolicy(rate=rate_for(request.headers, state.settings.tool_call_rate))
            calls = make_calls(req.tools, policy, req.prompt, bool(req.results), text, rng, req.seed)
            if calls:
                clock.mark_ready()
                return await _tool_calls(request, state, req, shape, latency, calls, rng, clock)
        if req.results:
            text = cite(req.results, text)
        text = _formatted(req, text, rng)
        answer = finish_answer(
            request, state, req.prompt, text, rng, req.prompt_tokens, stop=req.stop, max_tokens=req.max_tokens
        )
        clock.mark_ready()
        if req.stream:
            return await _stream(request, state, req, shape, latency, answer, clock)
        if not await wait_whole(request, state, latency, answer):
            return web.Response(status=499)
        clock.mark_done()
        body = {"model": req.model, "created_at": timestamp(), **shape.content(answer.text)}
        if not shape.chat:
            body["context"] = []
        return json_response({**body, **_final(req, answer, clock, latency.ttft)})


def _formatted(req: OllamaRequest, text: str, rng: random.Random) -> str:
    """The answer in the request's format: JSON valid against its schema, a JSON object fitting the prompt
    ("json"), or the text."""
    if req.schema is not None:
        return format_content(ResponseFormat("json_schema", req.schema), text, rng, param="format")
    if req.as_json:
        return format_content(ResponseFormat("json_object"), text, rng, req.texts)
    return text


async def _tool_calls(
    request: web.Request,
    state: SimulateState,
    req: OllamaRequest,
    shape: _Shape,
    latency: Latency,
    calls: list[ToolCall],
    rng: random.Random,
    clock: Clock,
) -> web.StreamResponse:
    """The answer that calls tools: message.tool_calls (arguments as objects), all in one object or line,
    as Ollama sends them, then the final object (done_reason stop)."""
    tokens = [t for c in calls for t in tokenize(c.arguments)]
    count_answer(state, req.prompt_tokens, "tool_calls")
    answer = Answer(tokens, "stop", None, req.prompt_tokens, rng)
    if not req.stream:
        if not await wait_whole(request, state, latency, answer):
            return web.Response(status=499)
        clock.mark_done()
        body = {"model": req.model, "created_at": timestamp(), **shape.content("", calls)}
        return json_response({**body, **_final(req, answer, clock, latency.ttft)})
    line = {"model": req.model, "created_at": timestamp(), **shape.content("", calls), "done": False}

    def tail() -> list[bytes]:
        last = {"model": req.model, "created_at": timestamp(), **shape.final()}
        return [orjson.dumps({**last, **_final(req, answer, clock, latency.ttft)}) + b"\n"]

    response = stream_response(request, NDJSON_HEADERS)
    steps = [(orjson.dumps(line) + b"\n", len(tokens))]
    await send_events(request, state, response, latency, rng, head=[], steps=steps, tail=tail, clock=clock)
    return response


async def _stream(
    request: web.Request,
    state: SimulateState,
    req: OllamaRequest,
    shape: _Shape,
    latency: Latency,
    answer: Answer,
    clock: Clock,
) -> web.StreamResponse:
    created = timestamp()
    head = orjson.dumps({"model": req.model, "created_at": created})[:-1] + b","
    if shape.chat:
        opening, closing = head + b'"message":{"role":"assistant","content":', b'},"done":false}\n'
    else:
        opening, closing = head + b'"response":', b',"done":false}\n'

    def piece(text: str) -> bytes:
        return opening + orjson.dumps(text) + closing

    def tail() -> list[bytes]:
        last = {"model": req.model, "created_at": timestamp(), **shape.final()}
        return [orjson.dumps({**last, **_final(req, answer, clock, latency.ttft)}) + b"\n"]

    response = stream_response(request, NDJSON_HEADERS)
    await send_stream(request, state, response, latency, answer, head=[], piece=piece, tail=tail, clock=clock)
    return response


@openapi(**OLLAMA_CHAT_DOC)
async def chat(request: web.Request) -> web.StreamResponse:
    """Ollama chat: NDJSON stream by default, one object with "stream": false."""
    req = parse_chat(await read_body(request))
    return await _answer(request, req, _Shape(chat=True))


@openapi(**OLLAMA_GENERATE_DOC)
async def generate(request: web.Request) -> web.StreamResponse:
    """Ollama completion of a prompt: NDJSON stream by default, one object with "stream": false."""
    req = parse_generate(await read_body(request))
    return await _answer(request, req, _Shape(chat=False))


def add_routes(app: web.Application) -> None:
    """Register the Ollama routes under /api, with Ollama's `{"error": "..."}` error shape."""
    set_error_format(app, ollama_error_body, "/api", ("OllamaError", OLLAMA_ERROR))
    # Ollama's documented examples are `curl -d` (a form Content-Type): its clients may send one.
    add_route(app, "POST", "/api/chat", chat, forms=True)
    add_route(app, "POST", "/api/generate", generate, forms=True)
    ollama_models.add_routes(app)
    ollama_embed.add_routes(app)
