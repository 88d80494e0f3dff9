"""Fault injection against a real port-0 simulator: header, schedule, rates, in-stream errors, disconnects."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import openai
import orjson
import pytest

from llmkit.simulate.faults import FaultInjector, parse_rates, parse_schedule
from tests.integration.test_simulate_app import chat_body, make_settings, real_server
from tests.simulate_admin import ADMIN_HEADERS, SIMULATE_ADMIN_KEY

MESSAGES: list[dict[str, str]] = [{"role": "user", "content": "Halo"}]


@pytest.fixture
async def base_url() -> AsyncIterator[str]:
    async with real_server(make_settings(fault_timeout_s=30, admin_key=SIMULATE_ADMIN_KEY)) as url:
        yield url


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as made:
        yield made


def openai_client(url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)


async def test_header_forces_each_http_fault(base_url: str) -> None:
    client = openai_client(base_url)
    try:
        with pytest.raises(openai.RateLimitError) as limited:
            await client.chat.completions.create(
                model="m", messages=MESSAGES, extra_headers={"x-llmkit-fault": "429"}
            )
        assert limited.value.response.headers["Retry-After"] == "1"
        assert "injected fault 429" in limited.value.message
        with pytest.raises(openai.InternalServerError) as failed:
            await client.chat.completions.create(
                model="m", messages=MESSAGES, extra_headers={"x-llmkit-fault": "503"}
            )
        assert failed.value.status_code == 503
        with pytest.raises(openai.APIConnectionError):
            await client.chat.completions.create(
                model="m", messages=MESSAGES, extra_headers={"x-llmkit-fault": "disconnect"}
            )
        # Without the header the same client is served normally.
        answer = await client.chat.completions.create(model="m", messages=MESSAGES)
        assert answer.choices[0].finish_reason == "stop"
    finally:
        await client.close()


async def test_a_bad_fault_header_is_a_400_naming_the_values(
    base_url: str, session: aiohttp.ClientSession
) -> None:
    async with session.post(
        f"{base_url}/v1/chat/completions", json=chat_body(), headers={"x-llmkit-fault": "teapot"}
    ) as resp:
        assert resp.status == 400
        body = await resp.json()
    assert "429, 500, 503, timeout, disconnect" in body["error"]["message"]


async def test_schedule_then_success_then_reset(base_url: str, session: aiohttp.ClientSession) -> None:
    async with session.post(
        f"{base_url}/admin/faults", json={"schedule": [{"fault": "429", "count": 3}]}, headers=ADMIN_HEADERS
    ) as resp:
        assert resp.status == 200
        assert (await resp.json())["schedule"] == [{"fault": "429", "count": 3}]
    statuses = []
    for _ in range(5):
        async with session.post(f"{base_url}/v1/chat/completions", json=chat_body()) as resp:
            statuses.append(resp.status)
    assert statuses == [429, 429, 429, 200, 200]
    async with session.post(
        f"{base_url}/admin/faults", json={"rates": {"500": 1.0}}, headers=ADMIN_HEADERS
    ) as resp:
        assert resp.status == 200
    async with session.post(f"{base_url}/v1/chat/completions", json=chat_body()) as resp:
        assert resp.status == 500
    async with session.delete(f"{base_url}/admin/faults", headers=ADMIN_HEADERS) as resp:
        state = await resp.json()
    assert state["rates"]["500"] == 0 and state["schedule"] == []
    assert state["injected"]["429"] == 3 and state["injected"]["500"] == 1
    async with session.post(f"{base_url}/v1/chat/completions", json=chat_body()) as resp:
        assert resp.status == 200
    async with session.get(f"{base_url}/stats") as resp:
        assert (await resp.json())["faults"]["429"] == 3


async def test_admin_faults_rejects_bad_bodies(base_url: str, session: aiohttp.ClientSession) -> None:
    for body in ({}, {"schedule": [{"fault": "418"}]}, {"rates": {"500": 2}}, {"schedule": "429"}):
        async with session.post(f"{base_url}/admin/faults", json=body, headers=ADMIN_HEADERS) as resp:
            assert resp.status == 400, body
            assert (await resp.json())["error"]["message"]


async def test_in_stream_error_follows_openais_shape(base_url: str, session: aiohttp.ClientSession) -> None:
    async with session.post(
        f"{base_url}/v1/chat/completions", json=chat_body(stream=True), headers={"x-llmkit-fault": "500"}
    ) as resp:
        assert resp.status == 200
        raw = await resp.read()
    events = [e for e in raw.split(b"\n\n") if e]
    assert all(e.startswith(b"data: ") for e in events)
    assert b"[DONE]" not in raw
    last = orjson.loads(events[-1][len(b"data: ") :])
    assert last["error"]["type"] == "server_error" and "injected fault 500" in last["error"]["message"]
    content = [orjson.loads(e[len(b"data: ") :]) for e in events[:-1]]
    assert any(c["choices"] and c["choices"][0]["delta"].get("content") for c in content)

    client = openai_client(base_url)
    try:
        stream = await client.chat.completions.create(
            model="m", messages=MESSAGES, stream=True, extra_headers={"x-llmkit-fault": "503"}
        )
        with pytest.raises(openai.APIError, match="injected fault 503"):
            async for _ in stream:
                pass
    finally:
        await client.close()


async def test_disconnect_mid_stream_cuts_the_connection(
    base_url: str, session: aiohttp.ClientSession
) -> None:
    with pytest.raises(aiohttp.ClientPayloadError):
        async with session.post(
            f"{base_url}/v1/chat/completions",
            json=chat_body(stream=True),
            headers={"x-llmkit-fault": "disconnect"},
        ) as resp:
            assert resp.status == 200
            await resp.read()
    async with session.get(f"{base_url}/stats") as resp:
        stats = await resp.json()
    assert stats["in_flight"] == 0 and stats["faults"]["disconnect"] == 1


async def test_timeout_hangs_past_the_clients_timeout(base_url: str) -> None:
    client = openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="x", max_retries=0, timeout=0.5)
    try:
        with pytest.raises(openai.APITimeoutError):
            await client.chat.completions.create(
                model="m", messages=MESSAGES, extra_headers={"x-llmkit-fault": "timeout"}
            )
    finally:
        await client.close()
    # The hung handler notices the client left and frees its slot.
    async with aiohttp.ClientSession() as session:
        for _ in range(100):
            async with session.get(f"{base_url}/stats") as resp:
                if (await resp.json())["in_flight"] == 0:
                    break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("the timed-out request still holds its slot")


def test_rates_from_the_profile_are_applied_by_chance() -> None:
    import random

    injector = FaultInjector(parse_rates({"429": 0.25, "503": 0.25}), 1.0, 1.0, rng=random.Random(7))
    kinds = [injector.decide(None) for _ in range(4000)]
    assert 800 < kinds.count("429") < 1200 and 800 < kinds.count("503") < 1200
    assert kinds.count(None) + kinds.count("429") + kinds.count("503") == 4000


def test_schedule_steps_and_ok_pass_through() -> None:
    injector = FaultInjector(parse_rates({}), 1.0, 1.0)
    injector.schedule.extend(
        parse_schedule([{"fault": "503", "count": 2}, {"fault": "ok"}, {"fault": "429"}])
    )
    assert [injector.decide(None) for _ in range(5)] == ["503", "503", None, "429", None]
    assert injector.decide("timeout") == "timeout"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/completions", {"model": "m", "prompt": "hi"}),
        ("/v1/embeddings", {"model": "m", "input": "hi"}),
        ("/v1/responses", {"model": "m", "input": "hi"}),
        ("/v1/messages", {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}),
        ("/api/chat", {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": False}),
        ("/api/generate", {"model": "m", "prompt": "hi", "stream": False}),
    ],
)
async def test_every_model_route_takes_faults(
    base_url: str, session: aiohttp.ClientSession, path: str, body: dict[str, object]
) -> None:
    async with session.post(f"{base_url}{path}", json=body, headers={"x-llmkit-fault": "503"}) as resp:
        assert resp.status == 503, await resp.text()
        assert "injected fault 503" in await resp.text()
    async with session.post(f"{base_url}{path}", json=body) as resp:
        assert resp.status == 200, await resp.text()
    # Routes that answer no model never get faults.
    async with session.get(f"{base_url}/v1/models", headers={"x-llmkit-fault": "503"}) as resp:
        assert resp.status == 200
