"""One contract every event store keeps: SQLite (a temporary file) and ClickHouse (a real server)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from clickhouse_driver import Client

from llmkit.aggregate.store import store_from_settings
from llmkit.aggregate.store.base import EventQuery, EventStore, Listed, Row, TopicCounts
from llmkit.errors import BackendError
from llmkit.settings import AggregateSettings, ClickHouseSettings, Settings
from tests.servers import ClickHouseServer, free_port

BACKENDS = ["sqlite", pytest.param("clickhouse", marks=pytest.mark.clickhouse)]
# 2024-01-01T00:00:00Z: event timestamps are this plus a few seconds.
T0 = 1_704_067_200_000

StoreFactory = Callable[[], Awaitable[EventStore]]


def settings_for(url: str) -> Settings:
    return Settings(aggregate=AggregateSettings(store=url), clickhouse=ClickHouseSettings(url=url))


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A store URL no other test uses: a file in tmp_path, or a fresh database (dropped after)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/events.db"
        return
    server: ClickHouseServer = request.getfixturevalue("clickhouse_server")
    name = f"t_{uuid.uuid4().hex[:12]}"
    yield f"clickhouse://127.0.0.1:{server.tcp_port}/{name}"
    server.drop_database(name)


@pytest.fixture
async def make_store(store_url: str) -> AsyncIterator[StoreFactory]:
    """Open stores on the test's URL (several: to close and reopen); every one is closed after."""
    made: list[EventStore] = []

    async def make() -> EventStore:
        store = store_from_settings(settings_for(store_url))
        made.append(store)
        await store.open()
        return store

    yield make
    for store in made:
        await store.close()


@pytest.fixture
async def store(make_store: StoreFactory) -> EventStore:
    return await make_store()


def ev(topic: str, event_id: str, source: str = "svc", ts_ms: int = T0, note: str = "") -> Row:
    """A row as the validator builds it; `note` tells two publishes of one id apart."""
    doc = {"topic": topic, "event_id": event_id, "source": source, "ts": ts_ms, "payload": {"note": note}}
    return (topic, event_id, source, ts_ms, orjson.dumps(doc))


async def listed(store: EventStore, query: EventQuery | None = None, page_size: int = 1000) -> list[Listed]:
    return [row async for page in store.pages(query or EventQuery(), page_size) for row in page]


async def keys(store: EventStore, query: EventQuery | None = None) -> list[tuple[str, str]]:
    """(topic, event_id) of the listed events, in listing order."""
    docs = [orjson.loads(doc) for _, doc in await listed(store, query)]
    return [(d["topic"], d["event_id"]) for d in docs]


def by_topic(counts: list[TopicCounts]) -> dict[str, tuple[int, int, int]]:
    return {c.topic: (c.received, c.unique, c.stored) for c in counts}


def now_ms() -> int:
    return time.time_ns() // 1_000_000


# -- writing and dedup ----------------------------------------------------------------------------------


async def test_kind_and_where(store: EventStore, store_url: str) -> None:
    assert store.kind == store_url.split(":", 1)[0]
    assert store.where


async def test_new_counts_per_batch_and_repeats_within_a_call(store: EventStore) -> None:
    batches = [
        [ev("a", "1"), ev("a", "2"), ev("a", "1", note="again")],
        [ev("a", "2", note="again"), ev("a", "3")],
        [],
        [ev("a", "3", note="again")],
    ]
    assert await store.write(batches) == [2, 1, 0, 0]
    assert await keys(store) == [("a", "1"), ("a", "2"), ("a", "3")]
    # The first arrival is what is kept.
    notes = [orjson.loads(doc)["payload"]["note"] for _, doc in await listed(store)]
    assert notes == ["", "", ""]


async def test_duplicates_across_calls(store: EventStore) -> None:
    assert await store.write([[ev("a", "1"), ev("a", "2")]]) == [2]
    assert await store.write([[ev("a", "2", note="late"), ev("a", "3")], [ev("a", "1", note="late")]]) == [
        1,
        0,
    ]
    assert await store.write([[ev("a", "1"), ev("a", "2"), ev("a", "3")]]) == [0]
    assert await keys(store) == [("a", "1"), ("a", "2"), ("a", "3")]
    assert all(orjson.loads(doc)["payload"]["note"] == "" for _, doc in await listed(store))


