"""Http1Client: a lean HTTP/1.1 client with keep-alive connections, for the gateway's upstream calls.

aiohttp's ClientSession spends ~60 us of CPU on a small request and its answer; this client ~18 us
(bench/gateway.py measures what that gives). It speaks the part of ClientSession's API that
llmkit.core.upstream.UpstreamSession uses (`request(method, url, data=, headers=, timeout=)` giving a
response with `status`, `headers`, `read()`, `content.readany()`, `close()`, `async with`), and raises
aiohttp's exception types, so UpstreamSession maps its failures as it maps aiohttp's.

What it does: http and https, Content-Length, chunked and close-delimited bodies, gzip and deflate,
1xx answers skipped, keep-alive per origin (an idle connection is reused for KEEPALIVE_S at most), and
one retry on a fresh connection when a reused one turns out closed before any byte of the answer (the
server closed it while idle). What it does not: proxies, redirects, cookies, HTTP/2, Expect: 100-continue.
"""

from __future__ import annotations

import asyncio
import ssl
import time
import zlib
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

KEEPALIVE_S = 30.0
MAX_IDLE_PER_ORIGIN = 256
MAX_HEAD_BYTES = 64 * 1024
# Reading pauses while this much of a body waits for its reader.
HIGH_WATER = 1024 * 1024
_NO_BODY = frozenset({204, 304})

