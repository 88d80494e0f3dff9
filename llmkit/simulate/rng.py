"""The per-request random generator, seeded only when the request first draws a number."""

from __future__ import annotations

import random
from typing import Any


class RequestRandom(random.Random):
    """A `random.Random(seed)` that defers seeding (~3 µs) until it is first used.

    Most requests never draw a number (the prompt matches, no jitter, no tools), yet each must take its seed
    from the shared rng in arrival order so that `simulate.seed` keeps answers repeatable. Every draw goes
    through `random()` or `getrandbits()` (Random's other methods build on them), so seeding there yields
    exactly the numbers `random.Random(seed)` would.
    """

    def __init__(self, seed: int) -> None:
        # _random.Random.__new__ has already run without seeding from the OS; the state is set on first use.
        self._seed: int | None = seed
        self.gauss_next = None

    def _start(self) -> None:
        seed, self._seed = self._seed, None
        random.Random.seed(self, seed)

    def random(self) -> float:
        """A float in [0, 1)."""
        if self._seed is not None:
            self._start()
        return super().random()

    def getrandbits(self, k: int, /) -> int:
        """An int with `k` random bits."""
        if self._seed is not None:
            self._start()
        return super().getrandbits(k)

    def seed(self, a: Any = None, version: int = 2) -> None:
        """Reseed now (the deferred seed is dropped)."""
        self._seed = None
        super().seed(a, version)

    def getstate(self) -> tuple[Any, ...]:
        """The generator's state (seeding it first if that is still pending)."""
        if self._seed is not None:
            self._start()
        return super().getstate()

    def setstate(self, state: tuple[Any, ...]) -> None:
        """Restore a state from `getstate()`."""
        self._seed = None
        super().setstate(state)
