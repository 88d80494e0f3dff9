"""Every server under slow and hostile clients: request-head and keep-alive timeouts, quiet 400s."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from llmkit.core.http import add_route, create_base_app, json_response, read_body, stream_response
from llmkit.core.serve import running
from llmkit.settings import ServerSettings
from tests.serve_process import ServerProcess

# Generous: the timeouts are 1 s; a loaded CI machine may take a while to notice.
SLACK = 10.0
HEAD = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
CHUNKED = (
    b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
)


async def _slow_stream(request: web.Request) -> web.StreamResponse:
    response = stream_response(request)
    await response.prepare(request)
    for _ in range(6):
        await response.write(b"tick\n")
        await asyncio.sleep(0.3)
    await response.write_eof()
    return response


async def _echo(request: web.Request) -> web.Response:
    return json_response({"bytes": len(await read_body(request, lenient=True))})


async def _bug(request: web.Request) -> web.Response:
    raise RuntimeError("a handler bug")


@pytest.fixture
async def served(request: pytest.FixtureRequest) -> AsyncIterator[int]:
    """An app with a stream, an echo and a buggy route, served by core.serve.running on a free port."""
    settings: ServerSettings = getattr(request, "param", ServerSettings(header_timeout_s=1.0))
    app = create_base_app("hostile", settings)
    add_route(app, "GET", "/stream", _slow_stream)
    add_route(app, "POST", "/echo", _echo)
    add_route(app, "GET", "/bug", _bug)
    async with running(app, "127.0.0.1", 0) as (_host, port):
        yield port


async def _closed_by_server(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes the connection (fails if it never does)."""
    return await asyncio.wait_for(reader.read(), SLACK)


async def _response(reader: asyncio.StreamReader) -> bytes:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), SLACK)
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    return head + await asyncio.wait_for(reader.readexactly(length), SLACK)


async def test_silent_and_slow_heads_are_closed_while_others_are_served(served: int) -> None:
    hostile = [b"", b"GET /hea", b"GET /health HTTP/1.1\r\nHost: x\r\n", b"GET /health HTTP/1.1\r\nHost: x\r"]
    conns = [await asyncio.open_connection("127.0.0.1", served) for _ in hostile]
    for (_, writer), data in zip(conns, hostile, strict=True):
        writer.write(data)
    closing = [asyncio.create_task(_closed_by_server(reader)) for reader, _ in conns]
    async with aiohttp.ClientSession() as session:
        # Served normally meanwhile: before, during and after the slow ones are cut.
        while not all(task.done() for task in closing):
            async with session.get(f"http://127.0.0.1:{served}/health") as response:
                assert response.status == 200
            await asyncio.sleep(0.1)
        async with session.get(f"http://127.0.0.1:{served}/health") as response:
            assert response.status == 200
    assert [await task for task in closing] == [b""] * len(hostile)
    for _, writer in conns:
        writer.close()


async def test_a_slow_next_head_on_a_kept_alive_connection_is_closed(served: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", served)
    writer.write(HEAD)
    assert (await _response(reader)).startswith(b"HTTP/1.1 200")
    writer.write(b"GET /health HTTP/1.1\r\nHo")
    assert await _closed_by_server(reader) == b""
    writer.close()


@pytest.mark.parametrize(
    "served", [ServerSettings(header_timeout_s=30, keepalive_timeout_s=1)], indirect=True
)
async def test_an_idle_kept_alive_connection_is_closed_after_keepalive_timeout(served: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", served)
    for _ in range(2):
        writer.write(HEAD)
        assert (await _response(reader)).startswith(b"HTTP/1.1 200")
    assert await _closed_by_server(reader) == b""
    writer.close()


@pytest.mark.parametrize("served", [ServerSettings(header_timeout_s=0.5)], indirect=True)
async def test_the_head_timeout_cuts_neither_a_slow_upload_nor_a_long_stream(served: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", served)
    writer.write(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 8\r\n\r\n"
    )
    for byte in b'"abcdef"':
        # Seconds in all, several head timeouts long.
        await asyncio.sleep(0.25)
        writer.write(bytes([byte]))
    answer = await _response(reader)
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b'{"bytes":8}')
    writer.close()
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{served}/stream") as response:
            assert await response.read() == b"tick\n" * 6


MALFORMED = {
    "nul in a header": b"GET /health HTTP/1.1\r\nHost: x\r\nX-Bad: a\x00b\r\n\r\n",
    "control char in a header": b"GET /health HTTP/1.1\r\nHost: x\r\nX-Bad: a\x01b\r\n\r\n",
    "bad request line": b"GET /health HTTP/9\r\nHost: x\r\n\r\n",
    "not http at all": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
    "bad header name": b"GET /health HTTP/1.1\r\nHost: x\r\nBad Name: y\r\n\r\n",
    "oversize header": b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n",
    "bad chunk size": CHUNKED + b"zz\r\nabc\r\n0\r\n\r\n",
    "bad content-length": b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: -3\r\n\r\nabc",
}


@pytest.mark.parametrize("name", list(MALFORMED))
async def test_a_malformed_request_is_one_quiet_log_line_and_a_json_400(
    served: int, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    reader, writer = await asyncio.open_connection("127.0.0.1", served)
    writer.write(MALFORMED[name])
    answer = await _closed_by_server(reader)
    writer.close()
    status, _, body = answer.partition(b"\r\n\r\n")
    assert status.split(b" ", 2)[1] == b"400", answer
    assert json.loads(body)["error"]["code"] == "bad_request"
    records = [r for r in caplog.records if not r.name.startswith("asyncio")]
    assert [r for r in records if r.levelno >= logging.WARNING or r.exc_info] == []
    assert "Traceback" not in caplog.text
    assert any("bad request" in r.getMessage() for r in records if r.levelno == logging.INFO)


async def test_a_bad_chunk_after_the_head_answers_400_instead_of_hanging(
    served: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    reader, writer = await asyncio.open_connection("127.0.0.1", served)
    writer.write(CHUNKED + b"3\r\nabc\r\n")
    await asyncio.sleep(0.2)
    writer.write(b"zz\r\n")
    answer = await _closed_by_server(reader)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 400"), answer
    assert b'"code":"bad_request"' in answer
    assert [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info] == []


async def test_a_handler_bug_still_logs_its_traceback(served: int, caplog: pytest.LogCaptureFixture) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{served}/bug") as response:
            assert response.status == 500
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is not None
    assert "RuntimeError: a handler bug" in caplog.text


async def test_workers_close_silent_connections_and_answer_bad_requests_quietly(tmp_path: Path) -> None:
    env = {"LLMKIT_SERVER_HEADER_TIMEOUT_S": "1", "LLMKIT_SERVER_LOG_LEVEL": "debug"}
    with ServerProcess(tmp_path, "--port", "0", "--workers", "2", env=env) as server:
        server.wait_listening()
        silent = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(4)]
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(MALFORMED["nul in a header"])
        assert (await _closed_by_server(reader)).startswith(b"HTTP/1.0 400")
        writer.close()
        for silent_reader, silent_writer in silent:
            assert await _closed_by_server(silent_reader) == b""
            silent_writer.close()
        server.signal(signal.SIGTERM)
        assert await asyncio.to_thread(server.wait) == 0
        log = server.stderr
    assert "Traceback" not in log and " ERROR " not in log
    assert "bad request from 127.0.0.1: Invalid header value char" in log
    assert log.count("no complete request head within 1s (server.header_timeout_s)") == 4
