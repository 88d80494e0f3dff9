"""Anthropic's Messages API: POST /v1/messages (JSON or SSE events) and /v1/messages/count_tokens."""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
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
from llmkit.simulate.openapi import ANTHROPIC_ERROR, COUNT_TOKENS_DOC, MESSAGES_DOC
from llmkit.simulate.reply import SSE_HEADERS, answer_mode_for, pick_answer, wait_or_gone
from llmkit.simulate.shapes import (
    Answer,
    argument_pieces,
    count_answer,
    finish_answer,
    send_events,
    send_stream,
    sse_event,
    wait_whole,
)
from llmkit.simulate.slot import request_slot
from llmkit.simulate.state import STATE_KEY, SimulateState
from llmkit.simulate.stream import INSTANT_CHUNK_TOKENS
from llmkit.simulate.structured import MAX_TOOLS, Tool, ToolCall, tool_problem
from llmkit.simulate.tool_calls import ToolPolicy, cite, make_calls, rate_for

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
    tools: tuple[Tool, ...] = ()
    policy: ToolPolicy = ToolPolicy()
    # (tool name, output) of the tool_result blocks ending the conversation: the agent loop's last turn.
    results: tuple[tuple[str, str], ...] = ()


_TOOL_CHOICES = ("auto", "any", "tool", "none")


def _check_tools(data: Mapping[str, Any]) -> tuple[Tool, ...]:
    raw = data.get("tools")
    if raw is None:
        return ()
    if not isinstance(raw, list) or len(raw) > MAX_TOOLS:
        raise _bad(f"tools: must be an array of up to {MAX_TOOLS} tools; got {raw!r:.80}")
    tools = []
    for i, tool in enumerate(raw):
        if not isinstance(tool, dict):
            raise _bad(f"tools.{i}: must be an object with name, description and input_schema")
        if tool.get("type") not in (None, "custom"):
            continue  # a server tool (web search, code execution): the simulator never calls one
        if "input_schema" not in tool:
            raise _bad(f"tools.{i}.input_schema: Field required: the tool's JSON schema")
        schema = tool["input_schema"]
        problem = tool_problem(
            tool.get("name"), tool.get("description"), schema, f"tools.{i}", "input_schema"
        )
        if problem is not None:
            raise _bad(problem)
        tools.append(Tool(tool["name"], schema, tool.get("description") or ""))
    names = [t.name for t in tools]
    if len(set(names)) != len(names):
        raise _bad("tools: tool names must be unique")
    return tuple(tools)


def _check_tool_choice(data: Mapping[str, Any], tools: tuple[Tool, ...]) -> ToolPolicy:
    raw = data.get("tool_choice")
    if raw is None:
        return ToolPolicy()
    if not isinstance(raw, dict) or raw.get("type") not in _TOOL_CHOICES:
        raise _bad(f"tool_choice.type: must be one of {', '.join(_TOOL_CHOICES)}; got {raw!r:.80}")
    parallel = raw.get("disable_parallel_tool_use")
    if parallel is not None and not isinstance(parallel, bool):
        raise _bad(f"tool_choice.disable_parallel_tool_use: must be true or false; got {parallel!r}")
    kind, name = raw["type"], raw.get("name")
    if kind == "tool":
        if name not in {t.name for t in tools}:
            known = ", ".join(t.name for t in tools) or "no tools"
            raise _bad(f"tool_choice.name: must name one of the tools ({known}); got {name!r:.60}")
        return ToolPolicy("function", name, not parallel)
    mode = {"auto": "auto", "any": "required", "none": "none"}[kind]
    if mode == "required" and not tools:
        raise _bad('tool_choice: "any" needs tools')
    return ToolPolicy(mode, None, not parallel)


def _tool_results(messages: list[dict[str, Any]]) -> tuple[tuple[str, str], ...]:
    """(name, output) of the tool_result blocks of the last message when it is the user's."""
    last = messages[-1]
    content = last.get("content")
    if last.get("role") != "user" or not isinstance(content, list):
        return ()
    names = {
        block.get("id"): str(block.get("name", ""))
        for message in messages
        if message.get("role") == "assistant" and isinstance(message.get("content"), list)
        for block in message["content"]
        if isinstance(block, dict) and block.get("type") == "tool_use"
    }
    results = []
    for block in content:
        if block.get("type") == "tool_result":
            output = block.get("content")
            text = output if isinstance(output, str) else content_text(output)
            results.append((names.get(block.get("tool_use_id"), ""), text))
    return tuple(results)


