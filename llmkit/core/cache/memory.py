"""In-process cache: per-entry TTL, LRU eviction by entry count and by a byte budget."""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from llmkit.core.cache.base import as_bytes, effective_ttl, hit_rate

_NEVER = math.inf
_MB = 1024 * 1024
# What one entry costs besides the characters of its key and the bytes of its value, measured with
# tracemalloc on CPython 3.11 (64-bit): the str and bytes object headers (49 + 33), the entry tuple, its
# float and int (64 + 24 + 32), and the OrderedDict's hash slot and linked-list node (~80 amortized, more
# just after a resize). Counting it keeps the byte budget a bound on real memory when values are small.
ENTRY_OVERHEAD = 280

# An entry is a plain tuple (value, expires_at, size): cheaper to build and read than an object,
# and `get` must not allocate. expires_at is monotonic seconds, math.inf for no expiry.
_Entry = tuple[bytes, float, int]


class MemoryCache:
    """TTL + LRU cache in process memory, bounded by entries and by the bytes its entries hold.

    It never awaits, so each operation is atomic on the event loop and needs no lock. Expired entries are
    dropped when read, when evicted, and by `purge_expired()` (which `stats()` runs). An entry's size is
    its key's characters, its value's bytes and `ENTRY_OVERHEAD`, so `size_bytes` is what the entries hold.
    """

    kind = "memory"

    def __init__(
        self,
        *,
        max_entries: int | None = None,
        max_size_mb: float | None = None,
        default_ttl: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_entries is not None and max_entries < 1:
            raise ValueError(f"max_entries must be >= 1 (or None for no limit), got {max_entries}")
        if max_size_mb is not None and max_size_mb <= 0:
            raise ValueError(f"max_size_mb must be > 0 (or None for no limit), got {max_size_mb}")
        effective_ttl(default_ttl, None)  # rejects a negative default now rather than on the first set
        self.max_entries = max_entries
        self.max_bytes = int(max_size_mb * _MB) if max_size_mb is not None else None
        self.default_ttl = default_ttl
        self._clock = clock
        self._data: OrderedDict[str, _Entry] = OrderedDict()
        self._bytes = 0
        self.hits = 0
        self.misses = 0
        self.sets = 0
        self.evictions = 0
        self.expirations = 0
        self.rejected = 0

    async def get(self, key: str) -> bytes | None:
        """The value of `key`, or None if it is missing or expired; a hit makes it most recently used."""
        # Inlined rather than calling get_nowait: one call less on the hottest path.
        entry = self._data.get(key)
        if entry is not None:
            if entry[1] is _NEVER or entry[1] > self._clock():
                self._data.move_to_end(key)
                self.hits += 1
                return entry[0]
            self._drop(key, entry)
            self.expirations += 1
        self.misses += 1
        return None

    def get_nowait(self, key: str) -> bytes | None:
        """Like `get`, without a coroutine (for callers in front of a slower tier)."""
        entry = self._data.get(key)
        if entry is not None:
            if entry[1] is _NEVER or entry[1] > self._clock():
                self._data.move_to_end(key)
                self.hits += 1
                return entry[0]
            self._drop(key, entry)
            self.expirations += 1
        self.misses += 1
        return None

    async def set(self, key: str, value: bytes | str, ttl: float | None = None) -> None:
        """Store `value` under `key`; evicts least recently used entries to stay within the limits."""
        self.set_nowait(key, value, ttl)

    def set_nowait(self, key: str, value: bytes | str, ttl: float | None = None) -> bool:
        """Like `set`, without a coroutine; False if the entry alone exceeds the byte budget."""
        # A copy, so the entry holds exactly len(value) bytes: orjson.dumps (3.12+) returns bytes over an
        # allocation up to 16 times larger that it never trims, which a cache would keep for the TTL.
        # join of two items always copies (bytes(memoryview(v)) too, at twice the cost).
        data = b"".join((value, b"")) if type(value) is bytes else as_bytes(value)
        seconds = effective_ttl(ttl, self.default_ttl)
        expires = _NEVER if seconds is None else self._clock() + seconds
        # isascii() is O(1) in CPython, so the common ASCII key costs no encode.
        size = (len(key) if key.isascii() else len(key.encode())) + len(data) + ENTRY_OVERHEAD
        old = self._data.pop(key, None)
        if old is not None:
            self._bytes -= old[2]
        if self.max_bytes is not None and size > self.max_bytes:
            # Storing it would evict everything and still not fit; the old value is gone either way,
            # since keeping it would serve a value the caller just replaced.
            self.rejected += 1
            return False
        self._data[key] = (data, expires, size)
        self._bytes += size
        self.sets += 1
        if (self.max_entries is not None and len(self._data) > self.max_entries) or (
            self.max_bytes is not None and self._bytes > self.max_bytes
        ):
            self._evict()
        return True

    async def delete(self, key: str) -> bool:
        """Remove `key`; True if it was there and not expired."""
        return self.delete_nowait(key)

    def delete_nowait(self, key: str) -> bool:
        """Like `delete`, without a coroutine."""
        entry = self._data.pop(key, None)
        if entry is None:
            return False
        self._bytes -= entry[2]
        return entry[1] > self._clock()

    async def clear(self, prefix: str = "") -> int:
        """Remove the live keys starting with `prefix` (all if empty); the number removed."""
        return self.clear_nowait(prefix)

    def clear_nowait(self, prefix: str = "") -> int:
        """Like `clear`, without a coroutine."""
        now = self._clock()
        if not prefix:
            removed = sum(1 for entry in self._data.values() if entry[1] > now)
            self._data.clear()
            self._bytes = 0
            return removed
        removed = 0
        for key in [k for k in self._data if k.startswith(prefix)]:
            entry = self._data.pop(key)
            self._bytes -= entry[2]
            removed += entry[1] > now
        return removed

    def peek(self, key: str) -> tuple[bytes, float | None] | None:
        """The value and remaining TTL (None = no expiry) of a live entry, without counting a hit."""
        entry = self._data.get(key)
        if entry is None:
            return None
        if entry[1] is _NEVER:
            return entry[0], None
        remaining = entry[1] - self._clock()
        return (entry[0], remaining) if remaining > 0 else None

    def purge_expired(self) -> int:
        """Drop every expired entry now; the number dropped."""
        now = self._clock()
        expired = [key for key, entry in self._data.items() if entry[1] <= now]
        for key in expired:
            self._bytes -= self._data.pop(key)[2]
        self.expirations += len(expired)
        return len(expired)

    # A property, not __len__: an empty cache must stay truthy (`cache or default` would swap it out).
    @property
    def entries(self) -> int:
        """Entries currently held (expired ones included until dropped)."""
        return len(self._data)

    @property
    def size_bytes(self) -> int:
        """Bytes the entries hold: keys, values and per-entry overhead (expired ones until dropped)."""
        return self._bytes

    async def stats(self) -> dict[str, Any]:
        """Counters and occupancy, after dropping expired entries."""
        self.purge_expired()
        return {
            "kind": self.kind,
            "hits": self.hits,
            "misses": self.misses,
            "hit_rate": hit_rate(self.hits, self.misses),
            "sets": self.sets,
            "entries": len(self._data),
            "bytes": self._bytes,
            "evictions": self.evictions,
            "expirations": self.expirations,
            "rejected": self.rejected,
            "max_entries": self.max_entries,
            "max_bytes": self.max_bytes,
            "default_ttl": self.default_ttl,
        }

    async def close(self) -> None:
        """Drop every entry."""
        self._data.clear()
        self._bytes = 0

    def _drop(self, key: str, entry: _Entry) -> None:
        del self._data[key]
        self._bytes -= entry[2]

    def _evict(self) -> None:
        """Pop least recently used entries until both limits hold; expired ones count as expirations."""
        now = self._clock()
        max_entries = self.max_entries if self.max_entries is not None else math.inf
        max_bytes = self.max_bytes if self.max_bytes is not None else math.inf
        while self._data and (len(self._data) > max_entries or self._bytes > max_bytes):
            _, entry = self._data.popitem(last=False)
            self._bytes -= entry[2]
            if entry[1] <= now:
                self.expirations += 1
            else:
                self.evictions += 1
