"""Token buckets and concurrency limits shared by every process using one Redis, each step one Lua script."""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections.abc import Sequence
from contextlib import suppress
from typing import TYPE_CHECKING, Any

from redis.exceptions import NoScriptError

from llmkit.core.backends import redis_errors
from llmkit.core.limiter.base import (
    Decision,
    LimitStats,
    NamedLimits,
    Slot,
    check_bucket,
    check_cost,
    check_limit,
    no_slot,
)
from llmkit.errors import BackendError

if TYPE_CHECKING:
    import redis.asyncio as aioredis
    from redis.commands.core import AsyncScript

log = logging.getLogger(__name__)

# KEYS[1]: hash {tokens, ts}; ARGV: rate, burst, cost. The Redis clock (TIME) is the one clock every process
# shares. A refusal writes nothing; an allowed call stores the new state and lets the key expire when the
# bucket would be full again, since a missing key reads as a full bucket.
BUCKET_LUA = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local tokens = burst
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
if state[1] then
  tokens = tonumber(state[1]) + math.max(0, now - tonumber(state[2])) * rate
  if tokens > burst then tokens = burst end
end
if tokens < cost then
  return {0, math.floor(tokens), string.format('%.17g', (cost - tokens) / rate)}
end
tokens = tokens - cost
if cost > 0 then
  redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens), 'ts', string.format('%.17g', now))
  redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) / rate * 1000) + 1)
end
return {1, math.floor(tokens), '0'}
"""

# KEYS[1]: sorted set holder -> lease expiry in ms (Redis clock); ARGV: limit, lease ms, holder.
# Expired holders are dropped first, so the slots of a crashed process come back after one lease.
SLOT_ACQUIRE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""

# KEYS[1]: the holders set; ARGV: lease ms, holders. XX: a holder whose lease already ran out stays gone.
SLOT_RENEW_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local renewed = 0
for i = 2, #ARGV do
  renewed = renewed + redis.call('ZADD', KEYS[1], 'XX', 'CH', now + tonumber(ARGV[1]), ARGV[i])
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return renewed
"""

SLOT_COUNT_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZCARD', KEYS[1])
"""


async def eval_many(client: aioredis.Redis, script: AsyncScript, calls: Sequence[Sequence[Any]]) -> list[Any]:
    """Run `script` once per (key, *args) call in one pipeline, loading it if the server lost it."""
    # Passing `client=pipe` to a registered script would add a SCRIPT EXISTS round trip to every pipeline,
    # so EVALSHA goes in directly and only the calls answered NOSCRIPT are sent again after SCRIPT LOAD.
    results: list[Any] = [None] * len(calls)
    todo = list(range(len(calls)))
    for attempt in range(2):
        async with client.pipeline(transaction=False) as pipe:
            for i in todo:
                pipe.evalsha(script.sha, 1, *calls[i])
            answers = await pipe.execute(raise_on_error=False)
        missing = []
        for i, answer in zip(todo, answers, strict=True):
            if isinstance(answer, NoScriptError) and attempt == 0:
                missing.append(i)
            elif isinstance(answer, Exception):
                raise answer
            else:
                results[i] = answer
        if not missing:
            break
        script.sha = await client.script_load(script.script)
        todo = missing
    return results


class ScriptBatcher:
    """Sends the calls of one script made during one event-loop tick in one pipeline."""

    def __init__(self, client: aioredis.Redis, script: AsyncScript) -> None:
        self._client = client
        self._script = script
        self._pending: list[tuple[Sequence[Any], asyncio.Future[Any]]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def call(self, args: Sequence[Any]) -> Any:
        """Queue one (key, *args) call for the next pipeline and wait for its answer."""
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if not self._pending:
            # The task starts on the next tick, so every call made before then joins this batch.
            task = asyncio.create_task(self._flush())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        self._pending.append((args, fut))
        return await fut

    async def _flush(self) -> None:
        batch, self._pending = self._pending, []
        try:
            with redis_errors("token bucket"):
                answers = await eval_many(self._client, self._script, [args for args, _ in batch])
        except BaseException as exc:
            message = str(exc) if isinstance(exc, BackendError) else "redis token bucket: limiter closed"
            for _, fut in batch:
                if not fut.done():
                    # One error per caller: a shared one would pile up every caller's traceback.
                    error = BackendError(message)
                    error.__cause__ = exc.__cause__ if isinstance(exc, BackendError) else exc
                    fut.set_exception(error)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, fut), answer in zip(batch, answers, strict=True):
            if not fut.done():
                fut.set_result(answer)

    async def close(self) -> None:
        """Cancel pipelines still in flight; their callers get BackendError."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


