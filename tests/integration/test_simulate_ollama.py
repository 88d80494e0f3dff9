"""Ollama's API of `llmkit simulate`, checked with the official ollama client and raw NDJSON bytes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import ollama
import orjson
import pytest

from llmkit.core.tokenizer import count_tokens
from tests.integration.test_simulate_app import ANSWER, FixedSource, make_settings, real_server
from tests.integration.test_simulate_responses import disconnect_mid_stream

MESSAGES: Any = [{"role": "user", "content": "Halo, apa kabar?"}]
STATS = ("total_duration", "load_duration", "prompt_eval_duration", "eval_duration")


@pytest.fixture
async def client(base_url: str) -> AsyncIterator[ollama.AsyncClient]:
    made = ollama.AsyncClient(host=base_url)
    yield made
    close = getattr(made, "close", None)
    if close is not None:
        await close()
    else:
        await made._client.aclose()


def ndjson(raw: bytes) -> list[dict[str, Any]]:
    """Split an NDJSON body into objects, checking one JSON object per line and a final newline."""
    assert raw.endswith(b"\n")
    lines = raw.split(b"\n")[:-1]
    assert all(line.startswith(b"{") and line.endswith(b"}") for line in lines)
    return [orjson.loads(line) for line in lines]


async def test_chat_non_stream(client: ollama.AsyncClient) -> None:
    answer = await client.chat(model="llama3.2", messages=MESSAGES, stream=False)
    assert answer.model == "llama3.2" and answer.done and answer.done_reason == "stop"
    assert answer.message.role == "assistant" and answer.message.content == ANSWER
    assert answer.eval_count == count_tokens(ANSWER)
    assert answer.prompt_eval_count is not None and answer.prompt_eval_count > count_tokens(
        MESSAGES[0]["content"]
    )
    assert all(isinstance(answer[name], int) and answer[name] >= 0 for name in STATS)
    assert answer.created_at is not None and answer.created_at.endswith("Z")


async def test_chat_stream(client: ollama.AsyncClient) -> None:
    parts = [part async for part in await client.chat(model="m", messages=MESSAGES, stream=True)]
    assert "".join(p.message.content or "" for p in parts) == ANSWER
    assert [p.done for p in parts] == [False] * (len(parts) - 1) + [True]
    last = parts[-1]
    assert last.done_reason == "stop" and last.eval_count == count_tokens(ANSWER)
    assert last.message.content == "" and last.total_duration is not None


async def test_chat_options_num_predict_stop_and_json(client: ollama.AsyncClient) -> None:
    short = await client.chat(model="m", messages=MESSAGES, options={"num_predict": 5})
    assert short.done_reason == "length" and short.eval_count == 5
    assert ANSWER.startswith(short.message.content or "-")
    stopped = await client.chat(model="m", messages=MESSAGES, options={"stop": ["STOP-HERE"]})
    assert stopped.message.content == ANSWER[: ANSWER.index("STOP-HERE")] and stopped.done_reason == "stop"
    unlimited = await client.chat(model="m", messages=MESSAGES, options={"num_predict": -1})
    assert unlimited.message.content == ANSWER
    as_json = await client.chat(model="m", messages=MESSAGES, format="json")
    # JSON mode fits the prompt: with no key named, its content words are the keys.
    fitted = orjson.loads(as_json.message.content or "")
    assert fitted and all(k in MESSAGES[-1]["content"].lower() for k in fitted), fitted


async def test_generate_stream_and_not(client: ollama.AsyncClient) -> None:
    answer = await client.generate(model="m", prompt="Halo", system="Jawab singkat.")
    assert answer.response == ANSWER and answer.done and answer.done_reason == "stop"
    assert answer.context == [] and answer.eval_count == count_tokens(ANSWER)
    parts = [p async for p in await client.generate(model="m", prompt="Halo", stream=True)]
    assert "".join(p.response or "" for p in parts) == ANSWER
    assert parts[-1].done and parts[-1].eval_duration is not None and parts[-1].eval_duration > 0
    loaded = await client.generate(model="m")
    assert loaded.done and loaded.done_reason == "load" and loaded.response == ""


async def test_list_ps_and_version(client: ollama.AsyncClient, base_url: str) -> None:
    listed = await client.list()
    names = [m.model for m in listed.models]
    assert "gpt-4o-mini:latest" in names
    first = listed.models[0]
    assert first.size and first.digest and len(first.digest) == 64 and first.modified_at is not None
    assert first.details is not None and first.details.format == "gguf"
    assert first.details.quantization_level == "Q4_K_M"
    running = await client.ps()
    assert [m.model for m in running.models] == names
    assert running.models[0].expires_at is not None and running.models[0].size_vram == running.models[0].size
    async with aiohttp.ClientSession() as session, session.get(f"{base_url}/api/version") as response:
        assert response.status == 200 and "version" in await response.json()


async def test_stream_is_the_default_and_framed_as_ndjson(base_url: str) -> None:
    body = {"model": "m", "messages": MESSAGES}
    headers = {"x-llmkit-itl-ms": "1"}
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{base_url}/api/chat", json=body, headers=headers) as response:
            assert response.status == 200
            assert response.headers["Content-Type"] == "application/x-ndjson"
            raw = await response.read()
        async with session.post(f"{base_url}/api/generate", json={"model": "m", "prompt": "x"}) as response:
            generated = ndjson(await response.read())
    objects = ndjson(raw)
    # One token per line when tokens arrive one by one.
    assert len(objects) == count_tokens(ANSWER) + 1
    for obj in objects[:-1]:
        assert set(obj) == {"model", "created_at", "message", "done"} and obj["done"] is False
        assert obj["message"]["role"] == "assistant"
    final = objects[-1]
    assert final["done"] is True and final["done_reason"] == "stop" and final["message"]["content"] == ""
    assert final["eval_count"] == count_tokens(ANSWER)
    # Nanoseconds that add up: waiting, time to first token and generation make the total.
    parts = final["load_duration"] + final["prompt_eval_duration"] + final["eval_duration"]
    assert abs(final["total_duration"] - parts) <= 1
    assert final["eval_duration"] >= (count_tokens(ANSWER) - 1) * 1_000_000
    assert "".join(o["response"] for o in generated) == ANSWER and generated[-1]["context"] == []


async def test_durations_follow_the_latency_model(client: ollama.AsyncClient, base_url: str) -> None:
    slow = ollama.AsyncClient(host=base_url, headers={"x-llmkit-ttft-ms": "80", "x-llmkit-itl-ms": "0"})
    try:
        answer = await slow.chat(model="m", messages=MESSAGES, stream=False)
    finally:
        await slow._client.aclose()
    assert answer.prompt_eval_duration is not None and answer.prompt_eval_duration >= 80_000_000
    assert answer.total_duration is not None and answer.total_duration >= 80_000_000


async def test_errors_are_ollama_shaped(client: ollama.AsyncClient, base_url: str) -> None:
    cases: list[tuple[Any, str]] = [
        ({"messages": MESSAGES}, "model is required"),
        ({"model": "m"}, "messages is required"),
        ({"model": "m", "messages": MESSAGES, "options": {"num_predict": "x"}}, "num_predict"),
        ({"model": "m", "messages": [{"role": "robot", "content": "x"}]}, "role"),
    ]
    async with aiohttp.ClientSession() as session:
        for body, words in cases:
            async with session.post(f"{base_url}/api/chat", json=body) as response:
                assert response.status == 400
                error = await response.json()
                assert set(error) == {"error"} and words in error["error"]
        async with session.post(f"{base_url}/api/chat", data=b"{nope") as response:  # any Content-Type
            assert response.status == 400 and "not valid JSON" in (await response.json())["error"]
        # `curl -d` as in Ollama's docs sends a form Content-Type; the JSON body is read all the same.
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        raw_body = orjson.dumps({"model": "m", "prompt": "x", "stream": False})
        async with session.post(f"{base_url}/api/generate", data=raw_body, headers=form) as response:
            assert response.status == 200 and (await response.json())["response"] == ANSWER
    with pytest.raises(ollama.ResponseError) as raised:
        await client.chat(model="m", messages=[{"role": "robot", "content": "x"}])
    assert raised.value.status_code == 400 and "role" in raised.value.error


async def test_source_unavailable_is_503() -> None:
    async with real_server(make_settings(), FixedSource(unavailable=True)) as url:
        client = ollama.AsyncClient(host=url)
        try:
            with pytest.raises(ollama.ResponseError) as raised:
                await client.chat(model="m", messages=MESSAGES, stream=False)
        finally:
            await client._client.aclose()
    assert raised.value.status_code == 503 and "unavailable" in raised.value.error


async def test_stats_count_ollama_requests(client: ollama.AsyncClient, base_url: str) -> None:
    await client.chat(model="m", messages=MESSAGES)
    async with aiohttp.ClientSession() as session, session.get(f"{base_url}/stats") as response:
        stats = await response.json()
    assert stats["requests"] == 1 and stats["tokens_sent"] == count_tokens(ANSWER)
    assert stats["in_flight"] == 0 and stats["limit"]["in_use"] == 0


async def test_disconnect_mid_stream_frees_the_slot(base_url: str) -> None:
    stats = await disconnect_mid_stream(base_url, "/api/chat", {"model": "m", "messages": MESSAGES}, b"\n")
    assert stats["in_flight"] == 0 and stats["active_streams"] == 0 and stats["disconnects"] == 1
    assert stats["limit"]["in_use"] == 0
