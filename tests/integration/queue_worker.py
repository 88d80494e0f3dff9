"""Subprocess for test_queue_redis: a consumer that takes items until it takes a `stop-*` item.

Usage: queue_worker.py REDIS_URL PREFIX QUEUE OUT_FILE [LEASE [hold]]. Prints `ready` once connected, then
writes a line to OUT_FILE for every item it takes, as it takes it: the id; with LEASE, the id and the
delivery count, after acking the item (exit 2 if an ack is refused). With `hold` it takes one item, prints
`took ID`, and sleeps until killed. Exits 1 if the queue stays empty for 60 s.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from llmkit.core.queue import PriorityQueue, queue_from_url


async def consume(queue: PriorityQueue, out: Path, lease: float | None, hold: bool) -> int:
    with out.open("a", buffering=1) as lines:
        while True:
            item = await queue.get(timeout=60, lease=lease)
            if item is None:
                return 1
            if hold:
                print(f"took {item.id}", flush=True)
                await asyncio.sleep(3600)
            if lease is not None and not await queue.ack(item.id, item.token):
                return 2
            if item.id.startswith("stop-"):
                return 0
            lines.write(item.id if lease is None else f"{item.id} {item.deliveries}")
            lines.write("\n")


async def main(url: str, prefix: str, name: str, out: Path, lease: float | None, hold: bool) -> int:
    queue = queue_from_url(f"{url}?prefix={prefix}", name, capacity=100_000)
    try:
        await queue.size()  # connects before saying ready
        print("ready", flush=True)
        return await consume(queue, out, lease, hold)
    finally:
        await queue.close()


if __name__ == "__main__":
    url, prefix, name, out = sys.argv[1:5]
    lease = float(sys.argv[5]) if len(sys.argv) > 5 else None
    hold = sys.argv[6:7] == ["hold"]
    sys.exit(asyncio.run(main(url, prefix, name, Path(out), lease, hold)))
