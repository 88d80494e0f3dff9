"""The one error hierarchy of llmkit; driver exceptions are wrapped at backend boundaries."""

from __future__ import annotations

import os


class LlmkitError(Exception):
    """Root of every error llmkit raises on purpose."""


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
