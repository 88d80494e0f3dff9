"""`llmkit orchestrate` processes on a real Redis that goes away and comes back; workers told to stop."""

from __future__ import annotations

import asyncio
import functools
import signal
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson
import pytest
import redis.asyncio as aioredis

from tests.serve_process import ServerProcess
from tests.servers import RedisServer

Start = Callable[..., ServerProcess]
WAIT_S = 60.0


async def submit(session: aiohttp.ClientSession, url: str, prompt: str) -> str:
    async with session.post(f"{url}/api/v1/infer", json={"prompt": prompt}) as response:
        assert response.status == 200, await response.text()
        job_id: str = (await response.json())["request_id"]
        return job_id


async def result(session: aiohttp.ClientSession, url: str, job_id: str) -> dict[str, Any]:
    async with session.get(f"{url}/api/v1/result/{job_id}?timeout={WAIT_S:g}") as response:
        data: dict[str, Any] = await response.json()
        return data


async def job(session: aiohttp.ClientSession, url: str, job_id: str) -> dict[str, Any]:
    async with session.get(f"{url}/api/v1/status/{job_id}") as response:
        data: dict[str, Any] = await response.json()
        return data


async def health(session: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, Any]]:
    async with session.get(f"{url}/health") as response:
        return response.status, await response.json()


async def until(check: Callable[[], Any], what: str) -> Any:
    """Poll the async `check()` until it answers something truthy; fail after WAIT_S seconds."""
    deadline = time.monotonic() + WAIT_S
    while not (found := await check()):
        assert time.monotonic() < deadline, f"never saw {what}"
        await asyncio.sleep(0.05)
    return found


async def in_stderr(process: ServerProcess, text: str) -> None:
    async def found() -> bool:
        return text in process.stderr

    await until(found, f"{text!r} on stderr: {process.stderr}")


LOST = "workers cannot reach the queue or job store"
BACK = "workers reach the queue and job store again"


@pytest.mark.parametrize("roles", [("all",), ("api", "worker")])
async def test_workers_survive_a_redis_restart_and_run_every_job_submitted_after_it(
    orchestrate_process: Start, redis_factory: Callable[[], RedisServer], roles: tuple[str, ...]
) -> None:
    redis = redis_factory()
    env = {"LLMKIT_ORCHESTRATE_ECHO_DELAY_MS": "20", "LLMKIT_ORCHESTRATE_LEASE_S": "2"}
    servers = [orchestrate_process(role, redis.url, **env) for role in roles]
    api, worker = servers[0], servers[-1]
    async with aiohttp.ClientSession() as session:
        # Under load: jobs queued and running when Redis goes away (they die with its memory).
        for i in range(40):
            await submit(session, api.url, f"before the outage {i} with a few words")
        redis.stop()
        for server in servers:
            status, body = await health(session, server.url)
            assert status == 503 and body["status"] == "unhealthy", body
            assert body["unreachable"] == ["queue", "job store"] and "cannot reach" in body["message"]
        await in_stderr(worker, LOST)
        redis.start()  # the same port, empty
        for server in servers:
            await until(functools.partial(_healthy, session, server.url), "/health 200 after the restart")
        ids = [await submit(session, api.url, f"after the outage {i}") for i in range(30)]
        done = await asyncio.gather(*(result(session, api.url, job_id) for job_id in ids))
        await in_stderr(worker, BACK)
    assert [job["status"] for job in done] == ["completed"] * 30
    assert sorted(job["result"] for job in done) == sorted(f"after the outage {i}" for i in range(30))
    # One warning when the workers lost Redis and one line when they got it back, not one per try.
    assert worker.stderr.count(LOST) == 1 and worker.stderr.count(BACK) == 1, worker.stderr


async def _healthy(session: aiohttp.ClientSession, url: str) -> bool:
    return (await health(session, url))[0] == 200