async def test_the_key_is_topic_and_event_id(store: EventStore) -> None:
    assert await store.write([[ev("a", "1"), ev("b", "1"), ev("a", "1", source="other")]]) == [2]
    assert by_topic(await store.counts()) == {"a": (2, 1, 1), "b": (1, 1, 1)}


async def test_empty_writes(store: EventStore) -> None:
    assert await store.write([]) == []
    assert await store.write([[], []]) == [0, 0]
    assert await store.counts() == []
    assert await listed(store) == []


async def test_docs_come_back_byte_for_byte(store: EventStore) -> None:
    doc = '{"event_id":"é1","topic":"t","payload":{"text":"naïve ✓ 日本","n":1e-7}}'.encode()
    await store.write([[("t", "é1", "svc", T0, doc)]])
    assert [d for _, d in await listed(store)] == [doc]


async def test_a_large_call(store: EventStore) -> None:
    rows = [ev(f"t{i % 7}", f"id-{i}") for i in range(5000)]
    assert await store.write([rows[:2500], rows[2500:]]) == [2500, 2500]
    assert await store.write([rows[::2], [ev("t0", "fresh")]]) == [0, 1]
    assert sum(c.stored for c in await store.counts()) == 5001


async def test_a_failed_call_stores_nothing(store: EventStore) -> None:
    # A timestamp no 64-bit column takes fails the insert after the dedup checks ran.
    bad = ("a", "bad", "svc", 2**64, b"{}")
    with pytest.raises(Exception):  # noqa: B017 - SQLite raises OverflowError, ClickHouse BackendError
        await store.write([[ev("a", "1"), ev("b", "1")], [bad]])
    assert await store.counts() == []
    assert await listed(store) == []
    assert await store.write([[ev("a", "1"), ev("b", "1")]]) == [2]


# -- counts -----------------------------------------------------------------------------------------------


async def test_counts_per_topic(store: EventStore) -> None:
    await store.write([[ev("b", "1"), ev("a", "1"), ev("a", "1")], [ev("a", "2")]])
    await store.write([[ev("b", "1"), ev("b", "2"), ev("c", "1")]])
    counts = await store.counts()
    assert [c.topic for c in counts] == ["a", "b", "c"]
    assert by_topic(counts) == {"a": (3, 2, 2), "b": (3, 2, 2), "c": (1, 1, 1)}


async def test_counts_survive_a_reopen(make_store: StoreFactory) -> None:
    first = await make_store()
    await first.write([[ev("a", "1"), ev("a", "2"), ev("a", "1")], [ev("b", "1")]])
    before_counts, before_list = await first.counts(), await listed(first)
    await first.close()
    await first.close()  # idempotent

    second = await make_store()
    assert await second.counts() == before_counts
    assert await listed(second) == before_list
    assert await second.write([[ev("a", "1"), ev("a", "2"), ev("b", "1"), ev("b", "2")]]) == [1]
    assert by_topic(await second.counts()) == {"a": (5, 2, 2), "b": (3, 2, 2)}
    # New events keep the arrival order: their seq is above every earlier one.
    seqs = [seq for seq, _ in await listed(second)]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert (await keys(second))[-1] == ("b", "2")


async def test_a_closed_store_refuses_work(make_store: StoreFactory) -> None:
    store = await make_store()
    await store.close()
    with pytest.raises(BackendError):
        await store.write([[ev("a", "1")]])
    with pytest.raises(BackendError):
        await store.counts()


# -- listing ----------------------------------------------------------------------------------------------


async def fill(store: EventStore) -> list[Row]:
    """Nine events, a call each: topics a/b alternating, sources s1/s1/s2, timestamps T0 + 0..8 s."""
    rows = [ev("ab"[i % 2], f"e{i}", f"s{1 + i % 3 // 2}", T0 + i * 1000) for i in range(9)]
    for row in rows:
        await store.write([[row]])
    return rows


async def test_pages_list_in_arrival_order(store: EventStore) -> None:
    rows = await fill(store)
    found = await listed(store)
    assert [orjson.loads(doc)["event_id"] for _, doc in found] == [r[1] for r in rows]
    seqs = [seq for seq, _ in found]
    assert seqs == sorted(seqs) and len(set(seqs)) == 9
    assert [doc for _, doc in found] == [r[4] for r in rows]


