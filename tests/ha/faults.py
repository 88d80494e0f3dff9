"""What the fault tests share: the cluster they run on, the requests of their loads, one replica's fault
(signal it under load, watch HAProxy take it out, restart it, watch it come back) and the job checks."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from llmkit.localcluster import haproxy
from llmkit.localcluster.cluster import BEHIND
from llmkit.orchestrate.jobs import TERMINAL
from tests.ha.conftest import LocalCluster
from tests.ha.load import CLIENT_TIMEOUT_S, Failed, Load, Outcome, ServerWatch, expect_ok, read_stream

MODEL = "gpt-4o-mini"
# The fault clusters' servers: answers take time (20-odd tokens 30 ms apart, ~0.6 s) so streams and jobs are
# in flight when a server dies; no rate limit of the orchestrator's in the way of the load.
FAULT_ENV = {
    "LLMKIT_SIMULATE_ITL_MS": "30",
    "LLMKIT_GATEWAY_MAX_CONCURRENT": "32",
    "LLMKIT_ORCHESTRATE_CONCURRENCY": "16",
    "LLMKIT_ORCHESTRATE_LEASE_S": "5",
    "LLMKIT_ORCHESTRATE_RATE_LIMIT_REQUESTS": "1000000",
}
# Requests to the simulator directly: no delay for the plain ones, 100 ms a token for the streams.
INSTANT = {"x-llmkit-ttft-ms": "0", "x-llmkit-itl-ms": "0"}
SLOW = {"x-llmkit-itl-ms": "100"}
PROMPTS = 64  # the gateway's plain load asks these over and over (mostly cache hits after the first round)
CLIENTS = 48
STREAM_CLIENTS = 8


def chat_body(text: str, stream: bool = False) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": text}], "stream": stream}


async def completion(session: aiohttp.ClientSession, url: str, body: dict[str, Any], **headers: str) -> None:
    async with session.post(f"{url}/v1/chat/completions", json=body, headers=headers) as r:
        answer = orjson.loads(await expect_ok(r))
    if not answer["choices"][0]["message"]["content"]:
        raise Failed("an empty answer")


async def streamed(session: aiohttp.ClientSession, url: str, body: dict[str, Any], **headers: str) -> None:
    async with session.post(f"{url}/v1/chat/completions", json=body, headers=headers) as r:
        if await read_stream(r) < 3:
            raise Failed("a stream with fewer than 3 events")


def gateway_loads(front: str, minimum: int) -> tuple[Load, Load]:
    """Plain chat completions over a pool of prompts, and streams of fresh prompts, through the front."""
    run = uuid.uuid4().hex[:8]

    async def plain(session: aiohttp.ClientSession, n: int) -> None:
        await completion(session, front, chat_body(f"fault load {run} prompt {n % PROMPTS}"))

    async def stream(session: aiohttp.ClientSession, n: int) -> None:
        await streamed(session, front, chat_body(f"fault stream {run} {n}", stream=True))

    return (
        Load(plain, CLIENTS, minimum, 10 * minimum),
        Load(stream, STREAM_CLIENTS, 0, 100_000, kind="stream"),
    )


def simulate_loads(front: str, minimum: int) -> tuple[Load, Load]:
    """Instant completions, and 2-second streams, straight to the simulators' front."""

    async def plain(session: aiohttp.ClientSession, n: int) -> None:
        await completion(session, front, chat_body(f"sim {n}"), **INSTANT)

    async def stream(session: aiohttp.ClientSession, n: int) -> None:
        await streamed(session, front, chat_body(f"sim stream {n}", stream=True), **SLOW)

    return (
        Load(plain, CLIENTS, minimum, 10 * minimum),
        Load(stream, STREAM_CLIENTS, 0, 100_000, kind="stream"),
    )


