"""JobRunner over a real platform store (SQLite and PostgreSQL): runs, retries, fails, recovers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from llmkit.errors import BackendError
from llmkit.platform.jobs import SHUTDOWN, JobRunner, backoff, error_text
from llmkit.platform.store import platform_store_from_url
from llmkit.platform.store.base import Job, PlatformStore


def job(jid: str, kind: str = "index", max_attempts: int = 3, **kw: Any) -> Job:
    return Job(id=jid, tenant_id="t1", kind=kind, subject="d1", max_attempts=max_attempts, **kw)


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    """Wait until `check()` holds (polling), or fail the test."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


async def state_of(store: PlatformStore, jid: str) -> str | None:
    found = await store.job(jid)
    return found.state if found else None


def runner(store: PlatformStore, handlers: dict[str, Any], **kw: Any) -> JobRunner:
    kw.setdefault("poll_interval", 0.05)
    kw.setdefault("backoff_base", 0.05)
    return JobRunner(store, handlers, **kw)


async def test_a_queued_job_runs_once_and_completes(store: PlatformStore) -> None:
    seen: list[Job] = []

    async def index(j: Job) -> None:
        seen.append(j)

    r = runner(store, {"index": index})
    r.start()
    try:
        await store.add_job(job("j1", payload={"document": "d1"}))
        r.wake()
        await until(lambda: _is(store, "j1", "completed"))
    finally:
        await r.close()
    assert [(j.id, j.payload, j.attempts) for j in seen] == [("j1", {"document": "d1"}, 1)]
    assert r.stats()["completed"] == 1 and r.stats()["claimed"] == 1


async def _is(store: PlatformStore, jid: str, state: str) -> bool:
    return await state_of(store, jid) == state


async def test_a_failing_job_is_retried_with_backoff_then_fails_with_its_error(store: PlatformStore) -> None:
    attempts: list[int] = []

    async def broken(j: Job) -> None:
        attempts.append(j.attempts)
        raise RuntimeError("upstream said no\nsecond line")

    r = runner(store, {"index": broken})
    r.start()
    try:
        await store.add_job(job("j1", max_attempts=3))
        await until(lambda: _is(store, "j1", "failed"))
    finally:
        await r.close()
    assert attempts == [1, 2, 3]
    failed = await store.job("j1")
    assert failed is not None and failed.error == "RuntimeError: upstream said no"
    assert r.stats()["retried"] == 2 and r.stats()["failed"] == 1


async def test_a_job_of_an_unknown_kind_fails_saying_so(store: PlatformStore) -> None:
    r = runner(store, {})
    r.start()
    try:
        await store.add_job(job("j1", kind="mystery"))
        await until(lambda: _is(store, "j1", "failed"))
    finally:
        await r.close()
    failed = await store.job("j1")
    assert failed is not None and failed.error == "no handler for jobs of kind 'mystery'"


async def test_a_job_left_running_by_a_dead_worker_runs_again(store: PlatformStore) -> None:
    await store.add_job(job("j1"))
    # Another process claimed it, then died: its lease (0.2 s) runs out.
    assert await store.claim_job("dead-worker", time.time(), 0.2) is not None
    ran: list[int] = []

    async def index(j: Job) -> None:
        ran.append(j.attempts)

    r = runner(store, {"index": index})
    r.start()
    try:
        await until(lambda: _is(store, "j1", "completed"))
    finally:
        await r.close()
    assert ran == [2]


async def test_a_long_job_keeps_its_lease_so_no_second_worker_takes_it(store: PlatformStore) -> None:
    runs: list[str] = []
    release = asyncio.Event()

    async def slow(j: Job) -> None:
        runs.append("start")
        await release.wait()

    first = runner(store, {"index": slow}, lease=0.3, worker="first")
    second = runner(store, {"index": slow}, lease=0.3, worker="second")
    first.start()
    try:
        await store.add_job(job("j1"))
        await until(lambda: _is(store, "j1", "running"))
        second.start()
        await asyncio.sleep(1.2)  # four leases: renewed by the first runner all along
        assert runs == ["start"]
        held = await store.job("j1")
        assert held is not None and held.worker == "first"
        release.set()
        await until(lambda: _is(store, "j1", "completed"))
    finally:
        await first.close()
        await second.close()


