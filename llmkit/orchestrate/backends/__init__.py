"""Backends that run orchestrate jobs (echo, openai, ollama), chosen by name through one explicit table."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from llmkit.errors import ConfigError
from llmkit.orchestrate.backends.base import (
    Backend,
    CircuitOpen,
    JobSpec,
    OnDelta,
    PermanentError,
    RetryableError,
)

__all__ = [
    "BACKENDS",
    "Backend",
    "CircuitOpen",
    "JobSpec",
    "OnDelta",
    "PermanentError",
    "RetryableError",
    "backend_from_settings",
]


@dataclass(frozen=True, slots=True)
class BackendOptions:
    """The settings every builder may read."""

    base_url: str
    api_key: str
    model: str
    delay_s: float
    timeout: float
    retries: int


def _echo(options: BackendOptions) -> Backend:
    from llmkit.orchestrate.backends.echo import EchoBackend

    # Echo cannot fail, so no resilience layer: it is the benchmarked path.
    return EchoBackend(options.delay_s)


def _openai(options: BackendOptions) -> Backend:
    from llmkit.orchestrate.backends.openai import OpenAIBackend
    from llmkit.orchestrate.backends.resilience import ResilientBackend

    inner = OpenAIBackend(options.base_url, options.api_key, options.model, timeout=options.timeout)
    return ResilientBackend(inner, retries=options.retries)


def _ollama(options: BackendOptions) -> Backend:
    from llmkit.orchestrate.backends.ollama import OllamaBackend
    from llmkit.orchestrate.backends.resilience import ResilientBackend

    inner = OllamaBackend(options.base_url, options.model, timeout=options.timeout)
    return ResilientBackend(inner, retries=options.retries)


# The one table of backend names; modules are imported when their backend is built.
BACKENDS: dict[str, Callable[[BackendOptions], Backend]] = {
    "echo": _echo,
    "openai": _openai,
    "ollama": _ollama,
}


def backend_from_settings(
    name: str,
    *,
    base_url: str = "",
    api_key: str = "",
    model: str = "",
    delay_s: float = 0.0,
    timeout: float = 300.0,
    retries: int = 3,
) -> Backend:
    """The backend called `name`; openai and ollama come wrapped in a ResilientBackend (retries, breaker)."""
    build = BACKENDS.get(name)
    if build is None:
        raise ConfigError(f"unknown backend {name!r}; known backends: {', '.join(BACKENDS)}")
    if name != "echo" and not base_url:
        raise ConfigError(f"backend {name} needs a URL (orchestrate.backend_url)")
    return build(BackendOptions(base_url, api_key, model, delay_s, timeout, retries))
