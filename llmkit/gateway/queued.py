"""The seed's /api/chat-queue: submit a chat, read its place and result later, cancel it while it waits."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from aiohttp import web

from llmkit.core.auth import CHAT, DEFAULT_TENANT, Identity
from llmkit.core.http import ApiError, add_route, identity_of, json_response, openapi, read_json
from llmkit.core.ids import fresh_hex
from llmkit.errors import UpstreamError
from llmkit.gateway.answers import Served, chat_request
from llmkit.gateway.calls import Outcome
from llmkit.gateway.conversations import Conversation
from llmkit.gateway.flights import QUEUED, Ticket
from llmkit.gateway.openapi import QUEUE_DELETE_DOC, QUEUE_GET_DOC, QUEUE_POST_DOC
from llmkit.gateway.service import Gateway
from llmkit.platform.quotas import QuotaExceeded
from llmkit.platform.service import PLATFORM_KEY, Platform

QUEUED_S, PROCESSING, COMPLETED, FAILED, CANCELLED = (
    "queued",
    "processing",
    "completed",
    "failed",
    "cancelled",
)
# How often finished requests older than gateway.queue_result_ttl_s are dropped.
SWEEP_S = 5.0
ROUTE = "/api/chat-queue"
# At most this many waiting requests are listed by GET /api/chat-queue.
LISTED = 100


@dataclass(slots=True)
class QueuedRequest:
    """A chat submitted to /api/chat-queue and what became of it."""

    id: str
    ticket: Ticket
    priority: str
    created: float = field(default_factory=time.time)
    finished_at: float | None = None
    state: str = ""
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    task: asyncio.Task[None] | None = None
    # Whose request it is: only its tenant (or a platform admin) reads or cancels it.
    tenant_id: str = DEFAULT_TENANT

    def status(self) -> str:
        """queued, processing, completed, failed or cancelled."""
        if self.state:
            return self.state
        flight = self.ticket.flight
        return QUEUED_S if flight is not None and flight.state == QUEUED else PROCESSING


class QueueBook:
    """The submitted requests of this process, each answered by a background listener."""

    def __init__(self, gateway: Gateway, platform: Platform) -> None:
        self.gateway = gateway
        self.platform = platform
        self.requests: dict[str, QueuedRequest] = {}
        # Finished requests, oldest first: dropped after queue_result_ttl_s, or sooner beyond
        # queue_result_max (a flood of submissions would otherwise keep every answer for the whole TTL).
        self._finished: deque[QueuedRequest] = deque()
        self._sweeper: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start dropping expired results."""
        self._sweeper = asyncio.create_task(self._sweep())

    async def submit(self, body: Mapping[str, Any], identity: Identity) -> QueuedRequest:
        """Open the chat (quotas, cache, coalescing, queue) and listen for its answer in the background."""
        req, conversation = await chat_request(
            self.gateway, dict(body), tenant_id=identity.tenant_id, platform=self.platform
        )
        if req.stream:
            # Nobody reads a queued request's pieces: its upstream call need not stream.
            req = replace(req, stream=False, call=replace(req.call, stream=False))
        started = time.perf_counter()
        try:
            admission = await self.platform.admit(identity)
        except QuotaExceeded:
            Served(req, identity, None, started).record(self.platform, ROUTE, None, None, 429)
            raise
        try:
            ticket = await self.gateway.open(req)
        except BaseException:
            if admission is not None:
                await admission.settle(0)
            raise
        record = QueuedRequest(fresh_hex(), ticket, req.priority.name.lower(), tenant_id=identity.tenant_id)
        self.requests[record.id] = record
        served = Served(req, identity, admission, started)
        record.task = asyncio.create_task(self._listen(record, served, conversation))
        return record

    async def _listen(self, record: QueuedRequest, served: Served, conversation: Conversation | None) -> None:
        outcome: Outcome | None = None
        status = 200
        try:
            outcome = await record.ticket.result()
        except asyncio.CancelledError:
            record.state = CANCELLED
            status = 499
        except UpstreamError as exc:
            record.state = FAILED
            status = exc.status
            record.error = {"code": "upstream_error", "status": exc.status, "message": str(exc)}
        else:
            record.state = COMPLETED
            record.result = {
                "message": {"role": "assistant", "content": outcome.content},
                "cached": record.ticket.hit,
                "conversation_id": None if conversation is None else conversation.id,
            }
            await self.gateway.remember(conversation, served.req.remembered, outcome.content)
        finally:
            await served.finish(self.platform, ROUTE, record.ticket, outcome, status)
            record.ticket.close()
            # The flight holds the call's messages and pieces; a finished record needs only its result.
            record.ticket.flight = None
            record.finished_at = time.time()
            self._finished.append(record)
            while len(self._finished) > self.gateway.config.queue_result_max:
                self.requests.pop(self._finished.popleft().id, None)

    async def position(self, record: QueuedRequest) -> int:
        """The seed's queue_position: 1 for the next call to start, 0 once it runs or has finished."""
        flight = record.ticket.flight
        if record.state or flight is None:
            return 0
        ahead = await self.gateway.slots.position(flight.id)
        return 0 if ahead is None else ahead + 1

    async def describe(self, record: QueuedRequest) -> dict[str, Any]:
        """GET ?requestId=: status, place, ETA, and the result or error once there is one."""
        position = await self.position(record)
        body: dict[str, Any] = {
            "request_id": record.id,
            "status": record.status(),
            "queue_position": position,
            "estimated_wait_time": self.gateway.slots.eta_ms(position - 1) if position else 0,
            "priority": record.priority,
            "created_at": record.created,
        }
        if record.result is not None:
            body["result"] = record.result
        if record.error is not None:
            body["error"] = record.error
        return body

    async def cancel(self, record: QueuedRequest) -> None:
        """Cancel a request that still waits; 409 once it runs or has finished."""
        status = record.status()
        if status != QUEUED_S:
            raise ApiError(
                409,
                "not_cancellable",
                f"request {record.id} is {status}; only a queued request can be cancelled",
            )
        assert record.task is not None
        record.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await record.task

    async def _sweep(self) -> None:
        ttl = self.gateway.config.queue_result_ttl_s
        finished = self._finished
        while True:
            await asyncio.sleep(SWEEP_S)
            cutoff = time.time() - ttl
            while finished and (finished[0].finished_at or 0) < cutoff:
                self.requests.pop(finished.popleft().id, None)

    async def close(self) -> None:
        """Stop listening: cancel the sweeper and every unfinished request."""
        tasks = [r.task for r in self.requests.values() if r.task is not None and not r.task.done()]
        if self._sweeper is not None:
            tasks.append(self._sweeper)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


