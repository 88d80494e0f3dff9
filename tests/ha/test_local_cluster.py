"""The local HA cluster behaves as one service: every front answers through HAProxy, and the replicas of
each server share their state (cache, tenant limits, key revocations, jobs) through Redis and PostgreSQL.

The tests run in file order on one cluster; the last one stops it with `down`."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import os
import signal
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import aiohttp
import pytest

from llmkit.localcluster.processes import start_time
from llmkit.orchestrate.jobs import TERMINAL
from tests.ha.conftest import REPLICAS, LocalCluster

# The first test includes `up` (the module's cluster), the last `down`: more than the default 120 s may pass
# on a loaded two-core machine.
pytestmark = pytest.mark.timeout(300)

ROLES = {
    "simulate": REPLICAS,
    "gateway": REPLICAS,
    "orchestrate-api": REPLICAS,
    "orchestrate-worker": 2,
    "aggregate": 1,
    "haproxy": 1,
    "redis-master": 1,
    "redis-replica": 1,
    "sentinel": 3,
    "postgres": 1,
    "clickhouse": 1,
}


def admin(cluster: LocalCluster) -> dict[str, str]:
    return {"X-API-Key": cluster.info["admin_key"]}


def test_up_prints_every_process_of_the_topology(cluster: LocalCluster) -> None:
    roles = [p["role"] for p in cluster.info["processes"]]
    assert {role: roles.count(role) for role in ROLES} == ROLES and len(roles) == sum(ROLES.values())
    assert set(cluster.info["front"]) == {"simulate", "gateway", "orchestrate", "aggregate"}
    for process in cluster.info["processes"]:
        assert "127.0.0.1:" in process["url"], process  # loopback only
        assert start_time(process["pid"]) is not None, process
    logs = {path.name for path in (cluster.dir / "logs").iterdir()}
    assert {"gateway-1.log", "gateway-3.log", "orchestrate-worker-2.log", "sentinel-3.log"} <= logs


async def test_every_front_answers_through_haproxy(cluster: LocalCluster) -> None:
    front = cluster.info["front"]
    async with aiohttp.ClientSession() as session:
        for url in front.values():
            async with session.get(f"{url}/health") as r:
                assert r.status == 200, url
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello through haproxy"}]}
        async with session.post(f"{front['simulate']}/v1/chat/completions", json=body) as r:
            assert r.status == 200
            assert (await r.json())["choices"][0]["message"]["content"]
        async with session.post(f"{front['gateway']}/api/chat-optimized", json=body) as r:
            assert r.status == 200, await r.text()
            assert (await r.json())["message"]["content"]
        event = {
            "event_id": uuid.uuid4().hex,
            "topic": "ha-front",
            "source": "tests",
            "payload": {"message": "through haproxy", "timestamp": "2026-01-01T00:00:00Z"},
            "timestamp": "2026-01-01T00:00:00Z",
        }
        async with session.post(f"{front['aggregate']}/publish", json={"events": [event]}) as r:
            assert r.status == 200, await r.text()
            assert (await r.json())["accepted"] == 1
        async with session.get(f"{front['aggregate']}/events", params={"topic": "ha-front"}) as r:
            assert event["event_id"] in await r.text()
        job = await submit(session, front["orchestrate"], "a job through haproxy")
        assert await finished(session, front["orchestrate"], job) == "completed"
        # HAProxy's own page lists every replica of each backend, each UP with its last check passed.
        async with session.get(f"{cluster.info['haproxy_stats']};csv") as r:
            rows = list(csv.DictReader(io.StringIO((await r.text()).lstrip("# "))))
    servers = [row for row in rows if row["svname"] not in ("FRONTEND", "BACKEND")]
    per_backend = {name: sum(row["pxname"] == name for row in servers) for name in front}
    assert per_backend == {"simulate": REPLICAS, "gateway": REPLICAS, "orchestrate": REPLICAS, "aggregate": 1}
    assert all(row["status"] == "UP" and row["check_status"] == "L7OK" for row in servers), servers


def test_status_reports_every_process_healthy(cluster: LocalCluster) -> None:
    # A health check that timed out on a busy machine (an earlier test's load) passes again at the next
    # one, 2 s later: status is asked a few times, and must report everything healthy with exit 0.
    for _ in range(5):
        done = cluster.run("status")
        if done.returncode == 0:
            break
        time.sleep(2)
    assert done.returncode == 0, done.stdout + done.stderr
    status = json.loads(done.stdout.strip().splitlines()[-1])
    assert status["front"] == cluster.info["front"] and status["admin_key"] == cluster.info["admin_key"]
    assert [p["pid"] for p in status["processes"]] == cluster.pids()
    assert {p["health"] for p in status["processes"]} == {"up"}
    assert {p["haproxy"] for p in status["processes"] if "haproxy" in p} == {"UP"}
    assert {p["haproxy_check"] for p in status["processes"] if "haproxy" in p} == {"L7OK"}


async def chat(
    session: aiohttp.ClientSession, url: str, question: str, key: str | None = None
) -> tuple[int, str]:
    """POST /api/chat-optimized on one replica: the status and X-Gateway-Cache."""
    headers = {"X-API-Key": key} if key else {}
    body = {"messages": [{"role": "user", "content": question}]}
    async with session.post(f"{url}/api/chat-optimized", json=body, headers=headers) as r:
        await r.read()
        return r.status, r.headers.get("X-Gateway-Cache", "")


async def test_a_cached_answer_from_one_replica_is_a_hit_on_the_others(cluster: LocalCluster) -> None:
    one, *others = cluster.urls("gateway")
    question = f"what is shared between replicas? {uuid.uuid4().hex}"
    async with aiohttp.ClientSession() as session:
        assert await chat(session, one, question) == (200, "miss")
        # The cache is filled just after the answer leaves: once the first replica answers from it, the
        # answer is in Redis (the tiered cache writes Redis first, then its memory tier).
        for _ in range(50):
            if await chat(session, one, question) == (200, "hit"):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the replica that asked never answered from its cache")
        # One request each: these replicas never saw the question, so a hit comes from the shared Redis.
        assert [await chat(session, url, question) for url in others] == [(200, "hit")] * len(others)


async def make_key(
    session: aiohttp.ClientSession, cluster: LocalCluster, url: str, **quotas: int
) -> tuple[str, str]:
    """A tenant with `quotas` and a key of its, made on one replica; (key, key id)."""
    name = f"ha-{uuid.uuid4().hex[:8]}"
    async with session.post(
        f"{url}/api/admin/tenants", json={"name": name, "quotas": quotas}, headers=admin(cluster)
    ) as r:
        assert r.status == 201, await r.text()
        tenant_id = (await r.json())["id"]
    async with session.post(
        f"{url}/api/admin/api-keys", json={"name": name, "tenant_id": tenant_id}, headers=admin(cluster)
    ) as r:
        assert r.status == 201, await r.text()
        made = await r.json()
        return str(made["key"]), str(made["id"])


async def test_a_tenants_rpm_holds_exactly_across_three_replicas(cluster: LocalCluster) -> None:
    gateways = cluster.urls("gateway")
    async with aiohttp.ClientSession() as session:
        key, _ = await make_key(session, cluster, gateways[0], rpm=7)
        # The limit is per UTC minute: a burst that straddles two minutes could rightly pass 14.
        second = datetime.now(UTC).second
        if second >= 50:
            await asyncio.sleep(61 - second)
        # One burst spread evenly over the replicas: a per-process limit would let 7 through on each.
        statuses = await asyncio.gather(
            *(chat(session, gateways[i % len(gateways)], f"rpm question {i}", key) for i in range(21))
        )
    codes = [status for status, _ in statuses]
    assert codes.count(200) == 7 and codes.count(429) == 14, codes


async def test_a_key_revoked_on_one_replica_is_refused_by_all_within_a_second(cluster: LocalCluster) -> None:
    gateways = cluster.urls("gateway")
    async with aiohttp.ClientSession() as session:
        key, key_id = await make_key(session, cluster, gateways[0])
        # Every replica has the key in its lookup cache before the revoke.
        assert [(await chat(session, url, f"before {url}", key))[0] for url in gateways] == [200] * len(
            gateways
        )
        async with session.delete(f"{gateways[1]}/api/admin/api-keys/{key_id}", headers=admin(cluster)) as r:
            assert r.status == 200, await r.text()
        deadline = time.monotonic() + 1.0
        n = 0
        while True:
            n += 1
            codes = [(await chat(session, url, f"after {n} {url}", key))[0] for url in gateways]
            if codes == [403] * len(gateways) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
    # Either all refused it before the second was out, or this round, asked after it, says so.
    assert codes == [403] * len(gateways), codes


async def submit(session: aiohttp.ClientSession, url: str, prompt: str) -> str:
    body = {"prompt": prompt, "metadata": {"priority": "normal"}}
    async with session.post(f"{url}/api/v1/infer", json=body) as r:
        assert r.status in (200, 201, 202), await r.text()
        return str((await r.json())["request_id"])


async def job_status(session: aiohttp.ClientSession, url: str, job_id: str) -> str:
    async with session.get(f"{url}/api/v1/status/{job_id}") as r:
        assert r.status == 200, await r.text()
        return str((await r.json())["status"])


async def finished(session: aiohttp.ClientSession, url: str, job_id: str, timeout: float = 30) -> str:
    """Poll a job's status until it is final (completed, failed, timeout, cancelled); that status."""
    deadline = time.monotonic() + timeout
    while (status := await job_status(session, url, job_id)) not in TERMINAL:
        assert time.monotonic() < deadline, f"job {job_id} still {status} after {timeout}s"
        await asyncio.sleep(0.1)
    return status


