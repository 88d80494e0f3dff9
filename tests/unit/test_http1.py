"""Http1Client against real servers: framing, keep-alive, streaming, failures, UpstreamSession's mapping."""

from __future__ import annotations

import asyncio
import gzip
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from llmkit.core.http1 import Http1Client
from llmkit.core.upstream import SharedSession, Timeouts, UpstreamSession, iter_lines
from llmkit.errors import PermanentError, RetryableError
from tests.servers import free_port

ServerFactory = Callable[[web.Application], Awaitable[TestServer]]
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
TRAILERS = CHUNKED + b"5;foo=bar\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\nX-Other: u\r\n\r\n"
TEXT = b"compress me, " * 50
_GZIP, _DEFLATE = gzip.compress(TEXT), zlib.compress(TEXT)
GZIPPED = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(_GZIP) + _GZIP
# Chunked as well: the decoder must get the body without the chunk framing.
DEFLATED = b"HTTP/1.1 200 OK\r\nContent-Encoding: deflate\r\nTransfer-Encoding: chunked\r\n\r\n"
DEFLATED += b"%x\r\n%s\r\n0\r\n\r\n" % (len(_DEFLATE), _DEFLATE)


@asynccontextmanager
async def raw_server(handler: Handler) -> AsyncIterator[str]:
    """A TCP server on a free port running `handler` per connection; yields its base URL."""
    tasks: set[asyncio.Task[Any]] = set()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            with suppress(ConnectionError, asyncio.IncompleteReadError):  # the client hung up
                await handler(reader, writer)
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()


