"""Subprocess for test_limiter_redis, in one of two modes.

`limiter_worker.py bucket REDIS_URL PREFIX BUCKET RATE BURST SECONDS` prints `ready` once connected, waits
for a line on stdin, hammers the bucket's key "shared" for SECONDS, then prints one JSON line with the counts
and the Redis server time before the first and after the last call.

`limiter_worker.py hold REDIS_URL PREFIX LIMIT SIZE LEASE` takes one slot of a concurrency limit, prints
`held` and keeps it (renewing its lease) until killed.
"""

from __future__ import annotations

import asyncio
import json
import sys

from llmkit.core.limiter import limiter_from_url
from llmkit.core.limiter.redis import RedisLimiter

TASKS = 8


async def redis_time(limiter: RedisLimiter) -> float:
    seconds, micros = await limiter.client.time()
    return seconds + micros / 1_000_000


async def main(url: str, prefix: str, name: str, rate: float, burst: int, seconds: float) -> None:
    limiter = limiter_from_url(f"{url}?prefix={prefix}")
    assert isinstance(limiter, RedisLimiter)
    try:
        bucket = limiter.token_bucket(name, rate, burst)
        await limiter.client.ping()
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)
        counts = {"allowed": 0, "refused": 0}
        loop = asyncio.get_running_loop()
        start = await redis_time(limiter)
        stop_at = loop.time() + seconds

        async def hammer() -> None:
            while loop.time() < stop_at:
                decision = await bucket.acquire("shared")
                counts["allowed" if decision.allowed else "refused"] += 1

        await asyncio.gather(*(hammer() for _ in range(TASKS)))
        end = await redis_time(limiter)
        print(json.dumps({**counts, "start": start, "end": end}), flush=True)
    finally:
        await limiter.close()


async def hold(url: str, prefix: str, name: str, size: int, lease: float) -> None:
    limiter = limiter_from_url(f"{url}?prefix={prefix}&lease={lease}")
    try:
        await limiter.concurrency_limit(name, size).acquire(timeout=10)
        print("held", flush=True)
        await asyncio.Event().wait()
    finally:
        await limiter.close()


if __name__ == "__main__":
    if sys.argv[1] == "bucket":
        url, prefix, name, rate, burst, seconds = sys.argv[2:8]
        asyncio.run(main(url, prefix, name, float(rate), int(burst), float(seconds)))
    else:
        url, prefix, name, size, lease = sys.argv[2:7]
        asyncio.run(hold(url, prefix, name, int(size), float(lease)))
