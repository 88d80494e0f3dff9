"""What a backend is: the JobSpec it runs, the Backend protocol, and the errors that steer retries."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from llmkit.errors import UpstreamError

# Called with each piece of text while a job streams; the pieces joined are the text `run` returns.
OnDelta = Callable[[str], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class JobSpec:
    """What a backend needs to run one job: the prompt, the model, sampling parameters, streaming or not."""

    prompt: str
    # "" = the backend's default model.
    model: str = ""
    # temperature, max_tokens, top_p, stop, seed...: passed on in the upstream's own request.
    parameters: Mapping[str, Any] = field(default_factory=dict)
    # True: the upstream streams and `on_delta` (when given) gets each piece as it arrives.
    stream: bool = False


class Backend(Protocol):
    """Runs jobs against one model server (or none, for echo)."""

    name: str

    async def run(self, job: JobSpec, on_delta: OnDelta | None = None) -> str:
        """The whole answer; when `job.stream`, `on_delta` gets each piece first."""
        ...

    async def close(self) -> None:
        """Release connections; the backend is not used afterwards."""
        ...


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
    """The circuit breaker refuses calls for now: the upstream failed too often in a row."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message, 503)
        # Seconds until the breaker lets a trial call through.
        self.retry_after = retry_after