Origin = tuple[str, str, int]


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection: a byte buffer the response reader takes from."""

    __slots__ = ("buffer", "eof", "error", "idle_since", "paused", "transport", "waiter")

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.eof = False
        self.error: BaseException | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.paused = False
        self.idle_since = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) > HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self.error = exc
        self._wake()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def more(self) -> bool:
        """Wait for more bytes; False at end of stream."""
        if self.eof:
            return False
        if self.paused and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()
        self.waiter = asyncio.get_running_loop().create_future()
        try:
            await self.waiter
        finally:
            self.waiter = None
        return bool(self.buffer) or not self.eof

    def take(self, size: int = -1) -> bytes:
        """Up to `size` buffered bytes (all when -1)."""
        if size < 0 or size >= len(self.buffer):
            data = bytes(self.buffer)
            self.buffer.clear()
        else:
            data = bytes(self.buffer[:size])
            del self.buffer[:size]
        return data

    def reusable(self) -> bool:
        """Open, idle and not told to close: fit for another request."""
        transport = self.transport
        return transport is not None and not transport.is_closing() and not self.eof and not self.buffer

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class Http1Response:
    """A response whose body is read as it arrives; leaving `async with` gives the connection back."""

    def __init__(self, client: Http1Client, origin: Origin, conn: _Connection, method: str, url: str) -> None:
        self._client = client
        self._origin = origin
        self._conn = conn
        self._method = method
        self._url = url
        self.status = 0
        self.reason = ""
        self.headers: CIMultiDict[str] = CIMultiDict()
        self.keep_alive = True
        # Body framing: "length" (self._left bytes to go), "chunked" (self._left of the current chunk,
        # -1 before a size line), "eof" (until the server closes), "none".
        self._framing = "none"
        self._left = 0
        self._done = False
        self._released = False
        self._decoder: Any = None
        # The response object is its own `content` stream, as aiohttp's `response.content.readany()`.
        self.content = self

    async def read_head(self) -> None:
        """Read the status line and headers (skipping 1xx answers); raise ServerDisconnectedError if none."""
        conn = self._conn
        while True:
            start = 0
            while (end := conn.buffer.find(b"\r\n\r\n", start)) < 0:
                if len(conn.buffer) > MAX_HEAD_BYTES:
                    raise self._bad_head(f"response head longer than {MAX_HEAD_BYTES} bytes")
                start = max(0, len(conn.buffer) - 3)
                if not await conn.more():
                    raise aiohttp.ServerDisconnectedError("the server closed the connection unanswered")
            head = conn.take(end + 4)[:-4].decode("latin-1")
            lines = head.split("\r\n")
            parts = lines[0].split(" ", 2)
            if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
                raise self._bad_head(f"not an HTTP/1.x status line: {lines[0][:100]!r}")
            status = int(parts[1])
            if 100 <= status < 200:
                continue
            self.status, self.reason = status, parts[2] if len(parts) > 2 else ""
            headers = self.headers
            for line in lines[1:]:
                name, colon, value = line.partition(":")
                if colon:
                    headers.add(name.strip(), value.strip())
            self._frame(parts[0])
            return

    def _bad_head(self, message: str) -> aiohttp.ClientResponseError:
        # With the request's info: str() of a ClientResponseError without one raises AttributeError.
        url = URL(self._url)
        info = aiohttp.RequestInfo(url, self._method, CIMultiDictProxy(CIMultiDict()), url)
        return aiohttp.ClientResponseError(info, (), message=message)

    def _frame(self, version: str) -> None:
        headers = self.headers
        connection = headers.get("Connection", "").lower()
        self.keep_alive = "close" not in connection and (version != "HTTP/1.0" or "keep-alive" in connection)
        if self._method == "HEAD" or self.status in _NO_BODY:
            self._framing, self._done = "none", True
        elif "chunked" in headers.get("Transfer-Encoding", "").lower():
            self._framing, self._left = "chunked", -1
        elif (length := headers.get("Content-Length")) is not None and length.strip().isdigit():
            self._framing, self._left = "length", int(length)
            self._done = self._left == 0
        else:
            self._framing, self.keep_alive = "eof", False
        encoding = headers.get("Content-Encoding", "").lower()
        if encoding in ("gzip", "x-gzip"):
            self._decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            self._decoder = zlib.decompressobj()

    async def readany(self) -> bytes:
        """The next body bytes that arrived (b"" at the end of the body)."""
        while not self._done:
            data = self._next()
            if data is None:
                if not await self._conn.more() and self._framing != "eof":
                    raise aiohttp.ClientPayloadError(
                        "the server closed the connection before the end of the body"
                    )
                if self._framing == "eof" and self._conn.eof and not self._conn.buffer:
                    self._done = True
                continue
            if data and self._decoder is not None:
                data = self._decode(data)
            if data:
                return data
        if self._decoder is not None:
            tail, self._decoder = self._decode(b""), None
            return tail
        return b""

    def _decode(self, data: bytes) -> bytes:
        """`data` decompressed (b"": the decoder's rest); a corrupt body is a ClientPayloadError."""
        try:
            return self._decoder.decompress(data) if data else self._decoder.flush()
        except zlib.error as exc:
            encoding = self.headers.get("Content-Encoding")
            raise aiohttp.ClientPayloadError(f"cannot decode the {encoding} body: {exc}") from None

    def _next(self) -> bytes | None:
        """Body bytes from the buffer (b"" when framing alone advanced), None when more must arrive."""
        conn = self._conn
        if not conn.buffer:
            return None
        if self._framing == "length":
            data = conn.take(self._left)
            self._left -= len(data)
            self._done = self._left == 0
            return data
        if self._framing == "eof":
            return conn.take()
        return self._chunk()

    def _chunk(self) -> bytes | None:
        buffer = self._conn.buffer
        if self._left > 0:
            data = self._conn.take(self._left)
            self._left -= len(data)
            if self._left == 0:
                self._left = -2  # the CRLF after the data
            return data
        end = buffer.find(b"\r\n")
        if end < 0:
            return None
        line = bytes(buffer[:end])
        del buffer[: end + 2]
        if self._left == -2:  # the CRLF after a chunk's data
            self._left = -1
            return b""
        if self._left == -3:  # trailer lines, until an empty one
            self._done = not line
            return b""
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise aiohttp.ClientPayloadError(f"bad chunk size line {line[:40]!r}") from None
        self._left = size if size else -3
        return b""

    async def read(self) -> bytes:
        """The whole (rest of the) body."""
        parts = []
        while data := await self.readany():
            parts.append(data)
        return b"".join(parts)

    def close(self) -> None:
        """Drop the connection (a body read halfway cannot be followed by another request)."""
        if not self._released:
            self._released = True
            self._conn.close()

    def release(self) -> None:
        """Give the connection back for reuse when the body was read to its end, else close it."""
        if self._released:
            return
        self._released = True
        if self._done and self.keep_alive and self._conn.reusable():
            self._client.put(self._origin, self._conn)
        else:
            self._conn.close()

    async def __aenter__(self) -> Http1Response:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release()


class Http1Client:
    """Keep-alive HTTP/1.1 connections per origin; `request` as aiohttp.ClientSession's (a subset)."""

    def __init__(
        self, *, ssl_context: ssl.SSLContext | None = None, keepalive_s: float = KEEPALIVE_S
    ) -> None:
        self._idle: dict[Origin, list[_Connection]] = {}
        self._ssl = ssl_context
        self.keepalive_s = keepalive_s
        self.closed = False
        self.opened = 0  # connections made, for tests and stats

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context()
        return self._ssl

    async def request(
        self,
        method: str,
        url: str,
        *,
        data: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: aiohttp.ClientTimeout | None = None,
    ) -> Http1Response:
        """Send the request and read the answer's head; `timeout.sock_connect` bounds a new connection."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:  # a bad port or IPv6 literal
            raise aiohttp.InvalidURL(url) from None
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not parts.hostname:
            raise aiohttp.InvalidURL(url)
        port = port or (443 if scheme == "https" else 80)
        origin = (scheme, parts.hostname, port)
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        host = parts.netloc.rpartition("@")[2]
        lines = [f"{method} {target} HTTP/1.1", f"Host: {host}", "Accept-Encoding: gzip, deflate"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        if data is not None or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(data or b'')}")
        payload = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (data or b"")
        connect = timeout.sock_connect if timeout is not None else None
        conn, reused = self._take(origin), True
        if conn is None:
            conn, reused = await self._connect(origin, connect), False
        while True:
            response = Http1Response(self, origin, conn, method, url)
            assert conn.transport is not None
            conn.transport.write(payload)
            try:
                await response.read_head()
            except aiohttp.ServerDisconnectedError:
                conn.close()
                if not reused:
                    raise
                # The server closed the idle connection as we reused it: once more on a fresh one.
                conn, reused = await self._connect(origin, connect), False
                continue
            except BaseException:
                conn.close()
                raise
            return response

    def _take(self, origin: Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        if not idle:
            return None
        limit = time.monotonic() - self.keepalive_s
        while idle:
            conn = idle.pop()
            if conn.idle_since >= limit and conn.reusable():
                return conn
            conn.close()
        return None

    async def _connect(self, origin: Origin, timeout: float | None) -> _Connection:
        scheme, host, port = origin
        loop = asyncio.get_running_loop()
        tls = self._ssl_context() if scheme == "https" else None
        deadline = asyncio.timeout(timeout)
        try:
            async with deadline:
                _, conn = await loop.create_connection(
                    _Connection, host, port, ssl=tls, server_hostname=host if tls else None
                )
        except OSError as exc:
            # The kernel's own ETIMEDOUT is a TimeoutError too, and may come with no limit of ours.
            if deadline.expired():
                raise aiohttp.ConnectionTimeoutError(
                    f"no connection to {host}:{port} within {timeout:g} s"
                ) from None
            reason = exc.strerror or str(exc) or type(exc).__name__
            raise aiohttp.ClientConnectionError(f"cannot connect to {host}:{port}: {reason}") from exc
        self.opened += 1
        return conn

    def put(self, origin: Origin, conn: _Connection) -> None:
        """Keep an idle connection for the next request to `origin`."""
        idle = self._idle.setdefault(origin, [])
        if self.closed or len(idle) >= MAX_IDLE_PER_ORIGIN:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        idle.append(conn)

    async def close(self) -> None:
        """Close the idle connections; connections in use close when their response is released."""
        self.closed = True
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()
