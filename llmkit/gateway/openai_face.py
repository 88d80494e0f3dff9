"""OpenAI's face on the gateway: /v1/chat/completions and /v1/models through the same cache, queue and
coalescing as the seed's routes, so any OpenAI SDK can point at the gateway."""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson
from aiohttp import web

from llmkit.core.auth import CHAT
from llmkit.core.http import (
    add_route,
    identity_of,
    json_response,
    openai_error_body,
    openapi,
    read_json,
    set_error_format,
)
from llmkit.core.ids import fresh_hex
from llmkit.errors import UpstreamError
from llmkit.gateway.answers import answer, chat_request, pieces_of, prepare_sse, upstream_failure
from llmkit.gateway.calls import Outcome
from llmkit.gateway.chat import ChatRequest
from llmkit.gateway.conversations import Conversation
from llmkit.gateway.flights import Ticket
from llmkit.gateway.openapi import CHAT_COMPLETIONS_DOC, MODELS_DOC
from llmkit.gateway.service import Gateway
from llmkit.gateway.state import GATEWAY_KEY
from llmkit.platform.service import PLATFORM_KEY

log = logging.getLogger("llmkit.gateway")
# How long the model list read from the upstream is reused.
MODELS_TTL_S = 30.0
_DONE = b"data: [DONE]\n\n"

# The chat route, as analytics name it.
ROUTE = "/v1/chat/completions"


def _overrides(request: web.Request, body: dict[str, Any]) -> dict[str, Any]:
    """Gateway options an OpenAI SDK can send: X-Priority / extra_body priority, Cache-Control: no-cache."""
    overrides: dict[str, Any] = {}
    header = request.headers.get("X-Priority")
    if header is not None and body.get("priority") is None:
        overrides["priority"] = header
    control = request.headers.get("Cache-Control", "")
    if "no-cache" in control or "no-store" in control:
        overrides["use_cache"] = False
    return overrides


def completion(outcome: Outcome, completion_id: str, created: int) -> dict[str, Any]:
    """An OpenAI chat.completion object."""
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": outcome.model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": outcome.content, "refusal": None},
                "logprobs": None,
                "finish_reason": outcome.finish_reason or "stop",
            }
        ],
        "usage": outcome.usage,
        "system_fingerprint": None,
    }


class ChunkWriter:
    """Builds chat.completion.chunk events of one completion."""

    __slots__ = ("created", "id", "model")

    def __init__(self, model: str) -> None:
        self.id = f"chatcmpl-{fresh_hex()}"
        self.created = int(time.time())
        self.model = model

    def event(self, delta: dict[str, Any], finish_reason: str | None = None, **extra: Any) -> bytes:
        """One `data:` event with one choice."""
        chunk = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
            **extra,
        }
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    def usage(self, usage: dict[str, int] | None) -> bytes:
        """The last chunk of stream_options.include_usage: no choices, the token counts."""
        chunk = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": usage,
        }
        return b"data: " + orjson.dumps(chunk) + b"\n\n"


@openapi(**CHAT_COMPLETIONS_DOC)
async def chat_completions(request: web.Request) -> web.StreamResponse:
    """OpenAI's chat completions, served through the gateway's cache, queue and coalescing.

    Extra fields: `priority` (or an X-Priority header), `use_cache` (or Cache-Control: no-cache),
    `conversation_id`.
    """
    gateway = request.app[GATEWAY_KEY]
    body = await read_json(request)
    # OpenAI's answer has no field for a conversation id: only a client that sent one continues by it.
    tenant_id = identity_of(request).tenant_id
    req, conversation = await chat_request(
        gateway,
        body,
        tells_id=False,
        tenant_id=tenant_id,
        platform=request.app[PLATFORM_KEY],
        **_overrides(request, body),
    )
    return await answer(request, gateway, req, conversation, _stream, _completion, ROUTE)


def _completion(outcome: Outcome, ticket: Ticket, conversation: Conversation | None) -> dict[str, Any]:
    return completion(outcome, f"chatcmpl-{fresh_hex()}", int(time.time()))


async def _stream(
    request: web.Request,
    gateway: Gateway,
    req: ChatRequest,
    ticket: Ticket,
    conversation: Conversation | None,
) -> web.StreamResponse:
    writer = ChunkWriter(req.call.model)
    response: web.StreamResponse | None = None
    try:
        async for batch in pieces_of(ticket):
            if response is None:
                response = await prepare_sse(request, ticket)
                await response.write(writer.event({"role": "assistant", "content": ""}))
            await response.write(b"".join(writer.event({"content": piece}) for piece in batch))
        outcome = await ticket.result()
    except UpstreamError as exc:
        if response is None:
            raise
        failure = upstream_failure(exc)
        error = {
            "message": failure["message"],
            "type": "server_error",
            "param": None,
            "code": failure["code"],
        }
        await response.write(b"data: " + orjson.dumps({"error": error}) + b"\n\n")
        return response
    if response is None:
        response = await prepare_sse(request, ticket)
        await response.write(writer.event({"role": "assistant", "content": ""}))
    await gateway.remember(conversation, req.remembered, outcome.content)
    # The sources ride on the last chunk, an extra field SDKs keep in model_extra.
    extra = {"sources": list(req.sources)} if req.sources else {}
    tail = writer.event({}, outcome.finish_reason or "stop", **extra)
    if req.include_usage:
        tail += writer.usage(outcome.usage)
    await response.write(tail + _DONE)
    await response.write_eof()
    return response


class ModelList:
    """The upstream's model ids, read at most every MODELS_TTL_S seconds."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.read_at = -MODELS_TTL_S

    async def get(self, gateway: Gateway) -> list[str]:
        """The model ids: the configured model first, then what the upstreams list."""
        now = time.monotonic()
        if now - self.read_at >= MODELS_TTL_S:
            try:
                self.ids = await gateway.pool.models()
                self.read_at = now
            except UpstreamError as exc:
                log.warning("cannot list the upstream's models, listing the configured one: %s", exc)
        default = gateway.config.model
        return [default, *(m for m in self.ids if m != default)]


MODELS_KEY = web.AppKey("llmkit_gateway_models", ModelList)


@openapi(**MODELS_DOC)
async def list_models(request: web.Request) -> web.Response:
    """OpenAI's model list: gateway.model and the models the upstreams serve."""
    ids = await request.app[MODELS_KEY].get(request.app[GATEWAY_KEY])
    created = int(request.app[GATEWAY_KEY].started_at)
    data = [{"id": m, "object": "model", "created": created, "owned_by": "llmkit-gateway"} for m in ids]
    return json_response({"object": "list", "data": data})


def add_routes(app: web.Application) -> None:
    """POST /v1/chat/completions and GET /v1/models, with OpenAI's error shape under /v1."""
    app[MODELS_KEY] = ModelList()
    set_error_format(app, openai_error_body, "/v1")
    add_route(app, "POST", ROUTE, chat_completions, scope=CHAT)
    add_route(app, "GET", "/v1/models", list_models)
