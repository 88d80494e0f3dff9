"""llmkit.core.serve + llmkit.cli.serving: a real server subprocess on port 0, as CI scripts run it."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from llmkit.core.http import add_route, create_base_app, json_response
from llmkit.core.serve import running
from llmkit.errors import ListenError
from llmkit.settings import ServerSettings
from tests.serve_process import ServerProcess, listening_re

MakeServer = Callable[..., ServerProcess]
LOG_LINE_RE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (DEBUG|INFO|WARNING) ")


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[MakeServer]:
    """Start `tests.serve_app` processes; every one is stopped and its pipe closed after the test."""
    made: list[ServerProcess] = []

    def make(*args: str, env: dict[str, str] | None = None) -> ServerProcess:
        server = ServerProcess(tmp_path, *args, env=env).start()
        made.append(server)
        return server

    yield make
    for server in made:
        server.close()


async def get_json(session: aiohttp.ClientSession, url: str, close: bool = False) -> dict[str, Any]:
    headers = {"Connection": "close"} if close else {}
    async with session.get(url, headers=headers) as response:
        assert response.status == 200, await response.text()
        return dict(await response.json())


async def test_port_0_prints_the_listening_line_and_serves(make_server: MakeServer) -> None:
    server = make_server("--port", "0")
    url = server.wait_listening()
    assert server.port > 0
    async with aiohttp.ClientSession() as session:
        health = await get_json(session, f"{url}/health")
    assert health["status"] == "ok"
    assert health["service"] == "serve-test"
    assert server.proc is not None and health["pid"] == server.proc.pid
    server.signal(signal.SIGTERM)
    assert await asyncio.to_thread(server.wait) == 0
    assert [line for line in server.rest_of_stdout() if listening_re("serve-test").match(line)] == [
        server.stdout_lines[0]
    ]
    assert len(server.stdout_lines) == 1


async def test_sigterm_lets_the_in_flight_request_finish_then_exits_0(make_server: MakeServer) -> None:
    server = make_server("--port", "0")
    url = server.wait_listening()
    async with aiohttp.ClientSession() as session:
        slow = asyncio.ensure_future(session.get(f"{url}/slow"))
        # The handler has started once /stats counts it; then the drain begins under it.
        while (await get_json(session, f"{url}/stats"))["demo"] != {"slow_started": 1, "slow_done": 0}:
            await asyncio.sleep(0.02)
        server.signal(signal.SIGTERM)
        async with await slow as response:
            assert response.status == 200
            assert (await response.json())["done"] is True
        assert await asyncio.to_thread(server.wait) == 0
        with pytest.raises(aiohttp.ClientConnectionError):
            await session.get(f"{url}/health")
    assert "SIGTERM received; draining" in server.stderr
    assert "cleanup ran" in server.stderr


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_a_stop_grace_answers_health_503_while_still_serving_then_drains(
    make_server: MakeServer, workers: str
) -> None:
    # What a load balancer sees: its health check fails first, the requests it still sends are answered.
    server = make_server("--port", "0", "--workers", workers, env={"LLMKIT_SERVER_STOP_GRACE_S": "2"})
    url = server.wait_listening()
    async with aiohttp.ClientSession() as session:
        server.signal(signal.SIGTERM)
        deadline = asyncio.get_running_loop().time() + 10
        while True:  # with workers, the supervisor passes the signal on: a moment later
            async with session.get(f"{url}/health", headers={"Connection": "close"}) as response:
                if response.status == 503:
                    body = await response.json()
                    break
            assert asyncio.get_running_loop().time() < deadline, "/health never turned 503"
            await asyncio.sleep(0.02)
        assert body["status"] == "draining" and "another replica" in body["message"]
        stats = await get_json(session, f"{url}/stats", close=True)  # still served during the grace
        assert "demo" in stats
        assert await asyncio.to_thread(server.wait) == 0
    assert "/health answers 503 draining for 2s" in server.stderr
    assert "cleanup ran" in server.stderr


async def test_sigint_drains_too(make_server: MakeServer) -> None:
    server = make_server("--port", "0")
    server.wait_listening()
    server.signal(signal.SIGINT)
    assert await asyncio.to_thread(server.wait) == 0
    assert "SIGINT received; draining" in server.stderr
    assert "cleanup ran" in server.stderr


async def pids_answering(session: aiohttp.ClientSession, url: str, want: int, exclude: set[int]) -> set[int]:
    """Worker pids seen on /health (one new connection per request) until `want` new ones answered."""
    seen: set[int] = set()
    for _ in range(2000):
        async with session.get(f"{url}/health", headers={"Connection": "close"}) as response:
            pid = int((await response.json())["pid"])
        if pid not in exclude:
            seen.add(pid)
        if len(seen) >= want:
            return seen
    raise AssertionError(f"only pids {seen} answered")


async def test_two_workers_share_the_port_and_announce_once(make_server: MakeServer) -> None:
    server = make_server("--port", "0", "--workers", "2")
    url = server.wait_listening()
    assert server.proc is not None
    async with aiohttp.ClientSession() as session:
        pids = await pids_answering(session, url, 2, exclude=set())
    assert server.proc.pid not in pids
    server.signal(signal.SIGTERM)
    assert await asyncio.to_thread(server.wait) == 0
    assert len(server.rest_of_stdout()) == 1
    assert server.stderr.count("cleanup ran") == 2


async def test_a_worker_that_dies_is_restarted(make_server: MakeServer) -> None:
    server = make_server("--port", "0", "--workers", "2")
    url = server.wait_listening()
    async with aiohttp.ClientSession() as session:
        first = await pids_answering(session, url, 2, exclude=set())
        victim = min(first)
        os.kill(victim, signal.SIGKILL)
        replacement = await pids_answering(session, url, 1, exclude=first)
    assert replacement
    assert f"worker {victim} died unexpectedly" in server.stderr
    server.signal(signal.SIGTERM)
    assert await asyncio.to_thread(server.wait) == 0


async def test_sigterm_with_workers_drains_in_flight_requests(make_server: MakeServer) -> None:
    server = make_server("--port", "0", "--workers", "2")
    url = server.wait_listening()
    async with aiohttp.ClientSession() as session:
        slow = asyncio.ensure_future(session.get(f"{url}/slow"))
        # /stats sums every worker's counters and lists each one's: poll until the request is in one.
        while True:
            stats = await get_json(session, f"{url}/stats")
            if stats["demo"] == {"slow_started": 1, "slow_done": 0}:
                break
            await asyncio.sleep(0.02)
        (holder,) = [part["pid"] for part in stats["workers"]["each"] if part["demo"]["slow_started"]]
        server.signal(signal.SIGTERM)
        async with await slow as response:
            assert response.status == 200, server.stderr
            assert (await response.json())["pid"] == holder
    assert await asyncio.to_thread(server.wait) == 0


@pytest.mark.parametrize("workers", ["1", "2"])
def test_port_in_use_is_a_one_line_error_and_exit_1(make_server: MakeServer, workers: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = make_server("--port", str(port), "--workers", workers)
        code = server.wait(60)
    assert code == 1
    assert server.rest_of_stdout() == []
    # Log lines (the app's cleanup ran) may precede it; the error itself is one line, no traceback.
    errors = [line for line in server.stderr.splitlines() if not LOG_LINE_RE.match(line)]
    assert errors == [f"llmkit: cannot listen on 127.0.0.1:{port}: Address already in use"]


@pytest.mark.parametrize("workers", ["1", "2"])
def test_an_app_that_fails_to_start_is_a_one_line_config_error(make_server: MakeServer, workers: str) -> None:
    server = make_server("--port", "0", "--workers", workers, env={"SERVE_APP_FAIL": "1"})
    assert server.wait(60) == 2
    assert server.rest_of_stdout() == []
    errors = [line for line in server.stderr.splitlines() if not LOG_LINE_RE.match(line)]
    assert errors == ["llmkit: configuration error: SERVE_APP_FAIL is set; unset it to start the test app"]


async def test_running_serves_an_app_in_process_on_port_0() -> None:
    async def hello(request: web.Request) -> web.Response:
        return json_response({"hello": "world"})

    app = create_base_app("embedded", ServerSettings())
    add_route(app, "GET", "/hello", hello)
    async with running(app, "127.0.0.1", 0) as (host, port):
        assert port > 0
        async with aiohttp.ClientSession() as session:
            assert await get_json(session, f"http://{host}:{port}/hello") == {"hello": "world"}


async def test_a_burst_of_connections_to_a_busy_worker_waits_in_the_listen_queue() -> None:
    """600 clients connect while the worker's loop is busy: all are queued by the kernel (aiohttp's
    default backlog of 128 would drop the rest, and their connects time out or are reset)."""
    import resource
    import threading
    import time

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4096:  # both ends of 600 connections are in this process
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(4096, hard) if hard > 0 else 4096, hard))

    app = create_base_app("embedded", ServerSettings())
    async with running(app, "127.0.0.1", 0) as (host, port):
        connected: list[socket.socket] = []
        failed: list[OSError] = []

        def connect_all() -> None:
            for _ in range(600):
                try:
                    connected.append(socket.create_connection((host, port), timeout=0.5))
                except OSError as exc:
                    failed.append(exc)

        burst = threading.Thread(target=connect_all)
        burst.start()
        time.sleep(1.5)  # the loop is busy: nothing is accepted while the burst connects
        burst.join()
        try:
            assert (len(connected), failed[:1]) == (600, [])
        finally:
            for sock in connected:
                sock.close()


async def test_running_reports_a_taken_port_as_listen_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ListenError, match="Address already in use"):
            async with running(create_base_app("x", ServerSettings()), "127.0.0.1", port):
                pass


async def test_stats_and_metrics_of_two_workers_cover_both(make_server: MakeServer) -> None:
    server = make_server("--port", "0", "--workers", "2")
    url = server.wait_listening()
    async with aiohttp.ClientSession() as session:
        for _ in range(60):  # a new connection each: the kernel spreads them over both workers
            async with session.get(f"{url}/health", headers={"Connection": "close"}) as response:
                assert response.status == 200
        stats = await get_json(session, f"{url}/stats")
        assert stats["http"]["requests"] == 60
        workers = stats["workers"]
        assert (workers["count"], workers["answered"]) == (2, 2)
        each = {part["pid"]: part["http"]["requests"] for part in workers["each"]}
        assert len(each) == 2 and sum(each.values()) == 60 and min(each.values()) > 0
        own = await get_json(session, f"{url}/stats?workers=self")
        assert "workers" not in own and own["pid"] in each
        async with session.get(f"{url}/metrics") as response:
            text = await response.text()
        async with session.get(f"{url}/stats?workers=some") as response:
            assert response.status == 400
            assert "workers must be all or self" in (await response.json())["error"]["message"]
    health = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "llmkit_http_requests_total" and sample.labels["route"] == "/health":
                health[sample.labels["worker"]] = health.get(sample.labels["worker"], 0) + sample.value
    assert set(health) == {"0", "1"} and sum(health.values()) == 60
    server.signal(signal.SIGTERM)
    assert await asyncio.to_thread(server.wait) == 0


async def test_a_restarted_worker_answers_for_its_slot_again(make_server: MakeServer) -> None:
    server = make_server("--port", "0", "--workers", "2")
    url = server.wait_listening()
    async with aiohttp.ClientSession() as session:
        first = await pids_answering(session, url, 2, exclude=set())
        os.kill(min(first), signal.SIGKILL)
        await pids_answering(session, url, 1, exclude=first)
        stats = await get_json(session, f"{url}/stats", close=True)
    assert (stats["workers"]["count"], stats["workers"]["answered"]) == (2, 2)
    pids = {part["pid"] for part in stats["workers"]["each"]}
    assert min(first) not in pids and len(pids) == 2
    server.signal(signal.SIGTERM)
    assert await asyncio.to_thread(server.wait) == 0
