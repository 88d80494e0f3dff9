"""UpstreamSession: the HTTP part shared by the OpenAI and Ollama backends, and their error mapping."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import orjson

from llmkit.orchestrate.backends.base import PermanentError, RetryableError

SessionFactory = Callable[[], aiohttp.ClientSession]

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


def status_error(backend: str, url: str, status: int, headers: Mapping[str, str], body: bytes) -> Exception:
    """RetryableError for 408, 429 and 5xx (with Retry-After), PermanentError with the message otherwise."""
    message = f"{backend}: POST {url} answered {status}: {upstream_message(body)}"
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


def no_model(backend: str) -> PermanentError:
    """The error of a job that names no model on a backend without a default one."""
    return PermanentError(f"{backend}: no model; give the job a model or set orchestrate.model")


def loads(backend: str, raw: bytes) -> Any:
    """JSON from the upstream, or PermanentError quoting what could not be read."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        snippet = raw[:200].decode(errors="replace")
        raise PermanentError(f"{backend}: the answer is not JSON: {snippet!r}") from None


async def iter_lines(response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    """The body's lines without their end, as they arrive (SSE and NDJSON lines may be of any length)."""
    buffer = b""
    async for chunk in response.content.iter_any():
        buffer += chunk
        if b"\n" in buffer:
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                yield line.rstrip(b"\r")
    if buffer:
        yield buffer.rstrip(b"\r")


class UpstreamSession:
    """One aiohttp session for one backend: posts JSON and turns every failure into our two errors."""

    def __init__(
        self,
        backend: str,
        *,
        timeout: float,
        headers: Mapping[str, str] | None = None,
        session: aiohttp.ClientSession | None = None,
        session_factory: SessionFactory | None = None,
    ) -> None:
        self.backend = backend
        self.timeout = timeout
        # Applied per request, so it also holds for a session handed in.
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._headers = {"Content-Type": "application/json", **(headers or {})}
        self._session = session
        # A session handed in belongs to the caller, who closes it.
        self._owned = session is None
        self._factory = session_factory or default_session

    def session(self) -> aiohttp.ClientSession:
        """The session, made on first use (inside the running loop, as aiohttp wants)."""
        if self._session is None:
            self._session = self._factory()
        return self._session

    @asynccontextmanager
    async def post(self, url: str, body: Mapping[str, Any]) -> AsyncIterator[aiohttp.ClientResponse]:
        """POST `body` as JSON and yield the 2xx response; errors while reading it are mapped as well."""
        try:
            async with self.session().post(
                url, data=orjson.dumps(body), headers=self._headers, timeout=self._timeout
            ) as response:
                if response.status >= 400:
                    raise status_error(
                        self.backend, url, response.status, response.headers, await response.read()
                    )
                yield response
        except aiohttp.InvalidURL as exc:
            raise PermanentError(f"{self.backend}: invalid URL {url!r}; check the backend URL") from exc
        except TimeoutError as exc:  # before ClientError: aiohttp.ServerTimeoutError is both
            # Only this attempt's own timeout lands here; a caller's asyncio.timeout cancels us instead.
            raise RetryableError(
                f"{self.backend}: POST {url}: no answer within {self.timeout:g} s", status=504
            ) from exc
        except aiohttp.ClientError as exc:
            # Refused or dropped connections, cut streams, broken bodies: the line failed, not the request.
            reason = str(exc) or type(exc).__name__
            raise RetryableError(f"{self.backend}: POST {url} failed: {reason}") from exc

    async def close(self) -> None:
        """Close the session if this object made it."""
        if self._owned and self._session is not None:
            await self._session.close()
        self._session = None