async def test_closing_queues_a_running_job_again(store: PlatformStore) -> None:
    started = asyncio.Event()

    async def forever(j: Job) -> None:
        started.set()
        await asyncio.Event().wait()

    r = runner(store, {"index": forever})
    r.start()
    await store.add_job(job("j1"))
    await asyncio.wait_for(started.wait(), 10)
    await r.close()
    queued = await store.job("j1")
    assert queued is not None and (queued.state, queued.error, queued.attempts) == ("queued", SHUTDOWN, 1)


class FlakyStore:
    """The real store, whose claims fail while `down` is set (an outage)."""

    def __init__(self, store: PlatformStore) -> None:
        self.store = store
        self.down = True
        self.refused = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    async def claim_job(self, worker: str, now: float, lease: float) -> Job | None:
        if self.down:
            self.refused += 1
            raise BackendError("platform store x: connection refused")
        return await self.store.claim_job(worker, now, lease)


async def test_a_store_outage_pauses_the_runner_and_it_resumes(store: PlatformStore) -> None:
    flaky = FlakyStore(store)
    done: list[str] = []

    async def index(j: Job) -> None:
        done.append(j.id)

    r = JobRunner(flaky, {"index": index}, poll_interval=0.05, outage_wait=0.05)  # type: ignore[arg-type]
    r.start()
    try:
        await store.add_job(job("j1"))
        await until(lambda: _true(flaky.refused >= 3))
        assert r.stats()["store_ok"] is False and done == []
        flaky.down = False
        await until(lambda: _is(store, "j1", "completed"))
        assert r.stats()["store_ok"] is True
    finally:
        await r.close()
    assert done == ["j1"]


async def _true(value: bool) -> bool:
    return value


async def test_runners_of_two_replicas_run_each_job_once(store_url: str, store: PlatformStore) -> None:
    other = platform_store_from_url(store_url)
    await other.open()
    ran: list[str] = []

    async def index(j: Job) -> None:
        ran.append(j.id)
        await asyncio.sleep(0.01)

    runners = [runner(store, {"index": index}, concurrency=3), runner(other, {"index": index}, concurrency=3)]
    try:
        for i in range(40):
            await store.add_job(job(f"j{i:02d}"))
        for r in runners:
            r.start()
        await until(lambda: _all_done(store, 40))
    finally:
        for r in runners:
            await r.close()
        await other.close()
    assert sorted(ran) == [f"j{i:02d}" for i in range(40)]


async def _all_done(store: PlatformStore, n: int) -> bool:
    return len(await store.jobs(state="completed", limit=1000)) == n


def test_backoff_doubles_up_to_its_cap() -> None:
    assert [backoff(n, 1.0, 10.0) for n in (1, 2, 3, 4, 5, 6)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_error_text_is_one_line_short_and_masks_secrets() -> None:
    text = error_text(ValueError("failed for redis://user:hunter2@host:6379/0\nmore"))
    assert "hunter2" not in text and "\n" not in text and text.startswith("ValueError: ")
    assert len(error_text(RuntimeError("x" * 5000))) <= 500


async def test_an_idle_runner_prunes_replaced_jobs_past_their_retention(store: PlatformStore) -> None:
    async def index(j: Job) -> None:
        return None

    # Two runs of the same subject: once both are done and the retention has passed, the older goes.
    r = runner(store, {"index": index}, retention=0.2, prune_every=0.05)
    r.start()
    try:
        await store.add_job(job("first", created_at=1.0, run_at=1.0))
        r.wake()
        await until(lambda: _is(store, "first", "completed"))
        await store.add_job(job("second", created_at=2.0, run_at=2.0))
        r.wake()
        await until(lambda: _is(store, "second", "completed"))
        await until(lambda: _gone(store, "first"))
        await asyncio.sleep(0.3)  # more prunes pass: the subject's newest job stays
    finally:
        await r.close()
    assert await state_of(store, "second") == "completed"
    assert r.stats()["pruned"] == 1


async def _gone(store: PlatformStore, jid: str) -> bool:
    return await store.job(jid) is None
