"""llmkit.simulate.app over HTTP: SSE bytes, errors, latency, the concurrency limit and disconnects."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from llmkit.core.serve import running
from llmkit.core.tokenizer import count_tokens
from llmkit.settings import ServerSettings, Settings, SimulateSettings
from llmkit.simulate.app import create_app
from llmkit.simulate.openai import TEST_COMPLETION
from llmkit.simulate.sources.base import SourceUnavailable
from llmkit.simulate.state import STATE_KEY

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[..., Awaitable[Client]]

ANSWER = (
    "# Jawaban simulasi\n\n"
    "Halo! Ini adalah jawaban **simulasi** dalam Bahasa Indonesia: selamat pagi, terima kasih 🙏😀👍🏽.\n\n"
    "```python\n"
    "def salam(nama: str) -> str:\n"
    '    return f"Halo, {nama}! 🎉"\n'
    "```\n\n"
    "- Kopi ☕ café naïve — 日本語のテキスト ✓\n"
    "- Angka: 1234567 dan 3.14\n\n"
    "STOP-HERE and then some trailing words.\n"
)


class FixedSource:
    """A source that always answers `text` (or is unavailable), recording the prompts it was asked."""

    name = "fixed"

    def __init__(self, text: str = ANSWER, unavailable: bool = False) -> None:
        self.text = text
        self.unavailable = unavailable
        self.prompts: list[str] = []
        self.started = self.closed = False

    async def start(self) -> None:
        self.started = True

    async def answer(self, prompt: str, rng: random.Random) -> str:
        self.prompts.append(prompt)
        if self.unavailable:
            raise SourceUnavailable("database is down and nothing is cached")
        return self.text

    def stats(self) -> dict[str, Any]:
        return {"answers": len(self.prompts)}

    async def close(self) -> None:
        self.closed = True


def make_settings(**simulate: Any) -> Settings:
    server = simulate.pop("server", ServerSettings(access_log=False))
    return Settings(server=server, simulate=SimulateSettings(**simulate))


def chat_body(prompt: str = "Halo, apa kabar?", **extra: Any) -> dict[str, Any]:
    return {"model": "gpt-test", "messages": [{"role": "user", "content": prompt}], **extra}


@asynccontextmanager
async def real_server(settings: Settings, source: FixedSource | None = None) -> AsyncIterator[str]:
    """The app on a real port-0 socket in this loop; yields its base URL."""
    async with running(create_app(settings, source or FixedSource())) as (host, port):
        yield f"http://{host}:{port}"


def sse_events(raw: bytes) -> list[bytes]:
    """Split an SSE body into its `data:` payloads, checking the exact framing on the way."""
    assert raw.endswith(b"data: [DONE]\n\n")
    parts = raw.split(b"\n\n")
    assert parts[-1] == b""
    events = []
    for part in parts[:-1]:
        assert part.startswith(b"data: ") and b"\n" not in part, part
        events.append(part[len(b"data: ") :])
    return events


def decode_chunks(raw: bytes) -> list[dict[str, Any]]:
    events = sse_events(raw)
    assert events[-1] == b"[DONE]"
    # Each event is valid UTF-8 JSON on its own: no chunk ends inside a multi-byte character.
    return [orjson.loads(e.decode("utf-8")) for e in events[:-1]]


def joined_content(chunks: list[dict[str, Any]], index: int = 0) -> str:
    return "".join(
        c["choices"][0]["delta"].get("content") or ""
        for c in chunks
        if c["choices"] and c["choices"][0]["index"] == index
    )


@pytest.fixture
async def client(aiohttp_client: MakeClient) -> Client:
    return await aiohttp_client(create_app(make_settings(), FixedSource()))


async def error_of(response: aiohttp.ClientResponse, status: int) -> dict[str, Any]:
    assert response.status == status, await response.text()
    body = await response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return dict(body["error"])


async def test_non_stream_answer_and_usage(client: Client) -> None:
    response = await client.post("/v1/chat/completions", json=chat_body())
    assert response.status == 200
    body = await response.json()
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-") and isinstance(body["created"], int)
    assert body["model"] == "gpt-test" and body["system_fingerprint"] == "fp_llmkit"
    choice = body["choices"][0]
    assert choice["message"]["content"] == ANSWER and choice["finish_reason"] == "stop"
    assert body["usage"]["completion_tokens"] == count_tokens(ANSWER)
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


async def test_stream_bytes_framing_and_usage_matches_non_stream(client: Client) -> None:
    plain = await (await client.post("/v1/chat/completions", json=chat_body())).json()
    body = chat_body(stream=True, stream_options={"include_usage": True})
    response = await client.post("/v1/chat/completions", json=body)
    assert response.status == 200
    assert response.content_type == "text/event-stream"
    chunks = decode_chunks(await response.read())
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({c["id"] for c in chunks}) == 1 and len({c["created"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    finish = chunks[-2]["choices"][0]
    assert finish["delta"] == {} and finish["finish_reason"] == "stop"
    usage_chunk = chunks[-1]
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"] == plain["usage"]
    assert joined_content(chunks) == ANSWER


async def test_stream_without_include_usage_has_no_usage_chunk(client: Client) -> None:
    response = await client.post("/v1/chat/completions", json=chat_body(stream=True))
    chunks = decode_chunks(await response.read())
    assert all("usage" not in c and c["choices"] for c in chunks)
    assert joined_content(chunks) == ANSWER


async def test_usage_chunk_always_when_configured(aiohttp_client: MakeClient) -> None:
    client = await aiohttp_client(create_app(make_settings(usage_chunk="always"), FixedSource()))
    response = await client.post("/v1/chat/completions", json=chat_body(stream=True))
    chunks = decode_chunks(await response.read())
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == count_tokens(ANSWER)


@pytest.mark.parametrize("capacity", [1, 2, 1000])
async def test_stream_is_the_same_for_any_channel_capacity(aiohttp_client: MakeClient, capacity: int) -> None:
    long_answer = ANSWER * 50
    client = await aiohttp_client(
        create_app(make_settings(channel_capacity=capacity), FixedSource(long_answer))
    )
    response = await client.post("/v1/chat/completions", json=chat_body(stream=True, n=2))
    chunks = decode_chunks(await response.read())
    assert joined_content(chunks, 0) == joined_content(chunks, 1) == long_answer


async def test_prebuilt_and_timed_streams_send_the_same_events(client: Client) -> None:
    # With no delay the events come from the per-answer memo; a first-token delay sends them one by one.
    body = chat_body(stream=True, n=2, stream_options={"include_usage": True})
    streams = []
    for headers in ({}, {"x-llmkit-ttft-ms": "0.01"}, {}):
        response = await client.post("/v1/chat/completions", json=body, headers=headers)
        chunks = decode_chunks(await response.read())
        assert len({(c["id"], c["created"]) for c in chunks}) == 1
        streams.append(chunks)
    assert streams[0][0]["id"] != streams[2][0]["id"]  # a fresh id for the remembered events too
    fixed = [[{k: v for k, v in c.items() if k not in ("id", "created")} for c in s] for s in streams]
    assert fixed[0] == fixed[1] == fixed[2]


async def test_stream_with_itl_sends_one_token_per_chunk(client: Client) -> None:
    headers = {"x-llmkit-itl-ms": "0.1"}
    response = await client.post("/v1/chat/completions", json=chat_body(stream=True), headers=headers)
    chunks = decode_chunks(await response.read())
    contents = [c["choices"][0]["delta"]["content"] for c in chunks[1:-1]]
    assert all(count_tokens(piece) == 1 for piece in contents)
    assert "".join(contents) == ANSWER


@pytest.fixture
def ticked(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The step of every TokenRun tick (llmkit.simulate.stream), in order."""
    from llmkit.simulate import stream

    steps: list[int] = []
    real_tick = stream.TokenRun.tick

    def spy(run: stream.TokenRun, now: float) -> None:
        steps.append(run.k)
        real_tick(run, now)

    monkeypatch.setattr(stream.TokenRun, "tick", spy)
    return steps


