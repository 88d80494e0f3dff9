"""Fixtures shared by integration tests: a real simulator app, real orchestrator processes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.test_simulate_app import make_settings, real_server
from tests.serve_process import ServerProcess

# (role, queue URL, **LLMKIT_* variables) -> a listening `llmkit orchestrate` process.
StartOrchestrate = Callable[..., ServerProcess]


@pytest.fixture
async def base_url() -> AsyncIterator[str]:
    """A real `llmkit simulate` app on port 0 with the in-test FixedSource; its base URL."""
    async with real_server(make_settings()) as url:
        yield url


@pytest.fixture
def orchestrate_process(tmp_path: Path) -> Iterator[StartOrchestrate]:
    """Starts `llmkit orchestrate --role ROLE --queue-url URL` processes; stops every one at the end.

    Results are not cached and sessions not rate limited, so every submit is a job a worker runs.
    """
    started: list[ServerProcess] = []

    def run(role: str, queue_url: str, **env: str) -> ServerProcess:
        environment = {
            "LLMKIT_ORCHESTRATE_CACHE_RESULTS": "false",
            "LLMKIT_ORCHESTRATE_RATE_LIMIT_REQUESTS": "0",
            "LLMKIT_SERVER_ACCESS_LOG": "false",
            **env,
        }
        args = ("--port", "0", "--role", role, "--queue-url", queue_url)
        process = ServerProcess(tmp_path, *args, env=environment, command="orchestrate")
        started.append(process.start())
        process.wait_listening()
        return process

    yield run
    for process in started:
        process.close()
