"""Fixed-window quota counters in this process only: one dict of (key, window, start) -> its count."""

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


class Cell:
    """The count of one window of one key, changed in place; `reset_at` is when the window ends."""

    __slots__ = ("used", "reset_at")

    def __init__(self, reset_at: float) -> None:
        self.used = 0
        self.reset_at = reset_at


# What live_cells answers: the windows and checked windows asked for, until when their cells are the
# current ones (the earliest reset), and the cells.
Live = tuple[Sequence[Window], Sequence[Window], float, list[Cell]]
# Keys whose current cells are kept at hand (more: the memo starts over; the counts stay).
LIVE_MAX = 10_000
_INF = float("inf")


class MemoryQuotaCounter:
    """Counts units per key and window in a dict; calls never await, so each one is atomic on the loop.

    Every admitted request of a tenant with quotas comes through here, so the calls are written flat: the
    current window of each period is kept, not recomputed, a window's count is changed in place, and
    nothing is built that the answer does not carry."""

    def __init__(self, clock: Callable[[], float] = time.time, sweep_interval: float = 60.0) -> None:
        self._clock = clock
        self.clock = clock  # now, on the clock the windows are counted by (a plain callable: no frame)
        self._counts: dict[tuple[str, str, float], Cell] = {}
        self._live: dict[str, Live] = {}  # key -> its cells as live_cells last answered
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
        every = [*windows, *checked] if checked else windows
        cells = self._cells(key, every, self._now())
        charged = len(windows)
        for i, window in enumerate(every):
            used = cells[i].used
            if used >= window.limit or (i < charged and used + cost > window.limit):
                return _refused(every, cells, i)
        out = []
        for i, window in enumerate(every):
            cell = cells[i]
            used = cell.used
            if i < charged:
                cell.used = used = used + cost
            limit = window.limit
            left = limit - used if used < limit else 0
            out.append(WindowState(window.name, limit, used, left, cell.reset_at))
        return QuotaDecision(True, tuple(out), None)

    async def add(self, key: str, windows: Sequence[Window], amount: int) -> list[WindowState]:
        """Add `amount` to every window unconditionally (it may go over the limit)."""
        if type(amount) is not int or amount < 0:
            check_amount(amount, "amount")
        out = []
        # One cell per window by construction; strict=True costs a measurable share of this call.
        for window, cell in zip(windows, self._cells(key, windows, self._now()), strict=False):
            cell.used = used = cell.used + amount
            limit = window.limit
            left = limit - used if used < limit else 0
            out.append(WindowState(window.name, limit, used, left, cell.reset_at))
        return out

    async def usage(self, key: str, windows: Sequence[Window]) -> list[WindowState]:
        """The state of every window of `key`, changing nothing."""
        now = self._now()
        out = []
        for window in windows:
            start, end = self._window(window.period, now)
            cell = self._counts.get((key, window.name, start))
            out.append(window_state(window, 0 if cell is None else cell.used, end))
        return out

    def live_cells(self, key: str, windows: Sequence[Window], checked: Sequence[Window] = ()) -> Live:
        """The current window's cell of each of `windows`, then of each of `checked`, and until when
        they are current (the earliest reset). The cells are live objects whose `used` the caller may
        change in place: this process's loop is the only writer, so a read and the change after it are
        atomic as long as no await comes between them.

        The in-process quota enforcer counts a request through here without building a decision: the
        cells of a key are kept for as long as all of their windows last, for the same two sequence
        objects (a plan's windows), so the usual call is one dict lookup and a few comparisons."""
        now = self._clock()
        if now >= self._next_sweep:
            self._sweep(now)
        live = self._live.get(key)
        if live is not None and now < live[2] and live[0] is windows and live[1] is checked:
            return live
        cells = self._cells(key, [*windows, *checked], now)
        live = (windows, checked, min((cell.reset_at for cell in cells), default=_INF), cells)
        if len(self._live) >= LIVE_MAX:
            self._live.clear()
        self._live[key] = live
        return live

    async def close(self) -> None:
        """Nothing to release; present for the QuotaCounter protocol."""

    def __len__(self) -> int:
        return len(self._counts)

    def _now(self) -> float:
        now = self._clock()
        if now >= self._next_sweep:
            self._sweep(now)
        return now

    def _window(self, period: str, now: float) -> tuple[float, float]:
        current = self._bounds.get(period)
        if current is None or not current[0] <= now < current[1]:
            current = self._bounds[period] = window_bounds(period, now)
        return current

    def _cells(self, key: str, windows: Sequence[Window], now: float) -> list[Cell]:
        """The current window's count of each of `windows`, created at 0 when missing."""
        counts, bounds = self._counts, self._bounds
        out = []
        for window in windows:
            current = bounds.get(window.period)
            if current is None or not current[0] <= now < current[1]:
                current = self._window(window.period, now)
            slot = (key, window.name, current[0])
            cell = counts.get(slot)
            if cell is None:
                cell = counts[slot] = Cell(current[1])
            out.append(cell)
        return out

    def _sweep(self, now: float) -> None:
        # A window that ended counts nothing any more, so dropping it keeps the dict to the live windows.
        ended = [slot for slot, cell in self._counts.items() if cell.reset_at <= now]
        for slot in ended:
            del self._counts[slot]
        for key in [key for key, live in self._live.items() if live[2] <= now]:
            del self._live[key]
        self._next_sweep = now + self._sweep_interval


def _refused(windows: Sequence[Window], cells: list[Cell], denied: int) -> QuotaDecision:
    """A refusal by windows[denied], with every window's state (nothing was added)."""
    states = tuple(window_state(w, c.used, c.reset_at) for w, c in zip(windows, cells, strict=True))
    return QuotaDecision(False, states, states[denied])
