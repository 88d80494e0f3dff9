"""WorkerPool: tasks that take jobs from the queue and run them, survive backend outages, drain on stop."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from llmkit.core import telemetry
from llmkit.core.cache.base import Cache
from llmkit.core.queue.base import PriorityQueue, QueueItem
from llmkit.errors import BackendError
from llmkit.orchestrate.backends.base import Backend, JobSpec
from llmkit.orchestrate.jobs import COMPLETED, FAILED, PENDING, PROCESSING, TIMEOUT, Job, JobStore
from llmkit.orchestrate.outage import Outage
from llmkit.settings import OrchestrateSettings

log = logging.getLogger("llmkit.orchestrate")
# How long an idle worker waits on the queue before it looks again.
POLL_S = 1.0
# A job taken this many times without finishing (its workers died or hung) fails instead of running again.
MAX_DELIVERIES = 3


@dataclass(frozen=True, slots=True)
class Drain:
    """How a stopping pool ends: the seconds running jobs get, and whether an unfinished one goes back."""

    timeout: float = 10.0
    # True when the queue is shared (redis://): another process's worker finishes a released job.
    release: bool = False


NO_DRAIN = Drain()


class WorkerPool:
    """`concurrency` worker tasks; each runs one job at a time to a terminal state."""

    def __init__(
        self,
        settings: OrchestrateSettings,
        store: JobStore,
        queue: PriorityQueue,
        backend: Backend,
        finished: dict[str, int],
        on_finish: Callable[[Job], None],
        cache: Cache | None = None,
        cache_ttl: float | None = None,
        drain: Drain = NO_DRAIN,
    ) -> None:
        self.settings = settings
        self.store = store
        self.queue = queue
        self.backend = backend
        self.finished = finished
        self.on_finish = on_finish
        self.cache = cache
        self.cache_ttl = cache_ttl
        self.drain = drain
        self.outage = Outage()
        self.stopping = False
        self.busy = 0
        self._tasks: list[asyncio.Task[None]] = []
        # Workers holding no job (waiting on the queue, or backing off): a stop cancels them at once.
        self._idle: set[asyncio.Task[None]] = set()
        self._deadline = 0.0

    def start(self) -> None:
        """Start `concurrency` worker tasks."""
        for n in range(self.settings.concurrency):
            self._tasks.append(asyncio.create_task(self._work(), name=f"llmkit-orchestrate-worker-{n}"))

    def stop(self) -> None:
        """Take no more jobs from now on; running ones get `drain.timeout` seconds to finish."""
        if self.stopping:
            return
        self.stopping = True
        self._deadline = asyncio.get_running_loop().time() + self.drain.timeout
        for task in self._idle:
            task.cancel()

    async def close(self) -> None:
        """Wait for running jobs until the drain deadline (if stopped), then cancel what is left."""
        running = [task for task in self._tasks if not task.done()]
        if self.stopping and running:
            left = max(0.0, self._deadline - asyncio.get_running_loop().time())
            await asyncio.wait(running, timeout=left)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    async def _work(self) -> None:
        task = asyncio.current_task()
        assert task is not None
        while not self.stopping:
            self._idle.add(task)
            try:
                item = await self._take()
            finally:
                self._idle.discard(task)
            if item is None:
                continue
            try:
                await self._handle(item)
            except Exception as exc:
                # The job's lease runs out and another delivery finishes it; this worker carries on.
                await self._back_off(exc)

    async def _take(self) -> QueueItem | None:
        """The next leased item, or None; a failure waits (backing off) and answers None."""
        started = time.monotonic()
        try:
            # Leased: a worker that dies mid-job (or stops heartbeating) leaves it to another after the lease.
            item = await self.queue.get(timeout=POLL_S, lease=self.settings.lease_s)
        except Exception as exc:
            await self._back_off(exc)
            return None
        self.outage.recovered(started)
        return item

    async def _back_off(self, exc: Exception) -> None:
        """Wait before the next try: backing off during an outage, a fixed pause after anything else."""
        if isinstance(exc, BackendError):
            delay = self.outage.failed(exc)
        else:
            # Not an outage but a bug: worth a traceback, and the worker must live on all the same.
            log.exception("worker error; the worker carries on")
            delay = self.outage.cap
        await asyncio.sleep(delay)

    async def _handle(self, item: QueueItem) -> None:
        job = await self.store.get(item.id)
        if self.stopping:
            # Stopped while reading the job: give it back at once rather than start it.
            await self.queue.release(item.id, item.token)
            return
        if job is not None and job.status == PROCESSING and item.deliveries == 1:
            # Already processing, yet this is the item's first delivery: the queue lost the delivery
            # that counted it (a Redis failover rolls back a take the replica never saw; the job's own
            # write was confirmed by the replica), or another copy is running. Acking would strand the
            # job; instead the item keeps its lease and comes back counted once more when it runs out,
            # to run then if no one has finished it by that time.
            log.info(
                "job %s: processing but delivered for the first time; taken again after its lease", job.id
            )
            return
        if job is None or not self._runnable(job, item.deliveries):
            await self.queue.ack(item.id, item.token)
            return
        if item.deliveries > MAX_DELIVERIES:
            # Every worker that took it died or hung: a poison job, not one more chance to crash.
            job.status = FAILED
            job.error = f"abandoned: {item.deliveries - 1} workers took this job and never finished it"
            await self._finish(job)
            await self.queue.ack(item.id, item.token)
            return
        self.busy += 1
        ended = asyncio.Event()
        heartbeat = asyncio.create_task(self._heartbeat(item, ended))
        try:
            # A trace of its own (the submit was answered long ago), linked to the submit's span.
            attributes = {"llmkit.job.id": job.id, "llmkit.job.priority": job.priority}
            with telemetry.linked_span("orchestrate job", job.traceparent, attributes):
                await self._run(job, item)
        finally:
            ended.set()
            heartbeat.cancel()
            self.busy -= 1
            # Awaited, so no heartbeat outlives its job (and close() finds no task still running).
            await asyncio.gather(heartbeat, return_exceptions=True)
        await self.queue.ack(item.id, item.token)

    @staticmethod
    def _runnable(job: Job, deliveries: int) -> bool:
        """Pending jobs run; a processing one runs again when its worker lost the lease (it died or hung)."""
        if job.status == PENDING:
            return True
        return job.status == PROCESSING and deliveries > 1

    async def _heartbeat(self, item: QueueItem, ended: asyncio.Event) -> None:
        """Keep the lease while the job runs, however long the backend takes (and through a short blip)."""
        lease = self.settings.lease_s
        # Until the job has ended, not merely until cancelled: a driver can lose a cancel (redis-py does on
        # Python 3.11), and a heartbeat beating on would hold the lease of a job no one runs for ever.
        while True:
            await asyncio.sleep(lease / 3)
            if ended.is_set():
                return
            try:
                held = await self.queue.extend(item.id, item.token, lease)
            except BackendError:
                continue  # the worker loop reports the outage; the next beat may get through
            if not held:
                log.warning("job %s: lost its queue lease; another worker may run it", item.id)
                return

    async def _delta(self, job_id: str, text: str) -> None:
        try:
            await self.store.delta(job_id, text)
        except BackendError:
            pass  # a listener misses a piece during a blip; the whole result is still saved at the end

    async def _run(self, job: Job, item: QueueItem) -> None:
        """Run the job to a terminal state, whatever the backend does."""
        job.status, job.attempts = PROCESSING, job.attempts + 1
        await self.store.save(job)
        spec = JobSpec(job.prompt, job.model or self.settings.model, job.parameters, job.stream)
        on_delta = (lambda text: self._delta(job.id, text)) if job.stream else None
        try:
            async with asyncio.timeout(self.settings.job_timeout_s):
                text = await self.backend.run(spec, on_delta)
        except TimeoutError:
            limit = self.settings.job_timeout_s
            job.status, job.error = TIMEOUT, f"no answer within {limit:g} s (orchestrate.job_timeout_s)"
        except asyncio.CancelledError:
            await self._abandon(job, item)
            raise
        except Exception as exc:
            job.status, job.error = FAILED, f"{type(exc).__name__}: {exc}"
        else:
            job.status, job.result = COMPLETED, text
            await self._fill_cache(job.cache_key, text)
        await self._finish(job)

    async def _abandon(self, job: Job, item: QueueItem) -> None:
        """A job cut off by a stop: back to the queue for another process, or failed with the reason."""
        try:
            if self.stopping and self.drain.release:
                job.status = PENDING
                await self.store.save(job)
                await self.queue.release(item.id, item.token)
                log.info("job %s: released to the queue for another worker (this one is stopping)", job.id)
                return
            job.status = FAILED
            job.error = (
                f"the server stopped before the job finished (server.drain_timeout {self.drain.timeout:g} s)"
                if self.stopping
                else "the worker stopped before the job finished"
            )
            await self._finish(job)
        except BackendError as exc:
            # Its lease runs out and another worker takes it again.
            log.warning("job %s: could not hand it back (%s); it runs again after its lease", job.id, exc)

    async def _fill_cache(self, key: str, text: str) -> None:
        if self.cache is None:
            return
        try:
            await self.cache.set(key, text, ttl=self.cache_ttl)
        except BackendError as exc:
            log.debug("result cache not filled: %s", exc)  # the job's result matters, the cache is a bonus

    async def _finish(self, job: Job) -> None:
        await self.store.save(job)
        self.finished[job.status] = self.finished.get(job.status, 0) + 1
        self.on_finish(job)
