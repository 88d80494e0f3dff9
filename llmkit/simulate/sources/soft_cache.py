"""The cache as the sources use it: an optimisation whose failures are counted and logged, never fatal."""

from __future__ import annotations

import logging
from typing import Any

from llmkit.core.cache.base import Cache
from llmkit.core.cache.memory import MemoryCache
from llmkit.errors import BackendError


class SoftCache:
    """Wraps a Cache: a failing call returns None (or does nothing), is counted, and is logged once."""

    def __init__(self, cache: Cache, owner: str, log: logging.Logger) -> None:
        self.cache = cache
        self.owner = owner
        self.log = log
        self.hits = 0
        self.misses = 0
        self.errors = 0
        self._down = False
        # A memory cache answers without awaiting and never fails: callers skip the coroutines on the
        # request path with get_nowait.
        self.immediate = isinstance(cache, MemoryCache)

    async def get(self, key: str) -> bytes | None:
        """The cached bytes, or None on a miss or a failure."""
        if self.immediate:
            return self.get_nowait(key)
        try:
            value = await self.cache.get(key)
        except BackendError as exc:
            self._failed(exc)
            return None
        if self._down:
            self._down = False
            self.log.info("%s: cache is back", self.owner)
        return self._counted(value)

    def get_nowait(self, key: str) -> bytes | None:
        """`get` without a coroutine; only for an `immediate` (memory) cache."""
        value: bytes | None = self.cache.get_nowait(key)  # type: ignore[attr-defined]
        if value is None:
            self.misses += 1
        else:
            self.hits += 1
        return value

    def _counted(self, value: bytes | None) -> bytes | None:
        if value is None:
            self.misses += 1
        else:
            self.hits += 1
        return value

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        """Store `value`; a failure is counted and logged."""
        try:
            await self.cache.set(key, value, ttl=ttl)
        except BackendError as exc:
            self._failed(exc)

    async def delete(self, key: str) -> None:
        """Drop `key`; a failure is counted and logged."""
        try:
            await self.cache.delete(key)
        except BackendError as exc:
            self._failed(exc)

    def stats(self) -> dict[str, Any]:
        """`cache_hits`, `cache_misses`, `cache_errors` for the source's /stats."""
        return {"cache_hits": self.hits, "cache_misses": self.misses, "cache_errors": self.errors}

    def _failed(self, exc: BackendError) -> None:
        self.errors += 1
        # One line per outage, not one per request.
        if not self._down:
            self._down = True
            self.log.warning("%s: cache failed, going to the source directly: %s", self.owner, exc)