async def test_a_job_running_when_redis_went_away_runs_again_after_its_lease(
    orchestrate_process: Start, redis_factory: Callable[[], RedisServer]
) -> None:
    redis = redis_factory()
    env = {
        "LLMKIT_ORCHESTRATE_ECHO_DELAY_MS": "300",
        "LLMKIT_ORCHESTRATE_LEASE_S": "1",
        "LLMKIT_ORCHESTRATE_CONCURRENCY": "1",
    }
    server = orchestrate_process("all", redis.url, **env)
    client = aioredis.Redis.from_url(redis.url)
    async with aiohttp.ClientSession() as session:
        job_id = await submit(session, server.url, "three slow words")

        async def processing() -> bool:
            return (await job(session, server.url, job_id))["status"] == "processing"

        await until(processing, "the job processing")
        # Redis keeps what it had (a snapshot, as with persistence on): the job processing, its lease held.
        await client.save()
        await client.aclose()
        redis.stop()
        # The worker's only job ends while Redis is away: it cannot save the result, the lease runs out.
        await in_stderr(server, LOST)
        redis.start()
        done = await result(session, server.url, job_id)
    assert (done["status"], done["result"], done["attempts"]) == ("completed", "three slow words", 2)


async def _events(client: aioredis.Redis, channel: str, seen: list[dict[str, Any]]) -> None:
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(channel)
    try:
        while True:
            message = await pubsub.get_message(timeout=1.0)
            if message is not None:
                seen.append(orjson.loads(message["data"]))
    finally:
        await pubsub.aclose()


@pytest.mark.parametrize(
    ("drain_timeout", "running_end"),
    [("0.2", "released to the second worker"), ("30", "finished by the stopping worker")],
)
async def test_sigterm_hands_every_job_to_another_worker_each_completed_once(
    orchestrate_process: Start, redis_server: RedisServer, drain_timeout: str, running_end: str
) -> None:
    prefix = f"orch-{uuid.uuid4().hex[:8]}"
    url = f"{redis_server.url}?prefix={prefix}"
    client = aioredis.Redis.from_url(redis_server.url)
    seen: list[dict[str, Any]] = []
    listener = asyncio.create_task(_events(client, f"{prefix}:job-events", seen))
    slow = {"LLMKIT_ORCHESTRATE_ECHO_DELAY_MS": "300", "LLMKIT_ORCHESTRATE_CONCURRENCY": "2"}
    try:
        api = orchestrate_process("api", url)
        first = orchestrate_process("worker", url, LLMKIT_SERVER_DRAIN_TIMEOUT=drain_timeout, **slow)
        prompts = [f"job {i} has some words to echo" for i in range(6)]
        async with aiohttp.ClientSession() as session:
            ids = [await submit(session, api.url, prompt) for prompt in prompts]

            async def two_running() -> bool:
                states = [(await job(session, api.url, job_id))["status"] for job_id in ids]
                return states.count("processing") == 2

            await until(two_running, "the first worker running two jobs")
            first.signal(signal.SIGTERM)
            assert first.wait() == 0, first.stderr
            states = Counter([(await job(session, api.url, job_id))["status"] for job_id in ids])
            if running_end.startswith("released"):
                assert states == {"pending": 6}, states  # nothing lost, nothing left processing
                assert first.stderr.count("released to the queue for another worker") == 2
            else:
                # It finished its two and took no new job after the signal.
                assert states == {"completed": 2, "pending": 4}, states
            second = orchestrate_process("worker", url)
            done = await asyncio.gather(*(result(session, api.url, job_id) for job_id in ids))
            second_stats = await (await session.get(f"{second.url}/stats")).json()
    finally:
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)
        await client.aclose()
    assert [job["status"] for job in done] == ["completed"] * 6
    assert [job["result"] for job in done] == prompts
    completions = Counter(
        e["id"] for e in seen if e["kind"] == "status" and e["job"]["status"] == "completed"
    )
    assert completions == dict.fromkeys(ids, 1), "each job completed exactly once"
    assert not [e for e in seen if e["kind"] == "status" and e["job"]["status"] == "failed"]
    expected = 6 if running_end.startswith("released") else 4
    assert second_stats["finished"]["completed"] == expected
