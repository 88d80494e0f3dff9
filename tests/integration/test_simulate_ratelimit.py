"""Per-model RPM / TPM limits with OpenAI's x-ratelimit-* headers, on memory and on a shared Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import openai
import pytest

from llmkit.settings import LimiterSettings, ServerSettings, Settings, SimulateSettings
from llmkit.simulate.ratelimit import OPEN_RPM, OPEN_TPM, UsageMeter, estimate_tokens, reset_text
from tests.integration.test_simulate_app import FixedSource, chat_body, make_settings, real_server
from tests.servers import RedisServer


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as made:
        yield made


async def test_rpm_counts_down_then_refuses_like_openai(session: aiohttp.ClientSession) -> None:
    async with real_server(make_settings(rpm=3)) as url:
        remaining = []
        for _ in range(3):
            async with session.post(f"{url}/v1/chat/completions", json=chat_body()) as resp:
                assert resp.status == 200
                assert resp.headers["x-ratelimit-limit-requests"] == "3"
                assert resp.headers["x-ratelimit-reset-requests"].endswith(("s", "ms"))
                assert resp.headers["x-request-id"]
                remaining.append(int(resp.headers["x-ratelimit-remaining-requests"]))
        assert remaining == [2, 1, 0]
        async with session.post(f"{url}/v1/chat/completions", json=chat_body()) as resp:
            assert resp.status == 429
            assert int(resp.headers["Retry-After"]) >= 1
            assert resp.headers["x-ratelimit-remaining-requests"] == "0"
            error = (await resp.json())["error"]
        assert error["code"] == "rate_limit_exceeded" and error["type"] == "requests"
        assert "Rate limit reached for gpt-test on requests per min (RPM): Limit 3" in error["message"]
        # Another model has its own budget.
        async with session.post(f"{url}/v1/chat/completions", json=chat_body(model="other")) as resp:
            assert resp.status == 200
        async with session.get(f"{url}/health") as resp:
            assert "x-ratelimit-limit-requests" not in resp.headers


async def test_tpm_and_headers_on_streams(session: aiohttp.ClientSession) -> None:
    async with real_server(make_settings(tpm=200)) as url:
        async with session.post(
            f"{url}/v1/chat/completions", json=chat_body(stream=True, max_tokens=100)
        ) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            assert resp.headers["x-ratelimit-limit-tokens"] == "200"
            left = int(resp.headers["x-ratelimit-remaining-tokens"])
            await resp.read()
        assert 0 < left <= 100
        async with session.post(f"{url}/v1/chat/completions", json=chat_body(max_tokens=150)) as resp:
            assert resp.status == 429
            assert "tokens per min (TPM): Limit 200" in (await resp.json())["error"]["message"]
        async with session.post(f"{url}/v1/chat/completions", json=chat_body(max_tokens=5000)) as resp:
            assert resp.status == 429
            assert "Request too large" in (await resp.json())["error"]["message"]


async def test_the_openai_client_sees_a_rate_limit_error() -> None:
    async with real_server(make_settings(rpm=1)) as url:
        client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
        try:
            raw = await client.chat.completions.with_raw_response.create(
                model="m", messages=[{"role": "user", "content": "hi"}]
            )
            assert raw.headers["x-ratelimit-remaining-requests"] == "0"
            with pytest.raises(openai.RateLimitError):
                await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
        finally:
            await client.close()


async def test_replicas_sharing_redis_share_one_budget(
    session: aiohttp.ClientSession, redis_server: RedisServer, redis_prefix: str
) -> None:
    settings = Settings(
        server=ServerSettings(access_log=False),
        simulate=SimulateSettings(rpm=4),
        limiter=LimiterSettings(url=f"{redis_server.url}?prefix={redis_prefix}"),
    )
    async with real_server(settings, FixedSource()) as first, real_server(settings, FixedSource()) as second:
        statuses = []
        for url in (first, second, first, second, first, second):
            async with session.post(f"{url}/v1/chat/completions", json=chat_body()) as resp:
                statuses.append(resp.status)
    assert statuses == [200, 200, 200, 200, 429, 429]


def test_estimate_and_reset_formats() -> None:
    assert estimate_tokens({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 10}) > 10
    assert estimate_tokens({"prompt": "hello world", "max_output_tokens": 5}) == 2 + 5
    assert estimate_tokens({"prompt": "x", "options": {"num_predict": 7}}) == 1 + 7
    assert reset_text(0.12) == "120ms" and reset_text(1.5) == "1.5s" and reset_text(360) == "6m0s"


async def test_with_no_limits_answers_still_carry_large_limits_that_count_down() -> None:
    # As OpenAI sends them: a client that reads x-ratelimit-* finds them on every answer.
    async with real_server(make_settings()) as url:
        client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
        try:
            seen = []
            for stream in (False, False, True):
                raw = await client.chat.completions.with_raw_response.create(
                    model="m", messages=[{"role": "user", "content": "hi"}], max_tokens=50, stream=stream
                )
                if stream:
                    async for _ in raw.parse():
                        pass
                seen.append(raw.headers)
            other = await client.chat.completions.with_raw_response.create(
                model="other", messages=[{"role": "user", "content": "hi"}]
            )
        finally:
            await client.close()
    for headers in seen:
        assert headers["x-ratelimit-limit-requests"] == str(OPEN_RPM)
        assert headers["x-ratelimit-limit-tokens"] == str(OPEN_TPM)
        assert headers["x-ratelimit-reset-requests"].endswith("ms")
        assert headers["x-ratelimit-reset-tokens"].endswith("ms")
    requests_left = [int(h["x-ratelimit-remaining-requests"]) for h in seen]
    tokens_left = [int(h["x-ratelimit-remaining-tokens"]) for h in seen]
    # Back to back, each answer counts (the budget refills by ~1 request per 6 µs, so it may lag by one).
    assert OPEN_RPM - 3 <= requests_left[-1] < OPEN_RPM
    assert tokens_left == sorted(tokens_left, reverse=True) and tokens_left[0] <= OPEN_TPM - 50
    # Another model counts its own.
    assert int(other.headers["x-ratelimit-remaining-requests"]) == OPEN_RPM - 1


def test_the_meter_counts_per_model_and_refills_over_the_minute() -> None:
    now = [100.0]
    meter = UsageMeter(rpm=60, tpm=6000, clock=lambda: now[0])
    first = meter.headers("a", 100)
    assert first["x-ratelimit-limit-requests"] == "60" and first["x-ratelimit-limit-tokens"] == "6000"
    assert first["x-ratelimit-remaining-requests"] == "59" and first["x-ratelimit-remaining-tokens"] == "5900"
    assert first["x-ratelimit-reset-requests"] == "1s" and first["x-ratelimit-reset-tokens"] == "1s"
    second = meter.headers("a", 100)
    assert (
        second["x-ratelimit-remaining-requests"] == "58" and second["x-ratelimit-remaining-tokens"] == "5800"
    )
    assert second["x-ratelimit-reset-requests"] == "2s"
    assert meter.headers("b", 10)["x-ratelimit-remaining-requests"] == "59"
    now[0] += 1.5  # 1.5 requests and 150 tokens refilled
    third = meter.headers("a", 0)
    assert third["x-ratelimit-remaining-requests"] == "58" and third["x-ratelimit-remaining-tokens"] == "5950"
    # Past its limit it says 0 left (a configured limit would refuse; the meter never does).
    for _ in range(70):
        last = meter.headers("a", 0)
    assert last["x-ratelimit-remaining-requests"] == "0"
    now[0] += 3600
    assert meter.headers("a", 0)["x-ratelimit-remaining-requests"] == "59"


async def test_with_no_limits_every_openai_route_carries_the_headers() -> None:
    async with real_server(make_settings()) as url:
        client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
        try:
            answers = [
                await client.completions.with_raw_response.create(model="m", prompt="hi", max_tokens=5),
                await client.completions.with_raw_response.create(model="m", prompt="hi", stream=True),
                await client.responses.with_raw_response.create(model="m", input="hi"),
                await client.responses.with_raw_response.create(model="m", input="hi", stream=True),
                await client.embeddings.with_raw_response.create(model="text-embedding-3-small", input="hi"),
            ]
        finally:
            await client.close()
    for raw in answers:
        assert raw.headers["x-ratelimit-limit-requests"] == str(OPEN_RPM), raw.http_request.url
        assert int(raw.headers["x-ratelimit-remaining-tokens"]) < OPEN_TPM
        assert raw.headers["x-ratelimit-reset-tokens"].endswith("ms")