class RedisTokenBucket:
    """A token bucket per key in Redis hashes `{prefix}:tb:{name}:{key}`, updated by one Lua script."""

    def __init__(
        self,
        client: aioredis.Redis,
        name: str,
        rate: float,
        burst: int,
        prefix: str = "llmkit",
        batcher: ScriptBatcher | None = None,
    ) -> None:
        check_bucket(rate, burst)
        self.name = name
        self.rate = float(rate)
        self.burst = int(burst)
        self._client = client
        self._script = client.register_script(BUCKET_LUA)
        self._batcher = batcher
        self._key_prefix = f"{prefix}:tb:{name}:"
        self._allowed = tuple(Decision(True, n, 0.0, self.burst) for n in range(min(self.burst, 4096) + 1))

    async def acquire(self, key: str, cost: int = 1) -> Decision:
        """Take `cost` tokens from the bucket of `key` if it holds that many."""
        if cost != 1:
            check_cost(cost, self.burst)
        args = (self._key_prefix + key, self.rate, self.burst, cost)
        if self._batcher is not None:
            return self._decision(await self._batcher.call(args))
        with redis_errors("token bucket"):
            return self._decision(await self._script(keys=args[:1], args=args[1:]))

    async def acquire_many(self, keys: Sequence[str], cost: int = 1) -> list[Decision]:
        """`acquire` for each key, in order, in one pipeline."""
        if cost != 1:
            check_cost(cost, self.burst)
        calls = [(self._key_prefix + key, self.rate, self.burst, cost) for key in keys]
        with redis_errors("token bucket"):
            answers = await eval_many(self._client, self._script, calls)
        return [self._decision(answer) for answer in answers]

    async def reset(self, key: str) -> None:
        """Refill the bucket of `key`."""
        with redis_errors("token bucket reset"):
            await self._client.delete(self._key_prefix + key)

    def _decision(self, answer: list[Any]) -> Decision:
        allowed, remaining, retry_after = answer
        remaining = int(remaining)
        if allowed:
            if remaining < len(self._allowed):
                return self._allowed[remaining]
            return Decision(True, remaining, 0.0, self.burst)
        return Decision(False, remaining, float(retry_after), self.burst)


