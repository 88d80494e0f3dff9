"""MemoryJobStore: results expire after the TTL, idempotency keys, listeners, waiting for the end."""

from __future__ import annotations

import asyncio

import pytest

from llmkit.orchestrate import jobs as jobs_module
from llmkit.orchestrate.jobs import COMPLETED, PROCESSING, Job, MemoryJobStore, wait_terminal


async def test_terminal_jobs_expire_after_the_ttl(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(jobs_module.time, "time", lambda: now[0])
    store = MemoryJobStore(ttl=60)
    running, done = Job("run", "p", created_at=now[0]), Job("done", "p", created_at=now[0])
    await store.add(running)
    await store.add(done)
    done.status = COMPLETED
    await store.save(done)
    now[0] += 59
    assert await store.get("done") is not None
    now[0] += 2
    assert await store.get("done") is None, "a finished job is gone after result_ttl_s"
    assert await store.get("run") is not None, "a job still running never expires"
    await store.add(Job("new", "p"))  # adding purges the expired ones from memory too
    assert store.counts()["completed"] == 0


async def test_idempotency_keys_name_the_first_job_until_they_expire(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [0.0]
    monkeypatch.setattr(jobs_module.time, "time", lambda: now[0])
    store = MemoryJobStore(ttl=10)
    assert await store.claim_key("k", "a") == "a"
    assert await store.claim_key("k", "b") == "a"
    now[0] += 11
    assert await store.claim_key("k", "c") == "c"


async def test_wait_terminal_returns_at_the_end_or_at_the_timeout() -> None:
    store = MemoryJobStore(ttl=60)
    job = Job("j", "p")
    await store.add(job)
    assert (await wait_terminal(store, "j", 0.05)).status == "pending"  # type: ignore[union-attr]
    waiter = asyncio.ensure_future(wait_terminal(store, "j", 5))
    await asyncio.sleep(0)
    job.status = PROCESSING
    await store.save(job)
    assert not waiter.done()
    job.status, job.result = COMPLETED, "ok"
    await store.save(job)
    assert (await waiter).result == "ok"  # type: ignore[union-attr]
    assert await wait_terminal(store, "missing", 1) is None


def test_a_job_round_trips_and_fields_of_a_newer_version_are_left_out() -> None:
    job = Job("j1", "prompt", priority="high", metadata={"a": 1}, tenant_id="acme")
    assert Job.from_dict(job.to_dict()) == job
    # Written by a newer orchestrator during a rolling upgrade: its new field must not fail the read.
    newer = {**job.to_dict(), "field_from_the_future": "x"}
    assert Job.from_dict(newer) == job
