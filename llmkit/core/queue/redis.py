"""A priority queue in Redis that any number of producer and consumer processes share; each step is atomic."""

from __future__ import annotations

import asyncio
from contextlib import suppress
from typing import TYPE_CHECKING, Any

from llmkit.core.backends import redis_errors
from llmkit.core.queue.base import (
    DuplicateItem,
    Priority,
    QueueClosed,
    QueueItem,
    QueueStats,
    check_capacity,
    full_message,
)
from llmkit.errors import BackendError, QueueFull

if TYPE_CHECKING:
    import redis.asyncio as aioredis

# Score = level * STRIDE + sequence: one sorted set orders levels first and arrival within a level, and the
# largest score (3 * 1e13 + sequence) stays an exact integer in a double.
STRIDE = 10**13

# Keys of one queue: 1 items (sorted set id -> score), 2 data (hash id -> "<enqueued µs>:<payload>"),
# 3 seq (counter), 4 ready (list of wake-up tokens for consumers blocked in BLPOP).
# ARGV: id, level, payload, capacity, stride. Returns the position, -1 for a duplicate, -2 when full.
# Duplicate check, capacity check and insert happen in one script, so concurrent producers cannot overfill.
PUT_LUA = """
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then return -1 end
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then return -2 end
local seq = redis.call('INCR', KEYS[3])
local t = redis.call('TIME')
local score = string.format('%.0f', tonumber(ARGV[2]) * tonumber(ARGV[5]) + seq)
redis.call('ZADD', KEYS[1], score, ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], t[1] .. string.format('%06d', tonumber(t[2])) .. ':' .. ARGV[3])
redis.call('LPUSH', KEYS[4], '1')
redis.call('LTRIM', KEYS[4], 0, 99)
return redis.call('ZRANK', KEYS[1], ARGV[1])
"""

# ZPOPMIN and HDEL in one script: an item leaves with its payload, to exactly one consumer. Wake-up tokens
# only matter while items wait, so an emptied queue drops them rather than waking consumers for nothing.
POP_LUA = """
local popped = redis.call('ZPOPMIN', KEYS[1])
if #popped == 0 then return false end
local value = redis.call('HGET', KEYS[2], popped[1])
redis.call('HDEL', KEYS[2], popped[1])
if redis.call('ZCARD', KEYS[1]) == 0 then redis.call('DEL', KEYS[3]) end
return {popped[1], popped[2], value}
"""

# Puts back an item popped by a consumer whose cancel redis-py lost, with its old score: its place is kept.
RESTORE_LUA = """
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
redis.call('LPUSH', KEYS[3], '1')
redis.call('LTRIM', KEYS[3], 0, 99)
return 1
"""

CANCEL_LUA = """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HDEL', KEYS[2], ARGV[1])
if redis.call('ZCARD', KEYS[1]) == 0 then redis.call('DEL', KEYS[3]) end
return 1
"""

