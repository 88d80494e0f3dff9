"""A model server's scheduler: `max_num_seqs` requests run at once, the rest wait, latency grows with load."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from llmkit.core.http import ApiError

# vLLM's Prometheus series (vllm/v1/metrics/loggers.py), labelled with the served model.
RUNNING_SERIES = "vllm:num_requests_running"
WAITING_SERIES = "vllm:num_requests_waiting"


class ClientGone(Exception):
    """The client of a waiting request went away before its turn came."""


def _never() -> bool:
    return False


class Scheduler:
    """Seats for `max_num_seqs` running requests and a FIFO of waiting ones (at most `max_waiting`,
    0: unbounded). A request leaving hands its seat straight to the first waiting one whose client is
    still there (the others get ClientGone).

    The load factor is llm-d-inference-sim's: 1 + (factor - 1) * (running - 1) / (max_num_seqs - 1), so
    a request alone runs at the configured latency and a full batch at `factor` times it.
    """

    def __init__(self, max_num_seqs: int, max_waiting: int, time_factor: float, retry_after: float) -> None:
        self.max_num_seqs = max_num_seqs
        self.max_waiting = max_waiting
        self.time_factor = time_factor
        self.retry_after = retry_after
        self.running = 0
        self.rejected = 0
        self.abandoned = 0
        self._waiting: deque[tuple[asyncio.Future[None], Callable[[], bool]]] = deque()
        self._slope = (time_factor - 1.0) / (max_num_seqs - 1) if max_num_seqs > 1 else 0.0

    @property
    def waiting(self) -> int:
        """Requests waiting for a seat."""
        return len(self._waiting)

    def load_factor(self) -> float:
        """How much slower than configured each delay is now (1 with one request running)."""
        return 1.0 + self._slope * max(self.running - 1, 0)

    def seat_free(self) -> bool:
        """Whether `try_enter` would take a seat now."""
        return self.running < self.max_num_seqs and not self._waiting

    def try_enter(self) -> bool:
        """Take a seat at once if one is free and nobody waits for it."""
        if self.running < self.max_num_seqs and not self._waiting:
            self.running += 1
            return True
        return False

    async def enter(self, gone: Callable[[], bool] = _never) -> None:
        """Take a seat, waiting in arrival order; 429 (with Retry-After) when the waiting queue is full,
        ClientGone when `gone()` says the client left by the time its turn came."""
        if self.try_enter():
            return
        if self.max_waiting and len(self._waiting) >= self.max_waiting:
            self.rejected += 1
            raise self._overloaded()
        seat: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (seat, gone)
        self._waiting.append(entry)
        try:
            await seat
        except asyncio.CancelledError:
            if seat.done() and not seat.cancelled() and seat.exception() is None:
                # The seat was handed over just as the request was cancelled: pass it on.
                self.leave()
            elif entry in self._waiting:
                self._waiting.remove(entry)
            raise

    def leave(self) -> None:
        """Give the seat back: to the first waiting request, or free it."""
        waiting = self._waiting
        while waiting:
            seat, gone = waiting.popleft()
            if seat.done():
                continue
            if gone():
                self.abandoned += 1
                seat.set_exception(ClientGone())
                continue
            seat.set_result(None)
            return
        self.running -= 1

    def stats(self) -> dict[str, Any]:
        """The /stats section: limits, running and waiting requests, rejections, the load factor now."""
        return {
            "max_num_seqs": self.max_num_seqs,
            "max_waiting": self.max_waiting,
            "running": self.running,
            "waiting": self.waiting,
            "rejected": self.rejected,
            "abandoned": self.abandoned,
            "time_factor_under_load": self.time_factor,
            "load_factor": round(self.load_factor(), 4),
        }

    def _overloaded(self) -> ApiError:
        return ApiError(
            429,
            "rate_limit_exceeded",
            f"the server is overloaded: {self.running} requests running (simulate.max_num_seqs "
            f"{self.max_num_seqs}) and {self.waiting} waiting (simulate.max_waiting {self.max_waiting}); "
            f"retry after {self.retry_after:g} s",
            headers={"Retry-After": f"{max(1, round(self.retry_after))}"},
            type="rate_limit_exceeded",
        )


class SchedulerCollector:
    """Prometheus collector of vLLM's running / waiting gauges, labelled model_name."""

    def __init__(self, model: str, counts: Any) -> None:
        # counts() -> (running, waiting): the scheduler's, or the in-flight requests when it is off.
        self.model = model
        self.counts = counts

    def collect(self) -> Iterator[Any]:
        """The two gauges, read when /metrics is scraped."""
        from prometheus_client.core import GaugeMetricFamily

        running, waiting = self.counts()
        for name, value, doc in (
            (RUNNING_SERIES, running, "Number of requests in model execution batches."),
            (WAITING_SERIES, waiting, "Number of requests waiting to be processed."),
        ):
            gauge = GaugeMetricFamily(name, doc, labels=["model_name"])
            gauge.add_metric([self.model], value)
            yield gauge
