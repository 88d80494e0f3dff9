"""OpenAI's Responses API: POST /v1/responses as one `response` object or its SSE event sequence."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import orjson
from aiohttp import web

from llmkit.core.http import ApiError, add_route, json_response, openapi, read_json, stream_response
from llmkit.core.ids import fresh_hex
from llmkit.core.sampling import is_int
from llmkit.core.tokenizer import count_prompt_tokens, tokenize
from llmkit.simulate.bounds import MAX_TOP_LOGPROBS, bounded_int, check_numbers
from llmkit.simulate.latency import Latency, latency_for
from llmkit.simulate.openapi import RESPONSES_DOC
from llmkit.simulate.reply import answer_mode_for, limit_headers, pick_answer, sse_headers
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
from llmkit.simulate.structured import MAX_TOOLS, ResponseFormat, Tool, ToolCall, format_content, tool_problem
from llmkit.simulate.tool_calls import ToolPolicy, cite, make_calls, rate_for

TEXT_PARTS = ("input_text", "output_text", "text")
FORMATS = ("text", "json_object", "json_schema")


@dataclass(frozen=True, slots=True)
class ResponsesRequest:
    """A validated Responses API request: only the fields the simulator acts on."""

    model: str
    prompt: str
    prompt_tokens: int
    instructions: str | None
    max_output_tokens: int | None
    stream: bool
    text_format: dict[str, Any]
    tools: tuple[Tool, ...] = ()
    policy: ToolPolicy = ToolPolicy()
    # (function name, output) of the function_call_output items ending the input.
    results: tuple[tuple[str, str], ...] = ()
    raw_tools: tuple[dict[str, Any], ...] = ()
    texts: tuple[str, ...] = ()
    # Echoed in the response object, as OpenAI does (1 when the request sends none).
    temperature: float = 1.0
    top_p: float = 1.0


def _check_tools(data: Mapping[str, Any]) -> tuple[tuple[Tool, ...], tuple[dict[str, Any], ...]]:
    raw = data.get("tools")
    if raw is None:
        return (), ()
    if not isinstance(raw, list) or len(raw) > MAX_TOOLS:
        raise _bad("tools", f"tools must be an array of up to {MAX_TOOLS} tools; got {raw!r:.80}")
    tools = []
    for i, tool in enumerate(raw):
        if not isinstance(tool, dict) or not isinstance(tool.get("type"), str):
            raise _bad(
                "tools", f'tools[{i}] must be an object with a type such as "function"; got {tool!r:.80}'
            )
        if tool["type"] != "function":
            continue  # a built-in tool (web_search, file_search, ...): the simulator never calls one
        schema = tool.get("parameters")
        problem = tool_problem(tool.get("name"), tool.get("description"), schema, f"tools[{i}]", "parameters")
        if problem is not None:
            raise _bad("tools", problem)
        tools.append(
            Tool(
                tool["name"],
                schema if schema is not None else {"type": "object"},
                tool.get("description") or "",
            )
        )
    names = [t.name for t in tools]
    if len(set(names)) != len(names):
        raise _bad("tools", "function tool names must be unique")
    return tuple(tools), tuple(raw)


def _check_tool_choice(data: Mapping[str, Any], tools: tuple[Tool, ...]) -> ToolPolicy:
    parallel = data.get("parallel_tool_calls")
    if parallel is not None and not isinstance(parallel, bool):
        raise _bad("parallel_tool_calls", f"parallel_tool_calls must be true or false; got {parallel!r}")
    parallel = parallel is not False
    raw = data.get("tool_choice")
    if raw is None or raw == "auto":
        return ToolPolicy("auto", None, parallel)
    if raw in ("none", "required"):
        return ToolPolicy(raw, None, parallel)
    name = raw.get("name") if isinstance(raw, dict) and raw.get("type") == "function" else None
    if name is None or name not in {t.name for t in tools}:
        known = ", ".join(t.name for t in tools) or "no function tools"
        raise _bad(
            "tool_choice",
            'tool_choice must be "none", "auto", "required" or {"type": "function", "name": ...} naming '
            f"one of the function tools ({known}); got {raw!r:.80}",
        )
    return ToolPolicy("function", name, parallel)


def _results(raw: Any) -> tuple[tuple[str, str], ...]:
    """(name, output) of the function_call_output items at the end of the input."""
    if not isinstance(raw, list):
        return ()
    names = {
        item.get("call_id"): str(item.get("name", ""))
        for item in raw
        if isinstance(item, dict) and item.get("type") == "function_call"
    }
    results = []
    for item in reversed(raw):
        if not (isinstance(item, dict) and item.get("type") == "function_call_output"):
            break
        output = item.get("output")
        text = output if isinstance(output, str) else orjson.dumps(output).decode()
        results.append((names.get(item.get("call_id"), ""), text))
    return tuple(results[::-1])


def _bad(param: str, message: str, code: str = "invalid_value") -> ApiError:
    return ApiError(400, code, message, param=param)


def _part_text(part: Any) -> str | None:
    if isinstance(part, dict) and part.get("type") in TEXT_PARTS:
        return str(part.get("text", ""))
    return None


def _message(index: int, item: Any) -> dict[str, Any]:
    """An input item as a chat message `{"role", "content"}` the tokenizer can count."""
    if not isinstance(item, dict):
        raise _bad("input", f"input[{index}] must be an object; got {type(item).__name__}")
    if "role" not in item:
        # Tool calls, tool outputs, reasoning: count whatever text they carry.
        text = item.get("output") or item.get("arguments") or ""
        return {"role": str(item.get("type", "item")), "content": text if isinstance(text, str) else ""}
    if not isinstance(item["role"], str):
        raise _bad("input", f'input[{index}].role must be a string such as "user"')
    content = item.get("content")
    if isinstance(content, str):
        return {"role": item["role"], "content": content}
    if not isinstance(content, list):
        raise _bad("input", f"input[{index}].content must be a string or an array of content parts")
    parts = [
        {"type": "text", "text": text} if (text := _part_text(p)) is not None else {"type": "media"}
        for p in content
    ]
    return {"role": item["role"], "content": parts}


def _check_input(data: Mapping[str, Any]) -> list[dict[str, Any]]:
    raw = data.get("input")
    if isinstance(raw, str) and raw:
        return [{"role": "user", "content": raw}]
    if isinstance(raw, list) and raw:
        return [_message(i, item) for i, item in enumerate(raw)]
    if raw is None:
        raise _bad("input", 'you must provide input, e.g. "input": "Hello!"', "missing_required_parameter")
    raise _bad("input", f"input must be a non-empty string or array of input items; got {raw!r}"[:200])


def _check_text_format(data: Mapping[str, Any]) -> dict[str, Any]:
    text = data.get("text")
    if text is None:
        return {"type": "text"}
    fmt = text.get("format") if isinstance(text, dict) else None
    if fmt is None and isinstance(text, dict):
        return {"type": "text"}
    if not isinstance(fmt, dict) or fmt.get("type") not in FORMATS:
        raise _bad("text.format", f"text.format.type must be one of {', '.join(FORMATS)}; got {fmt!r}")
    if fmt["type"] == "json_schema":
        schema = fmt.get("schema")
        if not isinstance(fmt.get("name"), str) or not isinstance(schema, dict):
            raise _bad(
                "text.format",
                'text.format of type json_schema needs a name and a schema object, e.g. {"type": '
                '"json_schema", "name": "answer", "schema": {"type": "object", ...}}',
            )
    return fmt


def _text_of(message: dict[str, Any]) -> str:
    content = message["content"]
    return content if isinstance(content, str) else "".join(p.get("text", "") for p in content)


def _prompt_of(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message["role"] == "user":
            content = message["content"]
            if isinstance(content, str):
                return content
            return "".join(p.get("text", "") for p in content)
    return ""


def parse_responses_request(data: Mapping[str, Any]) -> ResponsesRequest:
    """Validate a Responses API body; a 400 names the parameter to fix."""
    model = data.get("model")
    if not isinstance(model, str) or not model.strip():
        raise _bad("model", f'model must be a non-empty string such as "gpt-4o"; got {model!r}')
    messages = _check_input(data)
    instructions = data.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise _bad("instructions", f"instructions must be a string; got {instructions!r}")
    limit = data.get("max_output_tokens")
    if limit is not None and not is_int(limit, 1):
        raise _bad("max_output_tokens", f"max_output_tokens must be an integer >= 1; got {limit!r}")
    stream = data.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _bad("stream", f"stream must be true or false; got {stream!r}")
    check_numbers(data)
    bounded_int(data, "top_logprobs", 0, MAX_TOP_LOGPROBS)
    counted = [{"role": "developer", "content": instructions}, *messages] if instructions else messages
    tools, raw_tools = _check_tools(data)
    prompt = _prompt_of(messages)
    texts = [prompt, instructions or "", *(_text_of(m) for m in messages)]
    return ResponsesRequest(
        model=model,
        prompt=prompt,
        prompt_tokens=count_prompt_tokens(counted),
        instructions=instructions,
        max_output_tokens=limit,
        stream=bool(stream),
        text_format=_check_text_format(data),
        tools=tools,
        policy=_check_tool_choice(data, tools),
        results=_results(data.get("input")),
        raw_tools=raw_tools,
        texts=tuple(t for t in texts if t),
        temperature=_or_one(data.get("temperature")),
        top_p=_or_one(data.get("top_p")),
    )


def _or_one(value: float | None) -> float:
    return 1.0 if value is None else float(value)


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _item(item_id: str, status: str, text: str | None) -> dict[str, Any]:
    content = [] if text is None else [_text_part(text)]
    return {"id": item_id, "type": "message", "status": status, "role": "assistant", "content": content}


def _choice_field(policy: ToolPolicy) -> Any:
    if policy.mode == "function":
        return {"type": "function", "name": policy.name}
    return policy.mode


def _call_item(call: ToolCall, status: str, arguments: str | None = None) -> dict[str, Any]:
    """A function_call output item (its id is the call id's fc_ twin)."""
    return {
        "id": call.id.replace("call_", "fc_", 1),
        "type": "function_call",
        "status": status,
        "arguments": call.arguments if arguments is None else arguments,
        "call_id": call.id,
        "name": call.name,
    }


class ResponseBuilder:
    """The `response` objects of one request: the same id, creation time and settings in every event."""

    def __init__(self, req: ResponsesRequest) -> None:
        self.req = req
        self.id = f"resp_{fresh_hex()}"
        self.item_id = f"msg_{fresh_hex()}"
        self.created_at = int(time.time())

    def body(self, answer: Answer | None, calls: Sequence[ToolCall] = ()) -> dict[str, Any]:
        """The response, in progress (None) or finished with `answer` (the calls' tokens when it calls)."""
        req = self.req
        incomplete = answer is not None and answer.finish == "length"
        status = "in_progress" if answer is None else "incomplete" if incomplete else "completed"
        body: dict[str, Any] = {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "background": False,
            "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
            "instructions": req.instructions,
            "max_output_tokens": req.max_output_tokens,
            "max_tool_calls": None,
            "model": req.model,
            "output": [],
            "parallel_tool_calls": req.policy.parallel,
            "previous_response_id": None,
            "reasoning": {"effort": None, "summary": None},
            "service_tier": "default",
            "store": False,
            "temperature": req.temperature,
            "text": {"format": req.text_format},
            "tool_choice": _choice_field(req.policy),
            "tools": list(req.raw_tools),
            "top_p": req.top_p,
            "truncation": "disabled",
            "usage": None,
            "user": None,
            "metadata": {},
        }
        if answer is not None:
            body["completed_at"] = int(time.time())
            body["output"] = (
                [_call_item(c, "completed") for c in calls]
                if calls
                else [_item(self.item_id, status, answer.text)]
            )
            body["usage"] = {
                "input_tokens": req.prompt_tokens,
                "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                "output_tokens": len(answer.tokens),
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": req.prompt_tokens + len(answer.tokens),
            }
        return body


@openapi(**RESPONSES_DOC)
async def create_response(request: web.Request) -> web.StreamResponse:
    """OpenAI Responses: an output_text message (or function calls) from the source on the latency model."""
    state = request.app[STATE_KEY]
    latency = latency_for(request.headers, state.settings, state.load)
    req = parse_responses_request(await read_json(request))
    async with request_slot(state, request):
        text, rng = await pick_answer(state, req.prompt, answer_mode_for(request.headers, state.settings))
        builder = ResponseBuilder(req)
        if req.tools:
            policy = replace(req.policy, rate=rate_for(request.headers, state.settings.tool_call_rate))
            calls = make_calls(req.tools, policy, req.prompt, bool(req.results), text, rng)
            if calls:
                return await _function_calls(request, state, builder, latency, calls, rng)
        if req.results:
            text = cite(req.results, text)
        fmt = req.text_format
        if fmt["type"] != "text":
            shape = ResponseFormat(fmt["type"], fmt.get("schema"))
            text = format_content(shape, text, rng, req.texts, param="text.format")
        answer = finish_answer(
            request, state, req.prompt, text, rng, req.prompt_tokens, max_tokens=req.max_output_tokens
        )
        if req.stream:
            return await _stream(request, state, builder, latency, answer)
        if not await wait_whole(request, state, latency, answer):
            return web.Response(status=499)
        return json_response(builder.body(answer), headers=_limit_headers(state, req))


def _cost(req: ResponsesRequest) -> int:
    # What the limits count up front (as ratelimit.estimate_tokens): the input and max_output_tokens.
    return req.prompt_tokens + (req.max_output_tokens or 0)


def _limit_headers(state: SimulateState, req: ResponsesRequest) -> dict[str, str] | None:
    return limit_headers(state, req.model, _cost(req))


async def _function_calls(
    request: web.Request,
    state: SimulateState,
    builder: ResponseBuilder,
    latency: Latency,
    calls: list[ToolCall],
    rng: random.Random,
) -> web.StreamResponse:
    """The response that calls functions: function_call items (never cut: arguments stay whole)."""
    req = builder.req
    per_chunk = 1 if latency.itl > 0 else INSTANT_CHUNK_TOKENS
    split = [argument_pieces(call.arguments, per_chunk) for call in calls]
    tokens = [t for call in calls for t in tokenize(call.arguments)]
    count_answer(state, req.prompt_tokens, "tool_calls")
    answer = Answer(tokens, "stop", None, req.prompt_tokens, rng)
    if not req.stream:
        if not await wait_whole(request, state, latency, answer):
            return web.Response(status=499)
        return json_response(builder.body(answer, calls), headers=_limit_headers(state, req))
    sequence = 0

    def event(kind: str, **fields: Any) -> bytes:
        nonlocal sequence
        sequence += 1
        return sse_event(kind, {"type": kind, "sequence_number": sequence - 1, **fields})

    head = [
        event("response.created", response=builder.body(None)),
        event("response.in_progress", response=builder.body(None)),
    ]

    def steps() -> Iterator[tuple[bytes, int]]:
        for index, (call, (pieces, counts)) in enumerate(zip(calls, split, strict=True)):
            item_id = call.id.replace("call_", "fc_", 1)
            yield (
                event(
                    "response.output_item.added", output_index=index, item=_call_item(call, "in_progress", "")
                ),
                0,
            )
            for piece, count in zip(pieces, counts, strict=True):
                delta = event(
                    "response.function_call_arguments.delta", item_id=item_id, output_index=index, delta=piece
                )
                yield delta, count
            done = event(
                "response.function_call_arguments.done",
                item_id=item_id,
                output_index=index,
                name=call.name,
                arguments=call.arguments,
            )
            yield done, 0
            yield (
                event("response.output_item.done", output_index=index, item=_call_item(call, "completed")),
                0,
            )

    def tail() -> list[bytes]:
        return [event("response.completed", response=builder.body(answer, calls))]

    response = stream_response(request, sse_headers(state, builder.req.model, _cost(builder.req)))
    await send_events(request, state, response, latency, rng, head=head, steps=steps(), tail=tail)
    return response


async def _stream(
    request: web.Request, state: SimulateState, builder: ResponseBuilder, latency: Latency, answer: Answer
) -> web.StreamResponse:
    sequence = 0

    def event(kind: str, **fields: Any) -> bytes:
        nonlocal sequence
        sequence += 1
        return sse_event(kind, {"type": kind, "sequence_number": sequence - 1, **fields})

    where = {"item_id": builder.item_id, "output_index": 0, "content_index": 0}
    head = [
        event("response.created", response=builder.body(None)),
        event("response.in_progress", response=builder.body(None)),
        event("response.output_item.added", output_index=0, item=_item(builder.item_id, "in_progress", None)),
        event("response.content_part.added", **where, part=_text_part("")),
    ]
    kind = b"response.output_text.delta"
    opening = b"event: " + kind + b'\ndata: {"type":"' + kind + b'","sequence_number":'
    middle = b"," + orjson.dumps(where)[1:-1] + b',"delta":'

    def piece(text: str) -> bytes:
        nonlocal sequence
        sequence += 1
        return opening + str(sequence - 1).encode() + middle + orjson.dumps(text) + b',"logprobs":[]}\n\n'

    def tail() -> list[bytes]:
        final = builder.body(answer)
        text, item = answer.text, final["output"][0]
        return [
            event("response.output_text.done", **where, text=text, logprobs=[]),
            event("response.content_part.done", **where, part=_text_part(text)),
            event("response.output_item.done", output_index=0, item=item),
            # The real API ends a response cut by max_output_tokens with response.incomplete.
            event(f"response.{final['status']}", response=final),
        ]

    response = stream_response(request, sse_headers(state, builder.req.model, _cost(builder.req)))
    await send_stream(request, state, response, latency, answer, head=head, piece=piece, tail=tail)
    return response


def add_routes(app: web.Application) -> None:
    """Register POST /v1/responses (OpenAI's error shape, registered for /v1 by create_app)."""
    add_route(app, "POST", "/v1/responses", create_response)
