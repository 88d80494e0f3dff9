"""What every limiter backend provides: token buckets, concurrency limits, fixed-window quota counters."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Generic, Protocol, TypeVar

from llmkit.errors import RateLimited


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer of a token bucket: allowed or not, tokens left, seconds until `cost` fits, the burst."""

    allowed: bool
    remaining: int
    retry_after: float
    limit: int


@dataclass(frozen=True, slots=True)
class LimitStats:
    """A concurrency limit right now: its size, slots held everywhere, callers waiting in this process."""

    name: str
    limit: int
    in_use: int
    waiting: int


class SlotUnavailable(RateLimited):
    """No slot of a concurrency limit freed within the wait timeout."""


class TokenBucket(Protocol):
    """`rate` tokens per second refill a bucket of `burst` tokens, one bucket per key."""

    name: str
    rate: float
    burst: int

    async def acquire(self, key: str, cost: int = 1) -> Decision:
        """Take `cost` tokens from the bucket of `key` if it holds that many."""
        ...

    async def acquire_many(self, keys: Sequence[str], cost: int = 1) -> list[Decision]:
        """`acquire` for each key, in order, in one round trip where the backend allows it."""
        ...

    async def reset(self, key: str) -> None:
        """Refill the bucket of `key`."""
        ...


class ConcurrencyLimit(Protocol):
    """A semaphore of `limit` slots; waiting for a slot gives up after a timeout."""

    name: str
    limit: int

    async def acquire(self, timeout: float | None = None) -> str:
        """Wait up to `timeout` seconds (None: forever) for a slot and return its holder id, else raise."""
        ...

    async def release(self, holder: str) -> None:
        """Give the slot of `holder` back; releasing twice is harmless."""
        ...

    def slot(self, timeout: float | None = None) -> Slot:
        """`async with limit.slot(timeout=...)`: hold a slot for the body of the block."""
        ...

    async def in_use(self) -> int:
        """How many slots are held (by every process sharing the limit)."""
        ...

    async def stats(self) -> LimitStats:
        """Size, slots in use and local waiters."""
        ...


class Limiter(Protocol):
    """A backend that makes token buckets and concurrency limits sharing one store."""

    def token_bucket(self, name: str, rate: float, burst: int) -> TokenBucket:
        """The bucket called `name`; asking twice with the same settings gives the same object."""
        ...

    def concurrency_limit(self, name: str, limit: int) -> ConcurrencyLimit:
        """The concurrency limit called `name`; asking twice with the same size gives the same object."""
        ...

    async def close(self) -> None:
        """Release the store (connections, background tasks)."""
        ...


B = TypeVar("B", bound=TokenBucket)
C = TypeVar("C", bound=ConcurrencyLimit)


class NamedLimits(Generic[B, C]):
    """Keeps one bucket / limit per name, so every caller asking for a name shares its state."""

    def __init__(self) -> None:
        self._buckets: dict[str, B] = {}
        self._limits: dict[str, C] = {}

    def _new_bucket(self, name: str, rate: float, burst: int) -> B:
        raise NotImplementedError

    def _new_limit(self, name: str, limit: int) -> C:
        raise NotImplementedError

    def token_bucket(self, name: str, rate: float, burst: int) -> B:
        """The bucket called `name`; asking twice with the same settings gives the same object."""
        bucket = self._buckets.get(name)
        if bucket is None:
            bucket = self._buckets[name] = self._new_bucket(name, rate, burst)
        elif (bucket.rate, bucket.burst) != (float(rate), int(burst)):
            raise ValueError(
                f"token bucket {name!r} exists with rate={bucket.rate:g} burst={bucket.burst}; "
                f"asked for rate={rate:g} burst={burst}"
            )
        return bucket

    def concurrency_limit(self, name: str, limit: int) -> C:
        """The concurrency limit called `name`; asking twice with the same size gives the same object."""
        found = self._limits.get(name)
        if found is None:
            found = self._limits[name] = self._new_limit(name, limit)
        elif found.limit != limit:
            raise ValueError(f"concurrency limit {name!r} exists with limit={found.limit}; asked for {limit}")
        return found


class Slot:
    """An async context manager holding one slot of a concurrency limit."""

    __slots__ = ("_limit", "_timeout", "holder")

    def __init__(self, limit: ConcurrencyLimit, timeout: float | None) -> None:
        self._limit = limit
        self._timeout = timeout
        self.holder: str | None = None

    async def __aenter__(self) -> Slot:
        self.holder = await self._limit.acquire(self._timeout)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.holder is not None:
            holder, self.holder = self.holder, None
            await self._limit.release(holder)