async def test_paced_stream_is_written_by_token_runs_with_the_same_events_as_an_instant_one(
    client: Client, ticked: list[int]
) -> None:
    body = chat_body(stream=True, n=2, max_tokens=6, stream_options={"include_usage": True})
    streams = []
    for itl in ("0", "1"):
        response = await client.post("/v1/chat/completions", json=body, headers={"x-llmkit-itl-ms": itl})
        assert response.status == 200
        streams.append(decode_chunks(await response.read()))
    # The paced stream sends a token a chunk; after its first chunk, every step came from a TokenRun.
    assert ticked and sorted(set(ticked)) == list(range(1, 6))
    paced = [c for c in streams[1] if c["choices"]]
    assert all(count_tokens(c["choices"][0]["delta"].get("content") or "") <= 1 for c in paced)
    for index in (0, 1):
        assert joined_content(streams[1], index) == joined_content(streams[0], index)
        assert count_tokens(joined_content(streams[1], index)) == 6
    assert streams[1][-1]["usage"] == streams[0][-1]["usage"]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/messages", {"model": "claude-test", "max_tokens": 8, "stream": True}),
        ("/v1/responses", {"model": "gpt-test", "max_output_tokens": 8, "stream": True}),
        ("/api/chat", {"model": "llama-test", "options": {"num_predict": 8}}),
    ],
)
async def test_paced_streams_of_the_other_shapes_are_written_by_token_runs_too(
    client: Client, ticked: list[int], path: str, body: dict[str, Any]
) -> None:
    messages = [{"role": "user", "content": "Halo, apa kabar?"}]
    request = (
        {**body, "input": "Halo, apa kabar?"} if path == "/v1/responses" else {**body, "messages": messages}
    )
    texts = []
    for itl in ("0", "1"):
        response = await client.post(path, json=request, headers={"x-llmkit-itl-ms": itl})
        assert response.status == 200
        raw = await response.read()
        # Volatile fields (ids, times, durations) aside, the paced stream carries the same text.
        texts.append(_stream_text(path, raw))
    assert ticked and max(ticked) >= 2
    assert texts[1] == texts[0] and texts[0]


