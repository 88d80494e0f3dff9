"""Outage: the workers' view of their queue and job store, so a Redis blip is logged once and waited out."""

from __future__ import annotations

import logging
import random
import time

from llmkit.core.breaker import backoff_delay

log = logging.getLogger("llmkit.orchestrate")

# Waits between tries while the queue or job store is away: full jitter from BASE, at most CAP, so a
# restarted Redis gets every worker back within CAP seconds without all of them knocking at once.
BACKOFF_BASE_S = 0.05
BACKOFF_CAP_S = 2.0


class Outage:
    """Shared by a process's workers: one warning when the backends are lost, one info when they are back."""

    def __init__(self, base: float = BACKOFF_BASE_S, cap: float = BACKOFF_CAP_S) -> None:
        self.base, self.cap = base, cap
        self.since: float | None = None
        self.last_error = ""
        self._failures = 0
        self._rng = random.Random()

    @property
    def down(self) -> bool:
        """Whether the last call of any worker failed."""
        return self.since is not None

    def failed(self, exc: BaseException) -> float:
        """Note a failed call; the seconds the worker waits before it tries again."""
        self.last_error = f"{type(exc).__name__}: {exc}"
        if self.since is None:
            self.since = time.monotonic()
            log.warning(
                "workers cannot reach the queue or job store (%s); retrying (every %g s at most)",
                self.last_error,
                self.cap,
            )
        self._failures += 1
        return backoff_delay(self._failures - 1, None, base=self.base, cap=self.cap, rng=self._rng)

    def recovered(self, started: float) -> None:
        """Note a call that worked, begun at `started` (monotonic): it ends an outage that began before."""
        # A call begun before the outage (a long queue wait) proves nothing about the backends now.
        if self.since is None or started < self.since:
            return
        lasted = time.monotonic() - self.since
        log.info("workers reach the queue and job store again after %.1f s; taking jobs", lasted)
        self.since, self._failures = None, 0
