"""core.serve's on_stop callbacks: they run the moment a server is told to stop, before it drains."""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web

from llmkit.core.http import add_route, create_base_app, json_response
from llmkit.core.serve import on_stop, running
from llmkit.settings import ServerSettings


async def test_on_stop_runs_before_in_flight_requests_drain_and_cleanup() -> None:
    order: list[str] = []
    gate = asyncio.Event()
    arrived = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        arrived.set()
        await gate.wait()  # only a stop callback opens it: a drain before it would wait in vain
        order.append("handled")
        return json_response({"ok": True})

    async def cleanup(app: web.Application) -> None:
        order.append("cleanup")

    def stopping() -> None:
        order.append("stop")
        gate.set()

    def broken() -> None:
        raise RuntimeError("a failing callback does not keep the others from running")

    app = create_base_app("x", ServerSettings(drain_timeout=30))
    add_route(app, "GET", "/slow", slow)
    app.on_cleanup.append(cleanup)
    on_stop(app, broken)
    on_stop(app, stopping)
    async with aiohttp.ClientSession() as session:
        async with running(app, "127.0.0.1", 0, drain_timeout=30) as (host, port):
            request = asyncio.ensure_future(session.get(f"http://{host}:{port}/slow"))
            await arrived.wait()
        response = await request
        assert response.status == 200
        response.release()
    assert order == ["stop", "handled", "cleanup"]
