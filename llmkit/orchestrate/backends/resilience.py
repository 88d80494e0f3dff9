"""ResilientBackend: retries (exponential backoff, full jitter) and a circuit breaker around a backend.

Semantics (what /stats reports as `state` and counters):

- A call is one `run`. A RetryableError is retried up to `retries` more times, waiting full jitter on
  `backoff_base * 2**n` (at most `backoff_cap`), or the upstream's Retry-After plus up to `backoff_base` of
  jitter (so workers told the same second do not return together), also at most `backoff_cap`.
- A streamed call that has passed text to `on_delta` is not retried: the caller has shown that text, and a
  second answer may differ. Its error goes to the caller as it is.
- A call fails when its last attempt raised RetryableError, or when its caller cancelled it (the job's
  timeout): a hanging upstream must trip the breaker too. The breaker (llmkit.core.breaker) opens after
  `breaker_threshold` failed calls in a row for `breaker_reset_s`; meanwhile calls raise CircuitOpen at
  once, and calls waiting to retry give up with CircuitOpen. Then the breaker is half-open: one trial call
  (one attempt, no retries) goes through while the others get CircuitOpen; its success closes the breaker,
  its failure reopens it.
- PermanentError is not retried and is not a failure: the upstream answered, the request was at fault. To
  the breaker it counts as an answer, like a success (it resets the failures in a row, closes a half-open
  breaker).
- `breaker_threshold=0` turns the breaker off.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

from llmkit.core.breaker import CLOSED, TRIAL_WAIT_S, CallCounts, CircuitBreaker, Clock, backoff_delay
from llmkit.errors import ConfigError
from llmkit.orchestrate.backends.base import Backend, JobSpec, OnDelta, RetryableError

__all__ = ["TRIAL_WAIT_S", "ResilienceCounters", "ResilientBackend"]

Sleep = Callable[[float], Awaitable[None]]


@dataclass(slots=True)
class ResilienceCounters(CallCounts):
    """What a ResilientBackend did since it started: CallCounts, retries and the breaker's figures."""

    retries: int = 0  # attempts after the first
    rejected: int = 0  # CircuitOpen raised
    opened: int = 0  # times the breaker opened


class _Relay:
    """Passes deltas on and remembers whether any was passed (then the call is no longer retried)."""

    __slots__ = ("on_delta", "passed")

    def __init__(self, on_delta: OnDelta) -> None:
        self.on_delta = on_delta
        self.passed = False

    async def __call__(self, text: str) -> None:
        self.passed = True
        await self.on_delta(text)


class ResilientBackend:
    """Retries the inner backend's RetryableErrors; stops calling it while it keeps failing."""

    def __init__(
        self,
        inner: Backend,
        *,
        retries: int = 3,
        backoff_base: float = 0.2,
        backoff_cap: float = 5.0,
        breaker_threshold: int = 5,
        breaker_reset_s: float = 30.0,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        if retries < 0 or backoff_base < 0 or backoff_cap < 0 or breaker_threshold < 0 or breaker_reset_s < 0:
            raise ConfigError(
                "retries, backoff_base, backoff_cap, breaker_threshold and breaker_reset_s must be >= 0"
            )
        self.inner = inner
        self.name = inner.name
        self.retries = retries
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.breaker = CircuitBreaker(inner.name, breaker_threshold, breaker_reset_s, clock=clock)
        self._sleep = sleep
        self._rng = rng or random.Random()
        # rejected and opened live in the breaker; `counters` joins them in.
        self._counters = ResilienceCounters()

    @property
    def counters(self) -> ResilienceCounters:
        """A snapshot of the counters, the breaker's included."""
        return replace(self._counters, rejected=self.breaker.rejected, opened=self.breaker.opened)

    @property
    def state(self) -> str:
        """The breaker's state: closed, open or half_open."""
        return self.breaker.state

    @property
    def failures_in_row(self) -> int:
        """Failed calls since the last answer."""
        return self.breaker.failures_in_row

    def stats(self) -> dict[str, Any]:
        """The breaker's state and the counters, for /stats."""
        return {
            "backend": self.name,
            "state": self.state,
            "failures_in_row": self.failures_in_row,
            **asdict(self.counters),
        }

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait after failed attempt number `attempt` (0 = the first)."""
        return backoff_delay(
            attempt, retry_after, base=self.backoff_base, cap=self.backoff_cap, rng=self._rng
        )

    async def run(self, job: JobSpec, on_delta: OnDelta | None = None) -> str:
        """The inner backend's answer, retried and guarded by the breaker (see the module docstring)."""
        return await self.breaker.guard(
            lambda trial: self._attempts(job, on_delta, 1 if trial else self.retries + 1),
            self._counters,
            cancel_fails=True,
        )

    async def _attempts(self, job: JobSpec, on_delta: OnDelta | None, attempts: int) -> str:
        relay = None if on_delta is None else _Relay(on_delta)
        attempt = 0
        while True:
            try:
                return await self.inner.run(job, relay)
            except RetryableError as exc:
                attempt += 1
                if attempt >= attempts or (relay is not None and relay.passed):
                    raise
                await self._sleep(self.delay(attempt - 1, exc.retry_after))
                if self.breaker.state != CLOSED:
                    # Other calls opened the breaker while this one waited: stop adding load.
                    raise self.breaker.refusal() from exc
                self._counters.retries += 1

    async def close(self) -> None:
        """Close the inner backend."""
        await self.inner.close()
