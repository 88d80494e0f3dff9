"""The platform's background jobs run here: claimed from the store, run by the handler of their kind, with
a lease renewed while they run, retried with backoff, failed for good when their attempts are spent.

Every replica runs a JobRunner over the same store; the store's claim gives each job to one worker at a
time (store/jobs_sql.py), and a job whose process died runs again once its lease runs out. A store outage
never stops the runner: it logs once, waits and claims again.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from llmkit.core.ids import fresh_hex
from llmkit.core.secrets import mask_secrets
from llmkit.errors import BackendError
from llmkit.platform.store.base import Job, PlatformStore

log = logging.getLogger("llmkit.platform.jobs")

# What runs a job of one kind: raises to fail the attempt (its message is recorded on the job).
Handler = Callable[[Job], Awaitable[object]]
# Told of a job that failed for good, with its error (the platform emits job.failed).
FailureHook = Callable[[Job, str], Awaitable[object]]

LEASE_S = 30.0
POLL_S = 0.5
BACKOFF_BASE_S = 1.0
BACKOFF_MAX_S = 300.0
OUTAGE_WAIT_S = 1.0
# Finished jobs another job replaced are deleted this long after they finished, checked this often, this
# many per statement.
RETENTION_S = 7 * 86400.0
PRUNE_EVERY_S = 600.0
PRUNE_BATCH = 1000
MAX_ERROR_CHARS = 500
SHUTDOWN = "interrupted: the server stopped while running it"


def backoff(attempts: int, base: float = BACKOFF_BASE_S, most: float = BACKOFF_MAX_S) -> float:
    """Seconds before attempt `attempts + 1`: base, 2 x base, 4 x base, ... at most `most`."""
    return float(min(most, base * 2 ** max(0, attempts - 1)))


def error_text(exc: BaseException) -> str:
    """What a failed attempt records: the error's type and first line, short, secrets masked."""
    lines = str(exc).strip().splitlines()
    first = lines[0] if lines else ""
    return mask_secrets(f"{type(exc).__name__}: {first}")[:MAX_ERROR_CHARS]


