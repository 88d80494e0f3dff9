"""CircuitBreaker: stop calling an upstream that keeps failing; backoff_delay: how long to wait to retry.

Semantics (shared by the orchestrator's ResilientBackend and the gateway's UpstreamPool):

- `threshold` failed calls in a row (`failed`) open the breaker for `reset_s` seconds; meanwhile `admit`
  raises CircuitOpen. An answer (`answered`: a success, or an error that is the request's fault) resets the
  count.
- After `reset_s` the breaker is half-open: `admit` lets one trial call through (and returns True for it)
  while the others get CircuitOpen; the trial's answer closes the breaker, its failure reopens it for a
  full period. A trial that ends with neither (`release`) frees the way for the next trial.
- `threshold=0` turns the breaker off.
- `on_change(name, state)`, when set, hears each time the breaker opens from closed ("open") and each time
  a trial closes it ("closed"): a reopen after a failed trial is not news.
- `guard` runs one call under these rules and counts how it ended (CallCounts): an answer is a success or a
  PermanentError (the request was at fault); a failure is a RetryableError, or a cancel when the caller says
  so (the orchestrator cuts a hanging upstream with its job timeout; the gateway cancels when every
  listener left, which says nothing of the upstream).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from llmkit.errors import CircuitOpen, ConfigError, PermanentError, RetryableError

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
# What CircuitOpen says to wait while the half-open trial runs: the trial settles the state soon.
TRIAL_WAIT_S = 1.0

Clock = Callable[[], float]
T = TypeVar("T")


@dataclass(slots=True)
class CallCounts:
    """How the calls `CircuitBreaker.guard` let through ended."""

    calls: int = 0  # calls let through (refused ones are the breaker's `rejected`)
    succeeded: int = 0
    failed: int = 0  # calls that raised RetryableError
    cancelled: int = 0
    permanent: int = 0  # calls that raised PermanentError


def backoff_delay(
    attempt: int, retry_after: float | None, *, base: float, cap: float, rng: random.Random
) -> float:
    """Seconds to wait after failed attempt number `attempt` (0 = the first).

    Full jitter on `base * 2**attempt`, at most `cap`; or the upstream's Retry-After plus up to `base` of
    jitter (so callers told the same second do not return together), also at most `cap`.
    """
    if retry_after is not None:
        return min(cap, retry_after + rng.random() * base)
    # min() before the power would overflow a float after ~1000 attempts.
    ceiling = min(cap, base * 2.0 ** min(attempt, 64))
    return rng.random() * ceiling


class CircuitBreaker:
    """closed, open after `threshold` failed calls in a row, half_open (one trial) `reset_s` later."""

    __slots__ = (
        "_clock",
        "_opened_at",
        "_state",
        "_trial",
        "failures_in_row",
        "name",
        "on_change",
        "opened",
        "rejected",
        "reset_s",
        "threshold",
    )

    def __init__(
        self, name: str, threshold: int = 5, reset_s: float = 30.0, *, clock: Clock = time.monotonic
    ) -> None:
        if threshold < 0 or reset_s < 0:
            raise ConfigError(
                f"{name}: the breaker's threshold and reset time must be >= 0; got {threshold} and {reset_s}"
            )
        # Named in CircuitOpen messages: the backend or the upstream URL.
        self.name = name
        self.threshold = threshold
        self.reset_s = reset_s
        self._clock = clock
        self._state = CLOSED
        self._opened_at = 0.0
        # Whether the half-open trial call is running (only one at a time).
        self._trial = False
        self.failures_in_row = 0
        self.rejected = 0  # CircuitOpen raised
        self.opened = 0  # times the breaker opened
        self.on_change: Callable[[str, str], None] | None = None

    @property
    def state(self) -> str:
        """closed, open or half_open (open turns half_open once reset_s has passed)."""
        if self._state == OPEN and self._clock() >= self._opened_at + self.reset_s:
            return HALF_OPEN
        return self._state

    def available(self) -> bool:
        """Whether `admit` would let a call through now (changes nothing)."""
        return self._state == CLOSED or (not self._trial and self._reset_in() <= 0)

    def admit(self) -> bool:
        """Let a call through or raise CircuitOpen; True when the call is the half-open trial."""
        if self._state == CLOSED:
            return False
        if self._reset_in() <= 0 and not self._trial:
            self._state, self._trial = HALF_OPEN, True
            return True
        raise self.refusal()

    def refusal(self) -> CircuitOpen:
        """Count a refused call; the CircuitOpen that tells it how long to wait."""
        self.rejected += 1
        wait = self._reset_in()
        if self._state == OPEN and wait > 0:
            return CircuitOpen(
                f"{self.name}: circuit open after {self.failures_in_row} failed calls in a row; "
                f"retry in {wait:.3g} s",
                wait,
            )
        return CircuitOpen(
            f"{self.name}: circuit half-open: a trial call is testing the upstream; retry shortly",
            TRIAL_WAIT_S,
        )

    def retry_in(self) -> float:
        """Seconds until a call may go through (0: now)."""
        if self._state == CLOSED:
            return 0.0
        if self._trial:
            return TRIAL_WAIT_S
        return max(0.0, self._reset_in())

    def answered(self, trial: bool) -> None:
        """The call got an answer: the upstream works."""
        self.failures_in_row = 0
        if trial:
            self._state, self._trial = CLOSED, False
            if self.on_change is not None:
                self.on_change(self.name, CLOSED)

    def failed(self, trial: bool) -> None:
        """The call failed on the upstream's side (5xx, timeout, lost connection)."""
        self.failures_in_row += 1
        threshold = self.threshold
        if trial or (self._state == CLOSED and threshold and self.failures_in_row >= threshold):
            was = self._state
            self._state, self._opened_at = OPEN, self._clock()
            self.opened += 1
            if was == CLOSED and self.on_change is not None:
                self.on_change(self.name, OPEN)
        if trial:
            self._trial = False

    def release(self, trial: bool) -> None:
        """The call ended without a verdict (cancelled, a bug): a trial frees the way for the next one."""
        if trial:
            self._trial = False

    async def guard(
        self, call: Callable[[bool], Awaitable[T]], counts: CallCounts, *, cancel_fails: bool
    ) -> T:
        """`call(trial)` if the breaker admits it (else CircuitOpen), its end counted in `counts` and here."""
        trial = self.admit()
        counts.calls += 1
        try:
            result = await call(trial)
        except PermanentError:
            counts.permanent += 1
            self.answered(trial)
            raise
        except RetryableError:
            counts.failed += 1
            self.failed(trial)
            raise
        except asyncio.CancelledError:
            counts.cancelled += 1
            if cancel_fails:
                self.failed(trial)
            raise
        finally:
            # Whatever ended the trial (even an unexpected error), the next call may be one.
            self.release(trial)
        counts.succeeded += 1
        self.answered(trial)
        return result

    def stats(self) -> dict[str, Any]:
        """The state and counters, for /stats."""
        return {
            "state": self.state,
            "failures_in_row": self.failures_in_row,
            "rejected": self.rejected,
            "opened": self.opened,
        }

    def _reset_in(self) -> float:
        return self._opened_at + self.reset_s - self._clock()