def _stream_text(path: str, raw: bytes) -> str:
    if path == "/api/chat":
        lines = [orjson.loads(line) for line in raw.splitlines() if line]
        return "".join(line["message"]["content"] for line in lines)
    events = [orjson.loads(line[len(b"data: ") :]) for line in raw.split(b"\n") if line.startswith(b"data: ")]
    if path == "/v1/messages":
        return "".join(e["delta"].get("text", "") for e in events if e["type"] == "content_block_delta")
    return "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")


async def test_stream_n_choices_and_max_tokens(client: Client) -> None:
    body = chat_body(stream=True, n=3, max_tokens=7, stream_options={"include_usage": True})
    chunks = decode_chunks(await (await client.post("/v1/chat/completions", json=body)).read())
    texts = [joined_content(chunks, i) for i in range(3)]
    assert len(set(texts)) == 1 and count_tokens(texts[0]) == 7
    reasons = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert sorted(r for r in reasons if r) == ["length"] * 3
    assert chunks[-1]["usage"]["completion_tokens"] == 21


async def test_stop_sequence_cuts_before_it(client: Client) -> None:
    body = chat_body(stop=["STOP-HERE", "never"])
    answer = await (await client.post("/v1/chat/completions", json=body)).json()
    assert answer["choices"][0]["message"]["content"] == ANSWER[: ANSWER.index("STOP-HERE")]
    assert answer["choices"][0]["finish_reason"] == "stop"


async def test_prompt_is_the_last_user_message_text(aiohttp_client: MakeClient) -> None:
    source = FixedSource()
    client = await aiohttp_client(create_app(make_settings(), source))
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": None},
        {"role": "user", "content": [{"type": "text", "text": "apa "}, {"type": "text", "text": "kabar"}]},
    ]
    response = await client.post("/v1/chat/completions", json={"model": "m", "messages": messages})
    assert response.status == 200
    assert source.prompts == ["apa kabar"]


async def test_test_completion_is_the_seed_json(client: Client) -> None:
    response = await client.post("/test_completion")
    assert response.status == 200
    assert await response.json() == TEST_COMPLETION
    assert TEST_COMPLETION["usage"] == {"prompt_tokens": 57, "completion_tokens": 92, "total_tokens": 149}
    assert TEST_COMPLETION["id"] == "chatcmpl-AjoahzpVUCsJmOQZRKZUze7qBjEjn"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": [{"role": "user", "content": "x"}]}, "model"),
        ({"model": "", "messages": [{"role": "user", "content": "x"}]}, "model"),
        ({"model": 3, "messages": [{"role": "user", "content": "x"}]}, "model"),
        ({"model": "m"}, "messages"),
        ({"model": "m", "messages": []}, "messages"),
        ({"model": "m", "messages": [{"role": "robot", "content": "x"}]}, "messages"),
        ({"model": "m", "messages": [{"role": "user", "content": 5}]}, "messages"),
        ({**chat_body(), "n": 0}, "n"),
        ({**chat_body(), "n": 129}, "n"),
        ({**chat_body(), "max_tokens": 0}, "max_tokens"),
        ({**chat_body(), "max_completion_tokens": "9"}, "max_completion_tokens"),
        ({**chat_body(), "stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({**chat_body(), "stream": "yes"}, "stream"),
        ({**chat_body(), "stream_options": {"include_usage": 1}}, "stream_options.include_usage"),
    ],
)
async def test_invalid_parameters_are_400_naming_the_param(
    client: Client, body: dict[str, Any], param: str
) -> None:
    error = await error_of(await client.post("/v1/chat/completions", json=body), 400)
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert param.split(".")[-1] in error["message"]


