"""A TCP listener that accepts connections in bursts, for aiohttp's runner (`BurstSite`).

uvloop accepts one connection per turn of its loop. A worker streaming to thousands of clients takes
milliseconds a turn, so a burst of new clients (a load test ramping up 1,000 connections a second) waits in
the listen queue until it overflows, and the kernel drops or resets the rest. asyncio's own loop accepts up
to the backlog at once; this listener does the same on any loop: when the socket is readable it accepts up to
`ACCEPT_BURST` connections and hands each to the loop as an accepted socket, served by aiohttp's protocol as
if the loop had accepted it itself.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import socket
from collections.abc import Callable
from typing import Any

from aiohttp import web

logger = logging.getLogger("llmkit.serve")

# The listen queue of each socket (the kernel caps it at net.core.somaxconn). aiohttp's 128 overflows when
# thousands of clients connect within a second to a busy worker; uvicorn and gunicorn ask for 2048 too.
LISTEN_BACKLOG = 2048
# Connections taken from the queue each time the socket is readable, before the loop's next turn.
ACCEPT_BURST = 512
# accept() errors of one connection (reset before it was taken): skip it, take the next.
_ONE_CONNECTION = frozenset({errno.ECONNABORTED, errno.EPROTO, errno.EPERM})
# accept() errors of a moment of pressure (no file descriptors or memory left): the queue waits this long,
# as asyncio's own loop does, instead of spinning on a socket that stays readable.
_PRESSURE = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
PRESSURE_PAUSE_S = 1.0


def bound_socket(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    """A TCP socket bound to (host, port) (its first address), SO_REUSEADDR and, when asked, SO_REUSEPORT;
    OSError when it cannot bind."""
    family, kind, proto, _, addr = socket.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(addr)
    except OSError:
        sock.close()
        raise
    return sock


def bind_listener(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    """A non-blocking socket listening on (host, port) with LISTEN_BACKLOG; OSError when it cannot bind."""
    sock = bound_socket(host, port, reuse_port=reuse_port)
    try:
        sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class BurstServer:
    """What aiohttp's runner needs of an asyncio server (`sockets`, `close`), accepting in bursts."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket, factory: Callable[[], Any]):
        self._loop = loop
        self._sock = sock
        self._factory = factory
        self._serving = True
        self._accepting: set[asyncio.Task[None]] = set()
        self.sockets: tuple[socket.socket, ...] = (sock,)
        loop.add_reader(sock.fileno(), self._accept)

    def _accept(self) -> None:
        for _ in range(ACCEPT_BURST):
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _ONE_CONNECTION:
                    continue
                if exc.errno not in _PRESSURE:
                    raise
                logger.warning("accepting connections paused for %.0f s: %s", PRESSURE_PAUSE_S, exc)
                self._loop.remove_reader(self._sock.fileno())
                self._loop.call_later(PRESSURE_PAUSE_S, self._resume)
                return
            conn.setblocking(False)
            task = self._loop.create_task(self._serve(conn))
            self._accepting.add(task)
            task.add_done_callback(self._accepting.discard)

    def _resume(self) -> None:
        if self._serving:
            self._loop.add_reader(self._sock.fileno(), self._accept)

    async def _serve(self, conn: socket.socket) -> None:
        try:
            await self._loop.connect_accepted_socket(self._factory, conn)
        except OSError:
            conn.close()  # the client left before its transport was made

    def is_serving(self) -> bool:
        return self._serving

    def close(self) -> None:
        """Stop accepting: no new connection; the ones accepted go on (the runner drains them)."""
        if self._serving:
            self._serving = False
            self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self.sockets = ()

    async def wait_closed(self) -> None:
        if self._accepting:
            await asyncio.gather(*self._accepting, return_exceptions=True)


def listening_site(runner: web.BaseRunner, host: str, port: int, *, reuse_port: bool) -> web.BaseSite:
    """The site serving (host, port): a BurstSite for an IP address; for a name, which may stand for several
    addresses (localhost: 127.0.0.1 and ::1), aiohttp's TCPSite on all of them, with LISTEN_BACKLOG."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return web.TCPSite(runner, host or None, port, backlog=LISTEN_BACKLOG, reuse_port=reuse_port or None)
    return BurstSite(runner, host, port, reuse_port=reuse_port)


class BurstSite(web.BaseSite):
    """aiohttp's TCPSite with a BurstServer behind it: plain HTTP on one address."""

    __slots__ = ("_host", "_port", "_reuse_port")

    def __init__(self, runner: web.BaseRunner, host: str, port: int, *, reuse_port: bool = False) -> None:
        super().__init__(runner, backlog=LISTEN_BACKLOG)
        self._host, self._port, self._reuse_port = host, port, reuse_port

    @property
    def name(self) -> str:
        sockets = self._server.sockets if self._server is not None else ()  # type: ignore[attr-defined]
        port = sockets[0].getsockname()[1] if sockets else self._port
        host = self._host or "0.0.0.0"
        return f"http://{f'[{host}]' if ':' in host else host}:{port}"

    async def start(self) -> None:
        sock = bind_listener(self._host, self._port, reuse_port=self._reuse_port)
        await super().start()
        server = self._runner.server
        assert server is not None
        self._server = BurstServer(asyncio.get_running_loop(), sock, server)  # type: ignore[assignment]
