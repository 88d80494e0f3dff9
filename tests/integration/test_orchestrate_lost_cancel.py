"""A job that ends while its lease's heartbeat is on its way to a Redis master that just died.

What the Redis master fault of tests/ha saw in about one run of three: the job's result write failed (no
master), the worker cancelled the heartbeat, redis-py lost that cancel (Python 3.11, gh-86296) and the beat
failed; the heartbeat took it for a blip and beat on, on the new master, for ever. The lease never ran
out, the worker waited for its heartbeat for ever, and the job stayed "processing".
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
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


async def start(aiohttp_client: MakeClient, redis_server: RedisServer) -> tuple[Client, BeatBackend]:
    """An orchestrator on Redis (one worker, 0.3 s leases) whose first job's result write fails."""
    settings = Settings(
        server=ServerSettings(access_log=False),
        queue=QueueSettings(url=f"{redis_server.url}?prefix=lost-{uuid.uuid4().hex[:8]}"),
        orchestrate=OrchestrateSettings(role="all", concurrency=1, lease_s=0.3),
    )
    backend = BeatBackend()
    client = await aiohttp_client(create_app(settings, backend))
    store = client.app[ORCHESTRATOR_KEY].store
    save = store.save

    async def first_result_lost(job: Job) -> None:
        if job.terminal and backend.calls == 1:
            raise BackendError("redis job write failed: MasterNotFoundError: No master found for 'mymaster'")
        await save(job)

    store.save = first_result_lost  # type: ignore[method-assign]
    return client, backend


async def runs_again_after_its_lease(client: Client, backend: BeatBackend) -> None:
    """A job submitted now completes: its result never written, it runs again once its lease runs out
    (which the heartbeat, had it beaten on, would have prevented)."""
    response = await client.post("/api/v1/infer", json={"prompt": "finish me"})
    assert response.status == 200, await response.text()
    job_id = (await response.json())["request_id"]
    response = await client.get(f"/api/v1/result/{job_id}?timeout=10")
    job = await response.json()
    assert (job["status"], job["result"], job["attempts"]) == ("completed", "echo: finish me", 2), job
    assert backend.calls == 2
    # Acked just after its result was written: the queue is empty a moment later.
    queue = client.app[ORCHESTRATOR_KEY].queue
    deadline = time.monotonic() + 5
    while (stats := await queue.stats()).total or stats.in_flight:
        assert time.monotonic() < deadline, stats
        await asyncio.sleep(0.02)


async def test_a_beat_whose_cancel_redis_py_lost_then_failed_ends_the_heartbeat(
    aiohttp_client: MakeClient, redis_server: RedisServer
) -> None:
    client, backend = await start(aiohttp_client, redis_server)
    queue = client.app[ORCHESTRATOR_KEY].queue
    assert isinstance(queue, RedisPriorityQueue)
    evalsha = queue.client.evalsha

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

    queue.client.evalsha = dying_beat  # type: ignore[method-assign]
    await runs_again_after_its_lease(client, backend)


async def test_a_heartbeat_stops_once_its_job_ended_even_if_its_cancel_is_lost(
    aiohttp_client: MakeClient, redis_server: RedisServer
) -> None:
    # Whichever layer loses the cancel (here the queue's extend itself, which then answers), the worker
    # must not depend on it.
    client, backend = await start(aiohttp_client, redis_server)
    queue = client.app[ORCHESTRATOR_KEY].queue
    extend = queue.extend

    async def losing_cancel(item_id: str, token: str, lease: float) -> bool:
        if backend.beating.is_set():
            return await extend(item_id, token, lease)
        backend.beating.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.Event().wait()
        return True

    queue.extend = losing_cancel  # type: ignore[method-assign]
    await runs_again_after_its_lease(client, backend)
