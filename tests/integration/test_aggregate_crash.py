"""kill -9 of `llmkit aggregate` in the middle of a publishing load: nothing acknowledged is lost, nothing
is stored twice, and the stats equal what the store holds."""

from __future__ import annotations

import asyncio
import random
import signal
import sqlite3
from pathlib import Path
from typing import Any

import aiohttp

from tests.serve_process import ServerProcess
from tests.servers import free_port

BATCHES = 60
BATCH_SIZE = 200
SENDERS = 4


def batches(rng: random.Random) -> list[list[dict[str, Any]]]:
    """Batches with about 20% repeats, some inside a batch and some of earlier batches."""
    out: list[list[dict[str, Any]]] = []
    made: list[dict[str, Any]] = []
    for b in range(BATCHES):
        batch = []
        for i in range(BATCH_SIZE):
            if made and rng.random() < 0.2:
                batch.append(rng.choice(made))
                continue
            ev = {
                "event_id": f"ev-{b}-{i}",
                "topic": f"topic-{i % 3}",
                "source": "crash-test",
                "payload": {"message": f"m {b} {i}", "timestamp": "2025-10-28T10:00:00Z"},
                "timestamp": "2025-10-28T10:00:00Z",
            }
            made.append(ev)
            batch.append(ev)
        out.append(batch)
    return out


async def send_all(url: str, work: list[list[dict[str, Any]]], acked: list[int]) -> int:
    """Publish every batch, retrying until a 200; how many attempts failed along the way."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(len(work)):
        queue.put_nowait(index)
    failures = 0

    async def sender(session: aiohttp.ClientSession) -> None:
        nonlocal failures
        while not queue.empty():
            index = queue.get_nowait()
            while True:
                try:
                    async with session.post(f"{url}/publish", json={"events": work[index]}) as response:
                        if response.status == 200:
                            acked.append(index)
                            break
                        assert response.status in (429, 503), await response.text()
                except (TimeoutError, aiohttp.ClientError):
                    pass
                failures += 1
                await asyncio.sleep(0.05)

    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await asyncio.gather(*(sender(session) for _ in range(SENDERS)))
    return failures


async def test_kill_9_mid_load_loses_nothing_acknowledged(tmp_path: Path) -> None:
    port = free_port()
    db = tmp_path / "crash.db"
    args = ("--port", str(port), "--db", str(db))
    work = batches(random.Random(7))
    acked: list[int] = []
    first = ServerProcess(tmp_path, *args, command="aggregate").start()
    url = first.wait_listening()
    load = asyncio.ensure_future(send_all(url, work, acked))
    while len(acked) < 5:
        await asyncio.sleep(0.005)
    first.signal(signal.SIGKILL)
    assert first.wait() == -signal.SIGKILL
    first.close()
    acked_before_kill = set(acked)
    second = ServerProcess(tmp_path, *args, command="aggregate").start()
    try:
        assert second.wait_listening() == url
        failures = await asyncio.wait_for(load, 90)
        assert failures > 0, "the kill interrupted the load"
        assert sorted(acked) == list(range(BATCHES))
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{url}/events") as response:
                listed = (await response.json())["events"]
            async with session.get(f"{url}/stats") as response:
                stats = await response.json()
    finally:
        second.close()
    sent_keys = {(e["topic"], e["event_id"]) for batch in work for e in batch}
    listed_keys = [(e["topic"], e["event_id"]) for e in listed]
    assert len(listed_keys) == len(set(listed_keys)), "no event is stored twice"
    assert set(listed_keys) == sent_keys, "every acknowledged event is there"
    assert all((e["topic"], e["event_id"]) in set(listed_keys) for i in acked_before_kill for e in work[i])
    assert stats["unique_processed"] == len(listed) == stats["stored_events"]
    assert stats["received"] == stats["unique_processed"] + stats["duplicated_dropped"]
    # Batches retried after a commit whose answer the kill swallowed count again, as duplicates.
    assert stats["received"] >= BATCHES * BATCH_SIZE
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT count(*), count(DISTINCT topic || '/' || event_id) FROM events"
        ).fetchone()
        counted = conn.execute(
            "SELECT sum(received), sum(unique_count), sum(stored) FROM topic_counts"
        ).fetchone()
    assert rows == (len(sent_keys), len(sent_keys))
    assert counted == (stats["received"], len(sent_keys), len(sent_keys))


def test_kill_9_under_llmkit_publish_then_restart_verifies_exactly(tmp_path: Path) -> None:
    """The issue's scenario end to end: `llmkit publish --verify` keeps retrying through the crash."""
    import json
    import subprocess
    import time
    import urllib.request

    from tests.serve_process import LLMKIT

    port = free_port()
    args = ("--port", str(port), "--db", str(tmp_path / "crash.db"))
    first = ServerProcess(tmp_path, *args, command="aggregate").start()
    url = first.wait_listening()
    publisher = subprocess.Popen(
        [LLMKIT, "publish", "--url", url, "--count", "60000", "--duplicates", "0.2", "--topics", "3"]
        + ["--batch-size", "500", "--concurrency", "4", "--retries", "30", "--verify", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"{url}/stats", timeout=5) as response:
            if json.loads(response.read())["received"] >= 5000:
                break
        time.sleep(0.01)
    first.signal(signal.SIGKILL)
    first.wait()
    first.close()
    with ServerProcess(tmp_path, *args, command="aggregate") as second:
        assert second.wait_listening() == url
        out, err = publisher.communicate(timeout=120)
        assert publisher.returncode == 0, err + out
        report = json.loads(out)
        with urllib.request.urlopen(f"{url}/stats", timeout=5) as response:
            stats = json.loads(response.read())
    assert report["acknowledged"] == 60000 and report["failed"] == 0
    assert report["retries"] > 0, "the kill interrupted the run"
    assert stats["unique_processed"] == stats["stored_events"] == 48000
    assert stats["received"] == stats["unique_processed"] + stats["duplicated_dropped"]
    assert stats["received"] >= 60000
