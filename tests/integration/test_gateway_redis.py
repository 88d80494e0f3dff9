"""Two `llmkit gateway` processes sharing one real Redis: a cache hit across them, and Redis going away."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.serve_process import ServerProcess
from tests.servers import RedisServer


async def post(url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as session, session.post(f"{url}/api/chat-optimized", json=body) as r:
        return r.status, await r.json()


async def upstream_requests(url: str) -> int:
    async with aiohttp.ClientSession() as session, session.get(f"{url}/stats") as response:
        return int((await response.json())["requests"])


@pytest.mark.parametrize("scheme", ["tiered+redis", "redis"])
async def test_cache_shared_by_two_gateways_and_redis_going_away(
    tmp_path: Path, redis_factory: Callable[[], RedisServer], scheme: str
) -> None:
    redis = redis_factory()
    quiet = {"LLMKIT_SERVER_ACCESS_LOG": "false"}
    with ServerProcess(tmp_path, "--port", "0", command="simulate", env=quiet) as sim:
        upstream = sim.wait_listening()
        address = redis.url.split("://", 1)[1]
        env = {
            **quiet,
            "LLMKIT_CACHE_URL": f"{scheme}://{address}?prefix=gw-test&timeout=0.5",
            "LLMKIT_GATEWAY_UPSTREAMS": upstream,
        }
        with (
            ServerProcess(tmp_path, "--port", "0", command="gateway", env=env) as one,
            ServerProcess(tmp_path, "--port", "0", command="gateway", env=env) as two,
        ):
            a, b = one.wait_listening(), two.wait_listening()
            body = {"messages": [{"role": "user", "content": "Shared across replicas?"}]}
            status, first = await post(a, body)
            assert status == 200 and first["cached"] is False
            calls = await upstream_requests(upstream)
            status, second = await post(b, body)
            assert status == 200 and second["cached"] is True
            assert second["message"] == first["message"]
            assert await upstream_requests(upstream) == calls
            redis.stop()
            for n in range(3):
                status, answer = await post(b, {"messages": [{"role": "user", "content": f"Redis down {n}"}]})
                assert status == 200 and answer["message"]["content"]
            status, _ = await post(a, body)
            assert status == 200
