"""The one error hierarchy of llmkit; driver exceptions are wrapped at backend boundaries."""

from __future__ import annotations

import os


class LlmkitError(Exception):
    """Root of every error llmkit raises on purpose."""

    def __init__(self, *args: object) -> None:
        # Messages name URLs and settings: mask their credentials here, once, whoever builds the message.
        # Imported here, not at the top: the CLI imports this module, and `llmkit --help` stays lean.
        from llmkit.core.secrets import mask_secrets

        super().__init__(*(mask_secrets(arg) if isinstance(arg, str) else arg for arg in args))


class ConfigError(LlmkitError):
    """Settings, a profile or a URL are wrong; the message says what to change."""


class BackendError(LlmkitError):
    """A backend (Redis, ClickHouse, SQLite) failed or could not be reached."""


class RateLimited(LlmkitError):
    """A token bucket or concurrency limit refused the request."""

    def __init__(self, message: str, retry_after: float = 0.0, remaining: int = 0) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.remaining = remaining


class QueueFull(LlmkitError):
    """A priority queue is at its capacity."""

    def __init__(self, message: str, capacity: int) -> None:
        super().__init__(message)
        self.capacity = capacity


class UpstreamError(LlmkitError):
    """An upstream model server answered an error or could not be reached."""

    def __init__(self, message: str, status: int = 502) -> None:
        super().__init__(message)
        self.status = status


class RetryableError(UpstreamError):
    """A failure a later attempt may not see: 408, 429, 5xx, a lost connection, an attempt timed out."""

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        upstream_status: int | None = None,
        status: int = 502,
    ) -> None:
        super().__init__(message, status)
        # Seconds the upstream asked us to wait (Retry-After), or None when it did not say.
        self.retry_after = retry_after
        # The upstream's HTTP status, or None when there was no answer (connection error, timeout).
        self.upstream_status = upstream_status


class PermanentError(UpstreamError):
    """A failure the same request would meet again: a 4xx other than 408/429, or an answer we cannot read."""

    def __init__(self, message: str, *, upstream_status: int | None = None, status: int = 502) -> None:
        super().__init__(message, status)
        self.upstream_status = upstream_status


class CircuitOpen(UpstreamError):
    """A circuit breaker refuses calls for now: the upstream failed too often in a row."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message, 503)
        # Seconds until the breaker lets a trial call through.
        self.retry_after = retry_after


class ListenError(LlmkitError):
    """The server could not bind its address (in use, not local, no permission)."""

    def __init__(self, host: str, port: int, reason: str, errno: int = 0) -> None:
        super().__init__(f"cannot listen on {host}:{port}: {reason}")
        self.reason = reason
        self.errno = errno

    @classmethod
    def from_os_error(cls, host: str, port: int, exc: OSError) -> ListenError:
        """asyncio's message repeats the address; keep the reason only."""
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        return cls(host, port, reason, exc.errno or 0)
