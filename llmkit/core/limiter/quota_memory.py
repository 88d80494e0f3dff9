"""Fixed-window quota counters in this process only: one dict of (key, window, start) -> units used."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from llmkit.core.limiter.base import (
    QuotaDecision,
    Window,
    WindowState,
    check_amount,
    window_bounds,
    window_state,
)

# (window, its slot in the counts, units used, when the window ends)
_Read = tuple[Window, tuple[str, str, float], int, float]


class MemoryQuotaCounter:
    """Counts units per key and window in a dict; calls never await, so each one is atomic on the loop.

    Every admitted request of a tenant with quotas comes through here, so the calls are written flat: the
    current window of each period is kept, not recomputed, and nothing is built that the answer does not
    carry."""

    def __init__(self, clock: Callable[[], float] = time.time, sweep_interval: float = 60.0) -> None:
        self._clock = clock
        self._counts: dict[tuple[str, str, float], list[float]] = {}  # -> [used, window end]
        self._sweep_interval = sweep_interval
        self._next_sweep = clock() + sweep_interval
        self._bounds: dict[str, tuple[float, float]] = {}  # period -> (start, end) of the window last seen

    async def consume(
        self, key: str, windows: Sequence[Window], cost: int, checked: Sequence[Window] = ()
    ) -> QuotaDecision:
        """Allowed iff every window has used < limit and used + cost <= limit, and every `checked` one
        used < limit; then add cost to `windows` (not to `checked`)."""
        if type(cost) is not int or cost < 0:
            check_amount(cost)
        now = self._clock()
        if now >= self._next_sweep:
            self._sweep(now)
        reads = self._read(key, [*windows, *checked] if checked else windows, now)
        charged = len(windows)
        for i, (window, _, used, _end) in enumerate(reads):
            if used >= window.limit or (i < charged and used + cost > window.limit):
                states = tuple(window_state(w, u, e) for w, _, u, e in reads)
                return QuotaDecision(False, states, states[i])
        counts = self._counts
        out = []
        for i, (window, slot, used, end) in enumerate(reads):
            if cost and i < charged:
                used += cost
                counts[slot] = [used, end]
            limit = window.limit
            out.append(WindowState(window.name, limit, used, limit - used if used < limit else 0, end))
        return QuotaDecision(True, tuple(out), None)

    async def add(self, key: str, windows: Sequence[Window], amount: int) -> list[WindowState]:
        """Add `amount` to every window unconditionally (it may go over the limit)."""
        if type(amount) is not int or amount < 0:
            check_amount(amount, "amount")
        counts = self._counts
        out = []
        for window, slot, used, end in self._read(key, windows, self._now()):
            if amount:
                used += amount
                counts[slot] = [used, end]
            limit = window.limit
            out.append(WindowState(window.name, limit, used, limit - used if used < limit else 0, end))
        return out

    async def usage(self, key: str, windows: Sequence[Window]) -> list[WindowState]:
        """The state of every window of `key`, changing nothing."""
        return [window_state(w, used, end) for w, _, used, end in self._read(key, windows, self._now())]

    async def close(self) -> None:
        """Nothing to release; present for the QuotaCounter protocol."""

    def __len__(self) -> int:
        return len(self._counts)

    def _now(self) -> float:
        now = self._clock()
        if now >= self._next_sweep:
            self._sweep(now)
        return now

    def _read(self, key: str, windows: Sequence[Window], now: float) -> list[_Read]:
        counts, bounds = self._counts, self._bounds
        out = []
        for window in windows:
            period = window.period
            current = bounds.get(period)
            if current is None or not current[0] <= now < current[1]:
                current = bounds[period] = window_bounds(period, now)
            slot = (key, window.name, current[0])
            count = counts.get(slot)
            out.append((window, slot, 0 if count is None else int(count[0]), current[1]))
        return out

    def _sweep(self, now: float) -> None:
        # A window that ended counts nothing any more, so dropping it keeps the dict to the live windows.
        ended = [slot for slot, (_, end) in self._counts.items() if end <= now]
        for slot in ended:
            del self._counts[slot]
        self._next_sweep = now + self._sweep_interval
