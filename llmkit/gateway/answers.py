"""How every chat route answers: the request over its conversation, then a ticket's answer whole or as SSE."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import web

from llmkit.core.http import json_response, stream_response
from llmkit.errors import UpstreamError
from llmkit.gateway.calls import Outcome
from llmkit.gateway.chat import ChatRequest, build_request, with_messages
from llmkit.gateway.conversations import Conversation
from llmkit.gateway.flights import Ticket
from llmkit.gateway.service import Gateway

SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
CACHE_HEADER = "X-Gateway-Cache"
# A cached answer replayed as a stream: word by word, whitespace kept, so the pieces join to the text.
_WORD = re.compile(r"\s*\S+\s*")


def replay_pieces(text: str) -> list[str]:
    """A cached answer cut into pieces to stream (joined they give `text` back)."""
    return _WORD.findall(text) or ([text] if text else [])


def cache_state(ticket: Ticket) -> str:
    """hit (from the cache), coalesced (joined an identical call) or miss."""
    return "hit" if ticket.hit else "coalesced" if ticket.joined else "miss"


async def chat_request(
    gateway: Gateway, body: dict[str, Any], *, tells_id: bool = True, **overrides: Any
) -> tuple[ChatRequest, Conversation | None]:
    """The validated request over the whole conversation, and the conversation (None when off).

    `tells_id=False`: the answer has no place for a conversation id, so a request without one starts no
    conversation (nobody could continue it by an id it never saw, and its whole history comes each time).
    """
    req = build_request(body, gateway.config.model, **overrides)
    if not tells_id and req.conversation_id is None:
        return req, None
    conversation, messages = await gateway.converse(req.conversation_id, req.call.messages)
    if messages is not req.call.messages:
        req = with_messages(req, messages)
    return req, conversation


def conversation_id(conversation: Conversation | None) -> str | None:
    """The id an answer tells (None when conversations are off)."""
    return None if conversation is None else conversation.id


async def pieces_of(ticket: Ticket) -> AsyncIterator[list[str]]:
    """The answer's pieces in batches: a cached answer at once, a flight's as they arrive."""
    if ticket.cached is not None:
        yield replay_pieces(ticket.cached.content)
        return
    assert ticket.flight is not None
    async for batch in ticket.flight.follow():
        yield batch


def upstream_failure(exc: UpstreamError) -> dict[str, Any]:
    """An upstream error as an event inside a stream that already started."""
    return {"code": "upstream_error", "status": exc.status, "message": str(exc)}


# How a route streams an answer (its SSE dialect), and how it shapes a whole one.
Streamer = Callable[
    [web.Request, Gateway, ChatRequest, Ticket, Conversation | None], Awaitable[web.StreamResponse]
]
Render = Callable[[Outcome, Ticket, Conversation | None], dict[str, Any]]


async def answer(
    request: web.Request,
    gateway: Gateway,
    req: ChatRequest,
    conversation: Conversation | None,
    stream: Streamer,
    render: Render,
) -> web.StreamResponse:
    """Open the request's ticket, then stream the answer or send it whole; the conversation is stored."""
    ticket = await gateway.open(req)
    try:
        if req.stream:
            return await stream(request, gateway, req, ticket, conversation)
        outcome = await ticket.result()
    finally:
        ticket.close()
    await gateway.remember(conversation, req.call.messages, outcome.content)
    body = render(outcome, ticket, conversation)
    return json_response(body, headers={CACHE_HEADER: cache_state(ticket)})


async def prepare_sse(request: web.Request, ticket: Ticket) -> web.StreamResponse:
    """An SSE response, sent, telling whether the answer came from the cache."""
    response = stream_response(request, {**SSE_HEADERS, CACHE_HEADER: cache_state(ticket)})
    await response.prepare(request)
    return response
