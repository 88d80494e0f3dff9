"""Fresh unique ids without a getrandom() call each: a random per-process half and a counter half."""

from __future__ import annotations

import itertools
import os


class IdSource:
    """`ids()` -> 32 hex digits, unique across processes (the random half is redrawn in forked children)."""

    def __init__(self) -> None:
        self._reset()
        # Pre-forked workers inherit this object; each must draw its own half or they would repeat ids.
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._prefix = os.urandom(8).hex()
        self._next = itertools.count(1).__next__

    def __call__(self) -> str:
        return f"{self._prefix}{self._next():016x}"


# One source per process is enough: ids only need to be unique, not secret.
fresh_hex = IdSource()
