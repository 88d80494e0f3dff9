"""How every chat route answers: the request over its conversation, then a ticket's answer whole or as SSE."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

from llmkit.core import telemetry
from llmkit.core.auth import DEFAULT_TENANT, Identity
from llmkit.core.http import identity_of, json_response, request_key, stream_response
from llmkit.core.tokenizer import count_prompt_tokens, count_tokens
from llmkit.errors import UpstreamError
from llmkit.gateway.calls import Outcome
from llmkit.gateway.chat import ChatRequest, build_request, last_user_text, with_messages
from llmkit.gateway.conversations import Conversation
from llmkit.gateway.flights import Ticket
from llmkit.gateway.rag import ground, parse_rag, rag_default
from llmkit.gateway.service import Gateway
from llmkit.platform.analytics.record import MAX_BUFFERED_QUERY
from llmkit.platform.quotas import Admission, QuotaExceeded
from llmkit.platform.service import PLATFORM_KEY, Platform

SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
CACHE_HEADER = "X-Gateway-Cache"
# A cached answer replayed as a stream: word by word, whitespace kept, so the pieces join to the text.
_WORD = re.compile(r"\s*\S+\s*")
# When a stream's headers went out (perf_counter): its time to first byte, for analytics.
FIRST_BYTE_KEY = request_key("llmkit_first_byte", float)
# A stream's x-ratelimit-* headers, as its tenant's quotas stood when it was admitted.
QUOTA_HEADERS_KEY = request_key("llmkit_quota_headers", CIMultiDict)


def replay_pieces(text: str) -> list[str]:
    """A cached answer cut into pieces to stream (joined they give `text` back)."""
    return _WORD.findall(text) or ([text] if text else [])


def cache_state(ticket: Ticket) -> str:
    """hit (from the cache), coalesced (joined an identical call) or miss."""
    return "hit" if ticket.hit else "coalesced" if ticket.joined else "miss"


async def chat_request(
    gateway: Gateway,
    body: dict[str, Any],
    *,
    tells_id: bool = True,
    tenant_id: str = DEFAULT_TENANT,
    platform: Platform | None = None,
    **overrides: Any,
) -> tuple[ChatRequest, Conversation | None]:
    """The validated request over the whole conversation, and the conversation (None when off).

    `tells_id=False`: the answer has no place for a conversation id, so a request without one starts no
    conversation (nobody could continue it by an id it never saw, and its whole history comes each time).
    Both the cache key and the conversation are the tenant's own. With `platform`, a request asking for
    `rag` (or any request, with gateway.rag_default) is grounded in the tenant's documents (rag.py).
    """
    req = build_request(body, gateway.config.model, tenant_id=tenant_id, **overrides)
    spec = parse_rag(body.get("rag"), rag_default(gateway.config.rag_default)) if platform else None
    conversation = None
    if tells_id or req.conversation_id is not None:
        conversation, messages = await gateway.converse(req.conversation_id, req.call.messages, tenant_id)
        if messages is not req.call.messages:
            req = with_messages(req, messages)
    if spec is not None and platform is not None:
        req = await ground(platform, req, spec)
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
    if not ticket.joined:
        async for batch in ticket.flight.follow():
            yield batch
        return
    # Following a call another request started: a `coalescing wait` span, as for a whole answer (the
    # call's own span is in that request's trace). Not the current span: it lasts across the yields.
    wait = telemetry.detached_span("coalescing wait")
    ticket.followed = True  # the answer taken after the stream is that wait's end, not a second wait
    failed: BaseException | None = None
    try:
        async for batch in ticket.flight.follow():
            yield batch
    except GeneratorExit:  # the consumer stopped reading (done, or its client left): no failure here
        raise
    except BaseException as exc:
        failed = exc
        raise
    finally:
        wait.end(failed)


def upstream_failure(exc: UpstreamError) -> dict[str, Any]:
    """An upstream error as an event inside a stream that already started."""
    return {"code": "upstream_error", "status": exc.status, "message": str(exc)}


# How a route streams an answer (its SSE dialect), and how it shapes a whole one.
Streamer = Callable[
    [web.Request, Gateway, ChatRequest, Ticket, Conversation | None], Awaitable[web.StreamResponse]
]
Render = Callable[[Outcome, Ticket, Conversation | None], dict[str, Any]]


@dataclass(slots=True)
class Served:
    """A request admitted to its tenant's quotas: settled and recorded once its answer is known."""

    req: ChatRequest
    identity: Identity
    admission: Admission | None
    started: float
    usage: dict[str, int] | None = None  # the answer's token counts, once known

    async def finish(
        self,
        platform: Platform,
        route: str,
        ticket: Ticket | None,
        outcome: Outcome | None,
        status: int,
        first_byte: float | None = None,
    ) -> None:
        """Settle the admission, then record the request."""
        await self.settle(ticket, outcome)
        self.record(platform, route, ticket, outcome, status, first_byte)

    def usage_known(self, outcome: Outcome | None) -> dict[str, int] | None:
        """The answer's token counts (None before there is an answer), computed once."""
        if self.usage is None and outcome is not None:
            self.usage = usage_of(self.req, outcome)
        return self.usage

    def tokens(self, ticket: Ticket | None, outcome: Outcome | None) -> int:
        """What the answer costs the quotas: its tokens, none for a failure or a cache hit (which cost no
        upstream tokens)."""
        usage = self.usage_known(outcome)
        return usage["total_tokens"] if usage and not (ticket is not None and ticket.hit) else 0

    async def settle(self, ticket: Ticket | None, outcome: Outcome | None) -> None:
        """Count the answer's tokens against the quotas; settling an admission again does nothing."""
        admission = self.admission
        if admission is not None and not admission.settled:
            await admission.settle(self.tokens(ticket, outcome))

    def record(
        self,
        platform: Platform,
        route: str,
        ticket: Ticket | None,
        outcome: Outcome | None,
        status: int,
        first_byte: float | bool | None = None,
    ) -> None:
        """Record the request in the analytics, buffered (nothing when they are off; never blocks);
        `first_byte` True: the whole answer went out now (its first byte is its last)."""
        writer = platform.writer
        if writer is None:
            return
        usage = self.usage_known(outcome)
        identity, started = self.identity, self.started
        now = time.perf_counter()
        if first_byte is True:
            first_byte = now
        hit = ticket is not None and ticket.hit
        # A plain tuple in the columns' order (record.Record): the store's rows_of normalises a batch.
        writer.record(
            (
                time.time(),
                identity.tenant_id,
                identity.key_id or "",
                route,
                self.req.call.model,
                # Cut here so a buffered record stays small; normalised in its batch.
                last_user_text(self.req.call.messages)[:MAX_BUFFERED_QUERY],
                status,
                (now - started) * 1000,
                None if first_byte is None else (first_byte - started) * 1000,
                usage.get("prompt_tokens", 0) if usage else 0,
                usage.get("completion_tokens", 0) if usage else 0,
                hit,
                ticket is not None and ticket.joined,
                outcome.upstream if outcome is not None else "",
            )
        )


