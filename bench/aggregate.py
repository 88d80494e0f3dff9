"""`llmkit aggregate` durable ingest against a raw SQLite `executemany` of the same rows, in the same run.

Run with `.venv/bin/python bench/aggregate.py [--events N] [--rss-events N]` (or `make bench`). The server
is a real `llmkit aggregate` process (ack durable, sync full, access log off); the publisher is this
process (aiohttp, bodies serialized before the clock starts); both share this machine's cores.
Prints a table, writes bench/results/aggregate.json, exits 1 when a target is missed.
Targets (issue 4): 100,000 events with 20% duplicates in batches of 1,000 at >= 50,000 events/s end to
end and >= 40% of the raw executemany; single-event POSTs from 64 clients >= 3,000 events/s; server RSS
grows by < 50 MB over 1,000,000 events.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import random
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from llmkit.aggregate.events import rows_of  # noqa: E402
from llmkit.aggregate.store.sqlite import COUNT, INSERT, SCHEMA  # noqa: E402
from tests.serve_process import ServerProcess  # noqa: E402

BATCH = 1000
DUPLICATES = 0.2
TOPICS = 4
SINGLE_CLIENTS = 64


def make_events(count: int, start: int = 0, seed: int = 1) -> list[dict[str, Any]]:
    """`count` events of which DUPLICATES repeat earlier ones of the same run (ids from `start`)."""
    rng = random.Random(seed)
    now = datetime.datetime.now(datetime.UTC).isoformat()
    unique = int(count * (1 - DUPLICATES))
    events = [
        {
            "event_id": f"ev-{start + i}",
            "topic": f"topic-{i % TOPICS}",
            "source": "bench",
            "payload": {"message": f"message number {start + i} from the benchmark", "timestamp": now},
            "timestamp": now,
        }
        for i in range(unique)
    ]
    events += [events[rng.randrange(unique)] for _ in range(count - unique)]
    rng.shuffle(events)
    return events


def bodies(events: list[dict[str, Any]], size: int) -> list[bytes]:
    import orjson

    return [orjson.dumps({"events": events[i : i + size]}) for i in range(0, len(events), size)]


def raw_sqlite(events: list[dict[str, Any]], path: Path) -> dict[str, float]:
    """The baseline: the store's schema, rows already built, executemany + commit per batch of 1,000."""
    rows = rows_of({"events": events})
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    for statement in SCHEMA:
        conn.execute(statement)
    start = time.perf_counter()
    for i in range(0, len(rows), BATCH):
        conn.execute("BEGIN IMMEDIATE")
        added = conn.executemany(INSERT, rows[i : i + BATCH]).rowcount
        conn.execute(COUNT, ("all", BATCH, added, added))
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    conn.close()
    return {"seconds": elapsed, "events_per_s": len(rows) / elapsed}


def start_server(tmp: Path, name: str) -> ServerProcess:
    env = {"LLMKIT_SERVER_ACCESS_LOG": "false"}
    server = ServerProcess(tmp, "--port", "0", "--db", str(tmp / f"{name}.db"), env=env, command="aggregate")
    server.start().wait_listening()
    return server


async def publish_batches(url: str, payloads: list[bytes], concurrency: int) -> dict[str, Any]:
    """Send every body (concurrency at a time); events/s from the first send to the last 200."""
    import aiohttp

    queue = list(reversed(payloads))
    answers: list[dict[str, Any]] = []
    latencies: list[float] = []
    headers = {"Content-Type": "application/json"}

    async def worker(session: aiohttp.ClientSession) -> None:
        while queue:
            body = queue.pop()
            sent = time.perf_counter()
            async with session.post(f"{url}/publish", data=body, headers=headers) as response:
                if response.status != 200:
                    raise RuntimeError(f"publish answered {response.status}: {await response.text()}")
                answers.append(await response.json())
            latencies.append(time.perf_counter() - sent)

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        start = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    events = sum(a["events_count"] for a in answers)
    latencies.sort()
    return {
        "events": events,
        "accepted": sum(a["accepted"] for a in answers),
        "seconds": elapsed,
        "events_per_s": events / elapsed,
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
    }


async def stats(url: str) -> dict[str, Any]:
    import aiohttp

    async with aiohttp.ClientSession() as session, session.get(f"{url}/stats") as response:
        data: dict[str, Any] = await response.json()
        return data


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


async def batch_ingest(tmp: Path, count: int, rounds: int) -> dict[str, Any]:
    """Best of `rounds` fresh servers: raw SQLite and llmkit, interleaved."""
    events = make_events(count)
    payloads = bodies(events, BATCH)
    raw, ingest = [], []
    for r in range(rounds):
        raw.append(raw_sqlite(events, tmp / f"raw-{r}.db"))
        server = start_server(tmp, f"batch-{r}")
        try:
            result = await publish_batches(server.url, payloads, concurrency=4)
            numbers = await stats(server.url)
            assert numbers["received"] == count, numbers
            assert numbers["unique_processed"] == result["accepted"] == int(count * (1 - DUPLICATES))
            ingest.append(result)
        finally:
            server.close()
    best_raw = max(raw, key=lambda r: r["events_per_s"])
    best = max(ingest, key=lambda r: r["events_per_s"])
    return {"raw": best_raw, "llmkit": best, "ratio": best["events_per_s"] / best_raw["events_per_s"]}