@contextlib.contextmanager
def paused(pids: list[int]) -> Iterator[None]:
    """SIGSTOP processes for the block (a stopped worker takes no job), SIGCONT after."""
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)


async def test_a_job_submitted_on_one_api_replica_is_read_and_cancelled_on_another(
    cluster: LocalCluster,
) -> None:
    one, two, three = cluster.urls("orchestrate-api")[:3]
    async with aiohttp.ClientSession() as session:
        # Only pending jobs can be cancelled: with the workers paused, the job stays queued.
        with paused(cluster.pids("orchestrate-worker")):
            job = await submit(session, one, f"cancel me {uuid.uuid4().hex}")
            assert await job_status(session, two, job) == "pending"
            async with session.delete(f"{three}/api/v1/jobs/{job}") as r:
                assert r.status == 200, await r.text()
                assert (await r.json())["status"] == "cancelled"
            assert await job_status(session, one, job) == "cancelled"
        # With the workers back, a job submitted on one replica runs and its result is read on another.
        done = await submit(session, two, f"run me {uuid.uuid4().hex}")
        assert await finished(session, three, done) == "completed"
        async with session.get(f"{one}/api/v1/result/{done}") as r:
            assert r.status == 200, await r.text()
            assert (await r.json())["result"]
        assert await job_status(session, two, job) == "cancelled"  # the workers never ran it