async def answer(
    request: web.Request,
    gateway: Gateway,
    req: ChatRequest,
    conversation: Conversation | None,
    stream: Streamer,
    render: Render,
    route: str,
) -> web.StreamResponse:
    """Admit the request to its tenant's quotas, open its ticket, then stream the answer or send it whole;
    the conversation is stored, the tokens counted against the quotas and the request recorded."""
    platform = request.app[PLATFORM_KEY]
    started = time.perf_counter()
    identity = identity_of(request)
    try:
        admission = await platform.admit(identity)
    except QuotaExceeded as exc:
        gateway.tenants.refused(identity.tenant_id, exc.quota)
        # Refused requests count in the analytics too (their error rate is what a tenant asks about).
        Served(req, identity, None, started).record(platform, route, None, None, 429)
        raise
    # Neither a quota to settle nor analytics to write: nothing to do once the answer is out.
    writer = platform.writer
    served = (
        Served(req, identity, admission, started) if admission is not None or writer is not None else None
    )
    ticket: Ticket | None = None
    outcome: Outcome | None = None
    status = 500
    if admission is not None and req.stream:
        # A stream's headers go out before its tokens are known: the counts as admitted.
        request[QUOTA_HEADERS_KEY] = admission.headers()
    try:
        ticket = await gateway.open(req)
        try:
            if req.stream:
                response = await stream(request, gateway, req, ticket, conversation)
                status = response.status
                return response
            outcome = await ticket.result()
        finally:
            ticket.close()
        await gateway.remember(conversation, req.remembered, outcome.content)
        if admission is not None and served is not None:
            # Settled now so the remaining counts include this answer (settling again is harmless).
            tokens = served.tokens(ticket, outcome)
            settled = admission.settle_now(tokens)
            if settled is None:
                await admission.settle(tokens)
                settled = admission.headers()
            headers: MutableMapping[str, str] = settled
            headers[CACHE_HEADER] = cache_state(ticket)
        else:
            headers = {CACHE_HEADER: cache_state(ticket)}
        status = 200
        body = render(outcome, ticket, conversation)
        if req.sources:
            body["sources"] = list(req.sources)  # an extra field OpenAI SDKs keep in model_extra
        return json_response(body, headers=headers)
    except UpstreamError as exc:
        status = exc.status
        raise
    except asyncio.CancelledError:
        status = 499  # the client went away; its quota slot is still given back below
        raise
    finally:
        if served is not None:
            finished = outcome if outcome is not None else finished_outcome(ticket)
            if admission is not None and not admission.settled:
                await admission.settle(served.tokens(ticket, finished))
            if writer is not None:
                first_byte = request.get(FIRST_BYTE_KEY) if req.stream else True
                served.record(platform, route, ticket, finished, status, first_byte)


def finished_outcome(ticket: Ticket | None) -> Outcome | None:
    """The ticket's answer if it has one by now (cached, or its flight finished)."""
    if ticket is None:
        return None
    if ticket.cached is not None:
        return ticket.cached
    flight = ticket.flight
    return flight.outcome if flight is not None and flight.done else None


def usage_of(req: ChatRequest, outcome: Outcome) -> dict[str, int]:
    """The upstream's token counts, or the tokenizer's when it gave none."""
    if outcome.usage and "total_tokens" in outcome.usage:
        return outcome.usage
    prompt = count_prompt_tokens(req.call.messages)
    completion = count_tokens(outcome.content)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


async def prepare_sse(request: web.Request, ticket: Ticket) -> web.StreamResponse:
    """An SSE response, sent, telling whether the answer came from the cache."""
    headers = {**SSE_HEADERS, CACHE_HEADER: cache_state(ticket), **request.get(QUOTA_HEADERS_KEY, {})}
    response = stream_response(request, headers)
    await response.prepare(request)
    request[FIRST_BYTE_KEY] = time.perf_counter()
    return response
