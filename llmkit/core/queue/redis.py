"""A priority queue in Redis that any number of producer and consumer processes share; each step is atomic."""

from __future__ import annotations

import asyncio
from contextlib import suppress
from typing import TYPE_CHECKING, Any

from llmkit.core.backends import Replication, redis_errors
from llmkit.core.ids import fresh_hex
from llmkit.core.queue.base import (
    DuplicateItem,
    Priority,
    QueueClosed,
    QueueItem,
    QueueStats,
    check_capacity,
    check_lease,
    full_message,
)
from llmkit.core.queue.redis_scripts import (
    ACK_LUA,
    CANCEL_LUA,
    EXTEND_LUA,
    KEY_PARTS,
    POP_LUA,
    POSITION_LUA,
    PUT_LUA,
    RELEASE_LUA,
    RESTORE_LUA,
    SIZE_LUA,
    STATS_LUA,
    STRIDE,
)
from llmkit.errors import BackendError, QueueFull

if TYPE_CHECKING:
    import redis.asyncio as aioredis


class RedisPriorityQueue:
    """A bounded priority queue in Redis under `{prefix}:q:{name}:*`; each item reaches one consumer."""

    def __init__(
        self,
        client: aioredis.Redis,
        name: str,
        capacity: int,
        prefix: str = "llmkit",
        block: float = 1.0,
        close_client: bool = False,
        replicas: int = 0,
        replica_wait: float = 1.0,
    ) -> None:
        check_capacity(capacity)
        if client.connection_pool.connection_kwargs.get("decode_responses"):
            raise ValueError(
                "RedisPriorityQueue needs a client with decode_responses=False (payloads are bytes)"
            )
        self.name = name
        self.capacity = capacity
        self.client = client
        base = f"{prefix}:q:{name}"
        self._keys = [f"{base}:{part}" for part in KEY_PARTS]
        self._ready = self._keys[2]
        # BLPOP waits at most `block` seconds at a time: it must stay below the client's socket timeout, and
        # each slice ends by trying the queue again, which also bounds how long `close()` takes to be noticed.
        self._block = block
        self._close_client = close_client
        self._closed = False
        # A put is acknowledged once `replicas` replicas hold it (or all the master has, when fewer).
        self._replication = Replication(client, replicas, replica_wait, "queue put")
        self._put = client.register_script(PUT_LUA)
        self._pop_script = client.register_script(POP_LUA)
        self._restore = client.register_script(RESTORE_LUA)
        self._ack = client.register_script(ACK_LUA)
        self._extend = client.register_script(EXTEND_LUA)
        self._release = client.register_script(RELEASE_LUA)
        self._cancel = client.register_script(CANCEL_LUA)
        self._position = client.register_script(POSITION_LUA)
        self._size = client.register_script(SIZE_LUA)
        self._stats = client.register_script(STATS_LUA)

    async def put(self, item_id: str, payload: bytes, priority: str | int = "normal") -> int:
        """Queue an item, return its position; QueueFull at capacity, DuplicateItem if queued or in flight."""
        level = Priority.parse(priority)
        if self._closed:
            raise QueueClosed(f"queue {self.name!r} is closed")
        args: list[str | int | bytes] = [item_id, int(level), payload, self.capacity, STRIDE]
        needed = await self._replication.needed()
        with redis_errors("queue put"):
            if needed:
                async with self.client.pipeline(transaction=False) as pipe:
                    await self._put(keys=self._keys, args=args, client=pipe)
                    pipe.execute_command("WAIT", needed, int(self._replication.wait_s * 1000))
                    raw, acked = await pipe.execute()
            else:
                raw, acked = await self._put(keys=self._keys, args=args), 0
        answer = int(raw)
        if answer == -1:
            raise DuplicateItem(f"item {item_id!r} is already in queue {self.name!r}", item_id)
        if answer == -2:
            raise QueueFull(full_message(self.name, self.capacity), self.capacity)
        if int(acked) < needed:
            # Not acknowledged, so not kept either: a caller told "failed" must not find it run later.
            with suppress(BackendError):
                await self.cancel(item_id)
            await self._replication.confirm(int(acked), needed)
        return answer

    async def get(self, timeout: float | None = None, lease: float | None = None) -> QueueItem | None:
        """Take the first item, waiting up to `timeout` s (None: forever), leased `lease` s; None if none."""
        check_lease(lease)
        # One token per call: at most one of its pops hands out an item.
        token = "" if lease is None else fresh_hex()
        lease_us = 0 if lease is None else max(1, round(lease * 1_000_000))
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        try:
            while True:
                answer = await self._pop_shielded(lease_us, token)
                if isinstance(answer, list):
                    return self._item(answer, token)
                if self._closed:
                    return None
                wait = self._block
                if answer >= 0:  # µs until a lease runs out: look again then, its item may come back
                    wait = min(wait, answer / 1_000_000)
                if deadline is not None:
                    wait = min(wait, deadline - loop.time())
                    if wait <= 0:
                        return None
                # Redis reads a BLPOP timeout below 1 ms as 0, which means forever.
                with redis_errors("queue wait"):
                    await self.client.blpop([self._ready], timeout=max(wait, 0.001))
        except BackendError:
            if self._closed:  # the client was closed under a waiting consumer
                return None
            raise

    async def ack(self, item_id: str, token: str) -> bool:
        """Finish a leased item: True if this lease still held it (it is gone for good), else False."""
        with redis_errors("queue ack"):
            return bool(await self._ack(keys=self._keys, args=[item_id, token]))

    async def extend(self, item_id: str, token: str, lease: float) -> bool:
        """Move a held lease's deadline to `lease` seconds from now (a heartbeat); False if it is not held."""
        check_lease(lease)
        args: list[str | int] = [item_id, token, max(1, round(lease * 1_000_000))]
        with redis_errors("queue extend"):
            return bool(await self._extend(keys=self._keys, args=args))

    async def release(self, item_id: str, token: str) -> bool:
        """Give a leased item back at once, in its place; False if this lease no longer held it."""
        with redis_errors("queue release"):
            return bool(await self._release(keys=self._keys, args=[item_id, token]))

    async def position(self, item_id: str) -> int | None:
        """How many items are served before this one, or None if it is not queued."""
        with redis_errors("queue position"):
            rank: Any = await self._position(keys=self._keys, args=[item_id])
        return None if rank is None else int(rank)

    async def cancel(self, item_id: str) -> bool:
        """Remove a queued item; True only if it was still queued (False for an item in flight)."""
        with redis_errors("queue cancel"):
            return bool(await self._cancel(keys=self._keys, args=[item_id]))

    async def size(self) -> int:
        """How many items are queued."""
        with redis_errors("queue size"):
            return int(await self._size(keys=self._keys))

    async def stats(self) -> QueueStats:
        """Items per level, total, capacity, the oldest queued item's wait (Redis clock), items in flight."""
        with redis_errors("queue stats"):
            answer = await self._stats(keys=self._keys, args=[STRIDE, len(Priority)])
        counts = [int(n) for n in answer[:-2]]
        return QueueStats(
            name=self.name,
            levels={level.name.lower(): counts[level] for level in Priority},
            total=sum(counts),
            capacity=self.capacity,
            oldest_wait=float(answer[-1]),
            in_flight=int(answer[-2]),
        )

    async def close(self) -> None:
        """Waiting consumers get None at their next wake-up; the client is closed if this queue made it."""
        self._closed = True
        if self._close_client:
            # make_redis passes its own pool, which aclose() leaves open unless told to close it.
            await self.client.aclose(close_connection_pool=True)

    async def _pop_shielded(self, lease_us: int, token: str) -> list[Any] | int:
        # A cancel must not strike while the pop is in flight: the item may already have left Redis. The pop
        # runs in its own task; a cancelled consumer waits for its answer and puts the item back in place.
        attempt = asyncio.ensure_future(self._pop(lease_us, token))
        try:
            return await asyncio.shield(attempt)
        except asyncio.CancelledError:
            with suppress(BackendError):
                answer = await attempt
                if isinstance(answer, list):
                    # Should this fail, a leased item still comes back when its lease runs out.
                    with redis_errors("queue restore"):
                        await self._restore(keys=self._keys, args=[*answer, token])
            raise

    async def _pop(self, lease_us: int, token: str) -> list[Any] | int:
        with redis_errors("queue get"):
            answer: Any = await self._pop_script(keys=self._keys, args=[lease_us, token])
        return answer

    @staticmethod
    def _item(answer: list[Any], token: str) -> QueueItem:
        raw_id, score, value, deliveries = answer
        enqueued_us, _, payload = value.partition(b":")
        return QueueItem(
            id=raw_id.decode(),
            payload=payload,
            priority=Priority(int(float(score)) // STRIDE),
            enqueued_at=int(enqueued_us) / 1_000_000,
            deliveries=int(deliveries),
            token=token,
        )
