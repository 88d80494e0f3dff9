"""One contract every analytics store keeps: SQLite (a file), ClickHouse and PostgreSQL (real servers).

Figures must equal what was written, exactly, except percentiles: SQLite and PostgreSQL (percentile_disc)
answer the nearest-rank value; ClickHouse's quantiles() interpolates between neighbours (and samples above
8192 rows), so for latencies 1..100 ms every backend is within 1 ms of the nearest-rank value.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import MultiDict

from llmkit.core.http import ApiError
from llmkit.errors import BackendError
from llmkit.platform.analytics import analytics_store_from_url
from llmkit.platform.analytics.base import AnalyticsStore
from llmkit.platform.analytics.offload import OffloadedStore
from llmkit.platform.analytics.queries import (
    DOCS,
    SCHEMAS,
    parse_popular,
    parse_stats,
    parse_timeseries,
    parse_trending,
)
from llmkit.platform.analytics.record import QueryRecord
from tests.postgres import PostgresServer
from tests.servers import ClickHouseServer

BACKENDS = [
    "sqlite",
    pytest.param("clickhouse", marks=pytest.mark.clickhouse),
    pytest.param("postgresql", marks=pytest.mark.postgres),
    # The gateway's default: SQLite written by a child process (offload.OffloadedStore), read here.
    "sqlite-process",
]
# The store_url of a backend written by a child process carries this mark (make_store takes it off).
PROCESS = "process+"
DAY, HOUR = 86_400.0, 3_600.0
# 2024-06-15T12:00:00Z, and a fraction so float timestamps are exercised.
NOW = 1_718_452_800.25
PERCENTILE_TOLERANCE_MS = 1.0
PERCENTILE_KEYS = ("p50", "p95", "p99")

StoreFactory = Callable[[], Awaitable[AnalyticsStore]]


@pytest.fixture(params=BACKENDS)
async def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A URL no other test uses: a file in tmp_path, a fresh ClickHouse or PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/analytics.db"
    elif request.param == "sqlite-process":
        yield f"{PROCESS}sqlite:///{tmp_path}/analytics.db"
    elif request.param == "postgresql":
        # The session server through its sync fixture: an async fixture cannot be fetched from here.
        postgres: PostgresServer = request.getfixturevalue("postgres_server")
        name = await postgres.create_database()
        yield postgres.url_for(name)
        await postgres.drop_databases(name)
    else:
        server: ClickHouseServer = request.getfixturevalue("clickhouse_server")
        name = f"t_{uuid.uuid4().hex[:12]}"
        yield f"clickhouse://127.0.0.1:{server.tcp_port}/{name}"
        server.drop_database(name)


@pytest.fixture
async def make_store(store_url: str) -> AsyncIterator[StoreFactory]:
    """Open stores on the test's URL (several, to reopen); every one is closed after."""
    made: list[AnalyticsStore] = []

    async def make() -> AnalyticsStore:
        url = store_url.removeprefix(PROCESS)
        store = analytics_store_from_url(url, pool_size=4)
        if store_url.startswith(PROCESS):
            store = OffloadedStore(url, store, pool_size=4)
        made.append(store)
        await store.open()
        return store

    yield make
    for store in made:
        await store.close()


@pytest.fixture
async def store(make_store: StoreFactory) -> AnalyticsStore:
    return await make_store()


BASE = QueryRecord(
    ts=NOW - 60,
    tenant_id="acme",
    key_id="k1",
    route="/v1/chat/completions",
    model="m",
    query="hello",
    status=200,
    latency_ms=10.0,
    ttfb_ms=2.0,
    tokens_in=3,
    tokens_out=5,
    cached=False,
    coalesced=False,
    upstream="u1",
)


def rec(**changes: Any) -> QueryRecord:
    return BASE._replace(**changes)


def many(n: int, **changes: Any) -> list[QueryRecord]:
    return [rec(**changes) for _ in range(n)]


def counts(answer: dict[str, Any]) -> list[tuple[str, int]]:
    return [(item["query"], item["count"]) for item in answer["items"]]


# -- writing and popular --------------------------------------------------------------------------------


