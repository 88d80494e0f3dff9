"""The request slot every model route runs in: injected fault, RPM / TPM, one of `semaphore_limit` slots."""

from __future__ import annotations

import time
from contextlib import AbstractAsyncContextManager

from aiohttp import web

from llmkit.core.http import ApiError
from llmkit.core.limiter import SlotUnavailable
from llmkit.simulate import ratelimit
from llmkit.simulate.faults import FAULT_HEADER, inject
from llmkit.simulate.metrics import TIMING_KEY, RequestTiming
from llmkit.simulate.scheduler import ClientGone
from llmkit.simulate.state import SimulateState
from llmkit.simulate.stream import client_gone


def _too_busy(state: SimulateState) -> ApiError:
    limit = state.settings.semaphore_limit
    waited = state.settings.queue_timeout_ms
    return ApiError(
        429,
        "rate_limit_exceeded",
        f"all {limit} request slots are busy and none freed within {waited:g} ms; retry after a second, "
        "or raise simulate.semaphore_limit / simulate.queue_timeout_ms",
        headers={"Retry-After": "1"},
        type="rate_limit_exceeded",
    )


class RequestSlot:
    """One model request's turn: its injected fault, its rate limits, one of the `semaphore_limit` slots.

    Use `async with request_slot(...)`; the hottest handler calls take_now / take / give_back itself.
    """

    __slots__ = ("_holder", "_in_stream", "_request", "_seated", "_state", "_timing")

    def __init__(self, state: SimulateState, request: web.Request, in_stream: bool = False) -> None:
        self._state = state
        self._request = request
        self._in_stream = in_stream
        self._holder = ""
        self._seated = False
        # From arrival, as vLLM counts: the wait for a slot or a seat is part of the latency.
        self._timing = timing = RequestTiming(time.perf_counter())
        request[TIMING_KEY] = timing

    def take_now(self) -> bool:
        """Take a free slot (and the scheduler's free seat) at once; False, having changed nothing, when
        `take` must run instead (a fault may be injected, rate limits are on, or no slot or seat is free)."""
        state = self._state
        if state.rate_limits is not None or state.faults.armed(self._request.headers.get(FAULT_HEADER)):
            return False
        scheduler = state.scheduler
        if scheduler is not None and not scheduler.seat_free():
            return False
        holder = state.limit.try_acquire()
        if holder is None:
            return False
        if scheduler is not None:
            # Nothing awaited since seat_free(): the seat is still there.
            scheduler.try_enter()
            self._seated = True
        stats = state.stats
        stats.requests += 1
        stats.in_flight += 1
        self._holder = holder
        return True

    async def take(self) -> None:
        """Inject the request's fault, check its rate limits, then wait up to `queue_timeout_ms` for a slot
        (429 after that), then for a seat of the scheduler when there is one (429 past max_waiting)."""
        state, request = self._state, self._request
        header = request.headers.get(FAULT_HEADER)
        if state.faults.armed(header):
            # Before taking a slot: an injected error or hang answers without one.
            await inject(request, state.faults, header, self._in_stream)
        if state.rate_limits is not None:
            await ratelimit.check(request, state.rate_limits)
        stats = state.stats
        stats.requests += 1
        holder = state.limit.try_acquire()
        if holder is None:
            try:
                holder = await state.limit.acquire(state.settings.queue_timeout_ms / 1000.0)
            except SlotUnavailable:
                stats.rejected += 1
                raise _too_busy(state) from None
        scheduler = state.scheduler
        if scheduler is not None and not scheduler.try_enter():
            try:
                await scheduler.enter(lambda: client_gone(request))
            except ApiError:
                stats.rejected += 1
                state.limit.release_nowait(holder)
                raise
            except ClientGone:
                stats.disconnects += 1
                state.limit.release_nowait(holder)
                raise ApiError(
                    499, "client_closed_request", "the client left while its request waited"
                ) from None
            except BaseException:
                state.limit.release_nowait(holder)
                raise
        self._seated = scheduler is not None
        self._hold(holder)

    def give_back(self) -> None:
        """Free the slot; runs on success, error, cancellation and client disconnect alike."""
        state = self._state
        state.stats.in_flight -= 1
        state.limit.release_nowait(self._holder)
        if state.request_metrics is not None:
            state.request_metrics.finish(self._timing)
        if self._seated:
            self._seated = False
            scheduler = state.scheduler
            if scheduler is not None:
                scheduler.leave()

    def _hold(self, holder: str) -> None:
        self._holder = holder
        self._state.stats.in_flight += 1

    async def __aenter__(self) -> None:
        if not self.take_now():
            await self.take()

    async def __aexit__(self, *exc_info: object) -> None:
        self.give_back()


def request_slot(
    state: SimulateState, request: web.Request, *, in_stream: bool = False
) -> AbstractAsyncContextManager[None]:
    """`async with request_slot(...)`: every model route runs inside one (see RequestSlot). `in_stream`:
    the request streams an OpenAI shape (see `faults.inject`).
    """
    return RequestSlot(state, request, in_stream)
