"""A bounded in-process memo for the results of pure functions on the request path."""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class Memo(Generic[K, V]):
    """Remembers values up to a total weight (entries, characters, tokens), dropping the oldest first.

    First in, first out: a hit costs one lookup and no reordering, and an entry that is still hot after
    eviction is simply computed and stored again. An OrderedDict, because evicting from the front of a
    plain dict (`next(iter(d))`) rescans the slots freed before, which turns steady churn quadratic.
    It never awaits, so it needs no lock.
    """

    __slots__ = ("_values", "_weight", "_weights", "get", "max_weight")

    def __init__(self, max_weight: int) -> None:
        self.max_weight = max_weight
        self._values: OrderedDict[K, V] = OrderedDict()
        self._weights: dict[K, int] = {}
        self._weight = 0
        # `get(key)`: the remembered value of `key`, or None. The dict's own method: a hit on the request
        # path is then one C call, not a Python frame.
        self.get = self._values.get

    def __len__(self) -> int:
        return len(self._values)

    def put(self, key: K, value: V, weight: int = 1) -> V:
        """Remember `value` for `key` (unless it alone outweighs the budget); returns `value`."""
        if weight > self.max_weight:
            return value
        values, weights = self._values, self._weights
        if key in values:
            del values[key]
            self._weight -= weights.pop(key)
        self._weight += weight
        while self._weight > self.max_weight:
            oldest, _ = values.popitem(last=False)
            self._weight -= weights.pop(oldest)
        values[key] = value
        weights[key] = weight
        return value

    def clear(self) -> None:
        """Forget everything."""
        self._values.clear()
        self._weights.clear()
        self._weight = 0