def answering(reply: bytes, *, close: bool = False, hang_up_next: bool = False) -> Handler:
    """Answer each request on a connection with `reply` (once and close, or once and drop the next one)."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(reply)
            await writer.drain()
            if hang_up_next:
                await reader.readuntil(b"\r\n\r\n")
            if close or hang_up_next:
                return

    return handler


async def fetch(client: Http1Client, url: str, method: str = "GET") -> tuple[int, bytes]:
    """Status and whole body of one request."""
    async with await client.request(method, url) as response:
        return response.status, await response.read()


@pytest.fixture
async def client() -> AsyncIterator[Http1Client]:
    """A client closed after the test."""
    http = Http1Client()
    yield http
    await http.close()


async def test_post_sends_method_target_headers_and_body(
    aiohttp_server: ServerFactory, client: Http1Client
) -> None:
    seen: dict[str, Any] = {}

    async def echo(request: web.Request) -> web.Response:
        seen.update(method=request.method, target=request.path_qs, host=request.host)
        seen.update(custom=request.headers.get("X-Custom"), body=await request.read())
        return web.json_response({"ok": True}, status=201, headers={"X-Reply": "yes"})

    app = web.Application()
    app.router.add_post("/v1/chat", echo)
    server = await aiohttp_server(app)
    url = str(server.make_url("/v1/chat?stream=0&a=b"))
    body = b'{"prompt": "hi"}'
    response = await client.request("POST", url, data=body, headers={"X-Custom": "v1"})
    async with response:
        assert response.status == 201
        assert response.headers.get("x-reply") == response.headers["X-REPLY"] == "yes"
        assert await response.read() == b'{"ok": true}'
    target, host = "/v1/chat?stream=0&a=b", f"127.0.0.1:{server.port}"
    assert seen == {"method": "POST", "target": target, "host": host, "body": body, "custom": "v1"}


async def test_keep_alive_reuses_a_read_connection_but_not_an_unread_one(
    aiohttp_server: ServerFactory, client: Http1Client
) -> None:
    go = asyncio.Event()

    async def peer(request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        body = str(request.transport.get_extra_info("peername")).encode()
        response = web.StreamResponse(headers={"Content-Length": str(len(body))})
        await response.prepare(request)
        if request.path == "/late":
            await go.wait()
        await response.write(body)
        return response

    app = web.Application()
    app.router.add_get("/{name}", peer)
    server = await aiohttp_server(app)
    url = str(server.make_url("/now"))
    peers = {await fetch(client, url) for _ in range(3)}
    assert len(peers) == 1
    assert client.opened == 1
    async with await client.request("GET", str(server.make_url("/late"))) as response:
        assert response.status == 200  # the body, not even sent yet, is left unread
    go.set()
    assert client.opened == 1
    assert (await fetch(client, url))[1] not in {body for _, body in peers}
    assert client.opened == 2


async def test_chunked_pieces_arrive_as_they_are_written(
    aiohttp_server: ServerFactory, client: Http1Client
) -> None:
    go = asyncio.Event()
    ndjson = [b'{"a": 1}\n{"b"', b': 2}\n{"c', b'": 3}\r\n', b'{"d": 4}']

    async def pieces(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        if request.path == "/ndjson":
            for piece in ndjson:
                await response.write(piece)
        else:
            await response.write(b"first")
            await go.wait()
            await response.write(b"second")
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/{name}", pieces)
    server = await aiohttp_server(app)
    try:
        async with asyncio.timeout(10):
            async with await client.request("GET", str(server.make_url("/pieces"))) as response:
                assert response.headers["Transfer-Encoding"] == "chunked"
                got = b""
                while len(got) < len(b"first"):
                    got += await response.content.readany()
                assert got == b"first"  # before the server writes more: it waits for `go`
                go.set()
                while data := await response.content.readany():
                    got += data
                assert got == b"firstsecond"
    finally:
        go.set()
    async with await client.request("GET", str(server.make_url("/ndjson"))) as response:
        lines = [line async for line in iter_lines(response)]
    assert lines == [b'{"a": 1}', b'{"b": 2}', b'{"c": 3}', b'{"d": 4}']
    assert client.opened == 1


@pytest.mark.parametrize(
    ("reply", "method", "status", "body", "opened"),
    [
        pytest.param(b"HTTP/1.1 200 OK\r\n\r\nuntil the close", "GET", 200, b"until the close", 2, id="eof"),
        pytest.param(b"HTTP/1.1 100 Continue\r\n\r\n" + OK, "GET", 200, b"ok", 1, id="100-continue"),
        pytest.param(TRAILERS, "GET", 200, b"hello world", 1, id="chunk-extensions-trailers"),
        pytest.param(b"HTTP/1.1 204 No Content\r\n\r\n", "DELETE", 204, b"", 1, id="204"),
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", "HEAD", 200, b"", 1, id="head"),
        pytest.param(GZIPPED, "GET", 200, TEXT, 1, id="gzip"),
        pytest.param(DEFLATED, "GET", 200, TEXT, 1, id="deflate"),
    ],
)
async def test_raw_framing(
    client: Http1Client, reply: bytes, method: str, status: int, body: bytes, opened: int
) -> None:
    # Two requests: a body read too far or not far enough breaks the second one on a kept connection.
    async with raw_server(answering(reply, close=opened == 2)) as base:
        for _ in range(2):
            assert await fetch(client, f"{base}/x", method) == (status, body)
        assert client.opened == opened


async def test_connection_refused_names_the_address(client: Http1Client) -> None:
    port = free_port()
    with pytest.raises(aiohttp.ClientConnectionError, match=f"127.0.0.1:{port}"):
        await client.request("GET", f"http://127.0.0.1:{port}/")
    assert client.opened == 0


async def test_fresh_connection_closed_unanswered_is_server_disconnected(client: Http1Client) -> None:
    async with raw_server(answering(b"", close=True)) as base:
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await client.request("GET", base)
    assert client.opened == 1


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", id="short-length"),
        pytest.param(CHUNKED + b"5\r\nhel", id="cut-chunk"),
        pytest.param(CHUNKED + b"zz\r\nhello\r\n", id="bad-size"),
        pytest.param(GZIPPED.replace(_GZIP, b"not gzip".ljust(len(_GZIP), b"!")), id="bad-gzip"),
    ],
)
async def test_broken_body_is_payload_error(client: Http1Client, reply: bytes) -> None:
    async with raw_server(answering(reply, close=True)) as base:
        async with await client.request("GET", base) as response:
            assert response.status == 200
            with pytest.raises(aiohttp.ClientPayloadError):
                await response.read()


async def test_malformed_status_line_is_response_error(client: Http1Client) -> None:
    async with raw_server(answering(b"HTP/1.1 200 OK\r\n\r\n", close=True)) as base:
        with pytest.raises(aiohttp.ClientResponseError) as caught:
            await client.request("GET", f"{base}/path")
    assert "not an HTTP/1.x status line: 'HTP/1.1 200 OK'" in str(caught.value)
    assert f"{base}/path" in str(caught.value)


@pytest.mark.parametrize("url", ["ftp://x/file", "http:///no-host", "http://x:port/", "http://[::1/"])
async def test_invalid_url(client: Http1Client, url: str) -> None:
    with pytest.raises(aiohttp.InvalidURL):
        await client.request("GET", url)


@pytest.mark.parametrize(
    ("limit", "kind", "text"),
    [
        (None, aiohttp.ClientConnectionError, "cannot connect to 10.9.9.9:81: Connection timed out"),
        (0.05, aiohttp.ConnectionTimeoutError, "no connection to 10.9.9.9:81 within 0.05 s"),
    ],
    ids=["kernel-etimedout", "our-limit"],
)
async def test_connect_timeouts(
    client: Http1Client, monkeypatch: pytest.MonkeyPatch, limit: float | None, kind: type, text: str
) -> None:
    # A connect that hangs, then the kernel's ETIMEDOUT (a TimeoutError); no localhost server does that.
    async def timed_out(*args: object, **kwargs: object) -> None:
        if limit is not None:
            await asyncio.Event().wait()
        raise TimeoutError(110, "Connection timed out")

    monkeypatch.setattr(asyncio.get_running_loop(), "create_connection", timed_out)
    with pytest.raises(aiohttp.ClientConnectionError) as caught:
        await client.request("GET", "http://10.9.9.9:81/", timeout=aiohttp.ClientTimeout(sock_connect=limit))
    assert type(caught.value) is kind and str(caught.value) == text


@pytest.mark.parametrize("hang_up_next", [False, True], ids=["closed-after-answer", "closed-on-next-request"])
async def test_idle_connection_closed_by_server_is_replaced(client: Http1Client, hang_up_next: bool) -> None:
    async with raw_server(answering(OK, close=True, hang_up_next=hang_up_next)) as base:
        assert await fetch(client, base) == (200, b"ok")
        assert await fetch(client, base) == (200, b"ok")
    assert client.opened == 2


@pytest.fixture
async def upstream() -> AsyncIterator[UpstreamSession]:
    """An UpstreamSession on a shared Http1Client with 0.2 s first-byte and idle limits."""
    shared = SharedSession(Http1Client)
    limits = Timeouts(first_byte=0.2, idle=0.2, section="gateway")
    yield UpstreamSession("test", timeout=limits, shared=shared)
    await shared.close()


@pytest.mark.parametrize(
    ("status", "error", "kind", "text"),
    [
        (500, {"error": {"message": "model exploded"}}, RetryableError, "answered 500: model exploded"),
        (400, {"error": "bad prompt"}, PermanentError, "answered 400: bad prompt"),
    ],
    ids=["500", "400"],
)
async def test_upstream_maps_error_statuses(
    aiohttp_server: ServerFactory,
    upstream: UpstreamSession,
    status: int,
    error: dict[str, Any],
    kind: type[Exception],
    text: str,
) -> None:
    async def fail(request: web.Request) -> web.Response:
        return web.json_response(error, status=status)

    app = web.Application()
    app.router.add_post("/v1/chat", fail)
    url = str((await aiohttp_server(app)).make_url("/v1/chat"))
    with pytest.raises(kind) as caught:
        async with upstream.post(url, {"prompt": "hi"}):
            pass
    assert f"test: POST {url} {text}" in str(caught.value)
    assert getattr(caught.value, "upstream_status", None) == status


async def test_upstream_first_byte_timeout_is_504(upstream: UpstreamSession) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the client gives up

    async with raw_server(silent) as base:
        with pytest.raises(RetryableError) as caught:
            async with upstream.post(base, {}):
                pass
    assert caught.value.status == 504
    assert "no first byte within 0.2 s (gateway.first_byte_timeout_s)" in str(caught.value)


async def test_upstream_stalled_stream_is_504(upstream: UpstreamSession) -> None:
    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(CHUNKED + b"6\r\nline1\n\r\n")
        await reader.read()

    lines: list[bytes] = []
    async with raw_server(stall) as base:
        with pytest.raises(RetryableError) as caught:
            async with upstream.post(base, {}) as response:
                async for line in iter_lines(response, 0.2):
                    lines.append(line)
    assert lines == [b"line1"]
    assert caught.value.status == 504
    assert "no data for 0.2 s mid-stream (gateway.idle_timeout_s)" in str(caught.value)


async def test_upstream_malformed_answer_is_retryable(upstream: UpstreamSession) -> None:
    async with raw_server(answering(b"garbage\r\n\r\n", close=True)) as base:
        with pytest.raises(RetryableError, match="not an HTTP/1.x status line: 'garbage'"):
            async with upstream.post(base, {}):
                pass