class JobRunner:
    """Claims and runs due jobs, at most `concurrency` at once, until closed."""

    def __init__(
        self,
        store: PlatformStore,
        handlers: Mapping[str, Handler],
        *,
        concurrency: int = 2,
        lease: float = LEASE_S,
        poll_interval: float = POLL_S,
        backoff_base: float = BACKOFF_BASE_S,
        backoff_max: float = BACKOFF_MAX_S,
        outage_wait: float = OUTAGE_WAIT_S,
        clock: Callable[[], float] = time.time,
        worker: str | None = None,
        on_failure: FailureHook | None = None,
        retention: float = RETENTION_S,
        prune_every: float = PRUNE_EVERY_S,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        self.store = store
        self.handlers = dict(handlers)
        self.concurrency = concurrency
        self.lease = lease
        self.poll_interval = poll_interval
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.outage_wait = outage_wait
        self.clock = clock
        self.worker = worker or f"worker-{fresh_hex()[:16]}"
        self.on_failure = on_failure
        self.retention = retention
        self.prune_every = prune_every
        self._pruned_at = -prune_every  # the first idle moment prunes
        self.counts = {"claimed": 0, "completed": 0, "retried": 0, "failed": 0, "lost": 0, "pruned": 0}
        self.last_error: str | None = None
        self._slots = asyncio.Semaphore(concurrency)
        self._wake = asyncio.Event()
        self._running: dict[str, asyncio.Task[None]] = {}
        self._loop_task: asyncio.Task[None] | None = None
        self._outage = False

    def start(self) -> None:
        """Start claiming (idempotent)."""
        if self._loop_task is None:
            self._loop_task = asyncio.create_task(self._claim_loop(), name="llmkit-jobs")

    def wake(self) -> None:
        """A job was just queued: claim now rather than at the next poll."""
        self._wake.set()

    def stats(self) -> dict[str, Any]:
        """What /stats shows of the runner."""
        return {
            "worker": self.worker,
            "running": len(self._running),
            "concurrency": self.concurrency,
            **self.counts,
            "store_ok": not self._outage,
            "last_error": self.last_error,
        }

    async def close(self) -> None:
        """Stop claiming; jobs still running are cancelled and queued again at once (an attempt is spent)."""
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
            self._loop_task = None
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _claim_loop(self) -> None:
        while True:
            await self._slots.acquire()
            try:
                job = await self._claim()
            except BaseException:
                self._slots.release()
                raise
            if job is None:
                self._slots.release()
                if time.monotonic() - self._pruned_at >= self.prune_every:
                    await self.prune()
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.poll_interval)
                continue
            task = asyncio.create_task(self._run(job), name=f"llmkit-job-{job.id}")
            self._running[job.id] = task
            task.add_done_callback(functools.partial(self._done, job.id))

    async def prune(self) -> int:
        """Delete the finished jobs older than `retention` that newer ones replaced (store.prune_jobs), a
        batch at a time; how many. A store that fails is logged and tried at the next prune."""
        self._pruned_at = time.monotonic()
        before = self.clock() - self.retention
        pruned = 0
        try:
            while True:
                n = await self.store.prune_jobs(before, PRUNE_BATCH)
                pruned += n
                if n < PRUNE_BATCH:
                    break
        except BackendError as exc:
            self.last_error = str(exc)
            log.warning("jobs: cannot prune old jobs, trying again later: %s", exc)
        if pruned:
            self.counts["pruned"] += pruned
            log.info("jobs: pruned %d finished jobs older than %.0f s", pruned, self.retention)
        return pruned

    def _done(self, job_id: str, _task: asyncio.Task[None]) -> None:
        self._running.pop(job_id, None)
        self._slots.release()

    async def _claim(self) -> Job | None:
        """The next due job, or None; a store that cannot be reached waits `outage_wait` (logged once)."""
        try:
            job = await self.store.claim_job(self.worker, self.clock(), self.lease)
        except BackendError as exc:
            self.last_error = str(exc)
            if not self._outage:
                self._outage = True
                log.warning("jobs: cannot claim from the platform store, trying again: %s", exc)
            await asyncio.sleep(self.outage_wait)
            return None
        if self._outage:
            self._outage = False
            log.info("jobs: the platform store answers again")
        if job is not None:
            self.counts["claimed"] += 1
        return job

    async def _run(self, job: Job) -> None:
        heartbeat = asyncio.create_task(self._renew(job), name=f"llmkit-job-lease-{job.id}")
        try:
            handler = self.handlers.get(job.kind)
            if handler is None:
                await self._record(job, f"no handler for jobs of kind {job.kind!r}", final=True)
                return
            started = time.perf_counter()
            try:
                await handler(job)
            except asyncio.CancelledError:
                # Shutdown: queue it again now, so another replica (or this one, restarted) runs it.
                with contextlib.suppress(BackendError):
                    await self.store.fail_job(job.id, self.worker, self.clock(), SHUTDOWN, self.clock())
                raise
            except Exception as exc:
                await self._record(job, error_text(exc), final=job.attempts >= job.max_attempts)
                return
            if await self._store_call(self.store.finish_job(job.id, self.worker, self.clock())):
                self.counts["completed"] += 1
                log.info(
                    "jobs: %s %s of tenant %s completed in %.0f ms (attempt %d)",
                    job.kind,
                    job.id,
                    job.tenant_id,
                    (time.perf_counter() - started) * 1000,
                    job.attempts,
                )
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat

    async def _record(self, job: Job, error: str, *, final: bool) -> None:
        """A failed attempt: retry after the backoff, or fail for good."""
        now = self.clock()
        retry_at = None if final else now + backoff(job.attempts, self.backoff_base, self.backoff_max)
        if not await self._store_call(self.store.fail_job(job.id, self.worker, now, error, retry_at)):
            return
        if retry_at is None:
            self.counts["failed"] += 1
            log.warning("jobs: %s %s failed after %d attempts: %s", job.kind, job.id, job.attempts, error)
            if self.on_failure is not None:
                try:
                    await self.on_failure(job, error)
                except Exception:
                    log.exception("jobs: the failure hook of %s raised", job.id)
        else:
            self.counts["retried"] += 1
            log.info(
                "jobs: %s %s attempt %d failed, retrying in %.1f s: %s",
                job.kind,
                job.id,
                job.attempts,
                retry_at - now,
                error,
            )

    async def _store_call(self, call: Awaitable[bool]) -> bool:
        """A finish or fail: False when the job was lost (another worker took it over) or the store failed
        (the lease then runs out and the job runs again)."""
        try:
            held = await call
        except BackendError as exc:
            self.last_error = str(exc)
            log.warning("jobs: could not record a job's result (it will run again): %s", exc)
            return False
        if not held:
            self.counts["lost"] += 1
        return held

    async def _renew(self, job: Job) -> None:
        """Extend the lease every third of it while the job runs."""
        while True:
            await asyncio.sleep(self.lease / 3)
            try:
                held = await self.store.extend_job(job.id, self.worker, self.clock() + self.lease)
            except BackendError as exc:
                log.warning("jobs: could not renew the lease of %s: %s", job.id, exc)
                continue
            if not held:
                log.warning("jobs: %s was taken over by another worker (its lease ran out)", job.id)
                return
