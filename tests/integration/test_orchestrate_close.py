"""Closing an orchestrator whose workers share a Redis queue: every worker ends, held jobs go back."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

from llmkit.orchestrate.app import create_app
from llmkit.orchestrate.backends.base import JobSpec, OnDelta
from llmkit.settings import OrchestrateSettings, QueueSettings, ServerSettings, Settings
from tests.servers import RedisServer

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[..., Awaitable[Client]]


class HeldBackend:
    """Every call blocks until `gate` is set."""

    name = "held"

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.calls = 0

    async def run(self, job: JobSpec, on_delta: OnDelta | None = None) -> str:
        self.calls += 1
        await self.gate.wait()
        return f"echo: {job.prompt}"

    async def close(self) -> None:
        pass


def redis_settings(redis_server: RedisServer, **orchestrate: Any) -> Settings:
    queue_url = f"{redis_server.url}?prefix=close-{uuid.uuid4().hex[:8]}"
    return Settings(
        server=ServerSettings(access_log=False, drain_timeout=30.0),
        queue=QueueSettings(url=queue_url),
        orchestrate=OrchestrateSettings(role="all", **orchestrate),
    )


async def test_closing_with_held_jobs_and_idle_workers_on_redis_ends_promptly(
    aiohttp_client: MakeClient, redis_server: RedisServer
) -> None:
    backend = HeldBackend()
    client = await aiohttp_client(create_app(redis_settings(redis_server, concurrency=16), backend))
    for n in range(3):
        headers = {"Idempotency-Key": f"close-{n}"}
        response = await client.post("/api/v1/infer", json={"prompt": f"held {n}"}, headers=headers)
        assert response.status == 200, await response.text()
    # Closed at once: workers are cancelled while they take the jobs and mark them processing. A worker
    # whose cancel was lost would wait on the held backend for ever: 10 s turns that hang into a failure
    # (after releasing the backend, so the fixture's own teardown can end).
    try:
        await asyncio.wait_for(client.close(), 10)
    except TimeoutError:
        backend.gate.set()
        raise AssertionError("closing the orchestrator hung: a worker did not end when cancelled") from None
