"""The Orchestrator: submit (rate limit, idempotency, cache, coalescing, queue), cancel, the workers."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from llmkit.core import telemetry
from llmkit.core.auth import ANONYMOUS, Identity
from llmkit.core.cache.base import Cache
from llmkit.core.http import ApiError
from llmkit.core.limiter.base import TokenBucket
from llmkit.core.queue.base import DuplicateItem, PriorityQueue
from llmkit.errors import BackendError, QueueFull
from llmkit.orchestrate.backends.base import Backend
from llmkit.orchestrate.jobs import (
    CANCELLED,
    COMPLETED,
    FAILED,
    PENDING,
    TIMEOUT,
    Job,
    JobStore,
    wait_terminal,
)
from llmkit.orchestrate.workers import NO_DRAIN, Drain, WorkerPool
from llmkit.settings import OrchestrateSettings

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

log = logging.getLogger("llmkit.orchestrate")
# How long /health waits for the queue or the job store before it calls them unreachable.
PROBE_S = 1.0
# What a stopping server tells clients to wait before they submit again (to another replica, say).
STOPPING_RETRY_AFTER_S = 2


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


def idempotency_name(identity: Identity, key: str) -> str:
    """An Idempotency-Key within its tenant: one tenant's key never names another tenant's job. The
    tenant is length-prefixed, so no choice of tenant id and key spells another pair."""
    tenant = identity.tenant_id
    return f"{len(tenant)}:{tenant}:{key}"


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
        drain: Drain = NO_DRAIN,
    ) -> None:
        self.settings = settings
        self.store = store
        self.queue = queue
        self.backend = backend
        self.bucket = bucket
        self.cache = cache
        self.counters = Counters()
        # cache key -> the job computing it; identical submits while it runs wait for it instead.
        self._leaders: dict[str, str] = {}
        self._followers: set[asyncio.Task[None]] = set()
        # Leaders whose store write or queue put is still under way (not yet readable from the store).
        self._creating: dict[str, asyncio.Event] = {}
        self.stopping = False
        self._failing: asyncio.Task[None] | None = None
        self.workers = WorkerPool(
            settings,
            store,
            queue,
            backend,
            self.counters.finished,
            self._forget_leader,
            cache,
            cache_ttl,
            drain,
        )

    # -- submitting -------------------------------------------------------------------------------------

    def cache_key(self, sub: Submission, tenant_id: str = ANONYMOUS.tenant_id) -> str:
        """A hash of what decides the answer (backend, model, prompt, parameters) and whose it is: the
        result cache and coalescing never hand one tenant's answer to another."""
        material = orjson.dumps(
            [self.settings.backend, sub.model or self.settings.model, sub.prompt, sub.parameters, tenant_id],
            option=orjson.OPT_SORT_KEYS,
        )
        return "orchestrate:result:" + hashlib.sha256(material).hexdigest()

    def rate_keys(
        self, session_id: str | None, client: str, key_id: str | None = None
    ) -> list[tuple[str, str]]:
        """(bucket key, who) pairs a submit must pass, per `rate_limit_by`; the client address comes first.

        A caller with an API key is counted by its key instead of its session id (which it could invent).
        """
        by = self.settings.rate_limit_by
        keys: list[tuple[str, str]] = []
        if by != "session" or (session_id is None and key_id is None):
            # Without a session id (or key) even `session` counts the caller by address, as it always did.
            keys.append((f"client:{client}", f"client {client}"))
        if by != "client" and key_id is not None:
            keys.append((f"key:{key_id}", f"API key {key_id}"))
        elif by != "client" and session_id is not None:
            keys.append((f"session:{session_id}", f"session {session_id!r}"))
        return keys

    async def _check_rate(self, session_id: str | None, client: str, key_id: str | None) -> None:
        if self.bucket is None:
            return
        for key, who in self.rate_keys(session_id, client, key_id):
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
        self,
        sub: Submission,
        client: str = "-",
        on_created: Callable[[Job], None] | None = None,
        identity: Identity = ANONYMOUS,
    ) -> Job:
        """Create `identity`'s job: answered from the cache, joined to an identical running one, or queued.

        `on_created(job)` runs before the job can start, so a listener it adds misses no event.
        """
        if self.stopping:
            raise ApiError(
                503,
                "shutting_down",
                "this server is shutting down and takes no new jobs; submit again in a few seconds "
                "(another replica takes it)",
                headers={"Retry-After": str(STOPPING_RETRY_AFTER_S)},
            )
        await self._check_rate(sub.session_id, client, identity.key_id)
        job = Job(
            id=str(uuid.uuid4()),
            prompt=sub.prompt,
            priority=sub.priority,
            session_id=sub.session_id,
            metadata=dict(sub.metadata),
            model=sub.model,
            parameters=dict(sub.parameters),
            stream=sub.stream,
            tenant_id=identity.tenant_id,
            key_id=identity.key_id,
            traceparent=telemetry.traceparent() or "",
        )
        if on_created is not None:
            on_created(job)
        if sub.idempotency_key is not None:
            first = await self.store.claim_key(idempotency_name(identity, sub.idempotency_key), job.id)
            if first != job.id:
                self.counters.idempotent_repeats += 1
                earlier = await self.store.get(first)
                # The name holds the tenant already; checking the job too costs nothing.
                if earlier is not None and earlier.tenant_id == job.tenant_id:
                    if earlier.status == PENDING and earlier.id not in self._creating:
                        # The replica that took the first submit may have died between storing the job
                        # and queueing it (the balancer then replays the submit here): queue it now,
                        # or it stays pending forever. Queued or taken by a worker already, put refuses.
                        await self._put_once(earlier)
                    return earlier
        self.counters.submitted += 1
        job.cache_key = self.cache_key(sub, identity.tenant_id)
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
            await self._put_once(job)
        except QueueFull as exc:
            self._leaders.pop(job.cache_key, None)
            self.counters.rejected_full += 1
            job.status, job.error = FAILED, str(exc)
            await self.store.save(job)
            raise ApiError(429, "queue_full", str(exc), headers={"Retry-After": "1"}) from None
        except BackendError as exc:
            self._leaders.pop(job.cache_key, None)
            # Stored but never queued, it would stay pending forever: it fails (if the store still answers).
            job.status, job.error = FAILED, f"not queued: {exc}"
            with contextlib.suppress(BackendError):
                await self.store.save(job)
            raise
        except BaseException:
            self._leaders.pop(job.cache_key, None)
            raise
        finally:
            del self._creating[job.id]
            created.set()
        return job

    async def _put_once(self, job: Job) -> None:
        """Queue a stored job unless it is queued or running already (a repeated submit queued it)."""
        with contextlib.suppress(DuplicateItem):
            await self.queue.put(job.id, b"", job.priority)

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

    async def job_for(self, job_id: str, identity: Identity = ANONYMOUS) -> Job:
        """The job if `identity` may see it; else 404, the same answer as for an unknown job (another
        tenant's job ids must not be discoverable)."""
        job = await self.store.get(job_id)
        if job is None or not job.visible_to(identity):
            raise ApiError(404, "job_not_found", f"no job {job_id!r} (unknown, or its result has expired)")
        return job

    async def cancel(self, job_id: str, identity: Identity = ANONYMOUS) -> Job:
        """Cancel a pending job of `identity`'s; 404 unknown (or another tenant's), 409 once it runs."""
        job = await self.job_for(job_id, identity)
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
        self.workers.start()

    def _forget_leader(self, job: Job) -> None:
        if self._leaders.get(job.cache_key) == job.id:
            del self._leaders[job.cache_key]

    def stop(self) -> None:
        """A stop was requested: refuse submits, take no more jobs, let running ones finish (drain)."""
        if self.stopping:
            return
        self.stopping = True
        self.workers.stop()
        if not self.workers.drain.release:
            self._failing = asyncio.create_task(self._fail_pending())

    async def _fail_pending(self) -> None:
        """A queue in memory dies with the process: its pending jobs fail now, saying why."""
        while (item := await self.queue.get(timeout=0)) is not None:
            job = await self.store.get(item.id)
            if job is not None and job.status == PENDING:
                job.status, job.error = FAILED, "the server shut down before the job started; submit it again"
                await self.store.save(job)
                self._forget_leader(job)

    async def unreachable(self) -> list[str]:
        """What this process cannot reach right now: "queue", "job store" (each asked once, briefly)."""
        checks: list[tuple[str, Callable[[], Awaitable[object]]]] = [
            ("queue", self.queue.size),
            ("job store", lambda: self.store.get("health-probe")),
        ]
        missing = []
        for name, check in checks:
            try:
                async with asyncio.timeout(PROBE_S):
                    await check()
            except (BackendError, TimeoutError):
                missing.append(name)
        return missing

    def collect(self) -> Iterator[Metric]:
        """Prometheus families of this process's jobs, built at scrape time."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        counters = self.counters
        running = "Jobs running in this process."
        yield GaugeMetricFamily("llmkit_orchestrate_running_jobs", running, value=self.busy)
        for name, text, value in (
            ("submitted", "Jobs submitted to this process.", counters.submitted),
            ("cache_hits", "Jobs answered from the result cache.", counters.cache_hits),
            ("coalesced", "Jobs joined to an identical running job.", counters.coalesced),
            (
                "rate_limited",
                "Submits refused by the rate limit (orchestrate.rate_limit_by).",
                counters.rate_limited,
            ),
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
        return self.workers.busy

    async def close(self) -> None:
        """Stop the workers (after the drain, if a stop was requested) and the followers."""
        await self.workers.close()
        if self._failing is not None:
            await asyncio.gather(self._failing, return_exceptions=True)
        for task in self._followers:
            task.cancel()
        await asyncio.gather(*self._followers, return_exceptions=True)
