"""Two gateways sharing one Redis and one PostgreSQL behave as one service: exact quotas, prompt revokes."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.serve_process import ServerProcess
from tests.servers import RedisServer

ADMIN = "replica-admin-key-0123456789abcdef"
QUIET = {"LLMKIT_SERVER_ACCESS_LOG": "false", "LLMKIT_SIMULATE_TTFT_MS": "0", "LLMKIT_SIMULATE_ITL_MS": "0"}

pytestmark = [pytest.mark.redis, pytest.mark.postgres]


@contextlib.contextmanager
def replicas(tmp_path: Path, redis: RedisServer, database: str) -> Iterator[list[str]]:
    """A simulator and two gateways in front of it, sharing Redis (quotas, cache) and PostgreSQL (keys)."""
    with ServerProcess(tmp_path, "--port", "0", env=QUIET, command="simulate") as sim:
        upstream = sim.wait_listening()
        env = {
            **QUIET,
            "LLMKIT_GATEWAY_UPSTREAMS": upstream,
            "LLMKIT_GATEWAY_ADMIN_KEY": ADMIN,
            "LLMKIT_GATEWAY_REQUIRE_API_KEY": "true",
            "LLMKIT_GATEWAY_PLATFORM_URL": database,
            "LLMKIT_LIMITER_URL": f"{redis.url}?prefix=replicas{time.monotonic_ns()}",
            "LLMKIT_GATEWAY_CACHE_ENABLED": "false",
        }
        with (
            ServerProcess(tmp_path, "--port", "0", env=env, command="gateway") as one,
            ServerProcess(tmp_path, "--port", "0", env=env, command="gateway") as two,
        ):
            yield [one.wait_listening(), two.wait_listening()]


async def make_key(session: aiohttp.ClientSession, url: str, **quotas: int) -> str:
    admin = {"X-API-Key": ADMIN}
    async with session.post(
        f"{url}/api/admin/tenants", json={"name": "t", "quotas": quotas}, headers=admin
    ) as r:
        assert r.status == 201, await r.text()
        tenant_id = (await r.json())["id"]
    async with session.post(
        f"{url}/api/admin/api-keys", json={"name": "k", "tenant_id": tenant_id}, headers=admin
    ) as r:
        assert r.status == 201
        return str((await r.json())["key"])


async def ask(session: aiohttp.ClientSession, url: str, key: str, n: int) -> int:
    body = {"messages": [{"role": "user", "content": f"question {n}"}]}
    async with session.post(f"{url}/api/chat-optimized", json=body, headers={"X-API-Key": key}) as r:
        await r.read()
        return r.status


async def test_a_tenant_gets_exactly_its_rpm_across_two_replicas(
    tmp_path: Path, redis_server: RedisServer, postgres_url: str
) -> None:
    with replicas(tmp_path, redis_server, postgres_url) as (one, two):
        async with aiohttp.ClientSession() as session:
            key = await make_key(session, one, rpm=7)
            # One burst, half to each replica: a per-process limit would let 14 through.
            statuses = await asyncio.gather(*(ask(session, (one, two)[i % 2], key, i) for i in range(20)))
    assert statuses.count(200) == 7 and statuses.count(429) == 13, statuses


async def test_a_key_revoked_on_one_replica_stops_on_the_other_within_a_second(
    tmp_path: Path, redis_server: RedisServer, postgres_url: str
) -> None:
    with replicas(tmp_path, redis_server, postgres_url) as (one, two):
        async with aiohttp.ClientSession() as session:
            key = await make_key(session, one)
            assert await ask(session, two, key, 0) == 200  # the other replica has it cached now
            key_id = key.split("_")[1]
            async with session.delete(
                f"{one}/api/admin/api-keys/{key_id}", headers={"X-API-Key": ADMIN}
            ) as r:
                assert r.status == 200
            # Each replica reads a key from the store again once its lookup is a second old (keys.py):
            # after that second, the other replica refuses the key, whatever it had cached.
            await asyncio.sleep(1.05)
            assert await ask(session, two, key, 1) == 403
            assert await ask(session, one, key, 2) == 403


async def test_stats_of_a_gateway_with_two_workers_need_a_key_and_cover_both(tmp_path: Path) -> None:
    env = {
        **QUIET,
        "LLMKIT_GATEWAY_ADMIN_KEY": ADMIN,
        "LLMKIT_GATEWAY_REQUIRE_API_KEY": "true",
        "LLMKIT_GATEWAY_PLATFORM_URL": f"sqlite:///{tmp_path}/p.db",
    }
    with ServerProcess(tmp_path, "--port", "0", "--workers", "2", env=env, command="gateway") as gateway:
        url = gateway.wait_listening()
        async with aiohttp.ClientSession() as session:
            for _ in range(40):  # new connections: the kernel spreads them over both workers
                async with session.get(f"{url}/health", headers={"Connection": "close"}) as r:
                    assert r.status == 200
            async with session.get(f"{url}/stats") as r:
                assert r.status == 401  # the workers' sockets are no way around the key
            async with session.get(f"{url}/stats", headers={"X-API-Key": ADMIN}) as r:
                assert r.status == 200
                stats = await r.json()
    assert (stats["workers"]["count"], stats["workers"]["answered"]) == (2, 2)
    assert stats["http"]["requests"] >= 40  # every worker's /health answers (and the refused /stats)
    assert sum(part["http"]["requests"] for part in stats["workers"]["each"]) == stats["http"]["requests"]
    # The gateway's own sections are merged too: one config (the first worker's), summed counters.
    assert stats["config"] == stats["workers"]["each"][0]["config"]
    each = stats["workers"]["each"]
    assert len({part["pid"] for part in each}) == 2  # each worker says which it is
    assert stats["requests"] == {k: sum(part["requests"][k] for part in each) for k in stats["requests"]}
    assert stats["queue"]["max_concurrent"] == sum(part["queue"]["max_concurrent"] for part in each)
