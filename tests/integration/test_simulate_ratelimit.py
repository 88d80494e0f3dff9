"""Per-model RPM / TPM limits with OpenAI's x-ratelimit-* headers, on memory and on a shared Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import openai
import pytest

from llmkit.settings import LimiterSettings, ServerSettings, Settings, SimulateSettings
from llmkit.simulate.ratelimit import estimate_tokens, reset_text
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
