"""The gateway's counters (/stats, /metrics, /api/cache-stats) and its OpenAI face's gateway options."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

from llmkit.gateway.app import create_app
from tests.unit.gateway_fakes import HeldPool, gateway_settings

MakeClient = Callable[..., Awaitable[TestClient[Any, web.Application]]]


def chat(text: str, **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}], **extra}


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


async def test_stats_metrics_and_cache_stats_count_what_happened(aiohttp_client: MakeClient) -> None:
    pool = HeldPool(hold=False)
    client = await aiohttp_client(create_app(gateway_settings(), pool=pool))
    for _ in range(3):
        assert (await client.post("/api/chat-optimized", json=chat("count me"))).status == 200
    assert (await client.post("/api/chat-optimized", json=chat("count me", use_cache=False))).status == 200
    assert len(pool.calls) == 2

    stats = await (await client.get("/stats")).json()
    assert stats["requests"]["requests"] == 4
    assert stats["requests"]["cache_hits"] == 2
    assert stats["requests"]["upstream_calls"] == 2
    assert stats["upstreams"] == [{"url": "held", "breaker": "closed", "calls": 2}]
    assert stats["queue"]["calls_measured"] == 2 and stats["queue"]["max_concurrent"] == 4

    metrics = await (await client.get("/metrics")).text()
    assert metric(metrics, "llmkit_gateway_requests_total") == 4
    assert metric(metrics, "llmkit_gateway_cache_hits_total") == 2
    assert metric(metrics, "llmkit_gateway_upstream_calls_total") == 2
    assert metric(metrics, "llmkit_gateway_upstream_open") == 0

    seed = await (await client.get("/api/cache-stats")).json()
    assert seed["response_cache"]["total_entries"] == 1 and seed["response_cache"]["hit_rate"] > 0.5
    assert seed["batch_processor"]["cached_responses"] == 2
    assert seed["batch_processor"]["upstream_calls"] == 2
    assert seed["queue_length"] == 0 and seed["is_processing"] is False


async def test_openai_face_takes_priority_and_no_cache_headers(aiohttp_client: MakeClient) -> None:
    pool = HeldPool()
    client = await aiohttp_client(create_app(gateway_settings(max_concurrent=1), pool=pool))
    body = {"model": "m", "messages": [{"role": "user", "content": "busy"}]}
    first = asyncio.create_task(client.post("/v1/chat/completions", json=body))
    await pool.started.wait()
    # While the one slot is busy: a low-priority request, then a critical one via X-Priority.
    low = asyncio.create_task(
        client.post("/v1/chat/completions", json={**body, "messages": chat("low")["messages"]})
    )
    await asyncio.sleep(0.05)
    high = asyncio.create_task(
        client.post(
            "/v1/chat/completions",
            json={**body, "messages": chat("high")["messages"]},
            headers={"X-Priority": "2"},
        )
    )
    await asyncio.sleep(0.05)
    pool.release()
    for task in (first, low, high):
        assert (await task).status == 200
    assert [c.messages[-1]["content"] for c in pool.calls] == ["busy", "high", "low"]

    again = await client.post("/v1/chat/completions", json=body)
    assert again.headers["X-Gateway-Cache"] == "hit"
    fresh = await client.post("/v1/chat/completions", json=body, headers={"Cache-Control": "no-cache"})
    assert fresh.headers["X-Gateway-Cache"] == "miss" and len(pool.calls) == 4
    answer = await fresh.json()
    assert answer["object"] == "chat.completion" and answer["choices"][0]["message"]["content"] == "busy "


async def test_openai_face_errors_have_openai_shape(aiohttp_client: MakeClient) -> None:
    client = await aiohttp_client(create_app(gateway_settings(), pool=HeldPool(hold=False)))
    tools = {"model": "m", "messages": chat("x")["messages"], "tools": [{"type": "function"}]}
    response = await client.post("/v1/chat/completions", json=tools)
    assert response.status == 400
    error = (await response.json())["error"]
    assert error["type"] == "invalid_request_error" and "tools" in error["message"]
    broken = await client.post(
        "/v1/chat/completions", data=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert broken.status == 400 and "JSON" in (await broken.json())["error"]["message"]
