"""OpenAI's Responses API: POST /v1/responses as one `response` object or its SSE event sequence."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from llmkit.core.http import ApiError, add_route, json_response, openapi, read_json, stream_response
from llmkit.core.ids import fresh_hex
from llmkit.core.sampling import is_int
from llmkit.core.tokenizer import count_prompt_tokens
from llmkit.simulate.latency import Latency, latency_for
from llmkit.simulate.openapi import RESPONSES_DOC
from llmkit.simulate.reply import SSE_HEADERS
from llmkit.simulate.shapes import Answer, prepare_answer, send_stream, sse_event, wait_whole
from llmkit.simulate.slot import request_slot
from llmkit.simulate.state import STATE_KEY, SimulateState

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
    return fmt


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
    counted = [{"role": "developer", "content": instructions}, *messages] if instructions else messages
    return ResponsesRequest(
        model=model,
        prompt=_prompt_of(messages),
        prompt_tokens=count_prompt_tokens(counted),
        instructions=instructions,
        max_output_tokens=limit,
        stream=bool(stream),
        text_format=_check_text_format(data),
    )


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _item(item_id: str, status: str, text: str | None) -> dict[str, Any]:
    content = [] if text is None else [_text_part(text)]
    return {"id": item_id, "type": "message", "status": status, "role": "assistant", "content": content}


class ResponseBuilder:
    """The `response` objects of one request: the same id, creation time and settings in every event."""

    def __init__(self, req: ResponsesRequest) -> None:
        self.req = req
        self.id = f"resp_{fresh_hex()}"
        self.item_id = f"msg_{fresh_hex()}"
        self.created_at = int(time.time())

    def body(self, answer: Answer | None) -> dict[str, Any]:
        """The response, in progress (None) or finished with `answer`."""
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
            "parallel_tool_calls": True,
            "previous_response_id": None,
            "reasoning": {"effort": None, "summary": None},
            "service_tier": "default",
            "store": False,
            "temperature": 1.0,
            "text": {"format": req.text_format},
            "tool_choice": "auto",
            "tools": [],
            "top_p": 1.0,
            "truncation": "disabled",
            "usage": None,
            "user": None,
            "metadata": {},
        }
        if answer is not None:
            body["completed_at"] = int(time.time())
            body["output"] = [_item(self.item_id, status, answer.text)]
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
    """OpenAI Responses: one output_text message answered from the source on the latency model."""
    state = request.app[STATE_KEY]
    latency = latency_for(request.headers, state.settings)
    req = parse_responses_request(await read_json(request))
    as_json = req.text_format["type"] != "text"
    async with request_slot(state, request):
        answer = await prepare_answer(
            request, state, req.prompt, req.prompt_tokens, max_tokens=req.max_output_tokens, as_json=as_json
        )
        builder = ResponseBuilder(req)
        if req.stream:
            return await _stream(request, state, builder, latency, answer)
        if not await wait_whole(request, state, latency, answer):
            return web.Response(status=499)
        return json_response(builder.body(answer))


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

    response = stream_response(request, SSE_HEADERS)
    await send_stream(request, state, response, latency, answer, head=head, piece=piece, tail=tail)
    return response


def add_routes(app: web.Application) -> None:
    """Register POST /v1/responses (OpenAI's error shape, registered for /v1 by create_app)."""
    add_route(app, "POST", "/v1/responses", create_response)
