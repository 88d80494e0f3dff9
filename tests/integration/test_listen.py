"""core/listen.py: a busy uvloop worker takes a burst of new connections in a few turns of its loop."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import aiohttp
import pytest
import uvloop
from aiohttp import web

from llmkit.core.listen import LISTEN_BACKLOG, BurstSite, listening_site

CLIENTS = 300


async def _accept_turns(burst: bool) -> tuple[int, int, str]:
    """Turns of a busy loop (each 5 ms of work) until the CLIENTS connections made meanwhile are all
    accepted; and the answer of a request made afterwards."""

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hello")

    app = web.Application()
    app.router.add_get("/", hello)
    runner = web.AppRunner(app)
    await runner.setup()
    site = BurstSite(runner, "127.0.0.1", 0) if burst else web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    loop = asyncio.get_running_loop()
    turns = [0]

    def busy() -> None:  # a worker busy with other clients: 5 ms of work every turn of its loop
        turns[0] += 1
        time.sleep(0.005)
        loop.call_later(0, busy)  # timer work, as paced streams are (llmkit.simulate.stream.Ticks)

    socks: list[socket.socket] = []
    connect = threading.Thread(
        target=lambda: socks.extend(socket.create_connection(("127.0.0.1", port)) for _ in range(CLIENTS))
    )
    loop.call_soon(busy)
    connect.start()  # the clients connect while the loop is busy
    while connect.is_alive():
        await asyncio.sleep(0)
    start = turns[0]  # all have connected: count the turns until the last one is accepted
    server = runner.server
    assert server is not None
    while len(server.connections) < CLIENTS and turns[0] - start < 2000:
        await asyncio.sleep(0)
    taken = turns[0] - start
    accepted = len(server.connections)
    for sock in socks:
        sock.close()
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/") as response:
        text = await response.text()
    await runner.cleanup()
    assert accepted == CLIENTS
    return taken, accepted, text


def test_a_burst_site_accepts_a_burst_in_a_few_turns_where_uvloop_takes_one_a_turn() -> None:
    burst_turns, _, text = uvloop.run(_accept_turns(True))
    assert text == "hello"
    assert burst_turns <= 3, burst_turns
    # The contrast this listener exists for: uvloop's own server takes a few connections a turn.
    plain_turns, _, _ = uvloop.run(_accept_turns(False))
    assert plain_turns >= 10 * max(burst_turns, 1), (plain_turns, burst_turns)


def test_listening_site_is_a_burst_site_for_an_address_and_aiohttps_for_a_name() -> None:
    async def sites() -> tuple[web.BaseSite, web.BaseSite]:
        runner = web.AppRunner(web.Application())
        await runner.setup()
        try:
            return (
                listening_site(runner, "127.0.0.1", 0, reuse_port=False),
                listening_site(runner, "localhost", 0, reuse_port=False),
            )
        finally:
            await runner.cleanup()

    by_address, by_name = asyncio.run(sites())
    assert isinstance(by_address, BurstSite)
    assert isinstance(by_name, web.TCPSite) and by_name._backlog == LISTEN_BACKLOG


async def test_closing_a_burst_site_stops_accepting_and_frees_the_port() -> None:
    runner = web.AppRunner(web.Application())
    await runner.setup()
    site = BurstSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    assert site.name == f"http://127.0.0.1:{port}"
    await runner.cleanup()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    with socket.socket() as again:  # the port is free to bind again
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(("127.0.0.1", port))
