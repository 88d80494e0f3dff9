"""`llmkit orchestrate` with the echo backend: REST and WebSocket job rates, and overhead over a direct call.

Run with `.venv/bin/python bench/orchestrate.py [--jobs N]` (or `make bench`). The server is a real
`llmkit orchestrate` process (echo backend, no delay, cache off so every job runs, rate limit off, access
log off); the clients are this process. Prints a table, writes bench/results/orchestrate.json, exits 1
when a target is missed.
Targets (issue 5): submit + long-poll result over REST >= 3,000 jobs/s; over one WebSocket >= 10,000
jobs/s; p50 overhead over calling the echo backend directly, at concurrency 1, <= 1 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from llmkit.orchestrate.backends.base import JobSpec  # noqa: E402
from llmkit.orchestrate.backends.echo import EchoBackend  # noqa: E402
from tests.serve_process import ServerProcess  # noqa: E402

ENV = {
    "LLMKIT_SERVER_ACCESS_LOG": "false",
    "LLMKIT_ORCHESTRATE_CACHE_RESULTS": "false",
    "LLMKIT_ORCHESTRATE_RATE_LIMIT_REQUESTS": "0",
    "LLMKIT_ORCHESTRATE_CONCURRENCY": "64",
    "LLMKIT_QUEUE_CAPACITY": "1000000",
}


async def rest(url: str, jobs: int, concurrency: int) -> dict[str, Any]:
    """`jobs` submits, each followed by a long-poll of its result, `concurrency` clients at once."""
    import aiohttp

    latencies: list[float] = []
    left = iter(range(jobs))

    async def client(session: aiohttp.ClientSession) -> None:
        for n in left:
            start = time.perf_counter()
            async with session.post(f"{url}/api/v1/infer", json={"prompt": f"job {n}"}) as response:
                job = await response.json()
            async with session.get(f"{url}/api/v1/result/{job['request_id']}?timeout=30") as response:
                done = await response.json()
            if done["status"] != "completed":
                raise RuntimeError(f"job ended {done}")
            latencies.append(time.perf_counter() - start)

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        start = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    return {"jobs": jobs, "seconds": elapsed, "jobs_per_s": jobs / elapsed, "p50_ms": _p50(latencies)}


async def websocket(url: str, jobs: int, window: int) -> dict[str, Any]:
    """`jobs` over one WebSocket with up to `window` in flight."""
    import aiohttp

    async with aiohttp.ClientSession() as session, session.ws_connect(f"{url}/api/v1/stream") as ws:
        start = time.perf_counter()
        sent = done = 0
        while done < jobs:
            while sent < jobs and sent - done < window:
                await ws.send_str(f'{{"prompt": "job {sent}"}}')
                sent += 1
            message = json.loads((await ws.receive()).data)
            if message.get("status") == "completed":
                done += 1
            elif "error" in message:
                raise RuntimeError(f"job failed: {message}")
        elapsed = time.perf_counter() - start
    return {"jobs": jobs, "seconds": elapsed, "jobs_per_s": jobs / elapsed}


async def overhead(url: str, jobs: int) -> dict[str, Any]:
    """p50 of submit + result at concurrency 1 against p50 of calling the echo backend directly."""
    backend = EchoBackend()
    direct = []
    for n in range(jobs):
        start = time.perf_counter()
        await backend.run(JobSpec(f"job {n}"))
        direct.append(time.perf_counter() - start)
    served = (await rest(url, jobs, 1))["p50_ms"]
    base = _p50(direct)
    return {"direct_p50_ms": base, "served_p50_ms": served, "overhead_p50_ms": served - base}


def _p50(values: list[float]) -> float:
    return statistics.median(values) * 1000 if values else 0.0


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="llmkit-bench-orchestrate-") as tmp:
        with ServerProcess(Path(tmp), "--port", "0", env=ENV, command="orchestrate") as server:
            url = server.wait_listening()
            await rest(url, 500, 16)  # warm-up
            rest_runs = [await rest(url, args.jobs // 2, 32) for _ in range(2)]
            ws_runs = [await websocket(url, args.jobs, 256) for _ in range(2)]
            results = {
                "rest": max(rest_runs, key=lambda r: r["jobs_per_s"]),
                "websocket": max(ws_runs, key=lambda r: r["jobs_per_s"]),
                "overhead": await overhead(url, 2000),
                "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            }
    r, w, o = results["rest"], results["websocket"], results["overhead"]
    print(f"REST submit + long-poll, 32 clients   {r['jobs_per_s']:>10,.0f} jobs/s   (target >= 3,000)")
    print(f"WebSocket, one connection, 256 in flight {w['jobs_per_s']:>7,.0f} jobs/s   (target >= 10,000)")
    print(
        f"overhead at concurrency 1: p50 {o['served_p50_ms']:.3f} ms served"
        f" - {o['direct_p50_ms']:.4f} ms direct "
        f"= {o['overhead_p50_ms']:.3f} ms   (target <= 1 ms)"
    )
    out = ROOT / "bench" / "results" / "orchestrate.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    missed = [
        name
        for ok, name in (
            (r["jobs_per_s"] >= 3000, "REST >= 3,000 jobs/s"),
            (w["jobs_per_s"] >= 10_000, "WebSocket >= 10,000 jobs/s"),
            (o["overhead_p50_ms"] <= 1.0, "p50 overhead <= 1 ms"),
        )
        if not ok
    ]
    for name in missed:
        print(f"MISSED: {name}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