async def test_malformed_json_non_json_and_unknown_route(client: Client) -> None:
    bad = await client.post(
        "/v1/chat/completions", data=b"{nope", headers={"Content-Type": "application/json"}
    )
    assert (await error_of(bad, 400))["code"] == "invalid_json"
    text = await client.post("/v1/chat/completions", data=b"hi", headers={"Content-Type": "text/plain"})
    assert (await error_of(text, 415))["code"] == "unsupported_media_type"
    missing = await error_of(await client.get("/v1/nowhere"), 404)
    assert missing["type"] == "invalid_request_error" and "/v1/nowhere" in missing["message"]
    model = await error_of(await client.get("/v1/models/gpt-nope"), 404)
    assert model["code"] == "model_not_found"


async def test_body_too_large_is_413(aiohttp_client: MakeClient) -> None:
    settings = make_settings(server=ServerSettings(access_log=False, max_body_mb=0.001))
    client = await aiohttp_client(create_app(settings, FixedSource()))
    response = await client.post("/v1/chat/completions", json=chat_body("x" * 5000))
    assert (await error_of(response, 413))["code"] == "body_too_large"


@pytest.mark.parametrize("header", ["x-llmkit-ttft-ms", "x-llmkit-itl-ms"])
@pytest.mark.parametrize("value", ["abc", "-5", "nan", "1e9"])
async def test_bad_latency_header_is_400_naming_it(client: Client, header: str, value: str) -> None:
    response = await client.post("/v1/chat/completions", json=chat_body(), headers={header: value})
    error = await error_of(response, 400)
    assert error["param"] == header and header in error["message"]


async def test_source_unavailable_is_503(aiohttp_client: MakeClient) -> None:
    client = await aiohttp_client(create_app(make_settings(), FixedSource(unavailable=True)))
    error = await error_of(await client.post("/v1/chat/completions", json=chat_body()), 503)
    assert error["type"] == "service_unavailable"


async def test_models_list_and_retrieve(client: Client) -> None:
    listed = await (await client.get("/v1/models")).json()
    ids = [m["id"] for m in listed["data"]]
    assert listed["object"] == "list" and "gpt-4o-2024-08-06" in ids and "gpt-4o-mini" in ids
    one = await (await client.get("/v1/models/gpt-4o-mini")).json()
    assert one == {**one, "id": "gpt-4o-mini", "object": "model"}


async def test_ttft_header_delays_the_stream(client: Client) -> None:
    start = time.perf_counter()
    response = await client.post(
        "/v1/chat/completions", json=chat_body(stream=True), headers={"x-llmkit-ttft-ms": "300"}
    )
    chunks = decode_chunks(await response.read())
    assert time.perf_counter() - start >= 0.25
    assert joined_content(chunks) == ANSWER


async def test_stats_count_requests_tokens_and_answers(aiohttp_client: MakeClient) -> None:
    app = create_app(make_settings(), FixedSource())
    client = await aiohttp_client(app)
    await (await client.post("/v1/chat/completions", json=chat_body())).read()
    await (await client.post("/v1/chat/completions", json=chat_body(stream=True, max_tokens=3))).read()
    stats = await (await client.get("/stats")).json()
    assert stats["requests"] == 2 and stats["in_flight"] == 0 and stats["active_streams"] == 0
    assert stats["tokens_sent"] == count_tokens(ANSWER) + 3
    assert stats["answers"] == {"stop": 1, "length": 1}
    assert stats["prompt_tokens"] > 0 and stats["rejected"] == 0
    assert stats["source"] == {"name": "fixed", "answers": 2}
    assert "hits" in stats["cache"]
    assert app[STATE_KEY].source.started  # type: ignore[attr-defined]
    metrics = await (await client.get("/metrics")).text()
    assert "llmkit_http_requests_total" in metrics


async def _read_first_event(response: aiohttp.ClientResponse) -> bytes:
    line = await response.content.readuntil(b"\n\n")
    assert line.startswith(b"data: ")
    return line