class RedisConcurrencyLimit:
    """A distributed semaphore: a sorted set of holders whose leases this process renews while held."""

    def __init__(
        self,
        client: aioredis.Redis,
        name: str,
        limit: int,
        prefix: str = "llmkit",
        lease: float = 30.0,
        max_poll: float = 0.25,
    ) -> None:
        check_limit(limit)
        if lease <= 0:
            raise ValueError(f"a slot lease must be > 0 seconds; got {lease!r}")
        self.name = name
        self.limit = limit
        self.lease = lease
        self._client = client
        self._key = f"{prefix}:cl:{name}"
        self._lease_ms = max(1, int(lease * 1000))
        self._max_poll = max_poll
        self._acquire_script = client.register_script(SLOT_ACQUIRE_LUA)
        self._renew_script = client.register_script(SLOT_RENEW_LUA)
        self._count_script = client.register_script(SLOT_COUNT_LUA)
        self._held: set[str] = set()
        self._waiting = 0
        self._freed: asyncio.Future[None] | None = None
        self._renewer: asyncio.Task[None] | None = None

    async def acquire(self, timeout: float | None = None) -> str:
        """Wait up to `timeout` seconds (None: forever) for a slot; else raise SlotUnavailable."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        holder = uuid.uuid4().hex
        delay = 0.005
        self._waiting += 1
        try:
            while True:
                # Taken before trying, so a local release between the try and the wait is not missed.
                freed = self._freed_future(loop)
                if await self._try_shielded(holder):
                    return holder
                pause = delay * random.uniform(0.5, 1.0)  # jitter keeps pollers in several processes apart
                if deadline is not None:
                    left = deadline - loop.time()
                    if left <= 0:
                        raise no_slot(self.name, self.limit, timeout)
                    pause = min(pause, left)
                await asyncio.wait([freed], timeout=pause)
                delay = min(delay * 2, self._max_poll)
        finally:
            self._waiting -= 1

    async def release(self, holder: str) -> None:
        """Give the slot of `holder` back; releasing twice is harmless."""
        if holder not in self._held:
            return
        self._held.discard(holder)
        with redis_errors("concurrency limit release"):
            await self._client.zrem(self._key, holder)
        if self._freed is not None and not self._freed.done():
            self._freed.set_result(None)

    def slot(self, timeout: float | None = None) -> Slot:
        """`async with limit.slot(timeout=...)`: hold a slot for the body of the block."""
        return Slot(self, timeout)

    async def in_use(self) -> int:
        """How many slots are held by every process sharing this Redis (expired leases not counted)."""
        with redis_errors("concurrency limit count"):
            return int(await self._count_script(keys=[self._key]))

    async def stats(self) -> LimitStats:
        """Size, slots in use everywhere, callers waiting in this process."""
        return LimitStats(self.name, self.limit, await self.in_use(), self._waiting)

    async def close(self) -> None:
        """Stop renewing and give back the slots this process still holds."""
        if self._renewer is not None:
            self._renewer.cancel()
            await asyncio.gather(self._renewer, return_exceptions=True)
            self._renewer = None
        held, self._held = list(self._held), set()
        if held:
            with redis_errors("concurrency limit release"):
                await self._client.zrem(self._key, *held)

    async def _try_shielded(self, holder: str) -> bool:
        # A cancel must not strike while the script is in flight: it may have taken a slot on the server that
        # nobody would release (and, on Python 3.11, redis-py's wait_for can drop the cancel altogether).
        # The attempt runs in its own task; a cancelled caller waits for its answer and gives the slot back.
        attempt = asyncio.ensure_future(self._try(holder))
        try:
            return await asyncio.shield(attempt)
        except asyncio.CancelledError:
            with suppress(BackendError):
                if await attempt:
                    await self.release(holder)
            raise

    async def _try(self, holder: str) -> bool:
        with redis_errors("concurrency limit acquire"):
            got = await self._acquire_script(keys=[self._key], args=[self.limit, self._lease_ms, holder])
        if not got:
            return False
        self._held.add(holder)
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.create_task(self._renew())
        return True

    def _freed_future(self, loop: asyncio.AbstractEventLoop) -> asyncio.Future[None]:
        if self._freed is None or self._freed.done():
            self._freed = loop.create_future()
        return self._freed

    async def _renew(self) -> None:
        # One task per limit renews every slot this process holds, a third of a lease before it runs out.
        while self._held:
            await asyncio.sleep(self.lease / 3)
            if not self._held:
                return
            try:
                with redis_errors("concurrency limit renew"):
                    await self._renew_script(keys=[self._key], args=[self._lease_ms, *self._held])
            except BackendError as exc:
                log.warning("concurrency limit %r: %s; retrying in %.1fs", self.name, exc, self.lease / 3)


class RedisLimiter(NamedLimits[RedisTokenBucket, RedisConcurrencyLimit]):
    """Makes token buckets and concurrency limits that share one Redis client (and one batching pipeline)."""

    def __init__(
        self,
        client: aioredis.Redis,
        prefix: str = "llmkit",
        batch: bool = True,
        lease: float = 30.0,
        close_client: bool = False,
    ) -> None:
        super().__init__()
        self.client = client
        self.prefix = prefix
        self.lease = lease
        self._close_client = close_client
        self._batcher = ScriptBatcher(client, client.register_script(BUCKET_LUA)) if batch else None

    def _new_bucket(self, name: str, rate: float, burst: int) -> RedisTokenBucket:
        return RedisTokenBucket(self.client, name, rate, burst, self.prefix, self._batcher)

    def _new_limit(self, name: str, limit: int) -> RedisConcurrencyLimit:
        return RedisConcurrencyLimit(self.client, name, limit, self.prefix, self.lease)

    async def close(self) -> None:
        """Give back held slots, stop background work, and close the client if this limiter made it."""
        try:
            if self._batcher is not None:
                await self._batcher.close()
            for limit in self._limits.values():
                await limit.close()
        finally:
            if self._close_client:
                # make_redis passes its own pool, which aclose() leaves open unless told to close it.
                await self.client.aclose(close_connection_pool=True)
