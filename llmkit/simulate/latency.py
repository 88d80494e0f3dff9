"""The latency model: time to first token and inter-token latency with jitter, per request."""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass

from multidict import istr

from llmkit.core.http import ApiError
from llmkit.settings import SimulateSettings
from llmkit.simulate.scheduler import Scheduler

# Pre-folded (istr): looking one up in the request headers then skips case-folding it every time.
TTFT_HEADER = istr("x-llmkit-ttft-ms")
ITL_HEADER = istr("x-llmkit-itl-ms")
# A delay above ten minutes is a typo, not a test: refuse it rather than hold a slot that long.
MAX_DELAY_MS = 600_000.0


@dataclass(frozen=True, slots=True)
class Latency:
    """Delays of one request in seconds; each is scaled by a random factor in [1 - jitter, 1 + jitter]."""

    ttft: float
    itl: float
    jitter: float = 0.0
    # The scheduler whose load factor scales every delay when it is taken (None: no scheduler).
    load: Scheduler | None = None

    @property
    def instant(self) -> bool:
        """True when nothing should sleep at all."""
        return self.ttft <= 0 and self.itl <= 0

    def _scaled(self, seconds: float, rng: random.Random) -> float:
        if seconds <= 0:
            return 0.0
        if self.load is not None:
            seconds *= self.load.load_factor()
        if self.jitter <= 0:
            return seconds
        return seconds * rng.uniform(1.0 - self.jitter, 1.0 + self.jitter)

    def first_token(self, rng: random.Random) -> float:
        """Seconds before the first token."""
        return self._scaled(self.ttft, rng)

    def next_token(self, rng: random.Random) -> float:
        """Seconds between two tokens."""
        return self._scaled(self.itl, rng)

    def whole_answer(self, tokens: int, rng: random.Random) -> float:
        """Seconds a non-streamed answer of `tokens` tokens takes to generate."""
        return self._scaled(self.ttft + self.itl * max(tokens - 1, 0), rng)


def _header_ms(headers: Mapping[str, str], name: str, default: float) -> float:
    raw = headers.get(name)
    if raw is None:
        return default
    try:
        value = float(raw.strip())
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and 0 <= value <= MAX_DELAY_MS):
        raise ApiError(
            400,
            "invalid_header",
            f"header {name} must be a number of milliseconds between 0 and {MAX_DELAY_MS:g}; got {raw!r}",
            param=name,
        )
    return value


# The latency of requests without override headers, for the settings it was made from (the same object
# on every request of an app): a Latency is immutable, so one serves them all.
_last_configured: tuple[SimulateSettings, Scheduler | None, Latency] | None = None


def _configured(settings: SimulateSettings, load: Scheduler | None) -> Latency:
    global _last_configured
    last = _last_configured
    if last is not None and last[0] is settings and last[1] is load:
        return last[2]
    latency = Latency(settings.ttft_ms / 1000.0, settings.itl_ms / 1000.0, settings.jitter, load)
    _last_configured = (settings, load, latency)
    return latency


def latency_for(
    headers: Mapping[str, str], settings: SimulateSettings, load: Scheduler | None = None
) -> Latency:
    """The request's latency: settings, overridden by the x-llmkit-ttft-ms / x-llmkit-itl-ms headers;
    `load` (the scheduler, when its time factor is above 1) scales it with the requests running."""
    if TTFT_HEADER not in headers and ITL_HEADER not in headers:
        return _configured(settings, load)
    ttft_ms = _header_ms(headers, TTFT_HEADER, settings.ttft_ms)
    itl_ms = _header_ms(headers, ITL_HEADER, settings.itl_ms)
    return Latency(ttft_ms / 1000.0, itl_ms / 1000.0, settings.jitter, load)