def with_llmkit_publish(tmp: Path, count: int) -> dict[str, Any]:
    """The same load sent by the `llmkit publish` CLI (informational: what users measure with it)."""
    import subprocess

    from tests.serve_process import LLMKIT

    server = start_server(tmp, "publish-cli")
    try:
        argv = [LLMKIT, "publish", "--url", server.url, "--count", str(count)]
        argv += ["--duplicates", str(DUPLICATES), "--topics", str(TOPICS), "--batch-size", str(BATCH)]
        argv += ["--concurrency", "4", "--verify", "--json"]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"llmkit publish exited {done.returncode}: {done.stderr or done.stdout}")
        report: dict[str, Any] = json.loads(done.stdout)
        return {"events_per_s": report["events_per_s"], "latency_ms": report["latency_ms"]}
    finally:
        server.close()


async def singles(tmp: Path, count: int) -> dict[str, Any]:
    """`count` single-event POSTs from SINGLE_CLIENTS concurrent clients."""
    import orjson

    server = start_server(tmp, "singles")
    try:
        payloads = [orjson.dumps(e) for e in make_events(count, seed=2)]
        result = await publish_batches(server.url, payloads, concurrency=SINGLE_CLIENTS)
        numbers = await stats(server.url)
        assert numbers["received"] == count, numbers
        result["commits"] = numbers["commits"]
        return result
    finally:
        server.close()


async def memory(tmp: Path, count: int) -> dict[str, Any]:
    """Server RSS after a warm-up and after `count` more events (new ids, 20% repeats)."""
    server = start_server(tmp, "memory")
    assert server.proc is not None
    try:
        warm = make_events(50_000, start=10**9)
        await publish_batches(server.url, bodies(warm, BATCH), concurrency=4)
        before = rss_mb(server.proc.pid)
        chunk = 100_000
        for start in range(0, count, chunk):
            await publish_batches(server.url, bodies(make_events(chunk, start=start), BATCH), concurrency=4)
        after = rss_mb(server.proc.pid)
        numbers = await stats(server.url)
        return {
            "events": count,
            "rss_before_mb": before,
            "rss_after_mb": after,
            "growth_mb": after - before,
            "peak_mb": rss_mb(server.proc.pid, "VmHWM"),
            "stored_events": numbers["stored_events"],
            "store_mb": numbers["store"]["size_bytes"] / 1e6,
        }
    finally:
        server.close()


def table(results: dict[str, Any]) -> str:
    b, s, m = results["batch"], results["singles"], results["memory"]
    rows = [
        ("raw SQLite executemany (same rows and schema)", f"{b['raw']['events_per_s']:,.0f} events/s", ""),
        (
            "llmkit aggregate, batches of 1,000, ack durable",
            f"{b['llmkit']['events_per_s']:,.0f} events/s",
            f"{b['ratio']:.2f}x raw (target >= 0.40x, >= 50,000/s)",
        ),
        (
            "the same load from `llmkit publish --verify`",
            f"{results['publish_cli']['events_per_s']:,.0f} events/s",
            "informational",
        ),
        (
            f"single-event POSTs, {SINGLE_CLIENTS} clients",
            f"{s['events_per_s']:,.0f} events/s",
            f"p99 {s['p99_ms']:.1f} ms, {s['events'] / max(s['commits'], 1):.1f} events per commit "
            "(target >= 3,000)",
        ),
        (
            f"RSS over {m['events']:,} events",
            f"+{m['growth_mb']:.1f} MB",
            f"{m['rss_before_mb']:.0f} -> {m['rss_after_mb']:.0f} MB, peak {m['peak_mb']:.0f} (target < 50)",
        ),
    ]
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{name:<{width}}  {value:>18}  {note}" for name, value, note in rows)


def missed(results: dict[str, Any]) -> list[str]:
    b, s, m = results["batch"], results["singles"], results["memory"]
    checks = [
        (b["llmkit"]["events_per_s"] >= 50_000, "batch ingest >= 50,000 events/s"),
        (b["ratio"] >= 0.40, "batch ingest >= 40% of raw SQLite"),
        (s["events_per_s"] >= 3_000, "single-event POSTs >= 3,000 events/s"),
        (m["growth_mb"] < 50, "RSS growth < 50 MB"),
    ]
    return [name for ok, name in checks if not ok]


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--singles", type=int, default=20_000)
    parser.add_argument("--rss-events", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="llmkit-bench-aggregate-") as tmp_name:
        tmp = Path(tmp_name)
        results = {
            "batch": await batch_ingest(tmp, args.events, args.rounds),
            "publish_cli": with_llmkit_publish(tmp, args.events),
            "singles": await singles(tmp, args.singles),
            "memory": await memory(tmp, args.rss_events),
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "sqlite": sqlite3.sqlite_version,
            },
            "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        }
    print(table(results))
    out = ROOT / "bench" / "results" / "aggregate.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    failed = missed(results)
    for name in failed:
        print(f"MISSED: {name}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
