"""Session fixtures: real Redis, ClickHouse, PostgreSQL and Prometheus servers on free ports; clean clients
per test."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from llmkit.settings import Settings
from tests.postgres import PostgresServer
from tests.prometheus import PrometheusServer
from tests.servers import ClickHouseServer, RedisServer, SentinelCluster

_counter = itertools.count()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server for the whole session; tests isolate themselves with a unique prefix."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_factory(tmp_path: Path) -> Iterator[Callable[[], RedisServer]]:
    """Start dedicated redis-servers (for tests that stop and restart them); all are stopped after."""
    made: list[RedisServer] = []

    def make() -> RedisServer:
        server = RedisServer(tmp_path / f"redis-{len(made)}")
        server.start()
        made.append(server)
        return server

    yield make
    for server in made:
        server.stop()


@pytest.fixture(scope="module")
def sentinel_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelCluster]:
    """A master, a replica and three sentinels shared by a test module (one that crashes a server
    starts its own with `sentinel_factory`)."""
    cluster = SentinelCluster(tmp_path_factory.mktemp("sentinel"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def sentinel_factory(tmp_path: Path) -> Iterator[Callable[[], SentinelCluster]]:
    """Start dedicated Sentinel clusters (for tests that crash their master); all are stopped after."""
    made: list[SentinelCluster] = []

    def make() -> SentinelCluster:
        cluster = SentinelCluster(tmp_path / f"sentinel-{len(made)}")
        made.append(cluster)
        cluster.start()
        return cluster

    yield make
    for cluster in made:
        cluster.stop()


@pytest.fixture
def redis_prefix() -> str:
    """A key prefix no other test uses."""
    return f"t{next(_counter)}"


@pytest.fixture
async def redis_client(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    """A redis.asyncio client on the session server, closed after the test."""
    client = aioredis.Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


@pytest.fixture(scope="session")
def clickhouse_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClickHouseServer]:
    """One Debian clickhouse-server (temporary config and data dir) for the whole session."""
    server = ClickHouseServer(tmp_path_factory.mktemp("clickhouse"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One Debian PostgreSQL (temporary data dir, password user over TCP) for the whole session."""
    server = PostgresServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def postgres_database_factory(
    postgres_server: PostgresServer,
) -> AsyncIterator[Callable[[], Awaitable[str]]]:
    """Create fresh databases `t_<hex>` on the session server, returning their URLs; all dropped after."""
    made: list[str] = []

    async def make() -> str:
        made.append(await postgres_server.create_database())
        return postgres_server.url_for(made[-1])

    yield make
    if made:
        await postgres_server.drop_databases(*made)


@pytest.fixture
async def postgres_url(postgres_database_factory: Callable[[], Awaitable[str]]) -> str:
    """postgresql://user:password@127.0.0.1:PORT/t_<hex>: a fresh database for this test only."""
    return await postgres_database_factory()


@pytest.fixture
def served_settings(monkeypatch: pytest.MonkeyPatch) -> list[Settings]:
    """The settings each server command would serve with: `run_server` records them and starts nothing."""
    import llmkit.cli.serving

    seen: list[Settings] = []

    def run_server(
        _command: str, _factory: object, settings: Settings, *_args: object, **_kw: object
    ) -> None:
        seen.append(settings)

    monkeypatch.setattr(llmkit.cli.serving, "run_server", run_server)
    return seen


@pytest.fixture(scope="session")
def prometheus_server() -> Iterator[PrometheusServer]:
    """One Debian Prometheus (temporary storage, file_sd targets) for the whole session."""
    server = PrometheusServer()
    server.start()
    yield server
    server.stop()
