"""Fixed-window quota counters shared by every process using one Redis, each call one Lua script."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from llmkit.core.backends import redis_errors
from llmkit.core.limiter.base import (
    QuotaDecision,
    Window,
    WindowState,
    check_amount,
    window_bounds,
    window_state,
)

if TYPE_CHECKING:
    import redis.asyncio as aioredis

# KEYS: one counter per window; ARGV: mode (0 usage, 1 consume, 2 add), amount, how many of the windows (the
# first ones) are charged the amount, then per window its limit and the epoch ms at which its key may go. The
# other windows are only checked: they must have room left. Checking every window before writing any is what
# makes a consume all-or-nothing; the script runs alone on the server, so no other replica slips in between.
QUOTA_LUA = """
local mode = tonumber(ARGV[1])
local amount = tonumber(ARGV[2])
local charged = tonumber(ARGV[3])
local n = #KEYS
local used = {}
for i = 1, n do used[i] = tonumber(redis.call('GET', KEYS[i]) or '0') end
local allowed = 1
local denied = 0
if mode == 1 then
  for i = 1, n do
    local limit = tonumber(ARGV[2 + 2 * i])
    local cost = 0
    if i <= charged then cost = amount end
    if used[i] >= limit or used[i] + cost > limit then
      allowed = 0
      denied = i
      break
    end
  end
end
if allowed == 1 and mode ~= 0 and amount > 0 then
  for i = 1, charged do
    used[i] = redis.call('INCRBY', KEYS[i], amount)
    redis.call('PEXPIREAT', KEYS[i], ARGV[3 + 2 * i])
  end
end
local out = {allowed, denied}
for i = 1, n do out[2 + i] = used[i] end
return out
"""

_USAGE, _CONSUME, _ADD = 0, 1, 2


class RedisQuotaCounter:
    """Counters in keys `{prefix}:quota:{key}:{window}:{window start}` that expire after their window."""

    def __init__(
        self,
        client: aioredis.Redis,
        prefix: str = "llmkit",
        clock: Callable[[], float] = time.time,
        margin: float = 60.0,
        close_client: bool = False,
    ) -> None:
        if margin < 0:
            raise ValueError(f"the expiry margin must be >= 0 seconds; got {margin!r}")
        self.client = client
        self.prefix = prefix
        self._clock = clock
        self._margin_ms = int(margin * 1000)
        self._close_client = close_client
        self._script = client.register_script(QUOTA_LUA)

    async def consume(
        self, key: str, windows: Sequence[Window], cost: int, checked: Sequence[Window] = ()
    ) -> QuotaDecision:
        """Allowed iff every window has used < limit and used + cost <= limit, and every `checked` one
        used < limit; then add cost to `windows` (not to `checked`). One round trip."""
        check_amount(cost)
        allowed, denied, states = await self._call(_CONSUME, key, [*windows, *checked], cost, len(windows))
        return QuotaDecision(bool(allowed), tuple(states), None if allowed else states[denied - 1])

    async def add(self, key: str, windows: Sequence[Window], amount: int) -> list[WindowState]:
        """Add `amount` to every window unconditionally (it may go over the limit)."""
        check_amount(amount, "amount")
        return (await self._call(_ADD, key, windows, amount, len(windows)))[2]

    async def usage(self, key: str, windows: Sequence[Window]) -> list[WindowState]:
        """The state of every window of `key`, changing nothing."""
        return (await self._call(_USAGE, key, windows, 0, 0))[2]

    async def close(self) -> None:
        """Close the client if this counter was given it to own."""
        if self._close_client:
            # make_redis passes its own pool, which aclose() leaves open unless told to close it.
            await self.client.aclose(close_connection_pool=True)

    async def _call(
        self, mode: int, key: str, windows: Sequence[Window], amount: int, charged: int
    ) -> tuple[int, int, list[WindowState]]:
        if not windows:
            return 1, 0, []
        # The window start comes from this process's clock (injectable for tests); replicas whose clocks
        # agree to within a second share every window but the last second of one.
        now = self._clock()
        keys: list[str] = []
        args: list[Any] = [mode, amount, charged]
        ends: list[float] = []
        for window in windows:
            start, end = window_bounds(window.period, now)
            keys.append(f"{self.prefix}:quota:{key}:{window.name}:{int(start)}")
            args += [window.limit, math.ceil(end * 1000) + self._margin_ms]
            ends.append(end)
        with redis_errors("quota counter"):
            answer = await self._script(keys=keys, args=args)
        allowed, denied, *used = (int(value) for value in answer)
        states = [window_state(w, u, e) for w, u, e in zip(windows, used, ends, strict=True)]
        return allowed, denied, states
