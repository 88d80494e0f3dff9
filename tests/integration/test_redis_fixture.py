from __future__ import annotations

import redis.asyncio as aioredis


async def test_redis_fixture_is_a_real_server(redis_client: aioredis.Redis, redis_prefix: str) -> None:
    await redis_client.set(f"{redis_prefix}:k", b"v")
    assert await redis_client.get(f"{redis_prefix}:k") == b"v"
    info = await redis_client.info("server")
    assert "redis_version" in info
