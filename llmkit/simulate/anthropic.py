"""Anthropic's Messages API: POST /v1/messages (JSON or SSE events) and /v1/messages/count_tokens."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from llmkit.core.http import (
    ApiError,
    add_route,
    json_response,
    openapi,
    read_json,
    set_error_format,
    stream_response,
)
from llmkit.core.ids import fresh_hex
from llmkit.core.sampling import is_int
from llmkit.core.tokenizer import content_text, count_prompt_tokens
from llmkit.simulate.latency import Latency, latency_for
from llmkit.simulate.openai import last_user_text
from llmkit.simulate.openapi import ANTHROPIC_ERROR, COUNT_TOKENS_DOC, MESSAGES_DOC
from llmkit.simulate.reply import SSE_HEADERS
from llmkit.simulate.shapes import Answer, prepare_answer, send_stream, sse_event, wait_whole
from llmkit.simulate.slot import request_slot
from llmkit.simulate.state import STATE_KEY, SimulateState

ROLES = ("user", "assistant")
# Anthropic's error types by HTTP status; anything else is an api_error.
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    415: "invalid_request_error",
    429: "rate_limit_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


def anthropic_error_body(status: int, code: str, message: str, extra: Mapping[str, Any]) -> Any:
    """`{"type": "error", "error": {"type", "message"}}`: the shape the anthropic clients parse."""
    return {"type": "error", "error": {"type": ERROR_TYPES.get(status, "api_error"), "message": message}}


@dataclass(frozen=True, slots=True)
class MessagesRequest:
    """A validated Messages API request: only the fields the simulator acts on."""

    model: str
    prompt: str
    prompt_tokens: int
    max_tokens: int
    stop_sequences: tuple[str, ...]
    stream: bool


def _bad(message: str) -> ApiError:
    return ApiError(400, "invalid_request_error", message)


def _check_messages(data: Mapping[str, Any]) -> list[dict[str, Any]]:
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _bad(
            'messages: Field required: a non-empty array such as [{"role": "user", "content": "Hello"}]; '
            f"got {orjson.dumps(messages).decode()[:80]}"
        )
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise _bad(f"messages.{i}: must be an object whose role is one of {', '.join(ROLES)}")
        content = message.get("content")
        if not isinstance(content, (str, list)):
            raise _bad(f"messages.{i}.content: must be a string or an array of content blocks")
        if isinstance(content, list) and not all(isinstance(b, dict) and "type" in b for b in content):
            raise _bad(f"messages.{i}.content: every content block must be an object with a type")
    return messages


def _check_system(data: Mapping[str, Any]) -> str:
    system = data.get("system")
    if system is None or isinstance(system, str):
        return system or ""
    if isinstance(system, list) and all(isinstance(b, dict) and b.get("type") == "text" for b in system):
        return content_text(system)
    raise _bad(
        'system: must be a string or an array of text blocks such as [{"type": "text", "text": "..."}]'
    )


def _check_stop(data: Mapping[str, Any]) -> tuple[str, ...]:
    stop = data.get("stop_sequences")
    if stop is None:
        return ()
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
        raise _bad(f"stop_sequences: must be an array of strings; got {stop!r}")
    return tuple(s for s in stop if s)


def _prompt(data: Mapping[str, Any]) -> tuple[str, list[dict[str, Any]], int]:
    """The model, the messages and the input tokens of a request body (system prompt included)."""
    model = data.get("model")
    if not isinstance(model, str) or not model.strip():
        raise _bad(f'model: Field required: a non-empty string such as "claude-sonnet-4-5"; got {model!r}')
    messages = _check_messages(data)
    system = _check_system(data)
    counted = [{"role": "system", "content": system}, *messages] if system else messages
    return model, messages, count_prompt_tokens(counted)


def parse_messages_request(data: Mapping[str, Any]) -> MessagesRequest:
    """Validate a Messages API body; a 400 invalid_request_error says what to fix."""
    model, messages, prompt_tokens = _prompt(data)
    max_tokens = data.get("max_tokens")
    if max_tokens is None:
        raise _bad("max_tokens: Field required: the most tokens to generate, e.g. 1024")
    if not is_int(max_tokens, 1):
        raise _bad(f"max_tokens: must be an integer >= 1; got {max_tokens!r}")
    stream = data.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _bad(f"stream: must be true or false; got {stream!r}")
    return MessagesRequest(
        model=model,
        prompt=last_user_text(messages),
        prompt_tokens=prompt_tokens,
        max_tokens=max_tokens,
        stop_sequences=_check_stop(data),
        stream=bool(stream),
    )


def stop_reason(answer: Answer) -> str:
    """Anthropic's stop_reason for how the answer ended."""
    if answer.finish == "length":
        return "max_tokens"
    return "stop_sequence" if answer.stop_sequence is not None else "end_turn"