async def test_kind_and_where(store: AnalyticsStore, store_url: str) -> None:
    assert store_url.removeprefix(PROCESS).startswith(store.kind)
    assert store.where
    assert "@" not in store.where or "****" in store.where


async def test_empty_store_answers_zeros(store: AnalyticsStore) -> None:
    await store.write([])
    assert await store.popular(limit=10, days=30, tenant_id=None, now=NOW) == {
        "days": 30,
        "tenant_id": None,
        "items": [],
    }
    assert (await store.trending(limit=10, window_hours=24, tenant_id=None, now=NOW))["items"] == []
    stats = await store.stats(days=30, tenant_id=None, now=NOW)
    assert stats["requests"] == 0 and stats["unique_queries"] == 0 and stats["tenants"] == 0
    assert stats["cache_hit_rate"] == 0.0 and stats["error_rate"] == 0.0
    assert stats["latency_ms"] == {"mean": None, "p50": None, "p95": None, "p99": None}
    assert (await store.timeseries(interval_hours=1, days=1, tenant_id=None, now=NOW))["buckets"] == []
    assert await store.purge(NOW) == 0


async def test_popular_counts_normalised_queries_in_a_stable_order(store: AnalyticsStore) -> None:
    await store.write(
        [
            rec(query="Rust  async"),
            rec(query="rust async"),
            rec(query="  RUST\tasync\n"),
            *many(2, query="python"),
            *many(2, query="go"),
            rec(query="zig"),
            rec(query="   "),  # no user text: a request, never a query
        ]
    )
    answer = await store.popular(limit=10, days=30, tenant_id=None, now=NOW)
    assert answer["days"] == 30 and answer["tenant_id"] is None
    assert counts(answer) == [("rust async", 3), ("go", 2), ("python", 2), ("zig", 1)]
    top = await store.popular(limit=2, days=30, tenant_id=None, now=NOW)
    assert counts(top) == [("rust async", 3), ("go", 2)]


async def test_windows_are_open_on_the_left_and_closed_at_now(store: AnalyticsStore) -> None:
    await store.write(
        [
            rec(query="edge", ts=NOW - DAY),  # exactly one day old: outside days=1
            rec(query="inside", ts=NOW - DAY + 1),
            rec(query="now", ts=NOW),
            rec(query="future", ts=NOW + 1),
            rec(query="old", ts=NOW - 2 * DAY + 1),
        ]
    )
    one = await store.popular(limit=10, days=1, tenant_id=None, now=NOW)
    assert sorted(counts(one)) == [("inside", 1), ("now", 1)]
    two = await store.popular(limit=10, days=2, tenant_id=None, now=NOW)
    assert sorted(q for q, _ in counts(two)) == ["edge", "inside", "now", "old"]
    assert (await store.stats(days=1, tenant_id=None, now=NOW))["requests"] == 2


async def test_code_point_order_for_ties(store: AnalyticsStore) -> None:
    # Ties in code-point order whatever the database's collation (a locale would put "a-b" before "a b").
    await store.write([rec(query="é"), rec(query="B"), rec(query="a"), rec(query="a b"), rec(query="a-b")])
    answer = await store.popular(limit=10, days=1, tenant_id=None, now=NOW)
    assert [q for q, _ in counts(answer)] == ["a", "a b", "a-b", "b", "é"]


async def test_records_that_would_poison_a_batch_are_stored(store: AnalyticsStore) -> None:
    await store.write(
        [
            rec(query="nul\x00byte", tenant_id="t\x00", latency_ms=float("nan"), ttfb_ms=float("inf")),
            rec(query="lone \ud800 surrogate", tokens_in=2**70, tokens_out=-5, status=10_000),
            rec(query="x" * 2000, ttfb_ms=None),
        ]
    )
    answer = await store.popular(limit=10, days=1, tenant_id=None, now=NOW)
    assert sorted(counts(answer)) == [("lone ? surrogate", 1), ("nulbyte", 1), ("x" * 512, 1)]
    stats = await store.stats(days=1, tenant_id=None, now=NOW)
    assert stats["requests"] == 3 and stats["tokens_in"] == 3 + 3 + 2**53 and stats["tokens_out"] == 10
    assert stats["errors"] == 1 and stats["server_errors"] == 1


