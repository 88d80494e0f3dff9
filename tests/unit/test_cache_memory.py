"""MemoryCache specifics: LRU by entry count and by bytes, eviction and expiry counters, TTL on a clock."""

from __future__ import annotations

import tracemalloc

import orjson
import pytest

from llmkit.core.cache import MemoryCache
from llmkit.core.cache.memory import ENTRY_OVERHEAD
from tests.clock import Clock

MB = 1024 * 1024


@pytest.fixture
def clock() -> Clock:
    return Clock()


async def test_lru_by_count_evicts_the_least_recently_used(clock: Clock) -> None:
    cache = MemoryCache(max_entries=3, clock=clock)
    for key in ("a", "b", "c"):
        await cache.set(key, b"v")
    assert await cache.get("a") == b"v"  # a is now the most recently used; b the least
    await cache.set("d", b"v")
    assert await cache.get("b") is None
    assert [await cache.get(k) for k in ("a", "c", "d")] == [b"v", b"v", b"v"]
    assert cache.entries == 3
    assert cache.evictions == 1


async def test_overwrite_does_not_evict_and_refreshes_recency(clock: Clock) -> None:
    cache = MemoryCache(max_entries=2, clock=clock)
    await cache.set("a", b"1")
    await cache.set("b", b"1")
    await cache.set("a", b"2")  # a is rewritten: b becomes the least recently used
    assert cache.evictions == 0
    await cache.set("c", b"1")
    assert await cache.get("b") is None
    assert await cache.get("a") == b"2"


async def test_lru_by_bytes_counts_keys_values_and_entry_overhead() -> None:
    each = 2 + 30 + ENTRY_OVERHEAD
    cache = MemoryCache(max_size_mb=(3 * each + 10) / MB)
    for key in ("k1", "k2", "k3"):
        await cache.set(key, b"x" * 30)
    assert cache.size_bytes == 3 * each
    await cache.get("k1")
    await cache.set("k4", b"x" * 30)  # four do not fit: the least recently used (k2) goes
    assert await cache.get("k2") is None
    assert cache.size_bytes == 3 * each
    assert cache.evictions == 1
    await cache.set("k5", b"x" * 60)  # 30 bytes more than the others: two more must go (k3, then k1)
    assert await cache.get("k3") is None
    assert await cache.get("k1") is None
    assert await cache.get("k4") == b"x" * 30
    assert cache.size_bytes == each + each + 30
    assert cache.evictions == 3


async def test_utf8_keys_count_their_encoded_bytes() -> None:
    cache = MemoryCache()
    await cache.set("é", b"12")  # é is two bytes in UTF-8
    assert cache.size_bytes == 4 + ENTRY_OVERHEAD
    await cache.set("答", "é")  # 3 + 2
    assert cache.size_bytes == 9 + 2 * ENTRY_OVERHEAD


async def test_byte_accounting_follows_overwrite_delete_and_clear() -> None:
    cache = MemoryCache()
    await cache.set("a", b"12345")
    await cache.set("a", b"1")
    assert cache.size_bytes == 2 + ENTRY_OVERHEAD
    await cache.set("bb", b"1")
    assert await cache.delete("a") is True
    assert cache.size_bytes == 3 + ENTRY_OVERHEAD
    assert await cache.clear() == 1
    assert cache.size_bytes == 0
    assert cache.entries == 0


async def test_a_value_bigger_than_the_budget_is_rejected_and_drops_the_old_one() -> None:
    cache = MemoryCache(max_size_mb=(2 * ENTRY_OVERHEAD + 50) / MB)
    await cache.set("k", b"small")
    await cache.set("other", b"v")
    await cache.set("k", b"x" * 400)
    assert await cache.get("k") is None  # never the stale "small"
    assert await cache.get("other") == b"v"
    assert cache.rejected == 1
    assert cache.evictions == 0
    assert cache.set_nowait("k", b"x" * 400) is False


def test_reported_bytes_are_within_20_percent_of_what_tracemalloc_measures() -> None:
    cache = MemoryCache()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n in range(2000):
            # orjson 3.12+ returns these ~1,200 bytes over a ~16 KB allocation it never trims.
            cache.set_nowait(f"gateway:resp:{n:064x}", orjson.dumps([f"answer {n} " * 100, "model"]))
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert abs(held - cache.size_bytes) <= 0.2 * held, (held, cache.size_bytes)


