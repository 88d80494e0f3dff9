"""A bounded in-process memo for the results of pure functions on the request path."""

from __future__ import annotations

from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class Memo(Generic[K, V]):
    """Remembers values up to a total weight (entries, characters, tokens), dropping the oldest first.

    First in, first out over a plain dict: a hit costs one lookup and no reordering, and an entry that is
    still hot after eviction is simply computed and stored again. It never awaits, so it needs no lock.
    """

    __slots__ = ("_data", "_weight", "max_weight")

    def __init__(self, max_weight: int) -> None:
        self.max_weight = max_weight
        self._data: dict[K, tuple[V, int]] = {}
        self._weight = 0

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: K) -> V | None:
        """The remembered value of `key`, or None."""
        entry = self._data.get(key)
        return None if entry is None else entry[0]

    def put(self, key: K, value: V, weight: int = 1) -> V:
        """Remember `value` for `key` (unless it alone outweighs the budget); returns `value`."""
        if weight > self.max_weight:
            return value
        data = self._data
        old = data.pop(key, None)
        if old is not None:
            self._weight -= old[1]
        self._weight += weight
        while self._weight > self.max_weight:
            oldest = next(iter(data))
            self._weight -= data.pop(oldest)[1]
        data[key] = (value, weight)
        return value

    def clear(self) -> None:
        """Forget everything."""
        self._data.clear()
        self._weight = 0
