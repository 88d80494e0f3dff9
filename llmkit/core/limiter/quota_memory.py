"""Fixed-window quota counters in this process only: one dict of (key, window, start) -> units used."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from llmkit.core.limiter.base import (
    QuotaDecision,
    Window,
    WindowState,
    check_amount,
    refuses,
    window_bounds,
    window_state,
)


class MemoryQuotaCounter:
    """Counts units per key and window in a dict; calls never await, so each one is atomic on the loop."""

    def __init__(self, clock: Callable[[], float] = time.time, sweep_interval: float = 60.0) -> None:
        self._clock = clock
        self._counts: dict[tuple[str, str, float], list[float]] = {}  # -> [used, window end]
        self._sweep_interval = sweep_interval
        self._next_sweep = clock() + sweep_interval

    async def consume(
        self, key: str, windows: Sequence[Window], cost: int, checked: Sequence[Window] = ()
    ) -> QuotaDecision:
        """Allowed iff every window has used < limit and used + cost <= limit, and every `checked` one
        used < limit; then add cost to `windows` (not to `checked`)."""
        check_amount(cost)
        every = [*windows, *checked]
        slots = self._slots(key, every)
        charged = len(windows)
        for i, (window, (_, used, end)) in enumerate(zip(every, slots, strict=True)):
            if refuses(window, used, cost if i < charged else 0):
                states = tuple(window_state(w, u, e) for w, (_, u, e) in zip(every, slots, strict=True))
                return QuotaDecision(False, states, window_state(window, used, end))
        added = self._add(windows, slots[:charged], cost)
        rest = [window_state(w, u, e) for w, (_, u, e) in zip(checked, slots[charged:], strict=True)]
        return QuotaDecision(True, (*added, *rest), None)

    async def add(self, key: str, windows: Sequence[Window], amount: int) -> list[WindowState]:
        """Add `amount` to every window unconditionally (it may go over the limit)."""
        check_amount(amount, "amount")
        return self._add(windows, self._slots(key, windows), amount)

    async def usage(self, key: str, windows: Sequence[Window]) -> list[WindowState]:
        """The state of every window of `key`, changing nothing."""
        slots = self._slots(key, windows)
        return [window_state(w, used, end) for w, (_, used, end) in zip(windows, slots, strict=True)]

    async def close(self) -> None:
        """Nothing to release; present for the QuotaCounter protocol."""

    def __len__(self) -> int:
        return len(self._counts)

    def _slots(self, key: str, windows: Sequence[Window]) -> list[tuple[tuple[str, str, float], int, float]]:
        now = self._clock()
        if now >= self._next_sweep:
            self._sweep(now)
        slots = []
        for window in windows:
            start, end = window_bounds(window.period, now)
            slot = (key, window.name, start)
            count = self._counts.get(slot)
            slots.append((slot, 0 if count is None else int(count[0]), end))
        return slots

    def _add(
        self, windows: Sequence[Window], slots: list[tuple[tuple[str, str, float], int, float]], amount: int
    ) -> list[WindowState]:
        states = []
        for window, (slot, used, end) in zip(windows, slots, strict=True):
            used += amount
            if amount:
                self._counts[slot] = [used, end]
            states.append(window_state(window, used, end))
        return states

    def _sweep(self, now: float) -> None:
        # A window that ended counts nothing any more, so dropping it keeps the dict to the live windows.
        ended = [slot for slot, (_, end) in self._counts.items() if end <= now]
        for slot in ended:
            del self._counts[slot]
        self._next_sweep = now + self._sweep_interval
