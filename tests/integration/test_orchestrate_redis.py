"""Scale-out: an API process and worker processes sharing one Redis queue and job store."""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from tests.serve_process import ServerProcess
from tests.servers import RedisServer

Start = Callable[..., ServerProcess]


@pytest.fixture
def start(redis_server: RedisServer, orchestrate_process: Start) -> Start:
    """Starts `llmkit orchestrate --role ROLE` processes on one Redis prefix (see conftest.py)."""
    queue_url = f"{redis_server.url}?prefix=orch-{uuid.uuid4().hex[:8]}"
    return lambda role, **env: orchestrate_process(role, queue_url, **env)


async def submit_all(url: str, prompts: list[str]) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as session:

        async def one(prompt: str) -> dict[str, Any]:
            async with session.post(f"{url}/api/v1/infer", json={"prompt": prompt}) as response:
                assert response.status == 200, await response.text()
                job = await response.json()
            async with session.get(f"{url}/api/v1/result/{job['request_id']}?timeout=60") as response:
                data: dict[str, Any] = await response.json()
                return data

        return await asyncio.gather(*(one(p) for p in prompts))


async def stats(url: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.get(f"{url}/stats") as response:
        data: dict[str, Any] = await response.json()
        return data


async def test_two_worker_processes_run_each_job_exactly_once(start: Start) -> None:
    api = start("api")
    workers = [start("worker", LLMKIT_ORCHESTRATE_ECHO_DELAY_MS="2") for _ in range(2)]
    prompts = [f"job number {i}" for i in range(200)]
    done = await submit_all(api.url, prompts)
    assert [job["status"] for job in done] == ["completed"] * 200
    assert sorted(job["result"] for job in done) == sorted(prompts)
    assert all(job["attempts"] == 1 for job in done), "no job ran twice"
    finished = [(await stats(worker.url))["finished"]["completed"] for worker in workers]
    assert sum(finished) == 200 and min(finished) > 0, finished
    assert (await stats(api.url))["running"] == 0


async def test_a_worker_killed_mid_job_leaves_it_to_another_after_the_lease(start: Start) -> None:
    slow = {"LLMKIT_ORCHESTRATE_ECHO_DELAY_MS": "1000", "LLMKIT_ORCHESTRATE_LEASE_S": "1"}
    api = start("api", LLMKIT_ORCHESTRATE_LEASE_S="1")
    doomed = start("worker", **slow)
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{api.url}/api/v1/infer", json={"prompt": "three slow words"}) as response:
            job_id = (await response.json())["request_id"]
        for _ in range(200):
            async with session.get(f"{api.url}/api/v1/status/{job_id}") as response:
                if (await response.json())["status"] == "processing":
                    break
            await asyncio.sleep(0.02)
        doomed.signal(signal.SIGKILL)
        doomed.wait()
        start("worker", LLMKIT_ORCHESTRATE_LEASE_S="1")
        async with session.get(f"{api.url}/api/v1/result/{job_id}?timeout=60") as response:
            job = await response.json()
    assert (job["status"], job["result"], job["attempts"]) == ("completed", "three slow words", 2)


async def test_identical_prompts_coalesce_and_websocket_works_across_processes(start: Start) -> None:
    api = start("api")
    start("worker", LLMKIT_ORCHESTRATE_ECHO_DELAY_MS="200")
    done = await submit_all(api.url, ["same prompt"] * 5)
    assert {job["result"] for job in done} == {"same prompt"}
    assert (await stats(api.url))["coalesced"] == 4
    async with aiohttp.ClientSession() as session, session.ws_connect(f"{api.url}/api/v1/stream") as ws:
        await ws.send_json({"prompt": "streamed over redis", "stream": True})
        messages = []
        while not messages or messages[-1].get("status") != "completed":
            messages.append(await ws.receive_json(timeout=30))
    deltas = "".join(m["delta"] for m in messages if "delta" in m)
    assert deltas == messages[-1]["result"] == "streamed over redis"
