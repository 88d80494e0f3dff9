"""A real webhook receiver for tests: an aiohttp server on 127.0.0.1 that verifies every signature and
answers what the test scripts (200 by default)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from llmkit.platform.webhooks.signing import InvalidSignature, verify


@dataclass
class Received:
    """One POST the receiver took: its headers, body, and whether each secret verified it."""

    headers: dict[str, str]
    body: bytes
    verified: bool

    @property
    def event(self) -> dict[str, Any]:
        parsed: dict[str, Any] = orjson.loads(self.body)
        return parsed


@dataclass
class Receiver:
    """What the receiver got, and what it answers next (a list of (status, headers) used in turn, then 200;
    `delay` seconds before answering)."""

    secrets: list[str] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    script: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    delay: float = 0.0
    url: str = ""
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        verified = True
        for secret in self.secrets:
            try:
                verify(secret, request.headers, body)
            except InvalidSignature:
                verified = False
        self.received.append(Received(dict(request.headers), body, verified))
        self.arrived.set()
        if self.delay:
            await asyncio.sleep(self.delay)
        status, headers = self.script.pop(0) if self.script else (200, {})
        return web.Response(status=status, headers=headers, text="ok")

    async def wait_for(self, count: int) -> list[Received]:
        """The first `count` POSTs, once they have arrived."""
        while len(self.received) < count:
            self.arrived.clear()
            await self.arrived.wait()
        return self.received[:count]


@asynccontextmanager
async def receiver(**kw: Any) -> AsyncIterator[Receiver]:
    """A receiver listening on 127.0.0.1 (a free port); `url` is where it takes POSTs."""
    got = Receiver(**kw)
    app = web.Application()
    app.router.add_post("/hook", got.handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    got.url = f"http://127.0.0.1:{port}/hook"
    try:
        yield got
    finally:
        await runner.cleanup()
