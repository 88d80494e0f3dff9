"""Bodies the OpenAPI fuzzer found the simulator accepting against its own rules: each is a 400 now."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from llmkit.simulate.app import create_app
from tests.integration.test_simulate_app import FixedSource, make_settings

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[..., Awaitable[Client]]
HI = [{"role": "user", "content": "Hello"}]
TOO_BIG = 2**63


@pytest.fixture
async def client(aiohttp_client: MakeClient) -> Client:
    return await aiohttp_client(create_app(make_settings(), FixedSource()))


@pytest.mark.parametrize(
    ("path", "body"),
    [
        # Integers past 64 bits were taken as token limits (the schema says int64).
        ("/v1/chat/completions", {"model": "m", "messages": HI, "max_completion_tokens": TOO_BIG}),
        ("/v1/completions", {"model": "m", "prompt": "Hi", "max_tokens": TOO_BIG}),
        ("/v1/responses", {"model": "m", "input": "Hi", "max_output_tokens": TOO_BIG}),
        ("/v1/messages", {"model": "m", "messages": HI, "max_tokens": TOO_BIG}),
        ("/api/chat", {"model": "m", "messages": HI, "stream": False, "options": {"num_predict": TOO_BIG}}),
        # `data.get("system") or ""` read {} and [] as no system prompt.
        ("/api/generate", {"model": "m", "prompt": "Hi", "system": {}, "stream": False}),
        ("/api/generate", {"model": "m", "prompt": [], "stream": False}),
        # A token id is a non-negative integer.
        ("/v1/embeddings", {"model": "m", "input": [[1, -2]]}),
        # A Responses input message's role is a string.
        ("/v1/responses", {"model": "m", "input": [{"role": {}, "content": "Hi"}]}),
    ],
)
async def test_refused(client: Client, path: str, body: dict[str, Any]) -> None:
    response = await client.post(path, json=body)
    assert response.status == 400, await response.text()


async def test_the_limits_themselves_still_pass(client: Client) -> None:
    body = {"model": "m", "messages": HI, "max_completion_tokens": TOO_BIG - 1}
    assert (await client.post("/v1/chat/completions", json=body)).status == 200
    generate = {"model": "m", "prompt": "Hi", "system": None, "stream": False}
    assert (await client.post("/api/generate", json=generate)).status == 200
    assert (await client.post("/v1/embeddings", json={"model": "m", "input": [[0, 1]]})).status == 200
