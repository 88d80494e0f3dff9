"""Replicas die under load, through HAProxy's fronts, on a cluster of their own (tests/ha/faults.py):

- SIGTERM: /health turns 503 first, HAProxy takes the replica out, in-flight requests and streams finish,
  the replica exits 0: no request fails.
- SIGKILL: HAProxy's L7 retries and redispatch replay what the dead replica took: at most 0.1% of a
  non-streaming load of >= 10,000 requests fails; a stream it was sending is cut and its client gets an error.
- The orchestrator: every acknowledged submit's job completes (read through the front), also when an API
  replica or a worker dies (the worker's leased jobs come back after orchestrate.lease_s).

Each test restarts what it stopped (`scripts/ha-local.sh restart`) and records its numbers for the report."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator

import aiohttp
import pytest

from tests.ha import report
from tests.ha.conftest import LocalCluster, local_cluster
from tests.ha.faults import (
    FAULT_ENV,
    Submissions,
    cut_streams,
    final_jobs,
    gateway_loads,
    replica_fault,
    simulate_loads,
)
from tests.ha.load import CLIENT_TIMEOUT_S, Load, Outcome

pytestmark = pytest.mark.timeout(400)
KILL_LOAD = 10_000
TERM_LOAD = 3_000
JOBS = 200


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with local_cluster(FAULT_ENV) as local:
        yield local


def assert_healthy(cluster: LocalCluster, timeout: float = 30) -> None:
    """Every process healthy, as `status` sees it (a health check may time out once on a busy machine)."""
    deadline = time.monotonic() + timeout
    while (done := cluster.run("status")).returncode != 0:
        assert time.monotonic() < deadline, done.stdout + done.stderr
        time.sleep(0.5)


@pytest.mark.parametrize(("role", "front"), [("gateway", "gateway"), ("simulate", "simulate")])
async def test_a_replica_stopped_with_sigterm_under_load_fails_no_request(
    cluster: LocalCluster, role: str, front: str
) -> None:
    assert_healthy(cluster)
    make = gateway_loads if role == "gateway" else simulate_loads
    plain, streams = make(cluster.info["front"][front], TERM_LOAD)
    fault = await replica_fault(cluster, role, 1, signal.SIGTERM, [plain, streams], at=1000, after=500)
    row = report.record(
        f"{role} SIGTERM",
        f"{plain.clients} clients, chat completions; {streams.clients} clients streaming",
        plain.outcomes + streams.outcomes,
        fault.fault_at,
        fault.up_at,
        "HAProxy UP again (restarted)",
        out_of_haproxy_after_s=round(fault.down_at - fault.fault_at, 2),
        exited_after_s=round(fault.exited_at - fault.fault_at, 2),
        exit_code=fault.exit_code,
        streams_completed=sum(o.ok for o in streams.outcomes),
    )
    assert row["failed"] == 0, row["errors"]
    assert streams.sent > 0 and plain.sent >= TERM_LOAD
    assert fault.exit_code == 0
    # Taken out while it still answered (during server.stop_grace_s), then back after the restart.
    assert fault.down_at < fault.exited_at, fault.statuses
    assert fault.statuses[-1] == "UP L7OK", fault.statuses


@pytest.mark.parametrize(("role", "front"), [("gateway", "gateway"), ("simulate", "simulate")])
async def test_a_replica_killed_under_10000_requests_fails_at_most_a_tenth_of_a_percent(
    cluster: LocalCluster, role: str, front: str
) -> None:
    assert_healthy(cluster)
    make = gateway_loads if role == "gateway" else simulate_loads
    plain, streams = make(cluster.info["front"][front], KILL_LOAD)
    fault = await replica_fault(cluster, role, 2, signal.SIGKILL, [plain, streams], at=3000, after=1000)
    cut = cut_streams(streams.outcomes)
    row = report.record(
        f"{role} SIGKILL",
        f"{plain.clients} clients, chat completions (streams apart)",
        plain.outcomes,
        fault.fault_at,
        fault.up_at,
        "HAProxy UP again (restarted)",
        out_of_haproxy_after_s=round(fault.down_at - fault.fault_at, 2),
        streams=f"{streams.sent} by {streams.clients} clients, {len(cut)} cut by the kill",
        a_cut_stream_ends=(cut[0].error if cut else "none was cut"),
    )
    assert plain.sent >= KILL_LOAD
    assert row["failed"] <= plain.sent / 1000, row["errors"]
    assert fault.exit_code == -signal.SIGKILL
    assert fault.statuses[-1] == "UP L7OK", fault.statuses
    # A cut stream is an error for its client (an incomplete body), never a hang until its timeout.
    assert all(o.latency < CLIENT_TIMEOUT_S - 1 for o in cut), [o.error for o in cut]
    assert all("Timeout" not in o.error for o in cut), [o.error for o in cut]
    assert len(cut) <= streams.clients  # only the streams in flight on the dead replica


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
async def test_jobs_submitted_while_an_api_replica_dies_all_complete(
    cluster: LocalCluster, sig: signal.Signals
) -> None:
    assert_healthy(cluster)
    front = cluster.info["front"]["orchestrate"]
    jobs = Submissions(front)
    load = Load(jobs.submit, 8, 1000, 2000)
    fault = await replica_fault(cluster, "orchestrate-api", 3, sig, [load], at=300, after=200)
    results = await final_jobs(front, list(jobs.acknowledged))
    statuses = [body["status"] for body in results.values()]
    row = report.record(
        f"orchestrate-api {sig.name}",
        f"{load.clients} clients submitting jobs (Idempotency-Key each)",
        load.outcomes,
        fault.fault_at,
        fault.up_at,
        "HAProxy UP again (restarted)",
        acknowledged_jobs=f"{len(jobs.acknowledged)}, {statuses.count('completed')} completed",
        exit_code=fault.exit_code,
    )
    allowed = 0 if sig == signal.SIGTERM else load.sent / 1000
    assert row["failed"] <= allowed, row["errors"]
    assert len(jobs.acknowledged) == load.sent - row["failed"]
    assert statuses == ["completed"] * len(results)
    assert all(body["result"] for body in results.values())
    assert fault.exit_code == (0 if sig == signal.SIGTERM else -signal.SIGKILL)


async def test_a_worker_killed_while_jobs_run_loses_no_job(cluster: LocalCluster) -> None:
    assert_healthy(cluster)
    front = cluster.info["front"]["orchestrate"]
    jobs = Submissions(front)
    load = Load(jobs.submit, 16, JOBS, JOBS)
    await load.run()
    assert len(jobs.acknowledged) == JOBS, load.outcomes[:3]
    victim = cluster.process("orchestrate-worker", 1)
    # Kill it while it runs jobs (after it finished some: it is well under way).
    async with aiohttp.ClientSession() as session:
        deadline = time.monotonic() + 60
        while True:
            async with session.get(f"{victim['url']}/stats") as r:
                stats = await r.json()
            if stats["running"] and stats["finished"].get("completed", 0):
                break
            assert time.monotonic() < deadline, stats
            await asyncio.sleep(0.05)
    running = stats["running"]
    fault_at = time.monotonic()
    os.kill(victim["pid"], signal.SIGKILL)
    assert await cluster.exit_code(victim["pid"]) == -signal.SIGKILL
    results = await final_jobs(front, list(jobs.acknowledged))
    done_at = time.monotonic()
    await asyncio.to_thread(cluster.restart, "orchestrate-worker", 1)
    attempts = [int(body["attempts"]) for body in results.values()]
    statuses = [body["status"] for body in results.values()]
    # One outcome per job: submitted -> completed, latency the job's own (created to last update).
    outcomes = [
        Outcome(jobs.acknowledged[job_id], body["updated_at"] - body["created_at"])
        for job_id, body in results.items()
    ]
    report.record(
        "orchestrate-worker SIGKILL",
        f"{JOBS} jobs queued, 2 workers x 16 at once, worker-1 killed while it ran some "
        "(latency: a job's submit to its end)",
        outcomes,
        fault_at,
        done_at,
        "every acknowledged job completed",
        jobs_running_on_the_killed_worker=running,
        redelivered_jobs=sum(a > 1 for a in attempts),
        completed=statuses.count("completed"),
    )
    assert statuses == ["completed"] * len(results)
    assert all(body["result"] for body in results.values())
    # Exactly once: a job ran again only if the dead worker held it (at most its concurrency), and at most
    # twice; every other job ran once.
    assert 1 <= sum(a > 1 for a in attempts) <= int(FAULT_ENV["LLMKIT_ORCHESTRATE_CONCURRENCY"])
    assert max(attempts) <= 2 and min(attempts) >= 1