# ARGV: stride, number of levels. Returns the count per level, then the oldest wait in seconds (a string,
# since Lua numbers come back truncated to integers). Within a level the head is the oldest item.
STATS_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local stride = tonumber(ARGV[1])
local out = {}
local oldest = now
for level = 0, tonumber(ARGV[2]) - 1 do
  local lo = string.format('%.0f', level * stride)
  local hi = '(' .. string.format('%.0f', (level + 1) * stride)
  out[#out + 1] = redis.call('ZCOUNT', KEYS[1], lo, hi)
  local head = redis.call('ZRANGEBYSCORE', KEYS[1], lo, hi, 'LIMIT', 0, 1)
  if head[1] then
    local value = redis.call('HGET', KEYS[2], head[1])
    local enqueued = value and tonumber(string.match(value, '^(%d+):'))
    if enqueued and enqueued < oldest then oldest = enqueued end
  end
end
out[#out + 1] = string.format('%.6f', math.max(0, now - oldest) / 1000000)
return out
"""


def cancel_count() -> int:
    """How many cancels the current task has been asked for; compare with `cancel_lost` later."""
    task = asyncio.current_task()
    return task.cancelling() if task is not None else 0


def cancel_lost(since: int) -> bool:
    """True if the current task was asked to cancel after `since` yet is still running."""
    # Python 3.11's asyncio.wait_for, which redis-py uses to send every command when a socket timeout is
    # set, drops a cancel that lands just as the send completes (CPython gh-86296, fixed in 3.12). The
    # task's cancel count still records the request, so the consumer loop checks it after each BLPOP.
    task = asyncio.current_task()
    return task is not None and task.cancelling() > since


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
        self._items, self._data, self._seq, self._ready = (
            f"{base}:{part}" for part in ("items", "data", "seq", "ready")
        )
        # BLPOP waits at most `block` seconds at a time: it must stay below the client's socket timeout, and
        # each slice ends by trying the queue again, which also bounds how long `close()` takes to be noticed.
        self._block = block
        self._close_client = close_client
        self._closed = False
        self._put = client.register_script(PUT_LUA)
        self._pop_script = client.register_script(POP_LUA)
        self._cancel = client.register_script(CANCEL_LUA)
        self._restore = client.register_script(RESTORE_LUA)
        self._stats = client.register_script(STATS_LUA)

    async def put(self, item_id: str, payload: bytes, priority: str | int = "normal") -> int:
        """Queue an item and return its 0-based position; QueueFull at capacity, DuplicateItem if queued."""
        level = Priority.parse(priority)
        if self._closed:
            raise QueueClosed(f"queue {self.name!r} is closed")
        keys = [self._items, self._data, self._seq, self._ready]
        with redis_errors("queue put"):
            answer = int(
                await self._put(keys=keys, args=[item_id, int(level), payload, self.capacity, STRIDE])
            )
        if answer == -1:
            raise DuplicateItem(f"item {item_id!r} is already in queue {self.name!r}", item_id)
        if answer == -2:
            raise QueueFull(full_message(self.name, self.capacity), self.capacity)
        return answer

    async def get(self, timeout: float | None = None) -> QueueItem | None:
        """Take the first item, waiting up to `timeout` seconds (None: forever); None if nothing came."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        cancels = cancel_count()
        try:
            while True:
                answer = await self._pop_shielded()
                if answer is not None:
                    return self._item(answer)
                if self._closed:
                    return None
                wait = self._block
                if deadline is not None:
                    wait = min(wait, deadline - loop.time())
                    if wait <= 0:
                        return None
                # Redis reads a BLPOP timeout below 1 ms as 0, which means forever.
                with redis_errors("queue wait"):
                    await self.client.blpop([self._ready], timeout=max(wait, 0.001))
                if cancel_lost(cancels):
                    # A wake-up token taken here is lost; other consumers still look again within `block`.
                    raise asyncio.CancelledError
        except BackendError:
            if self._closed:  # the client was closed under a waiting consumer
                return None
            raise

    async def position(self, item_id: str) -> int | None:
        """How many items are served before this one, or None if it is not queued."""
        with redis_errors("queue position"):
            rank: Any = await self.client.zrank(self._items, item_id)
        return None if rank is None else int(rank)

    async def cancel(self, item_id: str) -> bool:
        """Remove a queued item; True only if it was still queued."""
        with redis_errors("queue cancel"):
            return bool(await self._cancel(keys=[self._items, self._data, self._ready], args=[item_id]))

    async def size(self) -> int:
        """How many items are queued."""
        with redis_errors("queue size"):
            return int(await self.client.zcard(self._items))

    async def stats(self) -> QueueStats:
        """Items per level, total, capacity and the oldest item's wait (by the Redis clock)."""
        with redis_errors("queue stats"):
            answer = await self._stats(keys=[self._items, self._data], args=[STRIDE, len(Priority)])
        counts = [int(n) for n in answer[:-1]]
        return QueueStats(
            name=self.name,
            levels={level.name.lower(): counts[level] for level in Priority},
            total=sum(counts),
            capacity=self.capacity,
            oldest_wait=float(answer[-1]),
        )

    async def close(self) -> None:
        """Waiting consumers get None at their next wake-up; the client is closed if this queue made it."""
        self._closed = True
        if self._close_client:
            # make_redis passes its own pool, which aclose() leaves open unless told to close it.
            await self.client.aclose(close_connection_pool=True)

    async def _pop_shielded(self) -> list[Any] | None:
        # A cancel must not strike while the pop is in flight: the item may already have left Redis. The pop
        # runs in its own task; a cancelled consumer waits for its answer and puts the item back in place.
        attempt = asyncio.ensure_future(self._pop())
        try:
            return await asyncio.shield(attempt)
        except asyncio.CancelledError:
            with suppress(BackendError):
                answer = await attempt
                if answer is not None:
                    with redis_errors("queue restore"):
                        await self._restore(keys=[self._items, self._data, self._ready], args=answer)
            raise

    async def _pop(self) -> list[Any] | None:
        with redis_errors("queue get"):
            answer: Any = await self._pop_script(keys=[self._items, self._data, self._ready])
        return answer

    @staticmethod
    def _item(answer: list[Any]) -> QueueItem:
        raw_id, score, value = answer
        enqueued_us, _, payload = value.partition(b":")
        return QueueItem(
            id=raw_id.decode(),
            payload=payload,
            priority=Priority(int(float(score)) // STRIDE),
            enqueued_at=int(enqueued_us) / 1_000_000,
        )