def _await_chain(task: asyncio.Task[Any]) -> list[str]:
    """File names of the coroutines a task is suspended in, outermost first."""
    names: list[str] = []
    coro: Any = task.get_coro()
    while coro is not None:
        code = getattr(coro, "cr_code", None) or getattr(coro, "gi_code", None)
        if code is not None:
            names.append(code.co_filename)
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return names


def _simulate_frames() -> list[asyncio.Task[Any]]:
    """Tasks currently suspended inside llmkit.simulate code (a stream handler left behind)."""
    current = asyncio.current_task()
    return [
        task
        for task in asyncio.all_tasks()
        if task is not current and any("llmkit/simulate" in name for name in _await_chain(task))
    ]


async def _wait_stats(session: aiohttp.ClientSession, url: str, **want: int) -> dict[str, Any]:
    deadline = time.monotonic() + 5
    while True:
        async with session.get(f"{url}/stats") as response:
            stats = dict(await response.json())
        if all(stats[k] == v for k, v in want.items()) or time.monotonic() > deadline:
            return stats
        await asyncio.sleep(0.02)


async def test_busy_slot_gives_429_with_retry_after() -> None:
    settings = make_settings(semaphore_limit=1, queue_timeout_ms=50)
    slow = {"x-llmkit-itl-ms": "50"}
    async with real_server(settings) as url, aiohttp.ClientSession() as session:
        async with session.post(
            f"{url}/v1/chat/completions", json=chat_body(stream=True), headers=slow
        ) as first:
            await _read_first_event(first)
            async with session.post(f"{url}/v1/chat/completions", json=chat_body()) as second:
                error = await error_of(second, 429)
                assert second.headers["Retry-After"] == "1"
            assert error["type"] == "rate_limit_exceeded" and error["code"] == "rate_limit_exceeded"
        stats = await _wait_stats(session, url, in_flight=0)
        assert stats["rejected"] == 1


async def test_disconnect_mid_stream_frees_the_slot_and_leaves_no_task() -> None:
    settings = make_settings(semaphore_limit=1, queue_timeout_ms=50, ttft_ms=0, itl_ms=200)
    async with real_server(settings) as url, aiohttp.ClientSession() as session:
        first = await session.post(f"{url}/v1/chat/completions", json=chat_body(stream=True))
        await _read_first_event(first)
        stats = await _wait_stats(session, url, in_flight=1)
        assert stats["in_flight"] == 1 and stats["active_streams"] == 1
        assert len(_simulate_frames()) == 1
        first.close()  # drops the connection mid-stream
        stats = await _wait_stats(session, url, in_flight=0, active_streams=0)
        assert stats["in_flight"] == 0 and stats["active_streams"] == 0 and stats["disconnects"] == 1
        assert stats["limit"]["in_use"] == 0
        assert _simulate_frames() == []
        headers = {"x-llmkit-itl-ms": "0"}
        async with session.post(f"{url}/v1/chat/completions", json=chat_body(), headers=headers) as nxt:
            assert nxt.status == 200
            assert (await nxt.json())["choices"][0]["message"]["content"] == ANSWER


async def test_disconnect_while_a_non_stream_answer_waits_frees_the_slot() -> None:
    settings = make_settings(semaphore_limit=1, queue_timeout_ms=50, ttft_ms=30_000)
    async with real_server(settings) as url, aiohttp.ClientSession() as session:
        waiting = asyncio.create_task(session.post(f"{url}/v1/chat/completions", json=chat_body()))
        await _wait_stats(session, url, in_flight=1)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        stats = await _wait_stats(session, url, in_flight=0)
        assert stats["in_flight"] == 0 and stats["disconnects"] == 1
        assert _simulate_frames() == []


async def test_disconnect_during_ttft_frees_the_slot() -> None:
    settings = make_settings(semaphore_limit=1, queue_timeout_ms=50, ttft_ms=30_000)
    async with real_server(settings) as url, aiohttp.ClientSession() as session:
        # Headers go out at once; the first event waits for the 30 s time to first token.
        first = await session.post(f"{url}/v1/chat/completions", json=chat_body(stream=True))
        assert first.status == 200
        await _wait_stats(session, url, in_flight=1)
        assert len(_simulate_frames()) == 1
        first.close()
        stats = await _wait_stats(session, url, in_flight=0)
        assert stats["in_flight"] == 0 and stats["limit"]["in_use"] == 0
        assert _simulate_frames() == []
