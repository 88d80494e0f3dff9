"""Connections under slow and hostile clients: a request-head timeout and quiet 400s for bad requests."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
from aiohttp import web, web_protocol
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_server import Server

logger = logging.getLogger("llmkit.connections")


def describe_bad_request(exc: HttpProcessingError) -> str:
    """Why aiohttp's parser refused a request, on one line (the bytes it quotes are escaped already)."""
    reason = " ".join((exc.message or "").split()) or type(exc).__name__
    return f"{reason[:300]} ({type(exc).__name__})"


class GuardedRequestHandler(web_protocol.RequestHandler):
    """aiohttp's connection protocol, closing connections that do not deliver a request head in time.

    The head timer runs from the connection's start, and on a kept-alive connection from the first byte
    of the next request (an idle kept-alive connection is keepalive_timeout's business, as in Go's
    ReadHeaderTimeout). It stops once a head is parsed, so a long upload or a long stream is never cut.
    A request head that arrives in one segment, the common case, never arms a timer. Bytes of a next
    head pipelined while a request runs are bounded by keepalive_timeout instead, like an idle connection.
    """

    __slots__ = ("_head_timeout", "_head_timer", "_head_count")

    def __init__(self, manager: Server, *, head_timeout: float, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._head_timeout = head_timeout
        self._head_timer: asyncio.TimerHandle | None = None
        # _request_count when the timer was armed: a head parsed since then stops it.
        self._head_count = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._messages and self._current_request is not None:
            self._fail_body_on_parse_error()
        if self._head_timer is not None:
            if self._request_count != self._head_count:
                self._cancel_head_timer()
            return
        # A pending waiter means the connection sat idle between requests and these bytes did not
        # complete a head (a complete one resolves the waiter): the start of a slow head.
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            self._arm_head_timer()

    def _fail_body_on_parse_error(self) -> None:
        # aiohttp queues a body's parse error (a bad chunk) as a 400 for after the request being read, whose
        # handler would wait for the rest of the body forever: fail its read instead, answered by the route
        # as a 400, and close the connection after that answer (the parser cannot go on).
        message = self._messages[-1][0]
        if isinstance(message, web_protocol._ErrInfo) and isinstance(message.exc, HttpProcessingError):
            self._messages.pop()
            assert self._current_request is not None
            self._current_request.content.set_exception(message.exc)
            # No lingering read of the rest of the body after the answer: it would meet the error again.
            self._lingering_time = 0.0
            self.close()

    def _arm_head_timer(self) -> None:
        self._head_count = self._request_count
        self._head_timer = self._loop.call_later(self._head_timeout, self._on_head_timeout)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _on_head_timeout(self) -> None:
        self._head_timer = None
        if self._request_count != self._head_count or self._request_in_progress or self._messages:
            return
        if self.transport is None or self._force_close:
            return
        peer = self.transport.get_extra_info("peername")
        logger.info(
            "closed a connection from %s: no complete request head within %gs (server.header_timeout_s)",
            peer[0] if isinstance(peer, tuple) and peer else "?",
            self._head_timeout,
        )
        self.force_close()

    def handle_error(
        self,
        request: Any,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """A request aiohttp cannot parse is the client's fault: a line at info, a JSON 400, no traceback."""
        if not isinstance(exc, HttpProcessingError) or status >= 500:
            return super().handle_error(request, status, exc, message)
        reason = describe_bad_request(exc)
        logger.info("bad request from %s: %s", request.remote, reason)
        if request.writer.output_size > 0:
            raise ConnectionError("a response was sent already; cannot answer the bad request")
        error = {"code": "bad_request", "message": f"malformed HTTP request: {reason}"}
        response = web.Response(
            status=status, body=orjson.dumps({"error": error}), content_type="application/json"
        )
        response.force_close()
        return response


class GuardedServer(Server):
    """aiohttp's low-level Server making a GuardedRequestHandler per connection."""

    def __init__(self, *args: Any, head_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.head_timeout = head_timeout

    def __call__(self) -> GuardedRequestHandler:
        return GuardedRequestHandler(self, loop=self._loop, head_timeout=self.head_timeout, **self._kwargs)


class GuardedAppRunner(web.AppRunner):
    """An AppRunner whose connections have a request-head timeout and answer bad requests quietly."""

    def __init__(self, app: web.Application, *, head_timeout: float, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.head_timeout = head_timeout

    async def _make_server(self) -> Server:
        made = await super()._make_server()
        # Same handler, factory and options as aiohttp's own Server, with our protocol per connection.
        return GuardedServer(
            made.request_handler,
            request_factory=made.request_factory,
            handler_cancellation=made.handler_cancellation,
            loop=made._loop,
            head_timeout=self.head_timeout,
            **made._kwargs,
        )