def check_bucket(rate: float, burst: int) -> None:
    """Reject a bucket that could never let anything through."""
    if not rate > 0:
        raise ValueError(f"a token bucket needs rate > 0 tokens per second; got {rate!r}")
    if burst < 1:
        raise ValueError(f"a token bucket needs burst >= 1; got {burst!r}")


def check_cost(cost: int, burst: int) -> None:
    """A cost above the burst could never be paid, so it is a caller error rather than a refusal."""
    if cost < 0 or cost > burst:
        raise ValueError(f"cost must be between 0 and the burst ({burst}); got {cost}")


def check_limit(limit: int) -> None:
    """Reject a concurrency limit without slots."""
    if limit < 1:
        raise ValueError(f"a concurrency limit needs at least 1 slot; got {limit!r}")


def no_slot(name: str, limit: int, timeout: float | None) -> SlotUnavailable:
    """The error raised when `timeout` passed without a free slot."""
    # retry_after is a hint for a Retry-After header: a slot's lifetime is unknown, one second is polite.
    return SlotUnavailable(
        f"concurrency limit {name!r}: all {limit} slots busy for {timeout or 0:g}s", retry_after=1.0
    )


# Quota counters: fixed windows aligned to UTC, counted per key.

PERIODS = ("minute", "day", "month")


@dataclass(frozen=True, slots=True)
class Window:
    """A fixed window of one `period` ("minute" | "day" | "month", aligned to UTC) holding `limit` units."""

    name: str
    limit: int
    period: str

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a quota window needs a name, such as 'requests' or 'tokens'")
        if isinstance(self.limit, bool) or not isinstance(self.limit, int) or self.limit < 1:
            raise ValueError(f"quota window {self.name!r}: limit must be an integer >= 1; got {self.limit!r}")
        if self.period not in PERIODS:
            raise ValueError(
                f"quota window {self.name!r}: period must be one of {', '.join(PERIODS)}; got {self.period!r}"
            )


# Built on every admitted request: plain slots (a frozen dataclass's __init__ costs about four times as much).
@dataclass(slots=True)
class WindowState:
    """One window of one key after a call: its limit, units used and left, and when it ends (epoch s)."""

    name: str
    limit: int
    used: int
    remaining: int
    reset_at: float


@dataclass(slots=True)
class QuotaDecision:
    """The answer of `consume`: allowed or not, every window's state, and the first window that refused."""

    allowed: bool
    windows: tuple[WindowState, ...]
    denied: WindowState | None


class QuotaCounter(Protocol):
    """Counts units per key in fixed windows; `consume` checks and adds atomically, across processes."""

    async def consume(
        self, key: str, windows: Sequence[Window], cost: int, checked: Sequence[Window] = ()
    ) -> QuotaDecision:
        """Allowed iff every window has used < limit and used + cost <= limit, and every `checked` one
        used < limit; then add cost to `windows` (not to `checked`). States: `windows`, then `checked`."""
        ...

    async def add(self, key: str, windows: Sequence[Window], amount: int) -> list[WindowState]:
        """Add `amount` to every window unconditionally (it may go over the limit)."""
        ...

    async def usage(self, key: str, windows: Sequence[Window]) -> list[WindowState]:
        """The state of every window of `key`, changing nothing."""
        ...

    async def close(self) -> None:
        """Release the store (connections, background tasks)."""
        ...


def window_bounds(period: str, now: float) -> tuple[float, float]:
    """Start and end (epoch seconds) of the `period` window holding `now`: epoch minute, UTC day or month."""
    if period == "minute":
        start = now // 60 * 60
        return start, start + 60
    if period == "day":
        start = now // 86400 * 86400
        return start, start + 86400
    if period == "month":
        # Calendar months differ in length, so they come from the UTC date, not from arithmetic on seconds.
        day = datetime.fromtimestamp(now, tz=UTC)
        first = datetime(day.year, day.month, 1, tzinfo=UTC)
        following = datetime(day.year + day.month // 12, day.month % 12 + 1, 1, tzinfo=UTC)
        return first.timestamp(), following.timestamp()
    raise ValueError(f"period must be one of {', '.join(PERIODS)}; got {period!r}")


def check_amount(amount: int, what: str = "cost") -> None:
    """A negative amount would give units back, which no caller of a quota means to do."""
    if isinstance(amount, bool) or not isinstance(amount, int) or amount < 0:
        raise ValueError(f"quota {what} must be an integer >= 0; got {amount!r}")


def window_state(window: Window, used: int, reset_at: float) -> WindowState:
    """The state of `window` with `used` units counted."""
    return WindowState(window.name, window.limit, used, max(0, window.limit - used), reset_at)
