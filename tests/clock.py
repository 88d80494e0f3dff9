"""A clock tests move by hand, so windows, TTLs and refills pass without sleeping."""

from __future__ import annotations

from datetime import UTC, datetime


class Clock:
    """Reads `now`; the test sets it (any start: monotonic-like by default, an epoch time where wanted)."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def epoch(*parts: int) -> float:
    """Epoch seconds of a UTC date and time."""
    return datetime(*parts, tzinfo=UTC).timestamp()  # type: ignore[misc]
