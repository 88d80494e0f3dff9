"""Subprocess for test_queue_redis: a consumer that takes items until it takes a `stop-*` item.

Usage: queue_worker.py REDIS_URL PREFIX QUEUE OUT_FILE. Prints `ready` once connected, then writes the id of
every item it takes to OUT_FILE, one per line. Exits 1 if the queue stays empty for 60 s.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from llmkit.core.queue import queue_from_url


async def main(url: str, prefix: str, name: str, out: Path) -> int:
    queue = queue_from_url(f"{url}?prefix={prefix}", name, capacity=100_000)
    taken: list[str] = []
    try:
        await queue.size()  # connects before saying ready
        print("ready", flush=True)
        while True:
            item = await queue.get(timeout=60)
            if item is None:
                return 1
            if item.id.startswith("stop-"):
                return 0
            taken.append(item.id)
    finally:
        out.write_text("".join(f"{item_id}\n" for item_id in taken))
        await queue.close()


if __name__ == "__main__":
    url, prefix, name, out = sys.argv[1:5]
    sys.exit(asyncio.run(main(url, prefix, name, Path(out))))
