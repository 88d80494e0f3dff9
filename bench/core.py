"""Core building blocks against same-run baselines: cache gets, token buckets, `llmkit --help` startup.

Run with `make bench` (or `.venv/bin/python bench/core.py`); prints a table, writes bench/results/core.json.
Targets (issue 2): MemoryCache.get >= 500k/s, TieredCache hit >= 300k/s, memory TokenBucket >= 300k/s,
Redis TokenBucket >= 20k/s from one process with pipelining, `llmkit --help` <= 1.2x a bare Typer app.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.startup import measure_help  # noqa: E402
from llmkit.core.cache import MemoryCache, cache_from_url  # noqa: E402
from llmkit.core.limiter import limiter_from_url  # noqa: E402
from tests.servers import RedisServer  # noqa: E402

KEYS = [f"key-{i}" for i in range(1000)]
BATCH = 100  # keys per pipelined round trip for the Redis rows


async def rate(op: Callable[[int], Awaitable[object]], ops_per_call: int = 1, seconds: float = 1.0) -> float:
    """Calls of `op(i)` per second (times `ops_per_call`), best of three windows."""
    best = 0.0
    for _ in range(3):
        count, started = 0, time.perf_counter()
        deadline = started + seconds / 3
        while True:
            for i in range(1000):
                await op(i)
            count += 1000
            now = time.perf_counter()
            if now >= deadline:
                break
        best = max(best, count * ops_per_call / (now - started))
    return best


async def bench_cache(redis_url: str) -> list[dict[str, object]]:
    plain: dict[str, bytes] = {k: b"v" * 64 for k in KEYS}

    async def dict_get(i: int) -> object:
        return plain.get(KEYS[i])

    memory = MemoryCache(max_size_mb=256)
    for k in KEYS:
        await memory.set(k, b"v" * 64)
    tiered = cache_from_url(f"tiered+{redis_url}?prefix=bench&local_ttl=60")
    for k in KEYS:
        await tiered.set(k, b"v" * 64)
    for k in KEYS:  # the first get of each key fills the memory tier
        assert await tiered.get(k) is not None
    baseline = await rate(dict_get)
    rows = [
        row("async dict.get (baseline)", baseline, None, baseline),
        row("MemoryCache.get (hit)", await rate(lambda i: memory.get(KEYS[i])), 500_000, baseline),
        row("TieredCache.get (memory hit)", await rate(lambda i: tiered.get(KEYS[i])), 300_000, baseline),
    ]
    await tiered.clear("")
    await tiered.close()
    await memory.close()
    return rows


async def bench_limiter(redis_url: str) -> list[dict[str, object]]:
    import redis.asyncio as aioredis

    memory = limiter_from_url("memory://")
    bucket = memory.token_bucket("bench", rate=1e9, burst=1_000_000)
    shared = limiter_from_url(f"{redis_url}?prefix=bench")
    redis_bucket = shared.token_bucket("bench", rate=1e9, burst=1_000_000)
    raw = aioredis.Redis.from_url(redis_url)
    batches = [KEYS[i : i + BATCH] for i in range(0, len(KEYS), BATCH)]

    async def raw_pipeline(i: int) -> object:
        pipe = raw.pipeline(transaction=False)
        for key in batches[i % len(batches)]:
            pipe.incr(f"bench:raw:{key}")
        return await pipe.execute()

    plain: dict[str, list[float]] = {}

    async def dict_update(i: int) -> object:
        state = plain.setdefault(KEYS[i], [1.0, 0.0])
        state[0] -= 1
        return state

    baseline = await rate(dict_update)
    raw_rate = await rate(raw_pipeline, BATCH, seconds=2.0)
    rows = [
        row("async dict update (baseline)", baseline, None, baseline),
        row("TokenBucket.acquire (memory)", await rate(lambda i: bucket.acquire(KEYS[i])), 300_000, baseline),
        row(f"raw redis-py INCR, pipelined x{BATCH} (baseline)", raw_rate, None, raw_rate),
        row(
            f"TokenBucket.acquire_many x{BATCH} (redis, Lua)",
            await rate(lambda i: redis_bucket.acquire_many(batches[i % len(batches)]), BATCH, seconds=2.0),
            20_000,
            raw_rate,
        ),
        row(
            f"TokenBucket.acquire x{BATCH} concurrent (redis, auto-batched)",
            await rate(lambda i: concurrent(redis_bucket, batches[i % len(batches)]), BATCH, seconds=2.0),
            20_000,
            raw_rate,
        ),
    ]
    await raw.aclose()
    await shared.close()
    await memory.close()
    return rows


async def concurrent(bucket: object, keys: list[str]) -> object:
    """Many callers at once, as a server's handlers would call it."""
    return await asyncio.gather(*(bucket.acquire(key) for key in keys))  # type: ignore[attr-defined]


def row(name: str, ops: float, target: float | None, baseline: float) -> dict[str, object]:
    return {
        "name": name,
        "ops_per_s": round(ops),
        "vs_baseline": round(ops / baseline, 3),
        "target": target,
        "ok": None if target is None else ops >= target,
    }


async def main_async(redis_url: str) -> list[dict[str, object]]:
    return [*await bench_cache(redis_url), *await bench_limiter(redis_url)]


def main() -> int:
    from rich.console import Console
    from rich.table import Table

    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp))
        server.start()
        try:
            try:
                import uvloop

                rows = uvloop.run(main_async(server.url))
            except ImportError:
                rows = asyncio.run(main_async(server.url))
        finally:
            server.stop()
    help_times = measure_help()
    table = Table(title="llmkit core (ops/s, higher is better)")
    for column in ("benchmark", "ops/s", "x baseline", "target", "ok"):
        table.add_column(column, justify="left" if column == "benchmark" else "right")
    for r in rows:
        target = "" if r["target"] is None else f">= {r['target']:,}"
        ok = "" if r["ok"] is None else ("yes" if r["ok"] else "NO")
        table.add_row(str(r["name"]), f"{r['ops_per_s']:,}", f"{r['vs_baseline']:.2f}", target, ok)
    console = Console()
    console.print(table)
    help_ok = help_times["ratio"] <= 1.2
    console.print(
        f"`llmkit --help` {help_times['llmkit_ms']:.1f} ms vs bare Typer app {help_times['bare_ms']:.1f} ms: "
        f"{help_times['ratio']:.2f}x (target <= 1.20x: {'yes' if help_ok else 'NO'})"
    )
    out = ROOT / "bench" / "results" / "core.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rows": rows, "help": help_times}, indent=2))
    console.print(f"wrote {out.relative_to(ROOT)}")
    return 0 if all(r["ok"] is not False for r in rows) and help_ok else 1


if __name__ == "__main__":
    sys.exit(main())
