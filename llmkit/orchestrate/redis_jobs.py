"""RedisJobStore: jobs shared by API and worker processes; state changes and deltas travel by pub/sub."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson

from llmkit.core.backends import Replication, redis_errors
from llmkit.orchestrate.jobs import Job, Listener, Listeners

if TYPE_CHECKING:
    import redis.asyncio as aioredis

log = logging.getLogger("llmkit.orchestrate")


class RedisJobStore:
    """`{prefix}:job:{id}` holds a job as JSON (expiring `ttl` seconds after it ends);
    `{prefix}:idem:{key}` an idempotency key; every event is published on `{prefix}:job-events`."""

    def __init__(
        self,
        client: aioredis.Redis,
        ttl: float,
        prefix: str = "llmkit",
        replicas: int = 0,
        replica_wait: float = 1.0,
    ) -> None:
        self.client = client
        # A write is done once `replicas` replicas hold it (or all the master has, when fewer).
        self._replication = Replication(client, replicas, replica_wait, "job write")
        self.ttl = max(1, math.ceil(ttl))
        self.prefix = prefix
        self.channel = f"{prefix}:job-events"
        self._listeners = Listeners()
        self._reader: asyncio.Task[None] | None = None
        self._pubsub: Any = None

    def _key(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}"

    async def open(self) -> None:
        """Subscribe to the event channel before any job can change (so no listener misses an event)."""
        with redis_errors("subscribe"):
            self._pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            await self._pubsub.subscribe(self.channel)
        # Called on every reconnect, after redis-py subscribed again (its own callback came first).
        self._pubsub.connection.register_connect_callback(self._reconnected)
        self._reader = asyncio.create_task(self._read(), name="llmkit-orchestrate-job-events")

    async def _reconnected(self, connection: Any) -> None:
        # Whatever was published while the connection was down is lost: every waiter reads its job again.
        self._listeners.resync()

    async def _read(self) -> None:
        lost = False
        while True:
            try:
                # Inside redis_errors so a cancel redis-py drops (see core.backends) still ends this reader.
                with redis_errors("job events"):
                    message = await self._pubsub.get_message(timeout=1.0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the connection dropped: say so once, wait, and read again
                if not lost:
                    log.warning("job events from redis interrupted (%s); reconnecting", exc)
                    lost = True
                await asyncio.sleep(0.5)
                continue
            if lost:
                log.info("job events from redis again")
                lost = False
            if message is not None:
                self._dispatch(orjson.loads(message["data"]))

    def _dispatch(self, event: dict[str, Any]) -> None:
        job_id = event["id"]
        if self._listeners.wanted(job_id):
            value = Job.from_dict(event["job"]) if event["kind"] == "status" else event["text"]
            self._listeners.emit(job_id, event["kind"], value)

    async def _publish(self, event: dict[str, Any]) -> None:
        with redis_errors("publish"):
            await self.client.publish(self.channel, orjson.dumps(event))

    async def add(self, job: Job) -> None:
        """Store a new job."""
        await self._write(job)

    async def _write(self, job: Job) -> None:
        data = orjson.dumps(job.to_dict())
        ex = self.ttl if job.terminal else None
        needed = await self._replication.needed()
        with redis_errors("job write"):
            if not needed:
                await self.client.set(self._key(job.id), data, ex=ex)
                return
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.set(self._key(job.id), data, ex=ex)
                pipe.execute_command("WAIT", needed, int(self._replication.wait_s * 1000))
                _, acked = await pipe.execute()
        await self._replication.confirm(int(acked), needed)

    async def get(self, job_id: str) -> Job | None:
        """The job, or None when unknown or expired."""
        with redis_errors("job read"):
            raw = await self.client.get(self._key(job_id))
        return None if raw is None else Job.from_dict(orjson.loads(raw))

    async def save(self, job: Job) -> None:
        """Store the state, then tell every process's listeners."""
        job.updated_at = time.time()
        await self._write(job)
        await self._publish({"id": job.id, "kind": "status", "job": job.to_dict()})

    async def delta(self, job_id: str, text: str) -> None:
        """Tell every process's listeners a piece of output."""
        await self._publish({"id": job_id, "kind": "delta", "text": text})

    def listen(self, job_id: str, listener: Listener) -> Callable[[], None]:
        """Call `listener` on the job's events (from any process) until the returned function is called."""
        return self._listeners.add(job_id, listener)

    async def claim_key(self, key: str, job_id: str) -> str:
        """SET NX: the first job keeps the key for the result TTL."""
        name = f"{self.prefix}:idem:{key}"
        with redis_errors("idempotency key"):
            if await self.client.set(name, job_id, nx=True, ex=self.ttl):
                return job_id
            found = await self.client.get(name)
        if found is None:
            return job_id
        return found.decode() if isinstance(found, bytes) else str(found)

    async def close(self) -> None:
        """Stop reading events and close the connection."""
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()
            self._pubsub = None
        with contextlib.suppress(Exception):
            await self.client.aclose()
