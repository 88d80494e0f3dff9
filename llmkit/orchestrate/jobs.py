"""Jobs and where they live: the Job record, its states, and the in-process MemoryJobStore."""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Protocol

from llmkit.core.auth import DEFAULT_TENANT, Identity

PENDING, PROCESSING, COMPLETED, FAILED, TIMEOUT, CANCELLED = (
    "pending",
    "processing",
    "completed",
    "failed",
    "timeout",
    "cancelled",
)
TERMINAL = frozenset({COMPLETED, FAILED, TIMEOUT, CANCELLED})

# A listener gets ("status", job) on every state change and ("delta", text) while a worker streams, and
# (RESYNC, None) when events may have been missed (the store's event feed reconnected): read the job again.
Listener = Callable[[str, Any], None]
RESYNC = "resync"


@dataclass(slots=True)
class Job:
    """One inference job; `public()` is the seed's {request_id, status, result, error} and a few extras."""

    id: str
    prompt: str
    priority: str = "normal"
    session_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    model: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    stream: bool = False
    status: str = PENDING
    result: str | None = None
    error: str | None = None
    cache_key: str = ""
    cached: bool = False
    attempts: int = 0
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    # Who submitted it: only its tenant (and platform admins) can read or cancel it. Jobs stored before
    # tenants existed load with the defaults, the tenant of anonymous callers.
    tenant_id: str = DEFAULT_TENANT
    key_id: str | None = None
    # The submit's span (a W3C traceparent value) when it was traced: the job's span links to it.
    traceparent: str = ""

    @property
    def terminal(self) -> bool:
        """Whether the job has reached its last state."""
        return self.status in TERMINAL

    def visible_to(self, identity: Identity) -> bool:
        """Whether `identity` may see the job: its own tenant's, or any for a platform admin."""
        return identity.platform_admin or identity.tenant_id == self.tenant_id

    def public(self) -> dict[str, Any]:
        """What clients see."""
        return {
            "request_id": self.id,
            "status": self.status,
            "result": self.result,
            "error": self.error,
            "priority": self.priority,
            "session_id": self.session_id,
            "cached": self.cached,
            "attempts": self.attempts,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "tenant_id": self.tenant_id,
        }

    def to_dict(self) -> dict[str, Any]:
        """Every field, for stores that serialize jobs."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Job:
        """A job `to_dict` wrote. Fields this version does not know are left out: during a rolling upgrade
        an orchestrator reads jobs a newer one wrote (a new field such as traceparent must not fail them)."""
        return cls(**{k: v for k, v in data.items() if k in _JOB_FIELDS})


_JOB_FIELDS = frozenset(f.name for f in fields(Job))


class JobStore(Protocol):
    """Where jobs, their state changes and idempotency keys live."""

    async def open(self) -> None:
        """Connect; after it returns no event is missed by a listener."""

    async def add(self, job: Job) -> None:
        """Store a new job."""

    async def get(self, job_id: str) -> Job | None:
        """The job, or None when unknown or expired."""
        ...

    async def save(self, job: Job) -> None:
        """Store the job's new state and tell its listeners; terminal jobs expire after the result TTL."""

    async def delta(self, job_id: str, text: str) -> None:
        """Tell the job's listeners a piece of streamed output."""

    def listen(self, job_id: str, listener: Listener) -> Callable[[], None]:
        """Call `listener` on the job's events until the returned function is called."""
        ...

    async def claim_key(self, key: str, job_id: str) -> str:
        """The job id an idempotency key names: `job_id` if the key was free (now taken), else the first."""
        ...

    async def close(self) -> None:
        """Release what the store holds."""


class Listeners:
    """Who listens to which job in this process; both stores deliver their events through one."""

    def __init__(self) -> None:
        self._by_job: dict[str, set[Listener]] = {}

    def add(self, job_id: str, listener: Listener) -> Callable[[], None]:
        """Register `listener`; the returned function removes it."""
        self._by_job.setdefault(job_id, set()).add(listener)

        def stop() -> None:
            listeners = self._by_job.get(job_id)
            if listeners is not None:
                listeners.discard(listener)
                if not listeners:
                    del self._by_job[job_id]

        return stop

    def wanted(self, job_id: str) -> bool:
        """Whether anyone listens to the job (so an event is worth decoding)."""
        return job_id in self._by_job

    def emit(self, job_id: str, kind: str, value: Any) -> None:
        """Call the job's listeners."""
        for listener in list(self._by_job.get(job_id, ())):
            listener(kind, value)

    def resync(self) -> None:
        """Tell every listener that events may have been missed."""
        for job_id in list(self._by_job):
            self.emit(job_id, RESYNC, None)

    def clear(self) -> None:
        """Forget every listener."""
        self._by_job.clear()