def test_restart_starts_one_killed_server_again_as_up_did(cluster: LocalCluster) -> None:
    before = cluster.process("gateway", 2)
    os.kill(before["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 30
    while cluster.run("status").returncode == 0:  # until HAProxy (and status) see it down
        assert time.monotonic() < deadline, "status still says every process is up"
        time.sleep(0.2)
    cluster.restart("gateway", 2)
    after = cluster.process("gateway", 2)
    assert after["url"] == before["url"] and after["pid"] != before["pid"]
    done = cluster.run("status")
    assert done.returncode == 0, done.stdout + done.stderr
    assert [p["pid"] for p in json.loads(done.stdout.strip().splitlines()[-1])["processes"]] == cluster.pids()
    assert cluster.run("restart", "redis-master", "1").returncode == 2  # only llmkit servers
    missing = cluster.run("restart", "gateway", "9")
    assert missing.returncode == 1 and "no gateway-9" in missing.stderr


def test_down_stops_every_process_and_removes_the_dir(cluster: LocalCluster) -> None:
    started = {pid: start_time(pid) for pid in cluster.pids()}
    assert all(started.values())
    done = cluster.run("down")
    assert done.returncode == 0, done.stdout + done.stderr
    # A pid that is gone, or reused by another process (another start time), is not one we started.
    alive = [pid for pid, when in started.items() if start_time(pid) == when]
    assert alive == []
    assert not cluster.dir.exists()
    assert cluster.run("status").returncode == 1