@pytest.mark.parametrize("size", [1, 31, 32, 33, 101])
async def test_a_batch_of_any_size_is_stored_whole_and_in_its_columns(
    store: AnalyticsStore, size: int
) -> None:
    # SQLite writes statements of 32 rows and the rest row by row: every row, each value in its column.
    batch = [rec(query=f"q{i}", tokens_in=i, tokens_out=2 * i, latency_ms=float(i)) for i in range(size)]
    await store.write(batch)
    answer = await store.popular(limit=1000, days=1, tenant_id=None, now=NOW)
    assert sorted(counts(answer)) == sorted((f"q{i}", 1) for i in range(size))
    stats = await store.stats(days=1, tenant_id=None, now=NOW)
    assert stats["requests"] == size
    assert stats["tokens_in"] == sum(range(size)) and stats["tokens_out"] == 2 * sum(range(size))
    assert stats["latency_ms"]["p50"] == pytest.approx(
        float((size + 1) // 2 - 1), abs=PERCENTILE_TOLERANCE_MS
    )


async def test_records_survive_reopening(make_store: StoreFactory) -> None:
    first = await make_store()
    await first.write(many(1500, query="persist"))
    await first.close()
    again = await make_store()
    assert counts(await again.popular(limit=1, days=1, tenant_id=None, now=NOW)) == [("persist", 1500)]


# -- tenants --------------------------------------------------------------------------------------------


async def test_tenant_id_never_leaks_another_tenants_rows(store: AnalyticsStore) -> None:
    await store.write(
        [
            *many(3, tenant_id="a", query="shared"),
            *many(5, tenant_id="ab", query="shared"),
            *many(2, tenant_id="ab", query="only ab", cached=True, status=500),
            rec(tenant_id="a", query="only a", ts=NOW - 2 * HOUR),
            rec(tenant_id="A", query="upper"),
        ]
    )
    a = await store.popular(limit=10, days=1, tenant_id="a", now=NOW)
    assert a["tenant_id"] == "a" and counts(a) == [("shared", 3), ("only a", 1)]
    assert counts(await store.popular(limit=10, days=1, tenant_id="ab", now=NOW)) == [
        ("shared", 5),
        ("only ab", 2),
    ]
    assert counts(await store.popular(limit=10, days=1, tenant_id="nobody", now=NOW)) == []
    everyone = await store.popular(limit=10, days=1, tenant_id=None, now=NOW)
    assert counts(everyone) == [("shared", 8), ("only ab", 2), ("only a", 1), ("upper", 1)]

    stats_a = await store.stats(days=1, tenant_id="a", now=NOW)
    assert (stats_a["requests"], stats_a["tenants"], stats_a["cache_hits"], stats_a["errors"]) == (4, 1, 0, 0)
    stats_all = await store.stats(days=1, tenant_id=None, now=NOW)
    assert (stats_all["requests"], stats_all["tenants"], stats_all["unique_queries"]) == (12, 3, 4)

    trend_a = await store.trending(limit=10, window_hours=1, tenant_id="a", now=NOW)
    assert [(i["query"], i["count"]) for i in trend_a["items"]] == [("shared", 3)]
    series = await store.timeseries(interval_hours=1, days=1, tenant_id="ab", now=NOW)
    assert [b["requests"] for b in series["buckets"]] == [7]
    assert series["buckets"][0]["errors"] == 2 and series["buckets"][0]["cache_hits"] == 2


# -- trending -------------------------------------------------------------------------------------------


async def test_trending_growth_arithmetic_and_order(store: AnalyticsStore) -> None:
    prev_ts, cur_ts = NOW - 90 * 60, NOW - 30 * 60  # window_hours=1: previous (now-2h, now-1h]
    await store.write(
        [
            *many(2, query="doubled", ts=prev_ts),
            *many(6, query="doubled", ts=cur_ts),  # growth (6 - 2) / 2 = 2.0
            *many(4, query="flat", ts=prev_ts),
            *many(4, query="flat", ts=cur_ts),  # not rising: left out
            *many(3, query="falling", ts=prev_ts),
            rec(query="falling", ts=cur_ts),
            rec(query="plus one", ts=prev_ts),
            *many(2, query="plus one", ts=cur_ts),  # growth 1.0
            *many(3, query="brand new", ts=cur_ts),
            rec(query="also new", ts=cur_ts),
            rec(query="tie new", ts=cur_ts),
            *many(9, query="ancient", ts=NOW - 3 * HOUR),  # before both windows
            rec(query="boundary", ts=NOW - HOUR),  # the previous window's last instant
            *many(2, query="boundary", ts=NOW),  # the current window's last instant
        ]
    )
    answer = await store.trending(limit=10, window_hours=1, tenant_id=None, now=NOW)
    assert answer["window_hours"] == 1 and answer["tenant_id"] is None
    assert answer["items"] == [
        {"query": "brand new", "count": 3, "previous": 0, "growth": None, "new": True},
        {"query": "also new", "count": 1, "previous": 0, "growth": None, "new": True},
        {"query": "tie new", "count": 1, "previous": 0, "growth": None, "new": True},
        {"query": "doubled", "count": 6, "previous": 2, "growth": 2.0, "new": False},
        {"query": "boundary", "count": 2, "previous": 1, "growth": 1.0, "new": False},
        {"query": "plus one", "count": 2, "previous": 1, "growth": 1.0, "new": False},
    ]
    top = await store.trending(limit=2, window_hours=1, tenant_id=None, now=NOW)
    assert [i["query"] for i in top["items"]] == ["brand new", "also new"]


# -- stats ----------------------------------------------------------------------------------------------


async def test_stats_equal_what_was_written(store: AnalyticsStore) -> None:
    records = [
        rec(
            query=f"q{i % 10}",
            tenant_id=f"t{i % 3}",
            latency_ms=float(i),
            status=404 if i % 10 == 0 else 503 if i % 20 == 1 else 200,
            cached=i % 5 == 0,
            coalesced=i % 7 == 0,
            tokens_in=i,
            tokens_out=2 * i,
        )
        for i in range(100, 0, -1)  # latencies 1..100 ms, written out of order
    ]
    await store.write(records[:40])
    await store.write(records[40:])
    stats = await store.stats(days=30, tenant_id=None, now=NOW)
    latency = stats.pop("latency_ms")
    assert stats == {
        "days": 30,
        "tenant_id": None,
        "requests": 100,
        "unique_queries": 10,
        "tenants": 3,
        "cache_hits": 20,
        "cache_hit_rate": 0.2,
        "errors": 15,
        "error_rate": 0.15,
        "server_errors": 5,
        "coalesced": 14,
        "tokens_in": 5050,
        "tokens_out": 10100,
    }
    assert latency["mean"] == pytest.approx(50.5)
    # Nearest rank over 1..100: p50 = 50, p95 = 95, p99 = 99.
    for name, expected in (("p50", 50), ("p95", 95), ("p99", 99)):
        assert abs(latency[name] - expected) <= PERCENTILE_TOLERANCE_MS, (name, latency[name])


async def test_percentiles_of_a_skewed_distribution(store: AnalyticsStore) -> None:
    # 90 fast requests at 10 ms, 9 slow at 500 ms, one outlier at 5000 ms.
    await store.write([*many(90, latency_ms=10.0), *many(9, latency_ms=500.0), rec(latency_ms=5000.0)])
    latency = (await store.stats(days=1, tenant_id=None, now=NOW))["latency_ms"]
    assert latency["p50"] == pytest.approx(10.0)
    assert latency["p95"] == pytest.approx(500.0)
    assert latency["mean"] == pytest.approx((900 + 4500 + 5000) / 100)


async def test_narrow_and_wide_windows_answer_alike(store: AnalyticsStore) -> None:
    # SQLite reads a window holding a small part of the table through its ts indexes and a wide one by a
    # scan: 2,000 old rows (latencies 1000..2999 ms, tenant "old") make the last
    # day (100 rows, 1..100 ms, tenants t0 and t1) narrow and the last 30 days wide.
    old = [rec(ts=NOW - 20 * DAY, tenant_id="old", query="old", latency_ms=1000.0 + j) for j in range(2000)]
    new = [
        rec(ts=NOW - i * 60, tenant_id=f"t{i % 2}", query=f"q{i % 10}", latency_ms=float(i))
        for i in range(100, 0, -1)
    ]
    await store.write(old[:1000])
    await store.write(new)
    await store.write(old[1000:])

    async def answer(days: int, tenant_id: str | None) -> tuple[int, int, int, list[float]]:
        stats = await store.stats(days=days, tenant_id=tenant_id, now=NOW)
        latency = stats["latency_ms"]
        return (
            stats["requests"],
            stats["unique_queries"],
            stats["tenants"],
            [latency[p] for p in PERCENTILE_KEYS],
        )

    # Nearest ranks: 100 rows 1..100 -> 50, 95, 99; t0 holds the even ones -> 50, 96, 100; the 2,100 rows
    # of 30 days -> indexes 1049, 1994, 2078 of 1..100 then 1000..2999; "old" alone -> 1999, 2899, 2979.
    cases = [
        (1, None, (100, 10, 2), [50, 95, 99]),
        (1, "t0", (50, 5, 1), [50, 96, 100]),
        (30, None, (2100, 11, 3), [1949, 2894, 2978]),
        (30, "t0", (50, 5, 1), [50, 96, 100]),
        (30, "old", (2000, 1, 1), [1999, 2899, 2979]),
    ]
    for days, tenant_id, totals, percentiles in cases:
        requests, unique, tenants, latency = await answer(days, tenant_id)
        assert (requests, unique, tenants) == totals, (days, tenant_id)
        for got, expected in zip(latency, percentiles, strict=True):
            assert abs(got - expected) <= PERCENTILE_TOLERANCE_MS, (days, tenant_id, latency)
    assert counts(await store.popular(limit=3, days=1, tenant_id=None, now=NOW)) == [
        (f"q{i}", 10) for i in range(3)
    ]
    assert counts(await store.popular(limit=2, days=30, tenant_id=None, now=NOW)) == [
        ("old", 2000),
        ("q0", 10),
    ]
    series = await store.timeseries(interval_hours=24, days=30, tenant_id=None, now=NOW)
    assert sum(b["requests"] for b in series["buckets"]) == 2100
    trending = await store.trending(limit=20, window_hours=24, tenant_id=None, now=NOW)
    assert [item["query"] for item in trending["items"]] == [f"q{i}" for i in range(10)]


# -- timeseries -----------------------------------------------------------------------------------------


async def test_timeseries_bucket_counts(store: AnalyticsStore) -> None:
    hour0 = (NOW // HOUR) * HOUR  # the start of the hour NOW is in
    await store.write(
        [
            *many(3, ts=hour0 + 0.125, latency_ms=10.0, tokens_in=1, tokens_out=2),
            rec(ts=hour0 - 1, latency_ms=30.0, status=429, cached=True),  # the hour before
            *many(2, ts=hour0 - 5 * HOUR + 10, latency_ms=5.0, status=500),
            rec(ts=hour0 - 30 * HOUR),  # outside days=1
        ]
    )
    answer = await store.timeseries(interval_hours=1, days=1, tenant_id=None, now=NOW)
    assert (answer["interval_hours"], answer["days"], answer["tenant_id"]) == (1, 1, None)
    assert answer["buckets"] == [
        {
            "start": int(hour0 - 5 * HOUR),
            "requests": 2,
            "errors": 2,
            "cache_hits": 0,
            "tokens_in": 6,
            "tokens_out": 10,
            "latency_ms_mean": 5.0,
            "latency_p50_ms": 5.0,
            "latency_p95_ms": 5.0,
        },
        {
            "start": int(hour0 - HOUR),
            "requests": 1,
            "errors": 1,
            "cache_hits": 1,
            "tokens_in": 3,
            "tokens_out": 5,
            "latency_ms_mean": 30.0,
            "latency_p50_ms": 30.0,
            "latency_p95_ms": 30.0,
        },
        {
            "start": int(hour0),
            "requests": 3,
            "errors": 0,
            "cache_hits": 0,
            "tokens_in": 3,
            "tokens_out": 6,
            "latency_ms_mean": 10.0,
            "latency_p50_ms": 10.0,
            "latency_p95_ms": 10.0,
        },
    ]
    daily = await store.timeseries(interval_hours=24, days=3, tenant_id=None, now=NOW)
    assert sum(b["requests"] for b in daily["buckets"]) == 7
    assert all(b["start"] % 86_400 == 0 for b in daily["buckets"])


async def test_timeseries_percentiles_per_bucket(store: AnalyticsStore) -> None:
    hour0 = (NOW // HOUR) * HOUR
    first, second = hour0 - 3 * HOUR, hour0 - HOUR  # the hour between them has no requests
    # Plateaus around each percentile's rank, so nearest rank (SQLite, PostgreSQL) and ClickHouse's
    # interpolation between neighbours answer the same number. 100 rows: p50 is row 49 (12.5), p95 row 94
    # (250; ClickHouse: rows 94 and 95); p90 would be 40, p99 900, the mean 61.
    slow = [5.0] * 40 + [12.5] * 20 + [40.0] * 30 + [250.0] * 7 + [900.0] * 3
    # 20 rows: p50 is row 9 (3; ClickHouse: rows 9 and 10), p95 row 18 (64; rows 18 and 19).
    fast = [1.0] * 8 + [3.0] * 4 + [7.0] * 6 + [64.0] * 2
    records = [rec(ts=first + 60 + i, latency_ms=ms) for i, ms in enumerate(reversed(slow))]
    records += [
        rec(ts=second + 60 + i, latency_ms=ms) for i, ms in enumerate(fast[::3] + fast[1::3] + fast[2::3])
    ]
    await store.write(records[::2])
    await store.write(records[1::2])
    buckets = (await store.timeseries(interval_hours=1, days=1, tenant_id=None, now=NOW))["buckets"]
    got = [(b["start"], b["requests"], b["latency_p50_ms"], b["latency_p95_ms"]) for b in buckets]
    assert got == [(int(first), 100, 12.5, 250.0), (int(second), 20, 3.0, 64.0)]
    assert buckets[0]["latency_ms_mean"] == pytest.approx(61.0)
    # Both hours in one bucket: the percentiles of the 120 rows together (rows 59 and 113), not of a bucket.
    both = (await store.timeseries(interval_hours=4, days=1, tenant_id=None, now=NOW))["buckets"]
    assert [(b["requests"], b["latency_p50_ms"], b["latency_p95_ms"]) for b in both] == [(120, 12.5, 250.0)]


async def test_timeseries_percentiles_mean_what_stats_percentiles_mean(store: AnalyticsStore) -> None:
    # Distinct latencies, each bucket a tenant of its own: a bucket's p50 / p95 are stats' for that tenant,
    # exactly, on every store (ClickHouse's interpolated ones too), narrow window (the last day, read
    # through SQLite's ts indexes: 3,000 old rows make it under a tenth of the table) or wide (30 days).
    hour0 = (NOW // HOUR) * HOUR
    spans = {
        "ta": (hour0 - 5 * HOUR, [float(i) for i in range(1, 101)]),
        "tb": (hour0 - 2 * HOUR, [1000.0 + 7 * i for i in range(37)]),
    }
    old = [rec(ts=NOW - 20 * DAY, tenant_id="old", latency_ms=5000.0 + i) for i in range(3000)]
    await store.write(old[:1500])
    for tenant, (start, latencies) in spans.items():
        order = latencies[1::2] + latencies[::2][::-1]
        await store.write(
            [rec(ts=start + 1 + i, tenant_id=tenant, latency_ms=ms) for i, ms in enumerate(order)]
        )
    await store.write(old[1500:])
    narrow = (await store.timeseries(interval_hours=1, days=1, tenant_id=None, now=NOW))["buckets"]
    wide = (await store.timeseries(interval_hours=1, days=30, tenant_id=None, now=NOW))["buckets"]
    assert [b["start"] for b in narrow] == [int(start) for start, _ in spans.values()]
    assert wide[1:] == narrow and wide[0]["requests"] == 3000
    for bucket, tenant in zip(narrow, spans, strict=True):
        stats = (await store.stats(days=1, tenant_id=tenant, now=NOW))["latency_ms"]
        assert (bucket["latency_p50_ms"], bucket["latency_p95_ms"]) == (stats["p50"], stats["p95"]), tenant
        (alone,) = (await store.timeseries(interval_hours=1, days=1, tenant_id=tenant, now=NOW))["buckets"]
        assert alone == bucket
    # Nearest rank over 1..100: 50 and 95; over 1000, 1007, ..., 1252 (37 rows): rows 18 and 35, exactly;
    # ClickHouse within a step between neighbours (p95 of the 37: 1239.4, between rows 34 and 35).
    step = 7.0 if store.kind == "clickhouse" else 0.0
    expected = [(50.0, 95.0), (1000.0 + 7 * 18, 1000.0 + 7 * 35)]
    for bucket, (p50, p95) in zip(narrow, expected, strict=True):
        assert bucket["latency_p50_ms"] == pytest.approx(p50, abs=step)
        assert bucket["latency_p95_ms"] == pytest.approx(p95, abs=step)


# -- retention ------------------------------------------------------------------------------------------


async def test_purge_removes_exactly_the_old_rows(store: AnalyticsStore) -> None:
    cut = NOW - 90 * DAY  # 2024-03-17: January and February are wholly older, March only in part
    await store.write(
        [
            *many(4, ts=NOW - 150 * DAY, query="january"),
            *many(3, ts=NOW - 120 * DAY, query="february"),
            *many(2, ts=cut - 1, query="march old"),
            rec(ts=cut, query="at the cut"),  # not older than the cut: kept
            *many(5, ts=cut + DAY, query="march new"),
            *many(6, ts=NOW - 60, query="june"),
        ]
    )
    assert await store.purge(cut) == 9
    left = await store.popular(limit=10, days=3650, tenant_id=None, now=NOW)
    assert counts(left) == [("june", 6), ("march new", 5), ("at the cut", 1)]
    assert (await store.stats(days=3650, tenant_id=None, now=NOW))["requests"] == 12
    assert await store.purge(cut) == 0
    # New writes after a purge land as usual.
    await store.write(many(2, ts=NOW - 100 * DAY, query="late"))
    assert await store.purge(cut) == 2
    assert (await store.stats(days=3650, tenant_id=None, now=NOW))["requests"] == 12


# -- the JSON answers against their OpenAPI schemas -----------------------------------------------------


def json_schema(schema: Any) -> Any:
    """OpenAPI 3.0's `nullable` as JSON Schema's type list, for jsonschema_rs."""
    if isinstance(schema, dict):
        out = {key: json_schema(value) for key, value in schema.items() if key != "nullable"}
        if schema.get("nullable") and "type" in schema:
            out["type"] = [schema["type"], "null"]
        return out
    if isinstance(schema, list):
        return [json_schema(item) for item in schema]
    return schema


async def test_answers_follow_the_documented_schemas(store: AnalyticsStore) -> None:
    await store.write([rec(), rec(query="b", ts=NOW - 2 * HOUR, status=500, cached=True), rec(query="")])
    answers = {
        "AnalyticsPopular": await store.popular(limit=10, days=1, tenant_id=None, now=NOW),
        "AnalyticsTrending": await store.trending(limit=10, window_hours=1, tenant_id="acme", now=NOW),
        "AnalyticsStats": await store.stats(days=1, tenant_id=None, now=NOW),
        "AnalyticsTimeseries": await store.timeseries(interval_hours=1, days=1, tenant_id=None, now=NOW),
    }
    empty = {
        "AnalyticsStats": await store.stats(days=1, tenant_id="nobody", now=NOW),
        "AnalyticsTimeseries": await store.timeseries(interval_hours=2, days=1, tenant_id="nobody", now=NOW),
    }
    for name, value in [*answers.items(), *empty.items()]:
        jsonschema_rs.validate(json_schema(SCHEMAS[name]), value)
    assert answers["AnalyticsTrending"]["items"] and answers["AnalyticsTimeseries"]["buckets"]


# -- request parameters (no store needed: run once) -----------------------------------------------------


def test_parameters_default_and_bound() -> None:
    assert parse_popular({}) == {"limit": 10, "days": 30, "tenant_id": None}
    assert parse_trending({"limit": "1000", "window_hours": "8760", "tenant_id": "a b"}) == {
        "limit": 1000,
        "window_hours": 8760,
        "tenant_id": "a b",
    }
    assert parse_stats({"days": "3650"}) == {"days": 3650, "tenant_id": None}
    assert parse_timeseries({}) == {"interval_hours": 24, "days": 7, "tenant_id": None}
    assert parse_timeseries(MultiDict(interval_hours="1")) == {
        "interval_hours": 1,
        "days": 7,
        "tenant_id": None,
    }


@pytest.mark.parametrize(
    ("parse", "params", "param"),
    [
        (parse_popular, {"limit": "0"}, "limit"),
        (parse_popular, {"limit": "1001"}, "limit"),
        (parse_popular, {"limit": "1_0"}, "limit"),
        (parse_popular, {"limit": " 5"}, "limit"),
        (parse_popular, {"days": "3651"}, "days"),
        (parse_popular, {"tenant_id": ""}, "tenant_id"),
        (parse_popular, {"tenant_id": "a\x00"}, "tenant_id"),
        (parse_popular, {"tenant_id": "t" * 129}, "tenant_id"),
        (parse_popular, {"window_hours": "1"}, "window_hours"),
        (parse_trending, {"window_hours": "0"}, "window_hours"),
        (parse_stats, {"limit": "5"}, "limit"),
        (parse_timeseries, {"interval_hours": "8761"}, "interval_hours"),
        (parse_timeseries, MultiDict([("days", "1"), ("days", "2")]), "days"),
    ],
)
def test_bad_parameters_are_400_naming_the_parameter(parse: Any, params: Any, param: str) -> None:
    with pytest.raises(ApiError) as caught:
        parse(params)
    error = caught.value
    assert (error.status, error.code, error.extra) == (400, "invalid_parameter", {"param": param})
    assert param in error.message


@given(st.text(max_size=30))
def test_any_limit_text_is_a_number_in_range_or_a_400(text: str) -> None:
    try:
        limit = parse_popular({"limit": text})["limit"]
    except ApiError as exc:
        assert exc.status == 400 and exc.extra == {"param": "limit"}
    else:
        assert 1 <= limit <= 1000 and str(limit) == text.lstrip("0")


def test_docs_reference_their_schemas() -> None:
    for path, doc in DOCS.items():
        assert path.startswith("/api/admin/analytics/")
        schema_ref = doc["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
        assert schema_ref.rsplit("/", 1)[1] in SCHEMAS
        assert {p["name"] for p in doc["parameters"]} >= {"tenant_id"}


async def test_stores_opening_one_fresh_database_together_all_succeed(store_url: str) -> None:
    """Replicas start together: creating the table must not race (PostgreSQL's duplicate pg_type row)."""
    url = store_url.removeprefix(PROCESS)
    stores: list[AnalyticsStore] = [analytics_store_from_url(url, pool_size=2) for _ in range(4)]
    if store_url.startswith(PROCESS):
        stores = [OffloadedStore(url, store, pool_size=2) for store in stores]
    try:
        await asyncio.gather(*(s.open() for s in stores))
    finally:
        for s in stores:
            await s.close()


async def test_sqlite_batch_is_all_or_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The rows past the last whole 32-row statement fail after that statement went in: none stay.
    store = analytics_store_from_url(f"sqlite:///{tmp_path}/analytics.db")
    await store.open()
    try:
        monkeypatch.setattr("llmkit.platform.analytics.sqlite.INSERT", "INSERT INTO missing_table VALUES (?)")
        with pytest.raises(BackendError, match="missing_table"):
            await store.write(many(40, query="lost"))
        monkeypatch.undo()
        assert (await store.stats(days=1, tenant_id=None, now=NOW))["requests"] == 0
        await store.write(many(40, query="kept"))  # the connection is usable again
        assert counts(await store.popular(limit=5, days=1, tenant_id=None, now=NOW)) == [("kept", 40)]
    finally:
        await store.close()
