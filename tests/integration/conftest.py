"""Fixtures shared by integration tests: a real simulator app, real orchestrator processes, platform stores
(`store_url` / `store`: the platform store contracts run on SQLite, then a real PostgreSQL; a module
defining its own fixture of that name, as the analytics and aggregator contracts do, uses its own)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from llmkit.platform.store import platform_store_from_url
from llmkit.platform.store.base import PlatformStore
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


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh store's URL: a SQLite file in the test's directory, or a new PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/platform.db"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[PlatformStore]:
    """The store at `store_url`, open (migrated) for the test."""
    s = platform_store_from_url(store_url)
    await s.open()
    yield s
    await s.close()