BOOK_KEY = web.AppKey("llmkit_gateway_queue_book", QueueBook)


def install(app: web.Application, gateway: Gateway) -> QueueBook:
    """Make the app's QueueBook (called at startup, once the gateway exists)."""
    book = QueueBook(gateway, app[PLATFORM_KEY])
    book.start()
    app[BOOK_KEY] = book
    return book


def _record(request: web.Request, required: bool = True) -> QueuedRequest | None:
    rid = request.query.get("requestId") or request.query.get("request_id")
    if not rid:
        if required:
            raise ApiError(400, "missing_request_id", "give the request's id: ?requestId=ID")
        return None
    record = request.app[BOOK_KEY].requests.get(rid)
    if record is not None and not _visible(record, identity_of(request)):
        record = None  # another tenant's request is as good as unknown
    if record is None:
        raise ApiError(
            404, "request_not_found", f"no queued request {rid!r} (unknown, or its result expired)"
        )
    return record


def _visible(record: QueuedRequest, identity: Identity) -> bool:
    return identity.platform_admin or record.tenant_id == identity.tenant_id


@openapi(**QUEUE_POST_DOC)
async def post_queue(request: web.Request) -> web.Response:
    """Queue a chat {messages, model?, priority?, use_cache?}; answers its request_id and place in line."""
    book = request.app[BOOK_KEY]
    record = await book.submit(await read_json(request, lenient=True), identity_of(request))
    position = await book.position(record)
    gateway = book.gateway
    status = {
        "queue_position": position,
        "queue_length": gateway.slots.waiting,
        "estimated_wait_time": gateway.slots.eta_ms(position - 1) if position else 0,
        "is_processing": gateway.processing > 0,
    }
    return json_response({"request_id": record.id, "status": status})


@openapi(**QUEUE_GET_DOC)
async def get_queue(request: web.Request) -> web.Response:
    """One request's status (?requestId=ID), or without an id the queue overview."""
    book = request.app[BOOK_KEY]
    record = _record(request, required=False)
    if record is not None:
        return json_response(await book.describe(record))
    gateway = book.gateway
    identity = identity_of(request)
    mine = [r for r in book.requests.values() if _visible(r, identity)]
    waiting = [r for r in mine if r.status() == QUEUED_S]
    listed = sorted([(await book.position(r), r) for r in waiting[: LISTED * 4]], key=lambda pair: pair[0])
    counts: dict[str, int] = {}
    for r in mine:
        counts[r.status()] = counts.get(r.status(), 0) + 1
    return json_response(
        {
            "queue_length": gateway.slots.waiting,
            "is_processing": gateway.processing > 0,
            "processing": gateway.processing,
            "max_concurrent": gateway.config.max_concurrent,
            "max_queue_size": gateway.config.max_queue_size,
            "average_service_ms": round(gateway.slots.timer.average_ms, 1),
            "estimated_wait_time": gateway.slots.eta_ms(gateway.slots.waiting),
            "requests": counts,
            "queued": [
                {"request_id": r.id, "queue_position": pos, "priority": r.priority}
                for pos, r in listed[:LISTED]
            ],
        }
    )


@openapi(**QUEUE_DELETE_DOC)
async def delete_queue(request: web.Request) -> web.Response:
    """Cancel a queued request (?requestId=ID); 409 once it runs or has finished."""
    record = _record(request)
    assert record is not None
    await request.app[BOOK_KEY].cancel(record)
    return json_response({"request_id": record.id, "status": record.status(), "cancelled": True})


def add_routes(app: web.Application) -> None:
    """POST, GET and DELETE /api/chat-queue."""
    add_route(app, "POST", "/api/chat-queue", post_queue, scope=CHAT)
    add_route(app, "GET", "/api/chat-queue", get_queue, scope=CHAT)
    add_route(app, "DELETE", "/api/chat-queue", delete_queue, scope=CHAT)
