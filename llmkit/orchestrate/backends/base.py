"""What a backend is: the JobSpec it runs, the Backend protocol, and the errors that steer retries."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

# Re-exported: orchestrate code imports the errors that steer retries from here.
from llmkit.errors import CircuitOpen, PermanentError, RetryableError

__all__ = [
    "Backend",
    "CircuitOpen",
    "JobSpec",
    "OnDelta",
    "PermanentError",
    "RetryableError",
]

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


def no_model(backend: str) -> PermanentError:
    """The error of a job that names no model on a backend without a default one."""
    return PermanentError(f"{backend}: no model; give the job a model or set orchestrate.model")
