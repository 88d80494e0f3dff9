"""The gateway in front of real `llmkit simulate` processes (Ollama and OpenAI modes) and real clients."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import openai
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from llmkit.gateway.app import create_app
from tests.serve_process import ServerProcess
from tests.simulate_admin import ADMIN_HEADERS, SIMULATE_ADMIN_ENV
from tests.unit.gateway_fakes import gateway_settings

MakeClient = Callable[..., Awaitable[TestClient[Any, web.Application]]]
KIND_SUFFIX = {"ollama": "", "openai": "/v1"}


@pytest.fixture(scope="module")
def simulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A simulator answering at once."""
    env = {"LLMKIT_SERVER_ACCESS_LOG": "false", **SIMULATE_ADMIN_ENV}
    with ServerProcess(tmp_path_factory.mktemp("sim"), "--port", "0", command="simulate", env=env) as sim:
        yield sim.wait_listening()


@pytest.fixture(scope="module")
def slow_simulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A simulator that takes 400 ms before its first token, so concurrent requests overlap."""
    env = {"LLMKIT_SERVER_ACCESS_LOG": "false", **SIMULATE_ADMIN_ENV}
    tmp = tmp_path_factory.mktemp("slow")
    with ServerProcess(tmp, "--port", "0", "--ttft-ms", "400", command="simulate", env=env) as sim:
        yield sim.wait_listening()


async def sim_get(url: str, path: str) -> Any:
    async with aiohttp.ClientSession() as session, session.get(url + path) as response:
        return await response.json()


async def sim_requests(url: str) -> int:
    return int((await sim_get(url, "/stats"))["requests"])


async def set_faults(url: str, schedule: list[dict[str, Any]]) -> None:
    async with aiohttp.ClientSession(headers=ADMIN_HEADERS) as session:
        async with session.delete(f"{url}/admin/faults") as response:
            assert response.status == 200, await response.text()
        if schedule:
            async with session.post(f"{url}/admin/faults", json={"schedule": schedule}) as response:
                assert response.status == 200, await response.text()


async def gateway(aiohttp_client: MakeClient, upstreams: str, kind: str, **gw: Any) -> TestClient[Any, Any]:
    settings = gateway_settings(upstreams=upstreams, upstream_kind=kind, backoff_base_s=0.01, **gw)
    return await aiohttp_client(create_app(settings), server_kwargs={"handler_cancellation": True})


def chat(text: str, **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}], **extra}


def sse(text: str) -> list[dict[str, Any]]:
    return [
        orjson.loads(line[6:])
        for line in text.splitlines()
        if line.startswith("data: ") and "[DONE]" not in line
    ]


@pytest.mark.parametrize("kind", ["ollama", "openai"])
async def test_fifty_identical_concurrent_requests_make_one_upstream_call(
    aiohttp_client: MakeClient, slow_simulator: str, kind: str
) -> None:
    client = await gateway(aiohttp_client, slow_simulator + KIND_SUFFIX[kind], kind)
    before = await sim_requests(slow_simulator)
    body = chat(f"What is Rust? ({kind} coalescing)")
    responses = await asyncio.gather(*[client.post("/api/chat-optimized", json=body) for _ in range(50)])
    answers = {(await r.json())["message"]["content"] for r in responses}
    assert [r.status for r in responses] == [200] * 50
    assert len(answers) == 1 and answers != {""}
    assert await sim_requests(slow_simulator) - before == 1


@pytest.mark.parametrize("kind", ["ollama", "openai"])
async def test_streamed_answer_is_cached_and_replayed_as_a_stream(
    aiohttp_client: MakeClient, simulator: str, kind: str
) -> None:
    client = await gateway(aiohttp_client, simulator + KIND_SUFFIX[kind], kind)
    body = chat(f"Tell me about async Python ({kind} stream)", stream=True)
    first = sse(await (await client.post("/api/chat-optimized", json=body)).text())
    assert len(first) > 2 and all(e["cached"] is False for e in first)
    assert first[-1]["done"] is True
    text = "".join(e.get("content", "") for e in first)
    before = await sim_requests(simulator)
    again = sse(await (await client.post("/api/chat-optimized", json=body)).text())
    assert all(e["cached"] is True for e in again)
    assert "".join(e.get("content", "") for e in again) == text
    plain = await (await client.post("/api/chat-optimized", json={**body, "stream": False})).json()
    assert plain == {
        "message": {"role": "assistant", "content": text},
        "cached": True,
        "conversation_id": ANY,
    }
    assert await sim_requests(simulator) == before


class _Any:
    def __eq__(self, other: object) -> bool:
        return True


ANY = _Any()


@pytest.mark.parametrize("kind", ["ollama", "openai"])
async def test_retries_through_injected_faults(aiohttp_client: MakeClient, tmp_path: Path, kind: str) -> None:
    with ServerProcess(tmp_path, "--port", "0", command="simulate", env=SIMULATE_ADMIN_ENV) as sim:
        url = sim.wait_listening()
        client = await gateway(aiohttp_client, url + KIND_SUFFIX[kind], kind, retries=2, cache_enabled=False)
        await set_faults(url, [{"fault": "500", "count": 2}])
        response = await client.post("/api/chat-optimized", json=chat("retry me"))
        assert response.status == 200
        assert (await sim_get(url, "/stats"))["faults"].get("500") == 2
        await set_faults(url, [{"fault": "503", "count": 10}])
        failed = await client.post("/api/chat-optimized", json=chat("give up"))
        assert failed.status in (502, 503)
        message = (await failed.json())["error"]["message"]
        assert "3 attempts" in message or "attempts" in message


async def test_failover_to_the_second_upstream(aiohttp_client: MakeClient, tmp_path: Path) -> None:
    with (
        ServerProcess(tmp_path, "--port", "0", command="simulate", env=SIMULATE_ADMIN_ENV) as bad,
        ServerProcess(tmp_path, "--port", "0", command="simulate", env=SIMULATE_ADMIN_ENV) as good,
    ):
        bad_url, good_url = bad.wait_listening(), good.wait_listening()
        await set_faults(bad_url, [{"fault": "500", "count": 1000}])
        upstreams = f"{bad_url}*1000, {good_url}"
        client = await gateway(aiohttp_client, upstreams, "ollama", retries=1, cache_enabled=False)
        for n in range(5):
            assert (await client.post("/api/chat-optimized", json=chat(f"failover {n}"))).status == 200
        assert await sim_requests(good_url) == 5


async def test_circuit_breaker_opens_and_refuses_without_calling(
    aiohttp_client: MakeClient, tmp_path: Path
) -> None:
    with ServerProcess(tmp_path, "--port", "0", command="simulate", env=SIMULATE_ADMIN_ENV) as sim:
        url = sim.wait_listening()
        client = await gateway(
            aiohttp_client,
            url,
            "ollama",
            retries=0,
            breaker_threshold=2,
            breaker_reset_s=60,
            cache_enabled=False,
        )
        await set_faults(url, [{"fault": "500", "count": 100}])
        for n in range(2):
            assert (await client.post("/api/chat-optimized", json=chat(f"trip {n}"))).status == 502
        before = await sim_requests(url)
        refused = await client.post("/api/chat-optimized", json=chat("refused"))
        assert refused.status == 503
        assert "circuit" in (await refused.json())["error"]["message"]
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
        assert await sim_requests(url) == before
        stats = await (await client.get("/stats")).json()
        assert any(str(row).find("open") >= 0 for row in stats["upstreams"])


async def test_connection_refused_upstream_is_502_naming_it(aiohttp_client: MakeClient) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    client = await gateway(aiohttp_client, url, "ollama", retries=1)
    response = await client.post("/api/chat-optimized", json=chat("anyone?"))
    assert response.status == 502
    assert url in (await response.json())["error"]["message"]
    deep = await client.get("/health", params={"deep": "1"})
    assert deep.status == 503 and (await deep.json())["status"] == "unhealthy"
    assert (await (await client.get("/health")).json())["status"] == "healthy"


async def test_hanging_upstream_is_504(aiohttp_client: MakeClient, tmp_path: Path) -> None:
    with ServerProcess(tmp_path, "--port", "0", command="simulate", env=SIMULATE_ADMIN_ENV) as sim:
        url = sim.wait_listening()
        client = await gateway(aiohttp_client, url, "ollama", retries=0, first_byte_timeout_s=0.3)
        await set_faults(url, [{"fault": "timeout", "count": 1}])
        response = await client.post("/api/chat-optimized", json=chat("hang"))
        assert response.status == 504
        assert "first_byte_timeout_s" in (await response.json())["error"]["message"]


@pytest.fixture
async def openai_client(aiohttp_client: MakeClient, simulator: str) -> AsyncIterator[openai.AsyncOpenAI]:
    client = await gateway(aiohttp_client, simulator + "/v1", "openai", model="gpt-4o-mini")
    sdk = openai.AsyncOpenAI(base_url=str(client.make_url("/v1")), api_key="unused", max_retries=0)
    yield sdk
    await sdk.close()


async def test_official_openai_client(openai_client: openai.AsyncOpenAI, simulator: str) -> None:
    messages: Any = [{"role": "user", "content": "What is the capital of France? (sdk)"}]
    done = await openai_client.chat.completions.create(model="gpt-4o-mini", messages=messages)
    text = done.choices[0].message.content
    assert text and done.choices[0].finish_reason == "stop" and done.object == "chat.completion"
    before = await sim_requests(simulator)
    stream = await openai_client.chat.completions.create(
        model="gpt-4o-mini", messages=messages, stream=True, stream_options={"include_usage": True}
    )
    parts, usage = [], None
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            parts.append(chunk.choices[0].delta.content)
        usage = chunk.usage or usage
    assert "".join(parts) == text
    assert usage is not None and usage.total_tokens > 0
    assert await sim_requests(simulator) == before  # the stream was a cache replay
    models = [m.id async for m in openai_client.models.list()]
    assert models[0] == "gpt-4o-mini"
    with pytest.raises(openai.BadRequestError) as err:
        await openai_client.chat.completions.create(model="gpt-4o-mini", messages=[])
    assert "messages" in str(err.value)


async def test_seed_curl_examples(aiohttp_client: MakeClient, simulator: str) -> None:
    curl = shutil.which("curl")
    assert curl is not None, "curl is needed for the seed's examples (apt-get install curl)"
    client = await gateway(aiohttp_client, simulator, "ollama")
    base = str(client.make_url("")).rstrip("/")

    def run(*args: str) -> str:
        return subprocess.run(
            [curl, "-sf", *args], capture_output=True, text=True, check=True, timeout=30
        ).stdout

    def call(*args: str) -> str:
        return asyncio.get_running_loop().run_in_executor(None, run, *args)  # type: ignore[return-value]

    body = '{"messages": [{"role": "user", "content": "What is Rust?"}], "stream": true}'
    streamed = await call(
        "-X", "POST", f"{base}/api/chat-optimized", "-H", "Content-Type: application/json", "-d", body
    )
    events = sse(streamed)
    assert events[-1]["done"] is True and events[0]["done"] is False
    stats = orjson.loads(await call(f"{base}/api/cache-stats"))
    assert set(stats) >= {
        "timestamp",
        "response_cache",
        "conversation_cache",
        "batch_processor",
        "queue_length",
    }
    # The seed's own example omits the Content-Type, which is what a web page could send cross-site: 415.
    refused = await asyncio.get_running_loop().run_in_executor(
        None,
        lambda: (
            subprocess.run(
                [curl, "-s", "-X", "POST", f"{base}/api/cache-stats", "-d", '{"action":"clear"}'],
                capture_output=True,
                check=True,
                timeout=30,
            ).stdout
        ),
    )
    assert orjson.loads(refused)["error"]["code"] == "unsupported_media_type"
    json_type = ("-H", "Content-Type: application/json")
    cleared = orjson.loads(
        await call("-X", "POST", f"{base}/api/cache-stats", *json_type, "-d", '{"action":"clear"}')
    )
    assert cleared["success"] is True
    assert orjson.loads(await call(f"{base}/api/chat-queue"))["queue_length"] == 0
    assert orjson.loads(await call(f"{base}/health"))["status"] == "healthy"
    assert isinstance(stats["response_cache"]["hit_rate"], float)
    warmed = orjson.loads(
        await call(
            "-X",
            "POST",
            f"{base}/api/cache-stats",
            "-H",
            "Content-Type: application/json",
            "-d",
            '{"action": "warm_model", "data": {"model": "deepseek-r1:8b"}}',
        )
    )
    assert warmed["model"] == "deepseek-r1:8b" and warmed["load_ms"] >= 0
