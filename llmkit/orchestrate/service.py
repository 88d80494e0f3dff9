"""The Orchestrator: submit (rate limit, idempotency, cache, coalescing, queue), cancel, the workers."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from llmkit.core.cache.base import Cache
from llmkit.core.http import ApiError
from llmkit.core.limiter.base import TokenBucket
from llmkit.core.queue.base import PriorityQueue
from llmkit.errors import QueueFull
from llmkit.orchestrate.backends.base import Backend, JobSpec
from llmkit.orchestrate.jobs import (
    CANCELLED,
    COMPLETED,
    FAILED,
    PENDING,
    PROCESSING,
    TIMEOUT,
    Job,
    JobStore,
    wait_terminal,
)
from llmkit.settings import OrchestrateSettings

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

log = logging.getLogger("llmkit.orchestrate")
# How long an idle worker waits on the queue before it looks again (and notices a stop).
POLL_S = 1.0
# A job taken this many times without finishing (its workers died or hung) fails instead of running again.
MAX_DELIVERIES = 3


@dataclass
class Counters:
    """What this process did, for /stats."""

    submitted: int = 0
    cache_hits: int = 0
    coalesced: int = 0
    rate_limited: int = 0
    rejected_full: int = 0
    idempotent_repeats: int = 0
    finished: dict[str, int] = field(default_factory=lambda: dict.fromkeys((COMPLETED, FAILED, TIMEOUT), 0))


@dataclass(frozen=True, slots=True)
class Submission:
    """A validated submit request."""

    prompt: str
    priority: str = "normal"
    session_id: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    model: str = ""
    parameters: Mapping[str, Any] = field(default_factory=dict)
    stream: bool = False
    idempotency_key: str | None = None


class Orchestrator:
    """Everything between a submit and a terminal job, independent of HTTP."""

    def __init__(
        self,
        settings: OrchestrateSettings,
        store: JobStore,
        queue: PriorityQueue,
        backend: Backend,
        bucket: TokenBucket | None = None,
        cache: Cache | None = None,
        cache_ttl: float | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.queue = queue
        self.backend = backend
        self.bucket = bucket
        self.cache = cache
        self.cache_ttl = cache_ttl
        self.counters = Counters()
        # cache key -> the job computing it; identical submits while it runs wait for it instead.
        self._leaders: dict[str, str] = {}
        self._workers: list[asyncio.Task[None]] = []
        self._followers: set[asyncio.Task[None]] = set()
        # Leaders whose store write or queue put is still under way (not yet readable from the store).
        self._creating: dict[str, asyncio.Event] = {}
        self._busy = 0

    # -- submitting -------------------------------------------------------------------------------------

    def cache_key(self, sub: Submission) -> str:
        """A hash of what decides the answer: backend, model, prompt and parameters."""
        material = orjson.dumps(
            [self.settings.backend, sub.model or self.settings.model, sub.prompt, sub.parameters],
            option=orjson.OPT_SORT_KEYS,
        )
        return "orchestrate:result:" + hashlib.sha256(material).hexdigest()

    def rate_keys(self, session_id: str | None, client: str) -> list[tuple[str, str]]:
        """(bucket key, who) pairs a submit must pass, per `rate_limit_by`; the client address comes first."""
        by = self.settings.rate_limit_by
        keys: list[tuple[str, str]] = []
        if by != "session" or session_id is None:
            # Without a session id even `session` counts the caller by address, as it always did.
            keys.append((f"client:{client}", f"client {client}"))
        if by != "client" and session_id is not None:
            keys.append((f"session:{session_id}", f"session {session_id!r}"))
        return keys

    async def _check_rate(self, session_id: str | None, client: str) -> None:
        if self.bucket is None:
            return
        for key, who in self.rate_keys(session_id, client):
            decision = await self.bucket.acquire(key)
            if decision.allowed:
                continue
            self.counters.rate_limited += 1
            wait = max(1, math.ceil(decision.retry_after))
            raise ApiError(
                429,
                "rate_limited",
                f"{who} used its {decision.limit} requests per {self.settings.rate_limit_window:g} s "
                f"(orchestrate.rate_limit_requests, counted by {self.settings.rate_limit_by}: "
                f"orchestrate.rate_limit_by); retry after {wait} s",
                headers={
                    "Retry-After": str(wait),
                    "X-RateLimit-Limit": str(decision.limit),
                    "X-RateLimit-Remaining": str(decision.remaining),
                },
                remaining=decision.remaining,
                retry_after=wait,
            )

    async def submit(
        self, sub: Submission, client: str = "-", on_created: Callable[[Job], None] | None = None
    ) -> Job:
        """Create the job: answered from the cache, joined to an identical running one, or queued.

        `on_created(job)` runs before the job can start, so a listener it adds misses no event.
        """
        await self._check_rate(sub.session_id, client)
        job = Job(
            id=str(uuid.uuid4()),
            prompt=sub.prompt,
            priority=sub.priority,
            session_id=sub.session_id,
            metadata=dict(sub.metadata),
            model=sub.model,
            parameters=dict(sub.parameters),
            stream=sub.stream,
        )
        if on_created is not None:
            on_created(job)
        if sub.idempotency_key is not None:
            first = await self.store.claim_key(sub.idempotency_key, job.id)
            if first != job.id:
                self.counters.idempotent_repeats += 1
                earlier = await self.store.get(first)
                if earlier is not None:
                    return earlier
        self.counters.submitted += 1
        job.cache_key = self.cache_key(sub)
        if self.cache is not None and (hit := await self.cache.get(job.cache_key)) is not None:
            self.counters.cache_hits += 1
            job.status, job.result, job.cached = COMPLETED, hit.decode(), True
            await self.store.add(job)
            return job
        leader = self._leaders.get(job.cache_key)
        if leader is not None and not await self._running(leader):
            # Finished in another process (role api hears of it only through the store).
            self._leaders.pop(job.cache_key, None)
            leader = None
        if leader is not None and not sub.stream:
            self.counters.coalesced += 1
            await self.store.add(job)
            task = asyncio.create_task(self._follow(job, leader))
            self._followers.add(task)
            task.add_done_callback(self._followers.discard)
            return job
        # Leader before the store and queue round trips: identical submits arriving meanwhile join it.
        self._leaders[job.cache_key] = job.id
        self._creating[job.id] = created = asyncio.Event()
        try:
            await self.store.add(job)
            await self.queue.put(job.id, b"", job.priority)
        except QueueFull as exc:
            self._leaders.pop(job.cache_key, None)
            self.counters.rejected_full += 1
            job.status, job.error = FAILED, str(exc)
            await self.store.save(job)
            raise ApiError(429, "queue_full", str(exc), headers={"Retry-After": "1"}) from None
        except BaseException:
            self._leaders.pop(job.cache_key, None)
            raise
        finally:
            del self._creating[job.id]
            created.set()
        return job

    async def _running(self, job_id: str) -> bool:
        if job_id in self._creating:
            return True
        job = await self.store.get(job_id)
        return job is not None and not job.terminal

    async def _follow(self, job: Job, leader_id: str) -> None:
        """Finish `job` with the outcome of the identical job already running."""
        creating = self._creating.get(leader_id)
        if creating is not None:
            await creating.wait()  # the leader is not readable from the store before this
        leader = await wait_terminal(self.store, leader_id, self.settings.job_timeout_s + 60)
        current = await self.store.get(job.id)
        if current is None or current.terminal:
            return
        if leader is None or not leader.terminal:
            current.status, current.error = FAILED, "the identical job this one waited for was lost"
        else:
            current.status, current.result, current.error = leader.status, leader.result, leader.error
        await self.store.save(current)

    async def cancel(self, job_id: str) -> Job:
        """Cancel a pending job; 404 unknown, 409 once it runs or has finished."""
        job = await self.store.get(job_id)
        if job is None:
            raise ApiError(404, "job_not_found", f"no job {job_id!r} (unknown, or its result has expired)")
        if job.status != PENDING:
            message = f"job {job_id} is {job.status}; only pending jobs can be cancelled"
            raise ApiError(409, "not_pending", message)
        await self.queue.cancel(job_id)
        job.status, job.error = CANCELLED, "cancelled by the client"
        await self.store.save(job)
        if self._leaders.get(job.cache_key) == job_id:
            del self._leaders[job.cache_key]
        return job

    # -- working ---------------------------------------------------------------------------------------

    def start_workers(self) -> None:
        """Start `concurrency` worker tasks."""
        for n in range(self.settings.concurrency):
            self._workers.append(asyncio.create_task(self._work(), name=f"llmkit-orchestrate-worker-{n}"))

    async def _work(self) -> None:
        lease = self.settings.lease_s
        while True:
            # Leased: a worker that dies mid-job (or stops heartbeating) leaves it to another after `lease`.
            item = await self.queue.get(timeout=POLL_S, lease=lease)
            if item is None:
                continue
            job = await self.store.get(item.id)
            if job is None or not self._runnable(job, item.deliveries):
                await self.queue.ack(item.id, item.token)
                continue
            if item.deliveries > MAX_DELIVERIES:
                # Every worker that took it died or hung: a poison job, not one more chance to crash.
                job.status = FAILED
                job.error = f"abandoned: {item.deliveries - 1} workers took this job and never finished it"
                await self._finish(job)
                await self.queue.ack(item.id, item.token)
                continue
            self._busy += 1
            heartbeat = asyncio.create_task(self._heartbeat(item.id, item.token, lease))
            try:
                await self._run(job)
            finally:
                heartbeat.cancel()
                self._busy -= 1
                await self.queue.ack(item.id, item.token)

    def _runnable(self, job: Job, deliveries: int) -> bool:
        """Pending jobs run; a processing one runs again when its worker lost the lease (it died or hung)."""
        if job.status == PENDING:
            return True
        return job.status == PROCESSING and deliveries > 1

    async def _heartbeat(self, item_id: str, token: str, lease: float) -> None:
        """Keep the lease while the job runs, however long the backend takes."""
        while True:
            await asyncio.sleep(lease / 3)
            if not await self.queue.extend(item_id, token, lease):
                log.warning("job %s: lost its queue lease; another worker may run it", item_id)
                return

    async def _run(self, job: Job) -> None:
        """Run the job to a terminal state, whatever the backend does."""
        job.status, job.attempts = PROCESSING, job.attempts + 1
        await self.store.save(job)
        spec = JobSpec(job.prompt, job.model or self.settings.model, job.parameters, job.stream)
        on_delta = (lambda text: self.store.delta(job.id, text)) if job.stream else None
        try:
            async with asyncio.timeout(self.settings.job_timeout_s):
                text = await self.backend.run(spec, on_delta)
        except TimeoutError:
            limit = self.settings.job_timeout_s
            job.status, job.error = TIMEOUT, f"no answer within {limit:g} s (orchestrate.job_timeout_s)"
        except asyncio.CancelledError:
            job.status, job.error = FAILED, "the worker stopped before the job finished"
            await self._finish(job)
            raise
        except Exception as exc:
            job.status, job.error = FAILED, f"{type(exc).__name__}: {exc}"
        else:
            job.status, job.result = COMPLETED, text
            if self.cache is not None:
                await self.cache.set(job.cache_key, text, ttl=self.cache_ttl)
        await self._finish(job)

    async def _finish(self, job: Job) -> None:
        self.counters.finished[job.status] = self.counters.finished.get(job.status, 0) + 1
        await self.store.save(job)
        if self._leaders.get(job.cache_key) == job.id:
            del self._leaders[job.cache_key]

    def collect(self) -> Iterator[Metric]:
        """Prometheus families of this process's jobs, built at scrape time."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        counters = self.counters
        running = "Jobs running in this process."
        yield GaugeMetricFamily("llmkit_orchestrate_running_jobs", running, value=self._busy)
        for name, text, value in (
            ("submitted", "Jobs submitted to this process.", counters.submitted),
            ("cache_hits", "Jobs answered from the result cache.", counters.cache_hits),
            ("coalesced", "Jobs joined to an identical running job.", counters.coalesced),
            ("rate_limited", "Submits refused by the per-session rate limit.", counters.rate_limited),
        ):
            yield CounterMetricFamily(f"llmkit_orchestrate_{name}", text, value=value)
        ended = "Jobs this process's workers ended, by state."
        finished = CounterMetricFamily("llmkit_orchestrate_finished_jobs", ended, labels=["status"])
        for status, count in counters.finished.items():
            finished.add_metric([status], count)
        yield finished

    @property
    def busy(self) -> int:
        """Jobs running in this process now."""
        return self._busy

    async def close(self) -> None:
        """Stop the workers (a running job is marked failed) and the followers."""
        for task in [*self._workers, *self._followers]:
            task.cancel()
        await asyncio.gather(*self._workers, *self._followers, return_exceptions=True)
        self._workers.clear()
