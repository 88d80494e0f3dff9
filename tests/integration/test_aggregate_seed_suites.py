"""ChronicleWeaver's five test suites, against a real `llmkit aggregate` process on each store.

The server is configured the seed's way (APP_PORT, DEDUPLICATION_DB_PATH) and called with the seed's urllib
client. No sleeps: with ack durable the 200 comes after the commit, so the numbers are final at once.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.chronicle import generate_test_events, get_request, post_request
from tests.serve_process import ServerProcess
from tests.servers import ClickHouseServer, free_port

Start = Callable[[], ServerProcess]


@pytest.fixture(params=["sqlite", "clickhouse"])
def start_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Start]:
    """Starts `llmkit aggregate` on one port and one store, again after each stop (same data)."""
    port = str(free_port())
    env = {"APP_PORT": port, "DEDUPLICATION_DB_PATH": str(tmp_path / "chronicle.db")}
    if request.param == "clickhouse":
        clickhouse: ClickHouseServer = request.getfixturevalue("clickhouse_server")
        database = f"seed_{uuid.uuid4().hex[:12]}"
        env["LLMKIT_AGGREGATE_STORE"] = clickhouse.url.rsplit("/", 1)[0] + f"/{database}"
    started: list[ServerProcess] = []

    def start() -> ServerProcess:
        process = ServerProcess(tmp_path, env=env, command="aggregate", cwd=tmp_path).start()
        started.append(process)
        url = process.wait_listening()
        assert url == f"http://127.0.0.1:{port}", "APP_PORT chooses the port"
        return process

    yield start
    for process in started:
        process.close()


def stats_of(url: str) -> dict[str, object]:
    status, text = get_request(f"{url}/stats")
    assert status == 200
    return json.loads(text or "{}")


def test_01_deduplication(start_server: Start) -> None:
    url = start_server().url
    status, _ = post_request(f"{url}/publish", {"events": generate_test_events(100, 0.5)})
    assert status == 200
    stats = stats_of(url)
    assert (stats["received"], stats["unique_processed"], stats["duplicated_dropped"]) == (100, 50, 50)
    status, text = get_request(f"{url}/events?topic=publisher-topic")
    assert status == 200
    events = json.loads(text or "{}")
    assert events["count"] == 50 and len(events["events"]) == 50
    assert len({event["event_id"] for event in events["events"]}) == 50


def test_02_deduplication_persists_across_restart(start_server: Start) -> None:
    server = start_server()
    data = {"events": generate_test_events(100, 0.5)}
    assert post_request(f"{server.url}/publish", data)[0] == 200
    assert stats_of(server.url)["unique_processed"] == 50
    server.close()
    server = start_server()
    assert post_request(f"{server.url}/publish", data)[0] == 200
    stats = stats_of(server.url)
    assert (stats["received"], stats["unique_processed"], stats["duplicated_dropped"]) == (200, 50, 150)


def _event(**changes: object) -> dict[str, object]:
    event: dict[str, object] = {
        "event_id": "test-event-1",
        "topic": "test-topic",
        "source": "test-source",
        "payload": {"message": "Test message", "timestamp": "2025-01-01T00:00:00"},
        "timestamp": "2025-01-01T00:00:00",
    }
    for key, value in changes.items():
        if value is None:
            event.pop(key)
        else:
            event[key] = value
    return event


INVALID = {
    "missing topic": (_event(topic=None, event_id=None), "topic"),
    "missing source": (_event(source=None, event_id=None), "source"),
    "missing payload": (_event(payload=None, event_id=None), "payload"),
    "payload without message": (_event(payload={"timestamp": "2025-01-01T00:00:00"}), "message"),
    "topic not a string": (_event(topic=123), "topic"),
    "source not a string": (_event(source=456), "source"),
    "invalid timestamp": (_event(timestamp="invalid-timestamp"), "timestamp"),
    "invalid payload timestamp": (
        _event(payload={"message": "Test message", "timestamp": "invalid-timestamp"}),
        "timestamp",
    ),
}


def test_03_event_schema_validation(start_server: Start) -> None:
    url = start_server().url
    assert post_request(f"{url}/publish", {"events": [_event()]})[0] == 200
    for name, (event, field) in INVALID.items():
        status, text = post_request(f"{url}/publish", {"events": [event]})
        assert status == 422, name
        detail = json.loads(text or "{}")["detail"]
        locs = [entry["loc"] for entry in detail]
        assert any(loc[:3] == ["body", "events", 0] and loc[-1] == field for loc in locs), (name, locs)
    assert post_request(f"{url}/publish", {"events": []})[0] == 200
    # Nothing of the rejected batches was stored.
    assert stats_of(url)["received"] == 1


def test_04_events_agree_with_stats(start_server: Start) -> None:
    url = start_server().url
    assert post_request(f"{url}/publish", {"events": generate_test_events(100, 0.3)})[0] == 200
    stats = stats_of(url)
    assert (stats["received"], stats["unique_processed"], stats["duplicated_dropped"]) == (100, 70, 30)
    all_events = json.loads(get_request(f"{url}/events")[1] or "{}")
    assert all_events["count"] == len(all_events["events"]) == stats["unique_processed"]
    by_topic = {}
    for topic in stats["topics"]:  # type: ignore[attr-defined]
        body = json.loads(get_request(f"{url}/events?topic={topic}")[1] or "{}")
        assert all(event["topic"] == topic for event in body["events"])
        by_topic[topic] = body["events"]
    assert sum(len(events) for events in by_topic.values()) == all_events["count"]
    assert len({event["event_id"] for event in all_events["events"]}) == all_events["count"]
    for event in all_events["events"]:
        assert {"event_id", "topic", "source", "payload", "timestamp"} <= set(event)
        assert {"message", "timestamp"} <= set(event["payload"])
    assert set(stats["topics"]) == {event["topic"] for event in all_events["events"]}  # type: ignore[call-overload]
    more = [
        _event(event_id=f"additional-event-{i}", topic="additional-topic", source="additional-source")
        for i in range(50)
    ]
    assert post_request(f"{url}/publish", {"events": more})[0] == 200
    updated = stats_of(url)
    assert updated["received"] == 150 and updated["unique_processed"] == 120
    assert updated["duplicated_dropped"] == 30
    assert json.loads(get_request(f"{url}/events")[1] or "{}")["count"] == 120


def test_05_batch_stress(start_server: Start) -> None:
    url = start_server().url
    assert post_request(f"{url}/publish", {"events": generate_test_events(250, 0.2)})[0] == 200
    stats = stats_of(url)
    assert (stats["received"], stats["unique_processed"], stats["duplicated_dropped"]) == (250, 200, 50)
    assert json.loads(get_request(f"{url}/events")[1] or "{}")["count"] == 200