def message_body(req: MessagesRequest, msg_id: str, answer: Answer | None) -> dict[str, Any]:
    """A `message` object: the whole answer, or (None) the empty one message_start carries."""
    return {
        "id": msg_id,
        "type": "message",
        "role": "assistant",
        "model": req.model,
        "content": [] if answer is None else [{"type": "text", "text": answer.text}],
        "stop_reason": None if answer is None else stop_reason(answer),
        "stop_sequence": None if answer is None else answer.stop_sequence,
        "usage": {
            "input_tokens": req.prompt_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            # message_start reports one output token, as the real API does.
            "output_tokens": 1 if answer is None else len(answer.tokens),
        },
    }


@openapi(**MESSAGES_DOC)
async def messages(request: web.Request) -> web.StreamResponse:
    """Anthropic Messages, answered from the source on the latency model."""
    state = request.app[STATE_KEY]
    latency = latency_for(request.headers, state.settings)
    req = parse_messages_request(await read_json(request))
    async with request_slot(state, request):
        answer = await prepare_answer(
            request, state, req.prompt, req.prompt_tokens, stop=req.stop_sequences, max_tokens=req.max_tokens
        )
        msg_id = f"msg_{fresh_hex()}"
        if req.stream:
            return await _stream(request, state, req, msg_id, latency, answer)
        if not await wait_whole(request, state, latency, answer):
            return web.Response(status=499)
        return json_response(message_body(req, msg_id, answer))


async def _stream(
    request: web.Request,
    state: SimulateState,
    req: MessagesRequest,
    msg_id: str,
    latency: Latency,
    answer: Answer,
) -> web.StreamResponse:
    head = [
        sse_event("message_start", {"type": "message_start", "message": message_body(req, msg_id, None)}),
        sse_event(
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        ),
        sse_event("ping", {"type": "ping"}),
    ]
    opening = b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":'
    opening += b'{"type":"text_delta","text":'

    def piece(text: str) -> bytes:
        return opening + orjson.dumps(text) + b"}}\n\n"

    def tail() -> list[bytes]:
        delta = {"stop_reason": stop_reason(answer), "stop_sequence": answer.stop_sequence}
        usage = {"output_tokens": len(answer.tokens)}
        return [
            sse_event("content_block_stop", {"type": "content_block_stop", "index": 0}),
            sse_event("message_delta", {"type": "message_delta", "delta": delta, "usage": usage}),
            sse_event("message_stop", {"type": "message_stop"}),
        ]

    response = stream_response(request, SSE_HEADERS)
    await send_stream(request, state, response, latency, answer, head=head, piece=piece, tail=tail)
    return response


@openapi(**COUNT_TOKENS_DOC)
async def count_tokens(request: web.Request) -> web.Response:
    """The input tokens a Messages request would use (system prompt included)."""
    _, _, prompt_tokens = _prompt(await read_json(request))
    return json_response({"input_tokens": prompt_tokens})


def add_routes(app: web.Application) -> None:
    """Register the Messages routes, with Anthropic's error shape under /v1/messages."""
    # Longer than "/v1" (OpenAI's shape), so it wins for these paths.
    set_error_format(app, anthropic_error_body, "/v1/messages", ("AnthropicError", ANTHROPIC_ERROR))
    add_route(app, "POST", "/v1/messages", messages)
    add_route(app, "POST", "/v1/messages/count_tokens", count_tokens)