async def test_arrival_order_within_a_call(store: EventStore) -> None:
    # Within one call each topic keeps the order of its events (across topics the protocol says nothing:
    # SQLite stores a call topic by topic); a later call comes after an earlier one.
    await store.write([[ev("a", "1"), ev("b", "1"), ev("a", "2")], [ev("b", "2"), ev("a", "3")]])
    await store.write([[ev("b", "3"), ev("a", "4")]])
    found = await keys(store)
    assert [k for k in found if k[0] == "a"] == [("a", "1"), ("a", "2"), ("a", "3"), ("a", "4")]
    assert [k for k in found if k[0] == "b"] == [("b", "1"), ("b", "2"), ("b", "3")]
    assert set(found[:5]) == {("a", "1"), ("a", "2"), ("a", "3"), ("b", "1"), ("b", "2")}


async def test_pages_split_and_stop_at_the_limit(store: EventStore) -> None:
    await fill(store)
    sizes = [len(page) async for page in store.pages(EventQuery(), 4)]
    assert sizes == [4, 4, 1]
    sizes = [len(page) async for page in store.pages(EventQuery(limit=5), 2)]
    assert sizes == [2, 2, 1]
    assert [len(page) async for page in store.pages(EventQuery(limit=9), 3)] == [3, 3, 3]
    assert [page async for page in store.pages(EventQuery(limit=0), 3)] == []


async def test_after_is_a_cursor(store: EventStore) -> None:
    await fill(store)
    everything = await listed(store)
    third = everything[2][0]
    assert await listed(store, EventQuery(after=third)) == everything[3:]
    assert await listed(store, EventQuery(after=third, limit=2)) == everything[3:5]
    assert await listed(store, EventQuery(after=everything[-1][0])) == []
    # Walking with the cursor, a page at a time, visits every event once.
    walked: list[Listed] = []
    after = 0
    while page := await listed(store, EventQuery(after=after, limit=2)):
        walked += page
        after = page[-1][0]
    assert walked == everything


async def test_filters(store: EventStore) -> None:
    rows = await fill(store)

    async def ids(**filters: Any) -> list[str]:
        return [event_id for _, event_id in await keys(store, EventQuery(**filters))]

    assert await ids(topic="a") == [r[1] for r in rows if r[0] == "a"]
    assert await ids(topic="nope") == []
    assert await ids(source="s2") == [r[1] for r in rows if r[2] == "s2"]
    # since is inclusive, until exclusive.
    assert await ids(since_ms=T0 + 3000) == ["e3", "e4", "e5", "e6", "e7", "e8"]
    assert await ids(until_ms=T0 + 3000) == ["e0", "e1", "e2"]
    assert await ids(since_ms=T0 + 2000, until_ms=T0 + 6000, topic="b") == ["e3", "e5"]
    expected = [r[1] for r in rows if r[0] == "a" and r[2] == "s1"]
    assert await ids(topic="a", source="s1") == expected
    assert await ids(topic="a", source="s1", limit=1) == expected[:1]


# -- purge ------------------------------------------------------------------------------------------------


async def test_purge_by_time(store: EventStore) -> None:
    await store.write([[ev("a", "old1"), ev("b", "old2")]])
    await asyncio.sleep(0.03)
    cutoff = now_ms()
    await asyncio.sleep(0.03)
    await store.write([[ev("a", "new1"), ev("a", "old1")]])
    assert await store.purge(cutoff, None) == 2
    assert await keys(store) == [("a", "new1")]
    assert by_topic(await store.counts()) == {"a": (3, 2, 1), "b": (1, 1, 0)}
    assert await store.purge(cutoff, None) == 0
    # A purged id left the dedup window: it is new again, and counts as a new unique event.
    assert await store.write([[ev("a", "old1", note="back"), ev("a", "new1")]]) == [1]
    assert await keys(store) == [("a", "new1"), ("a", "old1")]
    assert by_topic(await store.counts()) == {"a": (5, 3, 2), "b": (1, 1, 0)}


async def test_purge_keeps_the_newest(store: EventStore) -> None:
    rows = await fill(store)
    assert await store.purge(None, 4) == 5
    assert [event_id for _, event_id in await keys(store)] == [r[1] for r in rows[5:]]
    counts = await store.counts()
    assert sum(c.stored for c in counts) == 4
    assert sum(c.unique for c in counts) == sum(c.received for c in counts) == 9
    assert await store.purge(None, 4) == 0
    assert await store.purge(None, None) == 0
    assert await store.write([[ev("a", "e0"), ev("b", "e1"), ev("a", "e8")]]) == [2]


