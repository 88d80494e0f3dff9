"""The orchestrator's openai worker against a real `llmkit simulate` process, its faults included."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from llmkit.orchestrate.app import create_app
from llmkit.settings import OrchestrateSettings, ServerSettings, Settings
from tests.serve_process import ServerProcess
from tests.simulate_admin import ADMIN_HEADERS, SIMULATE_ADMIN_ENV

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[..., Awaitable[Client]]


@pytest.fixture(scope="module")
def simulate(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("sim")
    with ServerProcess(tmp, "--port", "0", command="simulate", env=SIMULATE_ADMIN_ENV) as process:
        yield process.wait_listening()


@pytest.fixture
async def client(aiohttp_client: MakeClient, simulate: str) -> AsyncIterator[Client]:
    settings = Settings(
        server=ServerSettings(access_log=False),
        orchestrate=OrchestrateSettings(
            backend="openai",
            backend_url=f"{simulate}/v1",
            model="gpt-4o-mini",
            retries=2,
            cache_results=False,
        ),
    )
    yield await aiohttp_client(create_app(settings))
    async with aiohttp.ClientSession(headers=ADMIN_HEADERS) as session:
        await session.delete(f"{simulate}/admin/faults")


async def run_job(client: Client, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post("/api/v1/infer", json=body)
    assert response.status == 200, await response.text()
    job = await response.json()
    response = await client.get(f"/api/v1/result/{job['request_id']}?timeout=30")
    data: dict[str, Any] = await response.json()
    return data


async def schedule(simulate: str, fault: str, count: int) -> None:
    async with aiohttp.ClientSession(headers=ADMIN_HEADERS) as session:
        body = {"schedule": [{"fault": fault, "count": count}]}
        async with session.post(f"{simulate}/admin/faults", json=body) as response:
            assert response.status == 200, await response.text()


async def test_a_job_completes_with_the_simulators_answer(client: Client) -> None:
    job = await run_job(client, {"prompt": "Hello there", "session_id": "s"})
    assert job["status"] == "completed" and job["result"]


async def test_retryable_faults_are_retried_to_success(client: Client, simulate: str) -> None:
    await schedule(simulate, "500", 2)
    job = await run_job(client, {"prompt": "retry me"})
    assert job["status"] == "completed", job


async def test_more_faults_than_retries_fail_the_job_with_the_error(client: Client, simulate: str) -> None:
    await schedule(simulate, "503", 5)
    job = await run_job(client, {"prompt": "give up"})
    assert job["status"] == "failed" and "503" in job["error"], job
    breaker = (await (await client.get("/stats")).json())["breaker"]
    assert breaker["state"] == "closed" and breaker["retries"] >= 2


async def test_streamed_jobs_reach_websocket_clients_as_deltas(client: Client) -> None:
    async with client.ws_connect("/api/v1/stream") as ws:
        await ws.send_json({"prompt": "Stream a story", "stream": True})
        deltas, final = [], None
        while final is None:
            message = await ws.receive_json(timeout=30)
            if "delta" in message:
                deltas.append(message["delta"])
            elif message.get("status") in ("completed", "failed"):
                final = message
    assert final["status"] == "completed" and "".join(deltas) == final["result"]
