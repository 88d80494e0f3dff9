"""`llmkit orchestrate` (an API and a worker) on Redis behind Sentinel: the master crashes under load.

Every job the API acknowledged completes, with its own result; a submit made while no master answers is
refused with a 503 that says why, never acknowledged and then lost.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any

import aiohttp

from tests.serve_process import ServerProcess
from tests.servers import SentinelCluster

Start = Callable[..., ServerProcess]
WAIT_S = 60.0
AFTER = 20  # jobs acknowledged after the failover before the load stops


async def test_a_master_crash_under_load_loses_no_acknowledged_job(
    orchestrate_process: Start, sentinel_factory: Callable[[], SentinelCluster]
) -> None:
    cluster = sentinel_factory()
    url = cluster.url(prefix=f"orch-{uuid.uuid4().hex[:8]}", timeout="1")
    env = {"LLMKIT_ORCHESTRATE_ECHO_DELAY_MS": "10", "LLMKIT_ORCHESTRATE_LEASE_S": "2"}
    api = orchestrate_process("api", url, **env)
    orchestrate_process("worker", url, **env)
    acknowledged: dict[str, str] = {}  # job id -> its prompt
    refused: list[tuple[int, str]] = []
    crashed = asyncio.Event()
    after = 0

    async with aiohttp.ClientSession() as session:

        async def load(lane: int) -> None:
            nonlocal after
            n = 0
            while after < AFTER:
                n += 1
                prompt = f"lane {lane} job {n}"
                try:
                    async with session.post(f"{api.url}/api/v1/infer", json={"prompt": prompt}) as response:
                        body = await response.text()
                        if response.status == 200:
                            data: dict[str, Any] = await response.json()
                            acknowledged[data["request_id"]] = prompt
                            after += crashed.is_set()
                        else:
                            refused.append((response.status, body))
                except aiohttp.ClientError as exc:  # never expected: the API stays up
                    refused.append((0, repr(exc)))
                await asyncio.sleep(0.01)

        lanes = [asyncio.create_task(load(lane)) for lane in range(4)]
        while len(acknowledged) < 40:
            await asyncio.sleep(0.02)
        old = cluster.master_port()
        new = await asyncio.to_thread(cluster.crash_master)
        crashed.set()
        await asyncio.wait_for(asyncio.gather(*lanes), WAIT_S)

        async def outcome(job_id: str) -> dict[str, Any]:
            deadline = time.monotonic() + WAIT_S
            while True:
                async with session.get(f"{api.url}/api/v1/result/{job_id}?timeout=10") as response:
                    if response.status == 200:
                        data: dict[str, Any] = await response.json()
                        if data.get("status") in ("completed", "failed"):
                            return data
                assert time.monotonic() < deadline, f"job {job_id} never finished"
                await asyncio.sleep(0.2)

        done = await asyncio.gather(*(outcome(job_id) for job_id in acknowledged))

    assert new != old
    assert all(status == 503 for status, _ in refused), refused
    lost = [(d["request_id"], d["status"]) for d in done if d["status"] != "completed"]
    assert not lost, f"{len(lost)} acknowledged jobs did not complete: {lost[:5]}; refused {len(refused)}"
    assert {d["request_id"]: d["result"] for d in done} == acknowledged
