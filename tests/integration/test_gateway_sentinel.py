"""`llmkit gateway` with its cache and tenant quotas on Redis behind Sentinel: the master crashes under load.

While no master answers, each request is answered (200, the cache falling through to its memory tier, or
a 503 naming the quota store), none hangs or fails with a 500; after the failover answers carry the quota
headers again and an answer cached before the crash is still a hit.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from tests.serve_process import ServerProcess
from tests.servers import SentinelCluster

pytestmark = [pytest.mark.redis]

ADMIN = "sentinel-admin-key-0123456789abcdef"
QUIET = {"LLMKIT_SERVER_ACCESS_LOG": "false", "LLMKIT_SIMULATE_TTFT_MS": "0", "LLMKIT_SIMULATE_ITL_MS": "0"}
AFTER = 30  # answers with quota headers after the failover before the load stops
WAIT_S = 60.0


async def test_a_master_crash_under_load_fails_no_request_and_quotas_resume(
    tmp_path: Path, sentinel_factory: Callable[[], SentinelCluster]
) -> None:
    cluster = sentinel_factory()
    prefix = f"gw{time.monotonic_ns()}"
    with ServerProcess(tmp_path, "--port", "0", env=QUIET, command="simulate") as sim:
        env = {
            **QUIET,
            "LLMKIT_GATEWAY_UPSTREAMS": sim.wait_listening(),
            "LLMKIT_GATEWAY_ADMIN_KEY": ADMIN,
            "LLMKIT_GATEWAY_REQUIRE_API_KEY": "true",
            "LLMKIT_LIMITER_URL": cluster.url(prefix=prefix, timeout="1"),
            "LLMKIT_CACHE_URL": "tiered+" + cluster.url(prefix=prefix, timeout="1"),
        }
        with ServerProcess(tmp_path, "--port", "0", env=env, command="gateway") as gateway:
            url = gateway.wait_listening()
            statuses: list[tuple[int, bool]] = []  # (status, carried x-ratelimit-remaining-requests)
            crashed = asyncio.Event()
            after = 0
            timeout = aiohttp.ClientTimeout(total=10)
            async with aiohttp.ClientSession(timeout=timeout) as session:
                admin = {"X-API-Key": ADMIN}
                tenant = {"name": "t", "quotas": {"rpm": 1_000_000, "tpm": 10**9}}
                async with session.post(f"{url}/api/admin/tenants", json=tenant, headers=admin) as r:
                    tenant_id = (await r.json())["id"]
                async with session.post(
                    f"{url}/api/admin/api-keys", json={"name": "k", "tenant_id": tenant_id}, headers=admin
                ) as r:
                    key = (await r.json())["key"]
                headers = {"Authorization": f"Bearer {key}"}

                async def ask(prompt: str) -> aiohttp.ClientResponse:
                    body = {"messages": [{"role": "user", "content": prompt}]}
                    async with session.post(f"{url}/api/chat-optimized", json=body, headers=headers) as r:
                        await r.read()
                        return r

                first = await ask("asked before the crash")
                assert first.status == 200

                async def load(lane: int) -> None:
                    nonlocal after
                    n = 0
                    while after < AFTER:
                        n += 1
                        r = await ask(f"lane {lane} question {n}")
                        quota = "x-ratelimit-remaining-requests" in r.headers
                        statuses.append((r.status, quota))
                        after += crashed.is_set() and r.status == 200 and quota
                        await asyncio.sleep(0.01)

                lanes = [asyncio.create_task(load(lane)) for lane in range(4)]
                while len(statuses) < 40:
                    await asyncio.sleep(0.02)
                await asyncio.to_thread(cluster.crash_master)
                crashed.set()
                await asyncio.wait_for(asyncio.gather(*lanes), WAIT_S)
                again = await ask("asked before the crash")

    assert {status for status, _ in statuses} <= {200, 503}, statuses
    assert after >= AFTER
    assert again.status == 200 and again.headers["X-Gateway-Cache"] == "hit"
