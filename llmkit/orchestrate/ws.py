"""WS /api/v1/stream: many jobs in flight on one connection, with status, deltas and results pushed."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import WSMsgType, web

from llmkit.core.auth import Identity
from llmkit.core.http import ApiError, identity_of
from llmkit.core.openapi import openapi
from llmkit.orchestrate.jobs import RESYNC, Job
from llmkit.orchestrate.openapi import STREAM_DOC
from llmkit.orchestrate.state import ORCHESTRATOR_KEY
from llmkit.orchestrate.submissions import parse_submission

if TYPE_CHECKING:
    from llmkit.orchestrate.service import Orchestrator

log = logging.getLogger("llmkit.orchestrate")
HEARTBEAT_S = 30.0
Event = tuple[str, Any]


def _final(job: Job) -> dict[str, Any]:
    if job.status == "completed":
        return {"request_id": job.id, "status": job.status, "result": job.result}
    return {"request_id": job.id, "status": job.status, "error": job.error}


class Connection:
    """One client's socket: each text message becomes a job followed to its end on this socket.

    A socket follows only the jobs its own messages created, as the identity that opened it: it names
    no job by id, so it cannot watch another tenant's.
    """

    def __init__(
        self, ws: web.WebSocketResponse, orchestrator: Orchestrator, client: str, identity: Identity
    ) -> None:
        self.ws = ws
        self.orchestrator = orchestrator
        self.client = client
        self.identity = identity
        self.tasks: set[asyncio.Task[None]] = set()

    async def send(self, data: Any) -> None:
        """One JSON text frame, unless the socket has closed."""
        if not self.ws.closed:
            await self.ws.send_str(orjson.dumps(data).decode())

    def start(self, text: str) -> None:
        """Handle a message in its own task, so many jobs run at once on one socket."""
        task = asyncio.create_task(self.handle(text))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def handle(self, text: str) -> None:
        """Submit the message's job and push its events; a bad message gets {"error": ...}."""
        events: asyncio.Queue[Event] = asyncio.Queue()
        stops: list[Callable[[], None]] = []
        listening: set[str] = set()

        def listen(job: Job) -> None:
            listening.add(job.id)
            store = self.orchestrator.store
            stops.append(store.listen(job.id, lambda kind, value: events.put_nowait((kind, value))))

        try:
            try:
                body = orjson.loads(text)
                if not isinstance(body, dict):
                    raise ApiError(400, "invalid_json", "send a JSON object {prompt, session_id?, metadata?}")
                sub = parse_submission(body)
                job = await self.orchestrator.submit(
                    sub, self.client, on_created=listen, identity=self.identity
                )
            except orjson.JSONDecodeError as exc:
                await self.send({"error": f"message is not valid JSON: {exc}", "code": "invalid_json"})
                return
            except ApiError as exc:
                await self.send({"error": exc.message, "code": exc.code})
                return
            if job.id not in listening:
                listen(job)  # an idempotent repeat answered with an earlier job
            first = job.status if job.terminal else "processing"
            await self.send({"request_id": job.id, "status": first})
            await self.follow(job, events)
        finally:
            for stop in stops:
                stop()

    async def follow(self, job: Job, events: asyncio.Queue[Event]) -> None:
        """Push the job's deltas, then its end (a job that finished fast still has its deltas queued)."""
        current = job
        while not (current.terminal and events.empty()):
            kind, value = await events.get()
            if kind == "delta":
                await self.send({"request_id": job.id, "delta": value})
            elif kind == RESYNC:
                # Events may have been lost while the store's feed reconnected: its state now.
                current = await self.orchestrator.store.get(job.id) or current
            else:
                current = value
        await self.send(_final(current))

    async def close(self) -> None:
        """Stop following the jobs of a closed socket (the jobs themselves go on)."""
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


@openapi(**STREAM_DOC)
async def stream(request: web.Request) -> web.StreamResponse:
    """A WebSocket: send {prompt, session_id, metadata, stream?} messages; get {request_id, status} at once,
    {request_id, delta} while it streams, then {request_id, status, result} or {request_id, status, error}.

    Invalid messages get {"error": ...} and the connection stays open; pings are answered.
    """
    orchestrator = request.app[ORCHESTRATOR_KEY]
    limit = orchestrator.settings.ws_max_message_kb * 1024
    ws = web.WebSocketResponse(heartbeat=HEARTBEAT_S, max_msg_size=limit)
    await ws.prepare(request)
    connection = Connection(ws, orchestrator, request.remote or "-", identity_of(request))
    try:
        async for message in ws:
            if message.type == WSMsgType.TEXT:
                connection.start(message.data)
            elif message.type == WSMsgType.BINARY:
                await connection.send({"error": "send text frames with JSON, not binary", "code": "binary"})
            elif message.type == WSMsgType.ERROR:
                log.info("websocket closed with %s", ws.exception())
    finally:
        await connection.close()
    return ws
