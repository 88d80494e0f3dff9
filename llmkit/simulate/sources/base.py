"""What every answer source provides: one answer text for a prompt."""

from __future__ import annotations

import random
from typing import Any, Protocol

from llmkit.errors import BackendError


class SourceUnavailable(BackendError):
    """The source cannot answer now (ClickHouse down and nothing cached); the server answers 503."""


class Source(Protocol):
    """Picks the answer text for a user's prompt: the best match, otherwise a random one."""

    name: str

    async def start(self) -> None:
        """Check the source is usable (files readable, ClickHouse reachable); raise BackendError if not."""
        ...

    async def answer(self, prompt: str, rng: random.Random) -> str:
        """The answer for `prompt` (markdown); raise SourceUnavailable when nothing can be served."""
        ...

    def stats(self) -> dict[str, Any]:
        """JSON-able counters: answers served, matched vs random, cache hits, errors."""
        ...

    async def close(self) -> None:
        """Release clients and thread pools."""
        ...
