"""`llmkit gateway` memory under distinct prompts: RSS growth against what /api/cache-stats reports.

Run with `.venv/bin/python bench/gateway_memory.py [--requests N] [--cache-mb MB] [--conversation-mb MB]`.
A real `llmkit simulate` (no latency model) is the upstream of a real `llmkit gateway` (one worker, access
log off, `max_concurrent` 32); N distinct one-message prompts without a conversation id go through
/api/chat-optimized 64 at a time. The baseline is the gateway's own RSS after its first request; the
table compares its growth with the sizes the caches report. Prints a table, writes
bench/results/gateway_memory.json. Budgets of 0 keep the defaults (256 MB response cache, 128 MB
conversations).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.serve_process import ServerProcess  # noqa: E402

QUIET = {"LLMKIT_SERVER_ACCESS_LOG": "false", "LLMKIT_SERVER_LOG_LEVEL": "warning"}
MB = 1024 * 1024


def rss_mb(pid: int) -> float:
    """A process's resident set size in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def flood(url: str, pid: int, requests: int, concurrency: int) -> dict[str, Any]:
    """Distinct prompts through the gateway; RSS before and after, and the caches' reported sizes."""
    import aiohttp

    numbers = iter(range(requests))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

        async def one(n: int) -> None:
            body = {"messages": [{"role": "user", "content": f"distinct prompt {n} about Python"}]}
            async with session.post(f"{url}/api/chat-optimized", json=body) as response:
                await response.read()
                if response.status != 200:
                    raise RuntimeError(f"the gateway answered {response.status}")

        async def worker() -> None:
            for n in numbers:
                await one(n)

        await one(-1)
        before = rss_mb(pid)
        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        seconds = time.perf_counter() - start
        after = rss_mb(pid)
        async with session.get(f"{url}/api/cache-stats") as response:
            stats = await response.json()
    reported = {name: stats[name]["total_size_mb"] for name in ("response_cache", "conversation_cache")}
    return {
        "requests": requests,
        "seconds": seconds,
        "rps": requests / seconds,
        "rss_before_mib": before,
        "rss_after_mib": after,
        "rss_growth_mib": after - before,
        "reported_mib": reported,
        "entries": {name: stats[name]["total_entries"] for name in reported},
        "unreported_mib": after - before - sum(reported.values()),
    }


def table(r: dict[str, Any]) -> str:
    rows = [
        ("requests (distinct, 64 at a time)", f"{r['requests']:,}"),
        ("req/s", f"{r['rps']:,.0f}"),
        ("RSS before / after (MiB)", f"{r['rss_before_mib']:.1f} / {r['rss_after_mib']:.1f}"),
        ("RSS growth (MiB)", f"{r['rss_growth_mib']:.1f}"),
        ("reported response cache (MiB)", f"{r['reported_mib']['response_cache']:.1f}"),
        ("reported conversation cache (MiB)", f"{r['reported_mib']['conversation_cache']:.1f}"),
        ("growth not reported by the caches (MiB)", f"{r['unreported_mib']:.1f}"),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name.ljust(width)}  {value}" for name, value in rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--cache-mb", type=float, default=0, help="gateway.cache_max_size_mb")
    parser.add_argument("--conversation-mb", type=float, default=0, help="gateway.conversation_max_size_mb")
    args = parser.parse_args()
    env = {**QUIET, "LLMKIT_GATEWAY_MAX_CONCURRENT": "32", "LLMKIT_GATEWAY_MAX_QUEUE_SIZE": "10000"}
    if args.cache_mb:
        env["LLMKIT_GATEWAY_CACHE_MAX_SIZE_MB"] = f"{args.cache_mb:g}"
    if args.conversation_mb:
        env["LLMKIT_GATEWAY_CONVERSATION_MAX_SIZE_MB"] = f"{args.conversation_mb:g}"
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        with ServerProcess(tmp, "--port", "0", "--workers", "1", env=QUIET, command="simulate") as sim:
            sim.wait_listening()
            env["LLMKIT_GATEWAY_UPSTREAMS"] = sim.url
            with ServerProcess(tmp, "--port", "0", "--workers", "1", env=env, command="gateway") as gw:
                gw.wait_listening()
                assert gw.proc is not None
                result = asyncio.run(flood(gw.url, gw.proc.pid, args.requests, args.concurrency))
    result["when"] = datetime.datetime.now(datetime.UTC).isoformat()
    result["budgets_mb"] = {"cache": args.cache_mb or 256, "conversation": args.conversation_mb or 128}
    print(table(result))
    out = ROOT / "bench" / "results" / "gateway_memory.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