async def test_ttl_expiry_on_the_clock(clock: Clock) -> None:
    cache = MemoryCache(clock=clock)
    await cache.set("k", b"v", ttl=10)
    clock.now += 9.9
    assert await cache.get("k") == b"v"
    clock.now += 0.1
    assert await cache.get("k") is None
    assert cache.expirations == 1
    assert cache.misses == 1
    assert cache.hits == 1
    assert cache.entries == 0
    assert cache.size_bytes == 0


async def test_default_ttl_none_and_zero(clock: Clock) -> None:
    cache = MemoryCache(default_ttl=5, clock=clock)
    await cache.set("default", b"v")
    await cache.set("forever", b"v", ttl=0)
    await cache.set("longer", b"v", ttl=50)
    clock.now += 6
    assert await cache.get("default") is None
    assert await cache.get("longer") == b"v"
    clock.now += 10_000
    assert await cache.get("forever") == b"v"
    assert MemoryCache(clock=clock).default_ttl is None


async def test_expired_entries_count_as_expirations_when_evicted(clock: Clock) -> None:
    cache = MemoryCache(max_entries=2, clock=clock)
    await cache.set("old", b"v", ttl=1)
    await cache.set("live", b"v")
    clock.now += 2
    await cache.set("new", b"v")  # pushes out "old", which had expired anyway
    assert cache.expirations == 1
    assert cache.evictions == 0


async def test_stats_purges_expired_entries(clock: Clock) -> None:
    cache = MemoryCache(max_entries=10, max_size_mb=1, clock=clock)
    await cache.set("a", b"v", ttl=1)
    await cache.set("b", b"vv")
    await cache.get("b")
    await cache.get("zz")
    clock.now += 5
    stats = await cache.stats()
    assert stats == {
        "kind": "memory",
        "hits": 1,
        "misses": 1,
        "hit_rate": 0.5,
        "sets": 2,
        "entries": 1,
        "bytes": 3 + ENTRY_OVERHEAD,
        "evictions": 0,
        "expirations": 1,
        "rejected": 0,
        "max_entries": 10,
        "max_bytes": MB,
        "default_ttl": None,
    }


async def test_delete_and_clear_ignore_expired_entries(clock: Clock) -> None:
    cache = MemoryCache(clock=clock)
    await cache.set("a", b"v", ttl=1)
    await cache.set("p:b", b"v", ttl=1)
    await cache.set("p:c", b"v")
    clock.now += 2
    assert await cache.delete("a") is False
    assert await cache.clear("p:") == 1
    assert cache.entries == 0


async def test_peek_reports_remaining_ttl_without_counting(clock: Clock) -> None:
    cache = MemoryCache(clock=clock)
    await cache.set("t", b"v", ttl=10)
    await cache.set("n", b"w")
    clock.now += 4
    assert cache.peek("t") == (b"v", pytest.approx(6))
    assert cache.peek("n") == (b"w", None)
    assert cache.peek("missing") is None
    clock.now += 6
    assert cache.peek("t") is None
    assert cache.hits == 0 and cache.misses == 0


async def test_nowait_methods_match_the_async_ones(clock: Clock) -> None:
    cache = MemoryCache(clock=clock)
    assert cache.set_nowait("k", "v") is True
    assert cache.get_nowait("k") == b"v"
    assert cache.get_nowait("x") is None
    assert cache.delete_nowait("k") is True
    assert cache.clear_nowait() == 0
    assert (cache.hits, cache.misses) == (1, 1)


async def test_close_drops_everything() -> None:
    cache = MemoryCache()
    await cache.set("k", b"v")
    await cache.close()
    assert cache.entries == 0
    assert cache.size_bytes == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_entries": 0}, "max_entries"),
        ({"max_size_mb": 0}, "max_size_mb"),
        ({"max_size_mb": -1}, "max_size_mb"),
        ({"default_ttl": -1}, "ttl"),
    ],
)
def test_bad_limits_are_rejected(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MemoryCache(**kwargs)  # type: ignore[arg-type]
