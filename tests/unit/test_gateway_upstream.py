"""What the gateway's upstreams send and how they read answers, against recording servers on port 0."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from llmkit.core.http1 import Http1Client
from llmkit.core.upstream import SharedSession
from llmkit.errors import PermanentError, RetryableError
from llmkit.gateway.calls import ChatCall
from llmkit.gateway.upstream import OllamaUpstream, OpenAIUpstream

MakeServer = Callable[..., Awaitable[TestServer]]
MESSAGES = ({"role": "user", "content": "hi"},)


Reply = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Recorder:
    """A fake model server: records each request (path, headers, JSON body) and answers from `replies`."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, str], Any]] = []
        self.replies: dict[str, Reply] = {}

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read()) if request.can_read_body else None
        self.seen.append((request.path, dict(request.headers), body))
        return await self.replies[request.path](request)


def fixed(response: Callable[[], web.Response]) -> Reply:
    """A reply that is always a fresh copy of one response."""

    async def reply(_request: web.Request) -> web.StreamResponse:
        return response()

    return reply


def streamed(lines: list[bytes]) -> Reply:
    """A chunked reply written line by line."""

    async def reply(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        for line in lines:
            await response.write(line)
        await response.write_eof()
        return response

    return reply


async def serve(aiohttp_server: MakeServer, recorder: Recorder) -> str:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", recorder.handle)
    server = await aiohttp_server(app)
    return str(server.make_url("")).rstrip("/")


@pytest.fixture
async def session() -> Any:
    shared = SharedSession(Http1Client)
    yield shared
    await shared.close()


async def test_ollama_sends_keep_alive_and_options_and_streams_pieces(
    aiohttp_server: MakeServer, session: SharedSession
) -> None:
    recorder = Recorder()
    url = await serve(aiohttp_server, recorder)
    lines = [
        {"message": {"role": "assistant", "content": "Hel"}, "done": False},
        {"message": {"role": "assistant", "content": "lo"}, "done": False},
        {"model": "llama3", "done": True, "done_reason": "length", "prompt_eval_count": 3, "eval_count": 2},
    ]
    recorder.replies["/api/chat"] = streamed([orjson.dumps(line) + b"\n" for line in lines])
    upstream = OllamaUpstream(url, keep_alive="15m", session=session)
    pieces: list[str] = []
    call = ChatCall("llama3", MESSAGES, {"temperature": 0.2, "max_tokens": 5, "format": "json"}, True)
    outcome = await upstream.chat(call, pieces.append)
    assert pieces == ["Hel", "lo"] and outcome.content == "Hello"
    assert outcome.finish_reason == "length" and outcome.upstream == url
    assert outcome.usage == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    _, _, body = recorder.seen[0]
    assert body["keep_alive"] == "15m" and body["stream"] is True and body["format"] == "json"
    assert body["options"] == {"temperature": 0.2, "num_predict": 5}

    # warm_model: a chat with no messages that keeps the model loaded.
    recorder.replies["/api/chat"] = fixed(lambda: web.json_response({"model": "m2", "done": True}))
    await upstream.warm("m2")
    assert recorder.seen[-1][2] == {"model": "m2", "messages": [], "stream": False, "keep_alive": "15m"}


async def test_openai_sends_the_key_asks_for_usage_and_reads_sse(
    aiohttp_server: MakeServer, session: SharedSession
) -> None:
    recorder = Recorder()
    url = await serve(aiohttp_server, recorder) + "/v1"
    events = [
        {"model": "gpt-x", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
        {"choices": [{"index": 0, "delta": {"content": "Hi"}}]},
        {"choices": [{"index": 0, "delta": {"content": " there"}, "finish_reason": "stop"}]},
        {"choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 2}},
    ]
    text = "".join(f"data: {orjson.dumps(e).decode()}\n\n" for e in events) + ": comment\n\ndata: [DONE]\n\n"
    recorder.replies["/v1/chat/completions"] = fixed(
        lambda: web.Response(text=text, content_type="text/event-stream")
    )
    upstream = OpenAIUpstream(url, api_key="sk-test", session=session)
    pieces: list[str] = []
    outcome = await upstream.chat(ChatCall("gpt-x", MESSAGES, {"temperature": 0}, True), pieces.append)
    assert pieces == ["Hi", " there"] and outcome.model == "gpt-x"
    assert outcome.usage == {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}
    path, headers, body = recorder.seen[0]
    assert path == "/v1/chat/completions"
    assert headers["Authorization"] == "Bearer sk-test"
    assert body["stream_options"] == {"include_usage": True} and body["temperature"] == 0

    recorder.replies["/v1/models"] = fixed(lambda: web.json_response({"data": [{"id": "a"}, {"id": "b"}]}))
    assert await upstream.models() == ["a", "b"]


async def test_answers_that_are_errors_map_to_retryable_or_permanent(
    aiohttp_server: MakeServer, session: SharedSession
) -> None:
    recorder = Recorder()
    url = await serve(aiohttp_server, recorder)
    upstream = OllamaUpstream(url, session=session)
    call = ChatCall("m", MESSAGES, {}, False)
    recorder.replies["/api/chat"] = fixed(
        lambda: web.json_response({"error": "model 'm' not found"}, status=404)
    )
    with pytest.raises(PermanentError) as permanent:
        await upstream.chat(call, None)
    assert "model 'm' not found" in str(permanent.value) and url in str(permanent.value)
    recorder.replies["/api/chat"] = fixed(lambda: web.json_response({"done": True}))
    with pytest.raises(PermanentError, match="no message"):
        await upstream.chat(call, None)
    recorder.replies["/api/chat"] = streamed([b'{"message": {"content": "par"}, "done": false}\n'])
    with pytest.raises(RetryableError, match="ended before done"):
        await upstream.chat(ChatCall("m", MESSAGES, {}, True), lambda _p: None)
