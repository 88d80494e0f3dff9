"""Paced streams sleep on shared millisecond ticks and keep to their own timeline."""

from __future__ import annotations

import asyncio
import math
import random
import time
from types import SimpleNamespace
from typing import Any, cast

import pytest
from aiohttp import web

from llmkit.simulate.latency import Latency
from llmkit.simulate.stream import Ticks, next_token, pause_until, ticks_of


class Connected:
    """Stands in for a request whose client is still (or no longer) connected."""

    def __init__(self) -> None:
        self.transport = SimpleNamespace(is_closing=lambda: self.closed)
        self.closed = False


def request() -> web.Request:
    return cast(web.Request, Connected())


async def test_sleepers_due_in_the_same_millisecond_share_one_timer_and_never_wake_early() -> None:
    loop = asyncio.get_running_loop()
    ticks = Ticks(loop)
    timers: list[Any] = []
    real_call_at = loop.call_at

    def counting_call_at(when: float, callback: Any, *args: Any) -> asyncio.TimerHandle:
        timers.append(when)
        return real_call_at(when, callback, *args)

    loop.call_at = counting_call_at  # type: ignore[method-assign]
    try:
        # 0.9 ms before a millisecond boundary, so the 200 due times (over 0.2 ms) fall in one slot.
        when = (math.ceil(loop.time() * 1000) + 20 - 0.9) / 1000
        futures = [ticks.until(when + i * 1e-6) for i in range(200)]
        later = ticks.until(when + 0.005)
        await asyncio.gather(*futures)
        woke = loop.time()
        await later
    finally:
        loop.call_at = real_call_at  # type: ignore[method-assign]
    assert len(timers) == 2
    assert woke >= when + 199e-6
    assert loop.time() >= when + 0.005


async def test_a_cancelled_sleeper_leaves_the_others_of_its_tick_asleep_until_due() -> None:
    loop = asyncio.get_running_loop()
    ticks = Ticks(loop)
    when = loop.time() + 0.01
    first, second = ticks.until(when), ticks.until(when)
    first.cancel()
    await second
    assert second.result() is None and first.cancelled()


async def test_a_task_cancelled_in_its_pause_does_not_wake_the_others() -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + 0.05
    a = asyncio.create_task(pause_until(request(), end))
    b = asyncio.create_task(pause_until(request(), end))
    await asyncio.sleep(0.005)
    a.cancel()
    with pytest.raises(asyncio.CancelledError):
        await a
    assert not b.done()
    await b
    assert loop.time() >= end


async def test_a_pause_ends_soon_after_the_client_leaves() -> None:
    loop = asyncio.get_running_loop()
    gone = Connected()
    task = asyncio.create_task(pause_until(cast(web.Request, gone), loop.time() + 60))
    await asyncio.sleep(0.01)
    gone.closed = True
    with pytest.raises(ConnectionResetError):
        await asyncio.wait_for(task, 5)


async def test_each_loop_has_its_own_ticks() -> None:
    loop = asyncio.get_running_loop()
    assert ticks_of(loop) is ticks_of(loop)
    other = asyncio.new_event_loop()
    try:
        assert ticks_of(other) is not ticks_of(loop)
    finally:
        other.close()


async def test_tokens_keep_to_the_stream_timeline_and_a_late_stream_goes_on_from_now() -> None:
    loop = asyncio.get_running_loop()
    latency = Latency(ttft=0.0, itl=0.02)
    rng = random.Random(1)
    start = loop.time()
    due = await next_token(request(), start, latency, rng)
    assert due == pytest.approx(start + 0.02)  # an ITL after the last token was due, not after now
    time.sleep(0.06)  # the loop was busy for three ITLs
    before = loop.time()
    late = await next_token(request(), due, latency, rng)
    assert late >= before  # due now: no burst of the tokens it missed
