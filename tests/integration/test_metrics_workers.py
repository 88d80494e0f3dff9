"""With --workers 2, the /metrics any worker answers covers both (each sample labelled with its worker):
the simulator's vLLM series and the gateway's seed names add up to every request the process answered."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.serve_process import ServerProcess

QUIET = {"LLMKIT_SERVER_ACCESS_LOG": "false"}
REQUESTS = 12


def samples(text: str, name: str) -> list[Any]:
    return [s for f in text_string_to_metric_families(text) for s in f.samples if s.name == name]


@pytest.fixture
def simulator(tmp_path: Path) -> Iterator[ServerProcess]:
    args = ("--port", "0", "--workers", "2", "--itl-ms", "1")
    with ServerProcess(tmp_path, *args, command="simulate", env=QUIET) as sim:
        sim.wait_listening()
        yield sim


async def post_chats(url: str, path: str, body: dict[str, Any]) -> None:
    # A new connection per request, so SO_REUSEPORT spreads them over the workers.
    for i in range(REQUESTS):
        async with aiohttp.ClientSession() as session:
            payload = {**body, "messages": [{"role": "user", "content": f"question {i}"}]}
            async with session.post(url + path, json=payload) as answer:
                assert answer.status == 200, await answer.text()
                await answer.read()


async def metrics_of(url: str) -> str:
    async with aiohttp.ClientSession() as session, session.get(url + "/metrics") as answer:
        assert answer.status == 200
        return await answer.text()


async def test_simulator_metrics_cover_every_worker(simulator: ServerProcess) -> None:
    await post_chats(simulator.url, "/v1/chat/completions", {"model": "m", "stream": True})
    text = await metrics_of(simulator.url)
    for name in (
        "vllm:e2e_request_latency_seconds_count",
        "vllm:time_to_first_token_seconds_count",
        "gen_ai_server_request_duration_seconds_count",
    ):
        found = samples(text, name)
        assert {s.labels["worker"] for s in found} == {"0", "1"}, found
        assert sum(s.value for s in found) == REQUESTS, (name, found)
    generated = samples(text, "vllm:generation_tokens_total")
    async with aiohttp.ClientSession() as session, session.get(simulator.url + "/stats") as answer:
        stats = await answer.json()
    # /stats covers both workers too, and says the same count as the series summed over them.
    assert stats["workers"]["answered"] == 2
    assert sum(s.value for s in generated) == stats["tokens_sent"] > 0


async def test_gateway_seed_names_cover_every_worker(tmp_path: Path) -> None:
    with ServerProcess(tmp_path, "--port", "0", "--itl-ms", "1", command="simulate", env=QUIET) as sim:
        sim.wait_listening()
        args = ("--port", "0", "--workers", "2", "--upstream", sim.url)
        with ServerProcess(tmp_path, *args, command="gateway", env=QUIET) as gw:
            gw.wait_listening()
            await post_chats(gw.url, "/v1/chat/completions", {})
            text = await metrics_of(gw.url)
    for name in ("http_requests_total", "llmkit_http_requests_total"):
        chats = [s for s in samples(text, name) if s.labels["route"] == "/v1/chat/completions"]
        # A worker that answered no chat has no sample for the route; the gauge below has one per worker.
        assert {s.labels["worker"] for s in chats} <= {"0", "1"}, chats
        assert sum(s.value for s in chats) == REQUESTS
    in_flight = samples(text, "llmkit_http_requests_in_flight")
    assert {s.labels["worker"] for s in in_flight} == {"0", "1"}
    answered = samples(text, "llmkit_gateway_chat_requests_total")
    assert sum(s.value for s in answered) == REQUESTS
    assert all("tenant" not in s.labels for s in answered)  # telemetry.tenant_labels is off by default
    durations = samples(text, "http_request_duration_seconds_count")
    assert sum(s.value for s in durations if s.labels["route"] == "/v1/chat/completions") == REQUESTS
