"""llmkit.aggregate.app over HTTP (aiohttp's client): the contract, errors, paging, acks, backpressure."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from llmkit.aggregate import app as aggregate_app
from llmkit.aggregate.app import PurgeLock, create_app
from llmkit.aggregate.store import store_from_settings
from llmkit.aggregate.store.base import EventStore, Row
from llmkit.errors import BackendError
from llmkit.settings import AggregateSettings, ServerSettings, Settings, StorageSettings

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[..., Awaitable[Client]]


def make_settings(tmp_path: Path, **aggregate: Any) -> Settings:
    return Settings(
        server=ServerSettings(access_log=False, max_body_mb=0.05),
        storage=StorageSettings(data_dir=str(tmp_path / "data")),
        aggregate=AggregateSettings(store=f"sqlite:///{tmp_path}/events.db", **aggregate),
    )


def event(
    event_id: str, topic: str = "t", source: str = "s", ts: str = "2025-10-28T10:00:00Z", **extra: Any
) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "topic": topic,
        "source": source,
        "payload": {"message": f"m {event_id}", "timestamp": ts, **extra},
        "timestamp": ts,
    }


@pytest.fixture
async def client(aiohttp_client: MakeClient, tmp_path: Path) -> Client:
    return await aiohttp_client(create_app(make_settings(tmp_path)))


async def publish(client: Client, body: Any, status: int = 200) -> dict[str, Any]:
    response = await client.post("/publish", json=body)
    assert response.status == status, await response.text()
    data: dict[str, Any] = await response.json()
    return data


async def stats(client: Client) -> dict[str, Any]:
    response = await client.get("/stats")
    assert response.status == 200
    data: dict[str, Any] = await response.json()
    # The invariant every acknowledged publish keeps.
    assert data["received"] == data["unique_processed"] + data["duplicated_dropped"]
    return data


async def listing(client: Client, query: str = "") -> dict[str, Any]:
    response = await client.get(f"/events{query}")
    assert response.status == 200, await response.text()
    data: dict[str, Any] = await response.json()
    return data


async def test_publish_answers_the_seed_shape_with_accepted_and_duplicates(client: Client) -> None:
    body = await publish(client, {"events": [event("a"), event("b"), event("a")]})
    assert body == {
        "status": "success",
        "message": "3 events received, 2 new, 1 duplicate",
        "events_count": 3,
        "accepted": 2,
        "duplicates": 1,
    }
    again = await publish(client, {"events": [event("b"), event("c")]})
    assert (again["accepted"], again["duplicates"]) == (1, 1)
    assert again["message"] == "2 events received, 1 new, 1 duplicate"
    only_duplicate = await publish(client, {"events": [event("a")]})
    assert only_duplicate["message"] == "1 event received, 0 new, 1 duplicate"
    assert (only_duplicate["accepted"], only_duplicate["duplicates"]) == (0, 1)
    numbers = await stats(client)
    assert (numbers["received"], numbers["unique_processed"], numbers["duplicated_dropped"]) == (6, 3, 3)


async def test_the_same_event_id_on_another_topic_is_a_different_event(client: Client) -> None:
    body = await publish(client, {"events": [event("a", topic="x"), event("a", topic="y")]})
    assert body["accepted"] == 2
    assert (await stats(client))["topics"] == ["x", "y"]


async def test_a_bare_event_object_and_a_json_array_are_accepted(client: Client) -> None:
    assert (await publish(client, event("solo")))["events_count"] == 1
    assert (await publish(client, [event("l1"), event("l2")]))["accepted"] == 2
    assert (await listing(client))["count"] == 3


async def test_payload_extras_and_the_original_timestamps_are_kept(client: Client) -> None:
    await publish(
        client, {"events": [{**event("x", ts="2025-10-28T10:00:00+07:00", level="warn"), "junk": 1}]}
    )
    stored = (await listing(client))["events"][0]
    assert stored["payload"] == {"message": "m x", "timestamp": "2025-10-28T10:00:00+07:00", "level": "warn"}
    assert stored["timestamp"] == "2025-10-28T10:00:00+07:00"
    assert "junk" not in stored  # top-level keys outside the schema are dropped, as the seed's model does


async def test_an_invalid_event_rejects_the_whole_batch_and_names_every_problem(client: Client) -> None:
    bad = {"topic": 5, "source": "s", "payload": {"timestamp": "nope"}, "timestamp": "2025-01-01"}
    body = await publish(client, {"events": [event("ok"), bad]}, status=422)
    problems = {(tuple(entry["loc"]), entry["type"]) for entry in body["detail"]}
    assert problems == {
        (("body", "events", 1, "event_id"), "missing"),
        (("body", "events", 1, "topic"), "string_type"),
        (("body", "events", 1, "payload", "message"), "missing"),
        (("body", "events", 1, "payload", "timestamp"), "datetime_parsing"),
    }
    assert all(entry["msg"] for entry in body["detail"])
    assert (await stats(client))["received"] == 0
    assert (await listing(client))["count"] == 0


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"events": "nope"}, ["body", "events"]),
        ({"events": [1]}, ["body", "events", 0]),
        ({"events": [event("")]}, ["body", "events", 0, "event_id"]),
        ({"events": [{**event("a"), "payload": "text"}]}, ["body", "events", 0, "payload"]),
        ({"events": [{**event("a"), "event_id": 7}]}, ["body", "events", 0, "event_id"]),
        ({"events": [{**event("a"), "timestamp": True}]}, ["body", "events", 0, "timestamp"]),
        ({"topic": "t"}, ["body", "event_id"]),
        ("just text", ["body"]),
    ],
)
async def test_schema_errors_point_at_the_field(client: Client, body: Any, loc: list[Any]) -> None:
    detail = (await publish(client, body, status=422))["detail"]
    assert loc in [entry["loc"] for entry in detail]


async def test_unix_times_and_naive_iso_times_are_valid(client: Client) -> None:
    events = [event("n", ts="2025-10-28T10:00:00"), {**event("u"), "timestamp": 1761645600}]
    assert (await publish(client, {"events": events}))["accepted"] == 2


async def test_empty_batch_is_ok_and_stores_nothing(client: Client) -> None:
    body = await publish(client, {"events": []})
    assert (body["events_count"], body["accepted"], body["duplicates"]) == (0, 0, 0)


async def test_bad_json_content_type_and_size_are_400_415_413(client: Client) -> None:
    response = await client.post("/publish", data=b"{nope", headers={"Content-Type": "application/json"})
    assert response.status == 400
    assert "not valid JSON" in (await response.json())["error"]["message"]
    response = await client.post("/publish", data=b"{}", headers={"Content-Type": "text/plain"})
    assert response.status == 415
    big = {"events": [event(f"e{i}", extra="x" * 500) for i in range(200)]}
    response = await client.post("/publish", json=big)
    assert response.status == 413
    assert "max_body_mb" in (await response.json())["error"]["message"]
    assert (await stats(client))["received"] == 0


async def test_events_pages_with_limit_and_after_in_arrival_order(client: Client) -> None:
    await publish(client, {"events": [event(f"e{i}", topic="ab"[i % 2]) for i in range(25)]})
    seen: list[str] = []
    cursor = None
    while True:
        page = await listing(client, f"?limit=10&topic=a{'' if cursor is None else f'&after={cursor}'}")
        seen += [e["event_id"] for e in page["events"]]
        assert page["count"] == len(page["events"])
        cursor = page["next_after"]
        if cursor is None:
            break
    assert seen == [f"e{i}" for i in range(0, 25, 2)]


async def test_events_filter_by_source_and_time(client: Client) -> None:
    await publish(
        client,
        {
            "events": [
                event("old", source="web", ts="2025-01-01T00:00:00Z"),
                event("mid", source="app", ts="2025-06-01T00:00:00+02:00"),
                event("new", source="web", ts="2025-12-01T00:00:00Z"),
            ]
        },
    )
    assert [e["event_id"] for e in (await listing(client, "?source=web"))["events"]] == ["old", "new"]
    since = "?since=2025-05-31T22:00:00Z&until=2025-12-01T00:00:00Z"
    assert [e["event_id"] for e in (await listing(client, since))["events"]] == ["mid"]


@pytest.mark.parametrize(
    "query",
    [
        "?limit=0",
        "?limit=x",
        "?limit=10001",
        "?limit=٣",  # an Arabic-Indic digit: str.isdigit says yes, a SQL bound would not
        "?after=-1",
        "?after=99999999999999999999",
        "?since=x",
    ],
)
async def test_bad_event_queries_are_422_naming_the_parameter(client: Client, query: str) -> None:
    response = await client.get(f"/events{query}")
    assert response.status == 422
    name = query[1:].split("=")[0]
    assert (await response.json())["detail"][0]["loc"] == ["query", name]


async def test_a_listing_longer_than_a_page_streams_every_event(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(aggregate_app, "PAGE_SIZE", 7)
    await publish(client, {"events": [event(f"e{i}") for i in range(30)]})
    body = await listing(client)
    assert body["count"] == 30
    assert [e["event_id"] for e in body["events"]] == [f"e{i}" for i in range(30)]
    assert (await listing(client, "?topic=t&source=s"))["count"] == 30


async def test_stats_has_the_seed_fields_and_per_topic_numbers(client: Client) -> None:
    await publish(client, {"events": [event("a", topic="x"), event("a", topic="x"), event("b", topic="y")]})
    numbers = await stats(client)
    assert isinstance(numbers["uptime"], int)
    assert numbers["per_topic"]["x"] == {
        "received": 2,
        "unique_processed": 1,
        "duplicated_dropped": 1,
        "stored": 1,
    }
    assert numbers["stored_events"] == 2 and numbers["queue_depth"] == 0
    assert numbers["store"]["kind"] == "sqlite" and numbers["store"]["size_bytes"] > 0


async def test_root_health_openapi_and_docs(client: Client) -> None:
    assert (await (await client.get("/")).json())["message"] == "ChronicleWeaver is running..."
    assert (await (await client.get("/health")).json())["message"] == "healthy"
    doc = await (await client.get("/openapi.json")).json()
    assert {"/publish", "/events", "/stats", "/health", "/"} <= set(doc["paths"])
    assert "422" in doc["paths"]["/publish"]["post"]["responses"]
    await publish(client, {"events": [event("m1"), event("m1")]})
    metrics = await (await client.get("/metrics")).text()
    assert "llmkit_aggregate_committed_events_total 2.0" in metrics
    assert "llmkit_aggregate_queue_depth 0.0" in metrics
    for page in ("/docs", "/redoc"):
        response = await client.get(page)
        assert response.status == 200 and response.content_type == "text/html"
        assert "openapi.json" in await response.text()


class GatedStore:
    """A store whose writes wait for `gate` (or fail when `fail` is set)."""

    def __init__(self, inner: EventStore) -> None:
        self.inner = inner
        self.kind, self.where = inner.kind, inner.where
        self.gate = asyncio.Event()
        self.fail = False
        self.writes: list[int] = []

    async def write(self, batches: Sequence[Sequence[Row]]) -> list[int]:
        await self.gate.wait()
        if self.fail:
            raise BackendError("disk on fire")
        self.writes.append(sum(len(b) for b in batches))
        return await self.inner.write(batches)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def gated_app(tmp_path: Path, **aggregate: Any) -> tuple[web.Application, GatedStore]:
    settings = make_settings(tmp_path, **aggregate)
    store = GatedStore(store_from_settings(settings))
    return create_app(settings, store), store  # type: ignore[arg-type]


async def test_concurrent_publishes_share_one_commit(aiohttp_client: MakeClient, tmp_path: Path) -> None:
    app, store = gated_app(tmp_path)
    client = await aiohttp_client(app)
    first = asyncio.ensure_future(publish(client, {"events": [event("first")]}))
    await asyncio.sleep(0.1)  # the writer now holds "first" and waits at the gate
    rest = [asyncio.ensure_future(publish(client, {"events": [event(f"e{i}")]})) for i in range(20)]
    while (await stats(client))["queue_depth"] < 21:
        await asyncio.sleep(0.01)
    store.gate.set()
    await asyncio.gather(first, *rest)
    assert store.writes == [1, 20], "the 20 publishes that waited went into one transaction"
    assert (await stats(client))["unique_processed"] == 21


async def test_a_full_channel_answers_429_with_retry_after(
    aiohttp_client: MakeClient, tmp_path: Path
) -> None:
    app, store = gated_app(tmp_path, channel_capacity=10)
    client = await aiohttp_client(app)
    waiting = asyncio.ensure_future(publish(client, {"events": [event(f"a{i}") for i in range(8)]}))
    while (await stats(client))["queue_depth"] < 8:
        await asyncio.sleep(0.01)
    response = await client.post("/publish", json={"events": [event(f"b{i}") for i in range(3)]})
    assert response.status == 429
    assert int(response.headers["Retry-After"]) >= 1
    assert "channel_capacity" in (await response.json())["error"]["message"]
    store.gate.set()
    await waiting
    assert (await publish(client, {"events": [event(f"b{i}") for i in range(3)]}))["accepted"] == 3
    assert (await stats(client))["received"] == 11


async def test_a_failing_store_is_503_and_nothing_is_acknowledged(
    aiohttp_client: MakeClient, tmp_path: Path
) -> None:
    app, store = gated_app(tmp_path)
    store.fail = True
    store.gate.set()
    client = await aiohttp_client(app)
    response = await client.post("/publish", json={"events": [event("x")]})
    assert response.status == 503
    assert "disk on fire" in (await response.json())["error"]["message"]
    store.fail = False
    assert (await publish(client, {"events": [event("x")]}))["accepted"] == 1
    assert (await stats(client))["commit_failures"] == 1


async def test_queued_ack_answers_202_and_stores_soon(aiohttp_client: MakeClient, tmp_path: Path) -> None:
    app, store = gated_app(tmp_path, ack="queued")
    client = await aiohttp_client(app)
    body = await publish(client, {"events": [event("q1"), event("q2")]}, status=202)
    assert body["status"] == "queued" and body["events_count"] == 2 and "accepted" not in body
    assert body["message"].startswith("2 events queued")
    assert (await stats(client))["received"] == 0
    store.gate.set()
    while (await stats(client))["received"] < 2:
        await asyncio.sleep(0.01)
    assert (await listing(client))["count"] == 2


async def test_shutdown_commits_every_queued_event(aiohttp_client: MakeClient, tmp_path: Path) -> None:
    app, store = gated_app(tmp_path, ack="queued")
    client = await aiohttp_client(app)
    for i in range(5):
        await publish(client, {"events": [event(f"q{i}")]}, status=202)
    store.gate.set()
    await client.close()  # runs the cleanup: the writer drains the channel before the store closes
    settings = make_settings(tmp_path)
    reopened = store_from_settings(settings)
    await reopened.open()
    try:
        assert sum(c.stored for c in await reopened.counts()) == 5
    finally:
        await reopened.close()


async def test_retention_purges_the_oldest_beyond_max_events(
    aiohttp_client: MakeClient, tmp_path: Path
) -> None:
    client = await aiohttp_client(create_app(make_settings(tmp_path, max_events=5, purge_interval_s=0.05)))
    await publish(client, {"events": [event(f"e{i}") for i in range(8)]})
    while (await stats(client))["stored_events"] > 5:
        await asyncio.sleep(0.02)
    assert [e["event_id"] for e in (await listing(client))["events"]] == [f"e{i}" for i in range(3, 8)]
    numbers = await stats(client)
    assert numbers["unique_processed"] == 8, "purging keeps what was processed"
    # A purged id has left the dedup window: it is new again.
    assert (await publish(client, {"events": [event("e0")]}))["accepted"] == 1


async def test_a_chronicleweaver_database_keeps_its_dedup_history(
    aiohttp_client: MakeClient, tmp_path: Path
) -> None:
    import sqlite3

    payload = '{"message":"m","timestamp":"2025-10-28T10:00:00Z"}'
    with sqlite3.connect(tmp_path / "events.db") as old:
        # ChronicleWeaver's own schema.
        old.execute(
            "CREATE TABLE processed_events (event_id TEXT NOT NULL, topic TEXT NOT NULL, "
            "source TEXT NOT NULL, payload TEXT NOT NULL, timestamp TEXT NOT NULL, "
            "PRIMARY KEY (event_id, topic))"
        )
        old.execute("CREATE TABLE stats (id INTEGER PRIMARY KEY, received INTEGER, duplicated_dropped INT)")
        old.executemany(
            "INSERT INTO processed_events VALUES (?, ?, 's', ?, ?)",
            [
                ("old-1", "t", payload, "2025-10-28T10:00:00+00:00"),
                ("old-2", "u", payload, "2025-10-28T10:00:00.123456"),
            ],
        )
    client = await aiohttp_client(create_app(make_settings(tmp_path)))
    body = await publish(client, {"events": [event("old-1"), event("new-1")]})
    assert (body["accepted"], body["duplicates"]) == (1, 1)
    listed = (await listing(client))["events"]
    assert [e["event_id"] for e in listed] == ["old-1", "old-2", "new-1"]
    assert listed[0]["payload"] == {"message": "m", "timestamp": "2025-10-28T10:00:00Z"}
    assert (await listing(client, "?since=2025-10-28T10:00:00.100Z&topic=u"))["count"] == 1
    assert (await stats(client))["unique_processed"] == 3


async def test_one_process_purges_at_a_time(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    store = store_from_settings(settings)
    first, second = PurgeLock(str(tmp_path), store), PurgeLock(str(tmp_path), store)
    assert first.held() and first.held()
    assert not second.held(), "another worker of the same store waits its turn"
    first.release()
    assert second.held()
    other = PurgeLock(str(tmp_path), store_from_settings(make_settings(tmp_path / "other")))
    assert other.held(), "another store has its own lock"
    second.release()
    other.release()


async def test_retention_days_purges_events_stored_longer_ago(
    aiohttp_client: MakeClient, tmp_path: Path
) -> None:
    # 1e-6 days is 86 ms: events older than that go at the next purge round.
    settings = make_settings(tmp_path, retention_days=1e-6, purge_interval_s=0.05)
    client = await aiohttp_client(create_app(settings))
    await publish(client, {"events": [event(f"e{i}") for i in range(4)]})
    while (await stats(client))["stored_events"]:
        await asyncio.sleep(0.02)
    assert (await stats(client))["unique_processed"] == 4
    assert (await listing(client))["count"] == 0


async def test_sync_normal_reaches_the_sqlite_connection(tmp_path: Path) -> None:
    from llmkit.aggregate.store.sqlite import SqliteEventStore

    for name, level in (("full", 2), ("normal", 1)):
        store = SqliteEventStore(tmp_path / f"{name}.db", synchronous=name)
        await store.open()
        try:
            pragma = await store._in_writer(lambda s=store: s._conn.execute("PRAGMA synchronous").fetchone())
            assert pragma == (level,)
        finally:
            await store.close()