def _question(messages: list[dict[str, Any]]) -> str:
    """The text of the last user message that has some (tool results carry none): what was asked."""
    for message in reversed(messages):
        if message.get("role") == "user":
            text = content_text(message.get("content"))
            if text:
                return text
    return ""


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
    tools = _check_tools(data)
    return MessagesRequest(
        model=model,
        prompt=_question(messages),
        prompt_tokens=prompt_tokens,
        max_tokens=max_tokens,
        stop_sequences=_check_stop(data),
        stream=bool(stream),
        tools=tools,
        policy=_check_tool_choice(data, tools),
        results=_tool_results(messages),
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
    latency = latency_for(request.headers, state.settings, state.load)
    req = parse_messages_request(await read_json(request))
    async with request_slot(state, request):
        text, rng = await pick_answer(state, req.prompt, answer_mode_for(request.headers, state.settings))
        msg_id = f"msg_{fresh_hex()}"
        if req.tools:
            policy = replace(req.policy, rate=rate_for(request.headers, state.settings.tool_call_rate))
            calls = make_calls(req.tools, policy, req.prompt, bool(req.results), text, rng)
            if calls:
                return await _tool_use(request, state, req, msg_id, latency, calls, rng)
        if req.results:
            text = cite(req.results, text)
        answer = finish_answer(
            request,
            state,
            req.prompt,
            text,
            rng,
            req.prompt_tokens,
            stop=req.stop_sequences,
            max_tokens=req.max_tokens,
        )
        if req.stream:
            return await _stream(request, state, req, msg_id, latency, answer)
        if not await wait_whole(request, state, latency, answer):
            return web.Response(status=499)
        return json_response(message_body(req, msg_id, answer))


def _tool_use_block(call: ToolCall, with_input: bool = True) -> dict[str, Any]:
    tool_input = orjson.loads(call.arguments) if with_input else {}
    return {
        "type": "tool_use",
        "id": call.id.replace("call_", "toolu_", 1),
        "name": call.name,
        "input": tool_input,
    }


async def _tool_use(
    request: web.Request,
    state: SimulateState,
    req: MessagesRequest,
    msg_id: str,
    latency: Latency,
    calls: list[ToolCall],
    rng: random.Random,
) -> web.StreamResponse:
    """The answer that calls tools: tool_use blocks, stop_reason tool_use (never cut: inputs stay whole)."""
    per_chunk = 1 if latency.itl > 0 else INSTANT_CHUNK_TOKENS
    split = [argument_pieces(call.arguments, per_chunk) for call in calls]
    output_tokens = sum(sum(counts) for _, counts in split)
    count_answer(state, req.prompt_tokens, "tool_calls")
    body = message_body(req, msg_id, None)
    body["usage"]["output_tokens"] = output_tokens
    if not req.stream:
        if not latency.instant and not await wait_or_gone(
            request, state, latency.whole_answer(output_tokens, rng)
        ):
            return web.Response(status=499)
        state.stats.tokens_sent += output_tokens
        body.update(content=[_tool_use_block(c) for c in calls], stop_reason="tool_use")
        return json_response(body)
    head = [sse_event("message_start", {"type": "message_start", "message": message_body(req, msg_id, None)})]

    def steps() -> Iterator[tuple[bytes, int]]:
        for index, (call, (pieces, counts)) in enumerate(zip(calls, split, strict=True)):
            block = _tool_use_block(call, with_input=False)
            start = {"type": "content_block_start", "index": index, "content_block": block}
            yield sse_event("content_block_start", start), 0
            for piece, count in zip(pieces, counts, strict=True):
                delta = {"type": "input_json_delta", "partial_json": piece}
                yield (
                    sse_event(
                        "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}
                    ),
                    count,
                )
            yield sse_event("content_block_stop", {"type": "content_block_stop", "index": index}), 0

    def tail() -> list[bytes]:
        delta = {"stop_reason": "tool_use", "stop_sequence": None}
        return [
            sse_event(
                "message_delta",
                {"type": "message_delta", "delta": delta, "usage": {"output_tokens": output_tokens}},
            ),
            sse_event("message_stop", {"type": "message_stop"}),
        ]

    response = stream_response(request, SSE_HEADERS)
    await send_events(request, state, response, latency, rng, head=head, steps=steps(), tail=tail)
    return response


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