async def test_purge_by_time_and_keep(store: EventStore) -> None:
    await store.write([[ev("a", "1"), ev("a", "2")]])
    await asyncio.sleep(0.03)
    cutoff = now_ms()
    await asyncio.sleep(0.03)
    await store.write([[ev("a", "3"), ev("a", "4"), ev("a", "5")]])
    assert await store.purge(cutoff, 2) == 3
    assert await keys(store) == [("a", "4"), ("a", "5")]
    assert by_topic(await store.counts()) == {"a": (5, 5, 2)}


async def test_purge_everything_then_continue(make_store: StoreFactory) -> None:
    store = await make_store()
    await fill(store)
    last = (await listed(store))[-1][0]
    assert await store.purge(now_ms() + 60_000, None) == 9
    assert await listed(store) == []
    assert sum(c.unique for c in await store.counts()) == 9
    # seq never goes back, even with the store emptied and reopened: a reader's cursor sees new events.
    await store.close()
    again = await make_store()
    assert await again.write([[ev("a", "later")]]) == [1]
    assert await keys(again, EventQuery(after=last)) == [("a", "later")]
    assert by_topic(await again.counts()) == {"a": (6, 6, 1), "b": (4, 4, 0)}


async def test_size_bytes(store: EventStore) -> None:
    assert await store.size_bytes() >= 0
    await store.write([[ev("a", str(i)) for i in range(200)]])
    assert await store.size_bytes() > 0


# -- ClickHouse only: what the contract rests on there ----------------------------------------------------


@pytest.fixture
async def ch_store(clickhouse_server: ClickHouseServer) -> AsyncIterator[tuple[EventStore, Client, str]]:
    """A ClickHouse store on a fresh database, and a raw client to look behind it."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    store = store_from_settings(settings_for(f"clickhouse://127.0.0.1:{clickhouse_server.tcp_port}/{name}"))
    await store.open()
    client = Client("127.0.0.1", port=clickhouse_server.tcp_port)
    yield store, client, name
    await store.close()
    client.disconnect()
    clickhouse_server.drop_database(name)


@pytest.mark.clickhouse
async def test_clickhouse_counts_do_not_depend_on_merges(ch_store: tuple[EventStore, Client, str]) -> None:
    store, client, db = ch_store
    for i in range(5):
        await store.write([[ev("a", str(i)), ev("a", str(i + 1)), ev("b", str(i))]])
    before = await store.counts()
    assert by_topic(before) == {"a": (10, 6, 6), "b": (5, 5, 5)}
    for table in ("aggregate_events", "aggregate_receipts"):
        await asyncio.to_thread(client.execute, f"OPTIMIZE TABLE {db}.{table} FINAL")
    assert await store.counts() == before


@pytest.mark.clickhouse
async def test_clickhouse_open_finishes_an_interrupted_purge(
    ch_store: tuple[EventStore, Client, str], clickhouse_server: ClickHouseServer
) -> None:
    store, client, db = ch_store
    await store.write([[ev("a", "1"), ev("a", "2"), ev("a", "3")]])
    seqs = [seq for seq, _ in await listed(store)]
    # A purge that recorded its counts and died before its DELETE ran.
    await asyncio.to_thread(
        client.execute,
        f"INSERT INTO {db}.aggregate_purges (topic, bound, purged) VALUES",
        [("a", seqs[1], 2)],
    )
    assert by_topic(await store.counts()) == {"a": (3, 3, 3)}
    await store.close()
    again = store_from_settings(settings_for(f"clickhouse://127.0.0.1:{clickhouse_server.tcp_port}/{db}"))
    await again.open()
    try:
        assert await keys(again) == [("a", "3")]
        assert by_topic(await again.counts()) == {"a": (3, 3, 1)}
        assert await again.write([[ev("a", "1")]]) == [1]
    finally:
        await again.close()


def test_clickhouse_where_hides_credentials() -> None:
    store = store_from_settings(settings_for("clickhouse://alice:s3cret@db.example:9000/events"))
    assert (store.kind, store.where) == ("clickhouse", "clickhouse://db.example:9000/events")


@pytest.mark.clickhouse
async def test_clickhouse_unreachable_is_a_backend_error() -> None:
    url = f"clickhouse://127.0.0.1:{free_port()}/nowhere?connect_timeout=0.5"
    store = store_from_settings(settings_for(url))
    with pytest.raises(
        BackendError, match=r"cannot reach ClickHouse at clickhouse://127\.0\.0\.1:\d+/nowhere"
    ):
        await store.open()
    await store.close()
