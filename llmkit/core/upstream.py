"""UpstreamSession: HTTP to a model server (Ollama, OpenAI-compatible) and the mapping of its failures.

Shared by the orchestrator's backends and the gateway's upstreams: every failure becomes RetryableError or
PermanentError, and a timeout a RetryableError with status 504 that names the limit and its setting.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import orjson

from llmkit.core import telemetry
from llmkit.core.http1 import Http1Client, Http1Response
from llmkit.errors import PermanentError, RetryableError

# aiohttp's ClientSession (the orchestrator's backends) or the lean Http1Client (the gateway's upstreams):
# UpstreamSession uses the part of the API both have.
HttpSession = aiohttp.ClientSession | Http1Client
UpstreamResponse = aiohttp.ClientResponse | Http1Response
SessionFactory = Callable[[], HttpSession]

# Statuses a later attempt may not get: request timeout, rate limit and every server error.
RETRYABLE_STATUSES = frozenset({408, 429})
# In-stream error types and codes (OpenAI's, Anthropic's, ours) that mean "the server failed, try again".
RETRYABLE_CODES = frozenset(
    {
        "server_error",
        "service_unavailable",
        "rate_limit_exceeded",
        "rate_limit_error",
        "overloaded_error",
        "api_error",
        "timeout",
        "internal_error",
        "429",
        "500",
        "502",
        "503",
        "504",
    }
)
_MESSAGE_LIMIT = 500


# Request fields Ollama reads at the top level; every other parameter goes into `options`.
TOP_LEVEL = frozenset({"format", "keep_alive", "think", "tools"})
# OpenAI's names for the options Ollama names differently.
OPTION_NAMES = {"max_tokens": "num_predict", "max_completion_tokens": "num_predict"}


def ollama_fields(parameters: Mapping[str, Any]) -> dict[str, Any]:
    """OpenAI-named parameters as Ollama fields: `options` (max_tokens -> num_predict), top-level ones."""
    fields: dict[str, Any] = {}
    options: dict[str, Any] = {}
    for key, value in parameters.items():
        if key == "options" and isinstance(value, Mapping):
            options.update(value)
        elif key in TOP_LEVEL:
            fields[key] = value
        else:
            options[OPTION_NAMES.get(key, key)] = value
    if options:
        fields["options"] = options
    return fields


def default_session() -> aiohttp.ClientSession:
    """A session without a connection limit: the worker pool already bounds how many jobs run at once."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from `retry-after-ms` or `Retry-After` (seconds or HTTP date); None if not given."""
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def upstream_message(body: bytes) -> str:
    """The message of an error body: OpenAI's `{"error": {"message"}}`, Ollama's `{"error": "..."}`, text."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, dict):
        error = data.get("error", data.get("detail"))
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])[:_MESSAGE_LIMIT]
        if isinstance(error, str) and error:
            return error[:_MESSAGE_LIMIT]
    text = body.decode(errors="replace").strip()
    return text[:_MESSAGE_LIMIT] or "(empty body)"


def status_error(
    backend: str, url: str, status: int, headers: Mapping[str, str], body: bytes, method: str = "POST"
) -> Exception:
    """RetryableError for 408, 429 and 5xx (with Retry-After), PermanentError with the message otherwise."""
    message = f"{backend}: {method} {url} answered {status}: {upstream_message(body)}"
    if status in RETRYABLE_STATUSES or status >= 500:
        return RetryableError(message, retry_after=retry_after(headers), upstream_status=status)
    return PermanentError(message, upstream_status=status)


def in_stream_error(backend: str, error: Any) -> Exception:
    """An error event inside a 200 stream: retryable when its type or code says server failure or rate limit.

    A bare string (Ollama's shape) has no type; the server accepted the request, so the failure is its own.
    """
    if isinstance(error, dict):
        message = str(error.get("message") or error)[:_MESSAGE_LIMIT]
        kinds = {str(error.get("type")), str(error.get("code"))}
        text = f"{backend}: error in the stream ({error.get('code') or error.get('type')}): {message}"
        if kinds & RETRYABLE_CODES:
            return RetryableError(text)
        return PermanentError(text)
    return RetryableError(f"{backend}: error in the stream: {str(error)[:_MESSAGE_LIMIT]}")


def loads(backend: str, raw: bytes) -> Any:
    """JSON from the upstream, or PermanentError quoting what could not be read."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        snippet = raw[:200].decode(errors="replace")
        raise PermanentError(f"{backend}: the answer is not JSON: {snippet!r}") from None


class _IdleTimeout(TimeoutError):
    """No bytes arrived for `seconds` between two reads of a streamed body."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"no data for {seconds:g} s")
        self.seconds = seconds


async def iter_lines(response: UpstreamResponse, idle: float | None = None) -> AsyncIterator[bytes]:
    """The body's lines without their end, as they arrive (SSE and NDJSON lines may be of any length).

    `idle`: the most seconds between two reads; UpstreamSession turns the overrun into a 504.
    """
    buffer = b""
    read = response.content.readany
    while True:
        if idle is None:
            chunk = await read()
        else:
            # A deadline per read (not one rescheduled around the loop): the consumer's own awaits
            # between two lines must not be cut by it.
            deadline = asyncio.timeout(idle)
            try:
                async with deadline:
                    chunk = await read()
            except TimeoutError:
                if deadline.expired():
                    raise _IdleTimeout(idle) from None
                raise
        if not chunk:
            break
        buffer += chunk
        if b"\n" in buffer:
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                yield line.rstrip(b"\r")
    if buffer:
        yield buffer.rstrip(b"\r")


@dataclass(frozen=True, slots=True)
class Timeouts:
    """How long one attempt may wait, in seconds (None: no limit), and the settings section that says so."""

    # The whole attempt, answer included (the orchestrator's backend timeout).
    total: float | None = None
    # Until the TCP (and TLS) connection stands.
    connect: float | None = None
    # Until the response headers; the whole body too when the caller reads it at once.
    first_byte: float | None = None
    # Between two reads of a streamed body (iter_lines).
    idle: float | None = None
    # Named in messages: "gateway" -> "(gateway.first_byte_timeout_s)".
    section: str = ""

    def setting(self, kind: str) -> str:
        """` (section.kind_timeout_s)`, or "" without a section."""
        return f" ({self.section}.{kind}_timeout_s)" if self.section else ""


class SharedSession:
    """One aiohttp session for several upstreams, made on first use inside the running loop."""

    __slots__ = ("_factory", "_session")

    def __init__(self, factory: SessionFactory = default_session) -> None:
        self._factory = factory
        self._session: HttpSession | None = None

    def get(self) -> HttpSession:
        """The session (made now if this is the first use)."""
        if self._session is None:
            self._session = self._factory()
        return self._session

    async def close(self) -> None:
        """Close the session if it was made."""
        if self._session is not None:
            await self._session.close()
        self._session = None


class UpstreamSession:
    """HTTP to one upstream: sends JSON and turns every failure into RetryableError or PermanentError."""

    def __init__(
        self,
        backend: str,
        *,
        timeout: float | Timeouts,
        headers: Mapping[str, str] | None = None,
        session: HttpSession | None = None,
        session_factory: SessionFactory | None = None,
        shared: SharedSession | None = None,
    ) -> None:
        self.backend = backend
        self.timeouts = timeout if isinstance(timeout, Timeouts) else Timeouts(total=timeout)
        self.timeout = self.timeouts.total
        # Applied per request, so it also holds for a session handed in; the first-byte and idle limits
        # are ours (aiohttp's sock_read would cut the wait for the first byte as well).
        self._timeout = aiohttp.ClientTimeout(total=self.timeouts.total, sock_connect=self.timeouts.connect)
        self._headers = {"Content-Type": "application/json", **(headers or {})}
        self._session = session
        # A session handed in (or shared) belongs to the caller, who closes it.
        self._owned = session is None and shared is None
        self._factory = shared.get if shared is not None else session_factory or default_session

    def session(self) -> HttpSession:
        """The session, made on first use (inside the running loop, as aiohttp wants)."""
        if self._session is None:
            self._session = self._factory()
        return self._session

    def post(
        self, url: str, body: Mapping[str, Any], *, whole: bool = False
    ) -> AbstractAsyncContextManager[UpstreamResponse]:
        """POST `body` as JSON and yield the 2xx response (see `request`)."""
        return self.request("POST", url, body, whole=whole)

    @asynccontextmanager
    async def request(
        self, method: str, url: str, body: Mapping[str, Any] | None = None, *, whole: bool = False
    ) -> AsyncIterator[UpstreamResponse]:
        """Send `body` as JSON (none: no body) and yield the 2xx response; errors reading it are mapped too.

        `whole`: the caller reads the body at once, so the first-byte limit covers it as well.
        """
        limits = self.timeouts
        deadline = asyncio.timeout(limits.first_byte)
        data = None if body is None else orjson.dumps(body)
        try:
            async with deadline:
                response = await self.session().request(
                    method, url, data=data, headers=telemetry.inject(self._headers), timeout=self._timeout
                )
                # Leaving it releases the connection to the pool, or closes it when the body was not read.
                async with response:
                    if response.status >= 400:
                        raw = await response.read()
                        raise status_error(self.backend, url, response.status, response.headers, raw, method)
                    if not whole:
                        deadline.reschedule(None)
                    try:
                        yield response
                    except BaseException:
                        # Cancelled or failed halfway: drop the connection, never pool a half-read one.
                        response.close()
                        raise
        except aiohttp.InvalidURL as exc:
            raise PermanentError(f"{self.backend}: invalid URL {url!r}; check the backend URL") from exc
        except _IdleTimeout as exc:
            raise RetryableError(
                f"{self.backend}: {method} {url}: no data for {exc.seconds:g} s mid-stream"
                f"{limits.setting('idle')}",
                status=504,
            ) from None
        except TimeoutError as exc:  # before ClientError: aiohttp.ServerTimeoutError is both
            # Only this attempt's own limits land here; a caller's asyncio.timeout cancels us instead.
            raise RetryableError(
                self._timed_out(method, url, exc, deadline.expired(), whole), status=504
            ) from exc
        except aiohttp.ClientError as exc:
            # Refused or dropped connections, cut streams, broken bodies: the line failed, not the request.
            reason = str(exc) or type(exc).__name__
            raise RetryableError(f"{self.backend}: {method} {url} failed: {reason}") from exc

    def _timed_out(self, method: str, url: str, exc: TimeoutError, first_byte: bool, whole: bool) -> str:
        """Which limit ran out, its value and the setting that holds it."""
        limits, where = self.timeouts, f"{self.backend}: {method} {url}"
        if first_byte and limits.first_byte is not None:
            what = "no answer" if whole else "no first byte"
            return f"{where}: {what} within {limits.first_byte:g} s{limits.setting('first_byte')}"
        if isinstance(exc, aiohttp.ConnectionTimeoutError) and limits.connect is not None:
            return f"{where}: no connection within {limits.connect:g} s{limits.setting('connect')}"
        if limits.total is not None:
            return f"{where}: no answer within {limits.total:g} s"
        return f"{where}: timed out"

    async def close(self) -> None:
        """Close the session if this object made it."""
        if self._owned and self._session is not None:
            await self._session.close()
        self._session = None
