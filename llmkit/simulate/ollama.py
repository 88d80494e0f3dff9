"""Ollama's API: /api/chat and /api/generate (NDJSON streams), /api/tags, /api/ps and /api/version."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from llmkit.core.http import ApiError, add_route, json_response, openapi, set_error_format, stream_response
from llmkit.core.sampling import INT64_MAX, is_int
from llmkit.core.tokenizer import count_prompt_tokens
from llmkit.simulate.latency import Latency, latency_for
from llmkit.simulate.openai import last_user_text
from llmkit.simulate.openapi import OLLAMA_CHAT_DOC, OLLAMA_ERROR, OLLAMA_GENERATE_DOC
from llmkit.simulate.shapes import Answer, Clock, prepare_answer, send_stream, wait_whole
from llmkit.simulate.slot import request_slot
from llmkit.simulate.state import STATE_KEY, SimulateState

NDJSON_HEADERS = {"Content-Type": "application/x-ndjson", "Cache-Control": "no-cache"}
ROLES = ("system", "user", "assistant", "tool")
# The Ollama release whose API this mimics; clients may check it through /api/version.
OLLAMA_VERSION = "0.6.8"
# How long /api/ps says a model stays loaded (Ollama's default keep_alive).
KEEP_ALIVE_S = 300
MODEL_DETAILS = {
    "parent_model": "",
    "format": "gguf",
    "family": "llmkit",
    "families": ["llmkit"],
    "parameter_size": "7.6B",
    "quantization_level": "Q4_K_M",
}


def ollama_error_body(status: int, code: str, message: str, extra: Mapping[str, Any]) -> Any:
    """`{"error": "message"}`: the shape the ollama clients read."""
    return {"error": message}


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


def _bad(message: str) -> ApiError:
    return ApiError(400, "invalid_request", message)


def _check_model(data: Mapping[str, Any]) -> str:
    model = data.get("model")
    if not isinstance(model, str) or not model.strip():
        raise _bad(f'model is required: a non-empty string such as "llama3.2"; got {model!r}')
    return model


def _check_options(data: Mapping[str, Any]) -> tuple[int | None, tuple[str, ...]]:
    options = data.get("options")
    if options is None:
        return None, ()
    if not isinstance(options, dict):
        raise _bad(f'options must be an object such as {{"num_predict": 64}}; got {options!r}')
    num_predict = options.get("num_predict")
    if num_predict is not None and not is_int(num_predict, -INT64_MAX):
        raise _bad(f"options.num_predict must be an integer (-1 for no limit); got {num_predict!r}")
    stop = options.get("stop")
    if stop is None:
        stop = []
    elif isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
        raise _bad(f"options.stop must be an array of strings; got {stop!r}")
    # Ollama reads -1 as "no limit" and -2 as "fill the context": neither cuts a simulated answer.
    max_tokens = num_predict if num_predict is not None and num_predict > 0 else None
    return max_tokens, tuple(s for s in stop if s)


def _check_common(data: Mapping[str, Any]) -> tuple[bool, bool]:
    stream = data.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _bad(f"stream must be true or false; got {stream!r}")
    fmt = data.get("format")
    if fmt is not None and fmt not in ("", "json") and not isinstance(fmt, dict):
        raise _bad(f'format must be "json" or a JSON schema object; got {fmt!r}')
    # Ollama streams unless told not to.
    return stream is not False, fmt == "json" or isinstance(fmt, dict)


def _check_messages(data: Mapping[str, Any]) -> list[dict[str, Any]]:
    messages = data.get("messages")
    if not isinstance(messages, list):
        raise _bad(
            'messages is required: an array such as [{"role": "user", "content": "Why is the sky blue?"}]; '
            f"got {messages!r}"
        )
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise _bad(f"messages[{i}] must be an object whose role is one of {', '.join(ROLES)}")
        content = message.get("content")
        if content is not None and not isinstance(content, str):
            raise _bad(f"messages[{i}].content must be a string; got {type(content).__name__}")
    return messages


def parse_chat(data: Mapping[str, Any]) -> OllamaRequest:
    """Validate an /api/chat body; a 400 says what to fix."""
    model = _check_model(data)
    messages = _check_messages(data)
    stream, as_json = _check_common(data)
    max_tokens, stop = _check_options(data)
    prompt = last_user_text(messages)
    tokens = count_prompt_tokens(messages)
    return OllamaRequest(model, prompt, tokens, stream, max_tokens, stop, as_json, not messages)


def parse_generate(data: Mapping[str, Any]) -> OllamaRequest:
    """Validate an /api/generate body; a 400 says what to fix."""
    model = _check_model(data)
    stream, as_json = _check_common(data)
    max_tokens, stop = _check_options(data)
    prompt, system = data.get("prompt"), data.get("system")
    # Checked before defaulting: `or ""` let {} and [] through as an empty prompt.
    if not isinstance(prompt, str | None) or not isinstance(system, str | None):
        raise _bad("prompt and system must be strings")
    prompt, system = prompt or "", system or ""
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": prompt})
    tokens = count_prompt_tokens(messages)
    return OllamaRequest(model, prompt, tokens, stream, max_tokens, stop, as_json, not prompt)


async def read_body(request: web.Request) -> dict[str, Any]:
    """The JSON object of the body, whatever the Content-Type: Ollama's docs post JSON with bare `curl -d`."""
    body = await request.read()
    try:
        data = orjson.loads(body) if body.strip() else None
    except orjson.JSONDecodeError as exc:
        raise _bad(f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise _bad('request body must be a JSON object such as {"model": "llama3.2", ...}')
    return data


def _timestamp(epoch: float | None = None) -> str:
    """RFC 3339 in UTC with nanoseconds, as Ollama writes created_at."""
    epoch = time.time() if epoch is None else epoch
    whole = int(epoch)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{int((epoch - whole) * 1e9):09d}Z"


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

    def content(self, text: str) -> dict[str, Any]:
        if self.chat:
            return {"message": {"role": "assistant", "content": text}}
        return {"response": text}

    def final(self) -> dict[str, Any]:
        return self.content("") if self.chat else {"response": "", "context": []}


async def _answer(request: web.Request, req: OllamaRequest, shape: _Shape) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    latency = latency_for(request.headers, state.settings)
    clock = Clock()
    async with request_slot(state, request):
        if req.load_only:
            clock.mark_ready()
            body = {"model": req.model, "created_at": _timestamp(), **shape.final()}
            return json_response({**body, **_final(req, None, clock, 0.0)})
        answer = await prepare_answer(
            request,
            state,
            req.prompt,
            req.prompt_tokens,
            stop=req.stop,
            max_tokens=req.max_tokens,
            as_json=req.as_json,
        )
        clock.mark_ready()
        if req.stream:
            return await _stream(request, state, req, shape, latency, answer, clock)
        if not await wait_whole(request, state, latency, answer):
            return web.Response(status=499)
        clock.mark_done()
        body = {"model": req.model, "created_at": _timestamp(), **shape.content(answer.text)}
        if not shape.chat:
            body["context"] = []
        return json_response({**body, **_final(req, answer, clock, latency.ttft)})


async def _stream(
    request: web.Request,
    state: SimulateState,
    req: OllamaRequest,
    shape: _Shape,
    latency: Latency,
    answer: Answer,
    clock: Clock,
) -> web.StreamResponse:
    created = _timestamp()
    head = orjson.dumps({"model": req.model, "created_at": created})[:-1] + b","
    if shape.chat:
        opening, closing = head + b'"message":{"role":"assistant","content":', b'},"done":false}\n'
    else:
        opening, closing = head + b'"response":', b',"done":false}\n'

    def piece(text: str) -> bytes:
        return opening + orjson.dumps(text) + closing

    def tail() -> list[bytes]:
        last = {"model": req.model, "created_at": _timestamp(), **shape.final()}
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


def _model_name(model_id: str) -> str:
    return model_id if ":" in model_id else f"{model_id}:latest"


def _model_entry(model_id: str) -> dict[str, Any]:
    name = _model_name(model_id)
    digest = hashlib.sha256(name.encode()).hexdigest()
    # A stable size per name, in the range of a quantized 7B model.
    size = 4_000_000_000 + int(digest[:8], 16) % 1_000_000_000
    return {"name": name, "model": name, "size": size, "digest": digest, "details": dict(MODEL_DETAILS)}


@openapi(tags=["ollama"])
async def tags(request: web.Request) -> web.Response:
    """Ollama's local models: the ids of simulate.models."""
    state = request.app[STATE_KEY]
    modified = _timestamp(float(state.started_at))
    models = [{**_model_entry(m), "modified_at": modified} for m in state.models]
    return json_response({"models": models})


@openapi(tags=["ollama"])
async def ps(request: web.Request) -> web.Response:
    """Ollama's loaded models: every listed model, always loaded."""
    state = request.app[STATE_KEY]
    expires = _timestamp(time.time() + KEEP_ALIVE_S)
    models = []
    for model_id in state.models:
        entry = _model_entry(model_id)
        models.append({**entry, "expires_at": expires, "size_vram": entry["size"], "context_length": 8192})
    return json_response({"models": models})


@openapi(tags=["ollama"])
async def version(request: web.Request) -> web.Response:
    """The Ollama version this API mimics."""
    return json_response({"version": OLLAMA_VERSION})


def add_routes(app: web.Application) -> None:
    """Register the Ollama routes under /api, with Ollama's `{"error": "..."}` error shape."""
    set_error_format(app, ollama_error_body, "/api", ("OllamaError", OLLAMA_ERROR))
    # Ollama's documented examples are `curl -d` (a form Content-Type): its clients may send one.
    add_route(app, "POST", "/api/chat", chat, forms=True)
    add_route(app, "POST", "/api/generate", generate, forms=True)
    add_route(app, "GET", "/api/tags", tags)
    add_route(app, "GET", "/api/ps", ps)
    add_route(app, "GET", "/api/version", version)
