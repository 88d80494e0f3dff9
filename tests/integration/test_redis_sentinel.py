"""`redis+sentinel://` for every Redis user, against a real master, replica and three redis-sentinels.

Each user (cache, tiered cache, limiter, quota counter, tenant quotas, priority queue) works through the
URL, and carries on after the master crashes and the sentinels promote the replica.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis

from llmkit.core.backends import make_redis, parse_backend_url
from llmkit.core.cache import cache_from_url, redis_cache_from_url
from llmkit.core.limiter import limiter_from_url, quota_counter_from_url
from llmkit.core.limiter.base import Window
from llmkit.core.queue import queue_from_url
from llmkit.errors import BackendError, ConfigError
from llmkit.orchestrate.jobs import Job
from llmkit.orchestrate.redis_jobs import RedisJobStore
from llmkit.platform.quota_types import Quotas
from llmkit.platform.quotas import quota_enforcer_from_url
from tests.servers import SentinelCluster

# How long the users may take to find the new master once the sentinels agree on it.
RECOVER_S = 15.0


def prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


async def test_the_cache_goes_to_the_master_the_sentinels_name(sentinel_cluster: SentinelCluster) -> None:
    name = prefix()
    cache = cache_from_url(sentinel_cluster.url(prefix=name))
    try:
        await cache.set("k", b"v")
        assert await cache.get("k") == b"v"
    finally:
        await cache.close()
    # Written on the master, not on the replica the URL could also have reached.
    with redis.Redis(port=sentinel_cluster.master_port()) as direct:
        assert direct.get(f"{name}:k") == b"v"


async def test_tiered_cache_and_the_cache_tools_take_the_url(sentinel_cluster: SentinelCluster) -> None:
    name = prefix()
    tiered = cache_from_url("tiered+" + sentinel_cluster.url(prefix=name))
    tool = redis_cache_from_url(sentinel_cluster.url(prefix=name))
    try:
        await tiered.set("answer", b"42")
        assert await tool.get("answer") == b"42"
    finally:
        await tiered.close()
        await tool.close()


async def test_limiter_and_quota_counter_count_on_the_master(sentinel_cluster: SentinelCluster) -> None:
    limiter = limiter_from_url(sentinel_cluster.url(prefix=prefix()))
    counter = quota_counter_from_url(sentinel_cluster.url(prefix=prefix()))
    try:
        bucket = limiter.token_bucket("b", rate=0.001, burst=2)
        decisions = [await bucket.acquire("client") for _ in range(3)]
        assert [d.allowed for d in decisions] == [True, True, False]
        window = Window("requests", 2, "day")  # three calls never straddle a day's end in practice
        allowed = [(await counter.consume("tenant", [window], 1)).allowed for _ in range(3)]
        assert allowed == [True, True, False]
    finally:
        await limiter.close()
        await counter.close()


async def test_tenant_quotas_hold_through_the_url(sentinel_cluster: SentinelCluster) -> None:
    enforcer = quota_enforcer_from_url(sentinel_cluster.url(prefix=prefix()))
    try:
        quotas = Quotas(rpm=1, max_concurrent=1)
        admission = await enforcer.admit("acme", quotas)
        await admission.settle(0)
        with pytest.raises(Exception, match="rpm quota"):
            await enforcer.admit("acme", quotas)
    finally:
        await enforcer.close()


async def test_the_queue_works_through_the_url(sentinel_cluster: SentinelCluster) -> None:
    queue = queue_from_url(sentinel_cluster.url(prefix=prefix()), "jobs", 10)
    try:
        await queue.put("a", b"first")
        item = await queue.get(timeout=1)
        assert item is not None and item.payload == b"first"
    finally:
        await queue.close()


async def until(step: Callable[[], Awaitable[Any]], timeout: float = RECOVER_S) -> tuple[Any, int]:
    """Call `step` until it succeeds; its result and how many calls failed (BackendError) first."""
    deadline = time.monotonic() + timeout
    failures = 0
    while True:
        try:
            return await step(), failures
        except BackendError:
            failures += 1
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


def replicated(cluster: SentinelCluster) -> None:
    """Wait until the replica has every write so far (Redis replicates asynchronously)."""
    with redis.Redis(port=cluster.master_port()) as master:
        assert master.execute_command("WAIT", 1, 5000) == 1


async def test_after_the_master_crashes_every_user_carries_on_on_the_new_master(
    sentinel_factory: Callable[[], SentinelCluster],
) -> None:
    cluster = sentinel_factory()
    name = prefix()
    cache = cache_from_url(cluster.url(prefix=name, timeout="1"))
    queue = queue_from_url(cluster.url(prefix=name, timeout="1"), "jobs", 10)
    counter = quota_counter_from_url(cluster.url(prefix=name, timeout="1"))
    window = Window("requests", 100, "minute")
    try:
        await cache.set("before", b"1")
        await queue.put("queued-before", b"job")
        first = await counter.consume("tenant", [window], 1)
        assert first.allowed
        replicated(cluster)
        old = cluster.master_port()

        new = cluster.crash_master()
        assert new != old

        # Reads and writes find the new master; what was replicated before the crash is still there.
        value, _ = await until(lambda: cache.get("before"))
        assert value == b"1"
        await until(lambda: cache.set("after", b"2"))
        assert await cache.get("after") == b"2"
        item, _ = await until(lambda: queue.get(timeout=0.5))
        assert item is not None and item.id == "queued-before"
        decision, _ = await until(lambda: counter.consume("tenant", [window], 1))
        # The count goes on from the replicated one, unless the failover crossed into the next minute.
        same_window = decision.windows[0].reset_at == first.windows[0].reset_at
        assert decision.allowed and decision.windows[0].used == (2 if same_window else 1)
        with redis.Redis(port=new) as direct:
            assert direct.get(f"{name}:after") == b"2"  # written on the promoted server itself
    finally:
        await cache.close()
        await queue.close()
        await counter.close()


def lose_the_replica(cluster: SentinelCluster) -> None:
    """SIGKILL the replica and wait until the master counts no replica any more."""
    proc = cluster.replica.proc
    assert proc is not None
    proc.kill()
    proc.wait()
    cluster.replica.proc = None
    deadline = time.monotonic() + 30
    with redis.Redis(port=cluster.master_port()) as master:
        while master.info("replication")["connected_slaves"] != 0:
            assert time.monotonic() < deadline, "the master still counts its replica"
            time.sleep(0.1)


async def test_a_put_is_acknowledged_only_once_a_replica_holds_it(
    sentinel_factory: Callable[[], SentinelCluster], caplog: pytest.LogCaptureFixture
) -> None:
    cluster = sentinel_factory()
    name = prefix()
    queue = queue_from_url(cluster.url(prefix=name, timeout="1"), "jobs", 10)  # replicas=1 by default
    relaxed = queue_from_url(cluster.url(prefix=name, timeout="1", replicas="0"), "jobs", 10)
    try:
        await queue.put("kept", b"1")
        # WAIT returned only after the replica had the item: it is there the moment put() returns.
        assert cluster.replica.proc is not None
        with redis.Redis(port=cluster.replica.port) as replica:
            assert replica.keys(f"{name}:q:jobs:*")

        lose_the_replica(cluster)
        with pytest.raises(BackendError, match="only 0 of 1 replicas confirmed"):
            await queue.put("refused", b"2")
        # Refused, so not kept: only the first item is queued.
        assert await queue.size() == 1
        # The master has no replica left, so the next puts wait for none (as after a failover, where the
        # promoted replica has none until the old master comes back), and replicas=0 never waits.
        await queue.put("alone", b"3")
        await relaxed.put("relaxed", b"4")
        assert await queue.size() == 3
        assert "the master has 0 replicas in sync, 1 wanted" in caplog.text
    finally:
        await queue.close()
        await relaxed.close()


async def test_a_job_write_no_replica_confirmed_is_refused(
    sentinel_factory: Callable[[], SentinelCluster],
) -> None:
    cluster = sentinel_factory()
    url = parse_backend_url(cluster.url(timeout="1"), "queue", ["redis+sentinel"])
    store = RedisJobStore(make_redis(url, timeout=1.0), 60.0, prefix=prefix(), replicas=1, replica_wait=0.5)
    try:
        await store.add(Job(id="j1", prompt="hello"))
        assert (await store.get("j1")) is not None
        lose_the_replica(cluster)
        with pytest.raises(BackendError, match="job write: only 0 of 1 replicas"):
            await store.add(Job(id="j2", prompt="hello"))
        await store.add(Job(id="j3", prompt="hello"))  # the master has no replica now: none to wait for
        assert (await store.get("j3")) is not None
    finally:
        await store.close()


def test_replicas_must_be_a_count() -> None:
    with pytest.raises(ConfigError, match="replicas must be >= 0"):
        queue_from_url("redis+sentinel://127.0.0.1:1/mymaster?replicas=-1", "jobs", 10)
    with pytest.raises(ConfigError, match="parameter replicas must be int"):
        queue_from_url("redis://127.0.0.1:1/0?replicas=all", "jobs", 10)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis+sentinel://h1:26379", "name the master"),
        ("redis+sentinel://h1:26379/mymaster/0/extra", "name the master"),
        ("redis+sentinel://h1:26379/mymaster/zero", "database must be a number"),
        ("redis+sentinel://h1:26379,/mymaster", "sentinel address is empty"),
        ("redis+sentinel://h1:99999/mymaster", "sentinel port must be 1-65535"),
        ("redis+sentinel://u:hunter2@h1:x/mymaster", "sentinel port must be 1-65535"),
    ],
)
def test_a_malformed_sentinel_url_says_what_to_write(url: str, message: str) -> None:
    with pytest.raises(Exception, match=message) as caught:
        parse_backend_url(url, "cache", ["redis+sentinel"])
    assert "hunter2" not in str(caught.value)
    assert "redis+sentinel://host:26379" in str(caught.value) or "sentinel" in str(caught.value)


def test_sentinel_urls_name_hosts_master_database_and_credentials() -> None:
    parsed = parse_backend_url(
        "redis+sentinel://app:s%40cret@10.0.0.1,10.0.0.2:26380,[::1]:26381/my%20master/3?prefix=x",
        "queue",
        ["redis+sentinel"],
    )
    assert parsed.sentinels == (("10.0.0.1", 26379), ("10.0.0.2", 26380), ("::1", 26381))
    assert parsed.service == "my master" and parsed.db == 3
    assert (parsed.username, parsed.password) == ("app", "s@cret")
    assert parsed.params == {"prefix": "x"}
