"""ChronicleWeaver's test client, as its suites use it: urllib requests and its event generator."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from datetime import datetime
from typing import Any

EventData = dict[str, Any]


def generate_test_events(count: int = 10, duplicate_ratio: float = 0.1) -> list[EventData]:
    """The seed's generator: count*(1-ratio) unique events on publisher-topic, then repeats of them."""
    events: list[EventData] = []
    for i in range(int(count * (1 - duplicate_ratio))):
        now = datetime.now().isoformat()
        events.append(
            {
                "event_id": f"event-{i}",
                "topic": "publisher-topic",
                "source": "publisher-service",
                "payload": {"message": f"Message from publisher {i}", "timestamp": now},
                "timestamp": now,
            }
        )
    for i in range(int(count * duplicate_ratio)):
        if events:
            original = events[i % len(events)]
            events.append({**original, "payload": dict(original["payload"])})
    return events


def get_request(url: str) -> tuple[int | None, str | None]:
    """GET like the seed's client: (status, text), or (None, None) when the request fails."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url), timeout=30) as response:
            return response.getcode(), response.read().decode("utf-8")
    except Exception:
        return None, None


def post_request(url: str, data: Any) -> tuple[int | None, str | None]:
    """POST JSON like the seed's client: (status, text); HTTP errors give their status and body."""
    request = urllib.request.Request(
        url, data=json.dumps(data).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.getcode(), response.read().decode("utf-8")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8")
    except Exception:
        return None, None