async def wait_terminal(store: JobStore, job_id: str, timeout: float) -> Job | None:
    """The job once it is terminal, or as it is when `timeout` seconds pass (None if unknown)."""
    job = await store.get(job_id)
    if job is None or job.terminal or timeout <= 0:
        return job
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    done: asyncio.Future[Job] = loop.create_future()
    resync = asyncio.Event()

    def on_event(kind: str, value: Any) -> None:
        if kind == RESYNC:
            resync.set()
        elif kind == "status" and value.terminal and not done.done():
            done.set_result(value)

    stop = store.listen(job_id, on_event)
    try:
        # Re-read after listening (and after each resync): the job may have finished unheard meanwhile.
        while True:
            resync.clear()
            job = await store.get(job_id)
            if job is None or job.terminal:
                return job
            woken: asyncio.Future[Any] = asyncio.ensure_future(resync.wait())
            waiters: list[asyncio.Future[Any]] = [done, woken]
            try:
                left = deadline - loop.time()
                await asyncio.wait(waiters, timeout=left, return_when=asyncio.FIRST_COMPLETED)
            finally:
                woken.cancel()
            if done.done():
                return done.result()
            if not resync.is_set():
                return await store.get(job_id)
    finally:
        stop()


class MemoryJobStore:
    """Jobs in a dict of this process; terminal ones are dropped `ttl` seconds after they finish."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._jobs: dict[str, Job] = {}
        self._keys: dict[str, tuple[str, float]] = {}
        self._listeners = Listeners()
        # (expiry, job id) in finishing order: the TTL is the same for all, so the front expires first.
        self._expiry: collections.deque[tuple[float, str]] = collections.deque()

    def _purge(self, now: float) -> None:
        expiry = self._expiry
        while expiry and expiry[0][0] <= now:
            _, job_id = expiry.popleft()
            job = self._jobs.get(job_id)
            if job is not None and job.terminal and job.updated_at + self.ttl <= now:
                del self._jobs[job_id]
        if len(self._keys) > 2 * len(self._jobs) + 1024:
            self._keys = {k: v for k, v in self._keys.items() if v[1] > now}

    async def open(self) -> None:
        """Nothing to connect."""

    async def add(self, job: Job) -> None:
        """Store a new job."""
        self._purge(time.time())
        self._jobs[job.id] = job
        if job.terminal:
            self._expiry.append((job.updated_at + self.ttl, job.id))

    async def get(self, job_id: str) -> Job | None:
        """The job, or None when unknown or expired."""
        job = self._jobs.get(job_id)
        if job is not None and job.terminal and job.updated_at + self.ttl <= time.time():
            return None
        return job

    async def save(self, job: Job) -> None:
        """Store the state and tell the listeners."""
        job.updated_at = time.time()
        self._jobs[job.id] = job
        if job.terminal:
            self._expiry.append((job.updated_at + self.ttl, job.id))
        self._listeners.emit(job.id, "status", job)

    async def delta(self, job_id: str, text: str) -> None:
        """Tell the listeners a piece of output."""
        self._listeners.emit(job_id, "delta", text)

    def listen(self, job_id: str, listener: Listener) -> Callable[[], None]:
        """Call `listener` on the job's events until the returned function is called."""
        return self._listeners.add(job_id, listener)

    async def claim_key(self, key: str, job_id: str) -> str:
        """First come keeps the key for the result TTL."""
        now = time.time()
        found = self._keys.get(key)
        if found is not None and found[1] > now:
            return found[0]
        self._keys[key] = (job_id, now + self.ttl)
        return job_id

    def counts(self) -> dict[str, int]:
        """Jobs per state (this process)."""
        counts = dict.fromkeys((PENDING, PROCESSING, COMPLETED, FAILED, TIMEOUT, CANCELLED), 0)
        for job in self._jobs.values():
            counts[job.status] += 1
        return counts

    async def close(self) -> None:
        """Nothing to release."""
        self._listeners.clear()
