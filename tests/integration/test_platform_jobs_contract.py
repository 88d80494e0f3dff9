"""One contract for background jobs on every platform store: claim, lease, retry, failure, isolation."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from llmkit.platform.quota_types import Quotas
from llmkit.platform.store import platform_store_from_url
from llmkit.platform.store.base import Job, PlatformStore, StoreConflict, Tenant
from llmkit.platform.store.jobs_sql import LEASE_LOST


def job(jid: str = "j1", tenant_id: str = "t1", created: float = 100.0, **kw: object) -> Job:
    fields: dict[str, object] = {"run_at": created, "payload": {"document": "d1", "n": 1}, "subject": "d1"}
    fields.update(kw)
    return Job(id=jid, tenant_id=tenant_id, kind="index", created_at=created, **fields)  # type: ignore[arg-type]


async def test_a_job_round_trips_and_is_visible_to_its_tenant_only(store: PlatformStore) -> None:
    await store.add_job(job())
    got = await store.job("j1")
    assert got == job()
    assert got is not None and got.payload == {"document": "d1", "n": 1} and got.state == "queued"
    assert await store.job("j1", tenant_id="t1") == got
    assert await store.job("j1", tenant_id="t2") is None
    assert await store.job("missing") is None
    with pytest.raises(StoreConflict):
        await store.add_job(job())


async def test_claims_take_the_oldest_due_job_and_lease_it(store: PlatformStore) -> None:
    await store.add_job(job("late", created=50.0, run_at=500.0))  # not due before 500
    await store.add_job(job("second", created=120.0))
    await store.add_job(job("first", created=110.0))
    claimed = await store.claim_job("w1", now=200.0, lease=30.0)
    assert claimed is not None and claimed.id == "first"
    assert (claimed.state, claimed.attempts, claimed.worker) == ("running", 1, "w1")
    assert (claimed.lease_until, claimed.started_at) == (230.0, 200.0)
    assert await store.job("first") == claimed
    nxt = await store.claim_job("w2", now=200.0, lease=30.0)
    assert nxt is not None and nxt.id == "second"
    assert await store.claim_job("w3", now=200.0, lease=30.0) is None  # "late" is not due yet
    assert await store.finish_job("first", "w1", now=210.0)
    assert await store.finish_job("second", "w2", now=210.0)
    due = await store.claim_job("w3", now=500.0, lease=30.0)
    assert due is not None and due.id == "late"


async def test_finishing_completes_only_for_the_holder(store: PlatformStore) -> None:
    await store.add_job(job())
    await store.claim_job("w1", now=200.0, lease=30.0)
    assert not await store.finish_job("j1", "w2", now=210.0)
    assert await store.finish_job("j1", "w1", now=210.0)
    done = await store.job("j1")
    assert done is not None
    assert (done.state, done.finished_at, done.lease_until, done.error) == ("completed", 210.0, None, None)
    assert not await store.finish_job("j1", "w1", now=211.0)  # once
    assert await store.claim_job("w1", now=10_000.0, lease=30.0) is None


async def test_a_failure_retries_later_then_fails_for_good(store: PlatformStore) -> None:
    await store.add_job(job())
    await store.claim_job("w1", now=200.0, lease=30.0)
    assert await store.fail_job("j1", "w1", now=201.0, error="upstream 503", retry_at=260.0)
    waiting = await store.job("j1")
    assert waiting is not None
    assert (waiting.state, waiting.run_at, waiting.error, waiting.attempts) == (
        "queued",
        260.0,
        "upstream 503",
        1,
    )
    assert await store.claim_job("w1", now=259.0, lease=30.0) is None
    again = await store.claim_job("w2", now=260.0, lease=30.0)
    assert again is not None and (again.attempts, again.worker) == (2, "w2")
    assert not await store.fail_job("j1", "w1", now=261.0, error="not mine")  # w1 no longer holds it
    assert await store.fail_job("j1", "w2", now=262.0, error="bad document")
    failed = await store.job("j1")
    assert failed is not None
    assert (failed.state, failed.finished_at, failed.error) == ("failed", 262.0, "bad document")
    assert await store.claim_job("w3", now=10_000.0, lease=30.0) is None


async def test_a_dead_workers_job_runs_again_once_its_lease_runs_out(store: PlatformStore) -> None:
    await store.add_job(job(max_attempts=3))
    await store.claim_job("dead", now=200.0, lease=30.0)
    assert await store.claim_job("w2", now=229.0, lease=30.0) is None  # still leased
    taken = await store.claim_job("w2", now=231.0, lease=30.0)
    assert taken is not None and (taken.worker, taken.attempts, taken.lease_until) == ("w2", 2, 261.0)
    # The dead worker comes back: nothing it says changes the job any more.
    assert not await store.extend_job("j1", "dead", lease_until=999.0)
    assert not await store.finish_job("j1", "dead", now=232.0)
    assert await store.extend_job("j1", "w2", lease_until=300.0)
    assert await store.claim_job("w3", now=290.0, lease=30.0) is None  # the renewed lease holds
    assert await store.finish_job("j1", "w2", now=295.0)


async def test_a_job_whose_attempts_ran_out_with_its_worker_gone_fails(store: PlatformStore) -> None:
    await store.add_job(job(max_attempts=1))
    await store.claim_job("dead", now=200.0, lease=30.0)
    assert await store.claim_job("w2", now=300.0, lease=30.0) is None
    failed = await store.job("j1")
    assert failed is not None
    assert (failed.state, failed.error, failed.finished_at, failed.attempts) == (
        "failed",
        LEASE_LOST,
        300.0,
        1,
    )


async def test_requeue_runs_a_failed_job_again_with_fresh_attempts(store: PlatformStore) -> None:
    await store.add_job(job(max_attempts=1))
    await store.claim_job("w1", now=200.0, lease=30.0)
    assert not await store.requeue_job("j1", now=205.0)  # running, not failed
    await store.fail_job("j1", "w1", now=210.0, error="boom")
    assert not await store.requeue_job("j1", now=220.0, tenant_id="t2")  # another tenant's
    assert await store.requeue_job("j1", now=220.0, tenant_id="t1")
    queued = await store.job("j1")
    assert queued is not None
    assert (queued.state, queued.attempts, queued.run_at, queued.finished_at) == ("queued", 0, 220.0, None)
    assert queued.error == "boom"  # the last error stays until it runs again
    again = await store.claim_job("w2", now=221.0, lease=30.0)
    assert again is not None and again.attempts == 1
    assert not await store.requeue_job("missing", now=222.0)


async def test_jobs_list_newest_first_by_state_and_tenant(store: PlatformStore) -> None:
    for i in range(5):
        await store.add_job(job(f"a{i}", tenant_id="t1", created=100.0 + i))
    await store.add_job(job("b0", tenant_id="t2", created=200.0))
    await store.claim_job("w", now=1000.0, lease=30.0)  # a0, the oldest due
    assert [j.id for j in await store.jobs()] == ["b0", "a4", "a3", "a2", "a1", "a0"]
    assert [j.id for j in await store.jobs(tenant_id="t1", limit=2)] == ["a4", "a3"]
    assert [j.id for j in await store.jobs(tenant_id="t1", limit=2, offset=2)] == ["a2", "a1"]
    assert [j.id for j in await store.jobs(state="running")] == ["a0"]
    assert [j.id for j in await store.jobs(state="queued", tenant_id="t2")] == ["b0"]
    assert await store.jobs(state="failed") == []


async def test_replicas_claiming_at_once_run_each_job_once(store_url: str, store: PlatformStore) -> None:
    for i in range(30):
        await store.add_job(job(f"j{i:02d}", created=100.0 + i))
    replicas = [platform_store_from_url(store_url) for _ in range(3)]
    for replica in replicas:
        await replica.open()
    try:

        async def worker(replica: PlatformStore, name: str) -> list[str]:
            mine = []
            while (claimed := await replica.claim_job(name, now=1000.0, lease=60.0)) is not None:
                mine.append(claimed.id)
            return mine

        runs = await asyncio.gather(
            *(worker(replica, f"r{r}w{w}") for r, replica in enumerate(replicas) for w in range(3))
        )
    finally:
        for replica in replicas:
            await replica.close()
    claimed = [jid for run in runs for jid in run]
    assert sorted(claimed) == [f"j{i:02d}" for i in range(30)]  # every job, none twice
    assert all(j.state == "running" and j.attempts == 1 for j in await store.jobs(limit=100))


async def test_deleting_a_tenant_deletes_its_jobs_only(store: PlatformStore) -> None:
    await store.add_tenant(Tenant("t1", "Acme", Quotas(), 1.0, 1.0))
    await store.add_job(job("mine", tenant_id="t1"))
    await store.add_job(job("theirs", tenant_id="t2"))
    await store.delete_tenant("t1", at=5.0)
    assert await store.job("mine") is None
    assert await store.job("theirs") is not None


async def test_concurrent_transactions_on_one_store_neither_fail_nor_mix(store: PlatformStore) -> None:
    # Many tasks of one process share the store (one SQLite connection): claims (transactions) and
    # plain writes interleaved must each succeed and keep their own effects.
    for i in range(20):
        await store.add_job(job(f"j{i:02d}", created=100.0 + i))

    async def claim(name: str) -> str | None:
        claimed = await store.claim_job(name, now=1000.0, lease=60.0)
        return claimed.id if claimed else None

    results = await asyncio.gather(
        *(claim(f"w{i}") for i in range(20)),
        *(store.add_job(job(f"new{i}", created=2000.0 + i, run_at=5000.0)) for i in range(10)),
    )
    assert sorted(r for r in results[:20] if r is not None) == [f"j{i:02d}" for i in range(20)]
    assert len(await store.jobs(state="queued", limit=100)) == 10


async def test_a_sqlite_claim_gives_way_to_another_writer_holding_the_file(tmp_path: Path) -> None:
    # Another connection (the analytics writer may share the file) holds the write lock: a claim must not
    # hold this store's one connection for the full busy timeout and fail; it leaves the job to the next poll.
    url = f"sqlite:///{tmp_path}/platform.db"
    store = platform_store_from_url(url)
    await store.open()
    try:
        await store.add_job(job("j1"))
        other = sqlite3.connect(tmp_path / "platform.db", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        assert await store.claim_job("w1", now=1000.0, lease=30.0) is None  # not a "database is locked"
        other.execute("ROLLBACK")
        other.close()
        claimed = await store.claim_job("w1", now=1000.0, lease=30.0)
        assert claimed is not None and claimed.id == "j1"
        assert await store.job("j1") == claimed  # the store works on afterwards
    finally:
        await store.close()


async def test_pruning_deletes_old_replaced_jobs_and_keeps_each_subjects_newest(store: PlatformStore) -> None:
    async def done(j: Job, at: float, failed: bool = False) -> None:
        await store.add_job(j)
        claimed = await store.claim_job("w1", now=at, lease=30.0)
        assert claimed is not None and claimed.id == j.id
        if failed:
            assert await store.fail_job(j.id, "w1", now=at, error="boom")
        else:
            assert await store.finish_job(j.id, "w1", now=at)

    await done(job("old", created=100.0), 110.0)
    await done(job("old-failed", created=120.0), 130.0, failed=True)
    await done(job("newest", created=140.0), 150.0)
    await done(job("alone", created=100.0, subject="d2"), 110.0)  # its subject's only job
    await done(job("recent", created=300.0, subject="d3"), 310.0)
    await done(job("recent-newer", created=320.0, subject="d3"), 330.0)
    await store.add_job(job("queued", created=100.0, subject="d4"))
    await store.add_job(job("queued-newer", created=101.0, subject="d4"))
    assert await store.prune_jobs(before=200.0, limit=1) == 1  # a batch at a time
    assert await store.prune_jobs(before=200.0, limit=100) == 1
    assert await store.prune_jobs(before=200.0, limit=100) == 0
    left = {j.id for j in await store.jobs(limit=100)}
    assert left == {"newest", "alone", "recent", "recent-newer", "queued", "queued-newer"}


async def test_an_index_job_of_a_deleted_document_is_pruned(store: PlatformStore) -> None:
    from llmkit.platform.store.base import Document

    await store.add_tenant(Tenant("t1", "Acme", Quotas(), 1.0, 1.0))
    document = Document("d1", "t1", "T", "text", {}, 1.0, 1.0)
    await store.add_document(document, [])
    index = Job(id="ix", tenant_id="t1", kind="index_document", subject="d1", created_at=100.0, run_at=100.0)
    await store.add_job(index)
    assert await store.claim_job("w1", now=100.0, lease=30.0) is not None
    assert await store.finish_job("ix", "w1", now=110.0)
    assert await store.prune_jobs(before=200.0, limit=100) == 0  # the document's indexing state
    assert await store.delete_document("t1", "d1")
    assert await store.prune_jobs(before=200.0, limit=100) == 1
    assert await store.job("ix") is None