@dataclass
class Submissions:
    """Jobs submitted under load (each with its own Idempotency-Key): the acknowledged ones by id."""

    front: str
    acknowledged: dict[str, float] = field(default_factory=dict)  # job id -> when its submit started

    async def submit(self, session: aiohttp.ClientSession, n: int) -> None:
        start = time.monotonic()
        body = {"prompt": f"fault job {uuid.uuid4().hex} {n}", "metadata": {"priority": "normal"}}
        headers = {"Idempotency-Key": uuid.uuid4().hex}
        async with session.post(f"{self.front}/api/v1/infer", json=body, headers=headers) as r:
            job = orjson.loads(await expect_ok(r))
        self.acknowledged[str(job["request_id"])] = start


async def final_jobs(
    front: str, ids: list[str], timeout: float = 180, strict: bool = True
) -> dict[str, dict[str, Any]]:
    """Every job's final state, read through the front (long polls, 32 at a time); with strict=False a job
    still not final after `timeout` is returned as it is then, instead of failing the test."""
    gate = asyncio.Semaphore(32)
    deadline = time.monotonic() + timeout

    async def one(session: aiohttp.ClientSession, job_id: str) -> dict[str, Any]:
        async with gate:
            while True:
                async with session.get(f"{front}/api/v1/result/{job_id}", params={"timeout": "10"}) as r:
                    body: dict[str, Any] = await r.json()
                    if r.status == 200 and body["status"] in TERMINAL:
                        return body
                    assert r.status in (200, 408), (r.status, body)
                if time.monotonic() > deadline:
                    assert not strict, f"job {job_id} not final in {timeout}s: {body}"
                    return body

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=CLIENT_TIMEOUT_S)) as session:
        bodies = await asyncio.gather(*(one(session, job_id) for job_id in ids))
    return dict(zip(ids, bodies, strict=True))


@dataclass
class ReplicaFault:
    """What happened to one replica signalled under load."""

    fault_at: float
    down_at: float
    exited_at: float
    exit_code: int
    up_at: float
    statuses: list[str]


async def _exited(cluster: LocalCluster, pid: int) -> tuple[int, float]:
    code = await cluster.exit_code(pid)
    return code, time.monotonic()


async def replica_fault(
    cluster: LocalCluster, role: str, index: int, sig: signal.Signals, loads: list[Load], at: int, after: int
) -> ReplicaFault:
    """Run the loads; once the first has sent `at` requests, send `sig` to the replica; when HAProxy shows it
    DOWN and it has exited, restart it and wait until HAProxy shows it UP; `after` more requests, then stop.

    Waits for every load to finish (each stops by itself: a count, a maximum and a time bound)."""
    victim = cluster.process(role, index)
    service = BEHIND[role]
    name = f"{service}/{haproxy.server_name(service, index)}"
    tasks = [asyncio.create_task(load.run()) for load in loads]
    try:
        async with ServerWatch(cluster.info["haproxy_stats"], name) as watch:
            await watch.wait_for("UP L7OK")
            await loads[0].until_sent(at)
            fault_at = time.monotonic()
            os.kill(victim["pid"], sig)
            code, exited_at = await _exited(cluster, victim["pid"])
            down_at = await watch.wait_for("DOWN", "MAINT", after=fault_at)
            await asyncio.to_thread(cluster.restart, role, index)
            up_at = await watch.wait_for("UP L7OK", after=down_at)
            await loads[0].until_sent(min(loads[0].sent + after, loads[0].maximum))
            statuses = watch.statuses()
    finally:
        for load in loads:
            load.stop()
        await asyncio.gather(*tasks)
    return ReplicaFault(fault_at, down_at, exited_at, code, up_at, statuses)


def cut_streams(outcomes: list[Outcome]) -> list[Outcome]:
    return [o for o in outcomes if not o.ok]


def timeline(fault: ReplicaFault) -> str:
    """The fault's moments relative to the signal, for a failing assert."""
    t = fault.fault_at
    return (
        f"down {fault.down_at - t:.2f}s exited {fault.exited_at - t:.2f}s (code {fault.exit_code}) "
        f"up {fault.up_at - t:.2f}s; haproxy: {fault.statuses}"
    )
