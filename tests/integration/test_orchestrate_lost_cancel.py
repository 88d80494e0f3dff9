"""A job that ends while its lease's heartbeat is on its way to a Redis master that just died.

What the Redis master fault of tests/ha saw in about one run of three: the job's result write failed (no
master), the worker cancelled the heartbeat, redis-py lost that cancel (Python 3.11, gh-86296) and the beat
failed; the heartbeat took it for a blip and beat on, on the new master, for ever. The lease never ran
out, the worker waited for its heartbeat for ever, and the job stayed "processing".
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import redis.exceptions
from aiohttp import web
from aiohttp.test_utils import TestClient

from llmkit.core.queue.redis import RedisPriorityQueue
from llmkit.core.queue.redis_scripts import EXTEND_LUA
from llmkit.errors import BackendError
from llmkit.orchestrate.app import create_app
from llmkit.orchestrate.backends.base import JobSpec, OnDelta
from llmkit.orchestrate.jobs import Job
from llmkit.orchestrate.state import ORCHESTRATOR_KEY
from llmkit.settings import OrchestrateSettings, QueueSettings, ServerSettings, Settings
from tests.servers import RedisServer

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[..., Awaitable[Client]]
EXTEND_SHA = hashlib.sha1(EXTEND_LUA.encode()).hexdigest()


class BeatBackend:
    """Answers; the first run only once the job's heartbeat has a beat in flight (`beating`)."""

    name = "beat"

    def __init__(self) -> None:
        self.beating = asyncio.Event()
        self.calls = 0

    async def run(self, job: JobSpec, on_delta: OnDelta | None = None) -> str:
        self.calls += 1
        if self.calls == 1:
            await self.beating.wait()
        return f"echo: {job.prompt}"

    async def close(self) -> None:
        pass


async def test_a_job_ending_as_its_heartbeat_meets_a_dead_master_runs_again_after_its_lease(
    aiohttp_client: MakeClient, redis_server: RedisServer
) -> None:
    settings = Settings(
        server=ServerSettings(access_log=False),
        queue=QueueSettings(url=f"{redis_server.url}?prefix=lost-{uuid.uuid4().hex[:8]}"),
        orchestrate=OrchestrateSettings(role="all", concurrency=1, lease_s=0.3),
    )
    backend = BeatBackend()
    client = await aiohttp_client(create_app(settings, backend))
    orchestrator = client.app[ORCHESTRATOR_KEY]
    queue, store = orchestrator.queue, orchestrator.store
    assert isinstance(queue, RedisPriorityQueue)
    evalsha, save = queue.client.evalsha, store.save

    async def dying_beat(sha: str, numkeys: int, *keys_and_args: Any) -> Any:
        if sha == EXTEND_SHA and not backend.beating.is_set():
            # The master dies under the first beat: the cancel that lands meanwhile is lost, as redis-py's
            # wait_for loses it on Python 3.11 when it lands as the send completes, and the command fails.
            backend.beating.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                raise redis.exceptions.ConnectionError("Connection closed by server.") from None
        return await evalsha(sha, numkeys, *keys_and_args)

    async def first_result_lost(job: Job) -> None:
        if job.terminal and backend.calls == 1:
            raise BackendError("redis job write failed: MasterNotFoundError: No master found for 'mymaster'")
        await save(job)

    queue.client.evalsha = dying_beat  # type: ignore[method-assign]
    store.save = first_result_lost  # type: ignore[method-assign]
    response = await client.post("/api/v1/infer", json={"prompt": "finish me"})
    assert response.status == 200, await response.text()
    job_id = (await response.json())["request_id"]
    response = await client.get(f"/api/v1/result/{job_id}?timeout=10")
    job = await response.json()
    # Its result never written, the job ran again once its lease ran out: the heartbeat had stopped.
    assert (job["status"], job["result"], job["attempts"]) == ("completed", "echo: finish me", 2), job
    assert backend.calls == 2
    stats = await queue.stats()
    assert (stats.total, stats.in_flight) == (0, 0)
