"""Validating published events into store rows, with ChronicleWeaver's (FastAPI's) 422 error entries."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from llmkit.aggregate.store.base import Row

# The dedup key parts get a bound so one event cannot bloat the unique index.
MAX_KEY_CHARS = 1024
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = datetime(1970, 1, 1, 0, 0, 0, 1000, tzinfo=UTC) - _EPOCH
_MIN_MS = (datetime(1, 1, 1, tzinfo=UTC) - _EPOCH) // _MS
_MAX_MS = (datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC) - _EPOCH) // _MS
_ISO_HINT = "an ISO 8601 datetime such as 2025-10-28T10:00:00Z"


class InvalidEvents(Exception):
    """The batch breaks the schema: `detail` lists every problem in FastAPI's shape."""

    def __init__(self, detail: list[dict[str, Any]]) -> None:
        super().__init__(f"{len(detail)} schema errors")
        self.detail = detail


def timestamp_ms(value: Any) -> int | None:
    """Milliseconds since the epoch of an ISO 8601 string or a Unix time in seconds, or None if neither.

    Naive datetimes are read as UTC (the seed assumes publishers share the host's clock).
    """
    if type(value) is str:
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return (moment - _EPOCH) // _MS
    if type(value) in (int, float):
        # Pydantic's rule: a number above 2e10 is in milliseconds, below it in seconds.
        ms = int(value if abs(value) > 2e10 else value * 1000)
        # Only what a datetime can hold (years 1 to 9999), so every stored ts fits a 64-bit column.
        return ms if _MIN_MS <= ms <= _MAX_MS else None
    return None


def _error(loc: list[Any], kind: str, msg: str, value: Any) -> dict[str, Any]:
    return {"type": kind, "loc": loc, "msg": msg, "input": value}


def _check_text(loc: list[Any], parent: dict[str, Any], key: str, errors: list[dict[str, Any]]) -> None:
    if key not in parent:
        errors.append(_error([*loc, key], "missing", "Field required", parent))
        return
    value = parent[key]
    if not isinstance(value, str):
        errors.append(_error([*loc, key], "string_type", "Input should be a valid string", value))
    elif key in ("event_id", "topic") and not value:
        msg = "String should have at least 1 character"
        errors.append(_error([*loc, key], "string_too_short", msg, value))
    elif key in ("event_id", "topic") and len(value) > MAX_KEY_CHARS:
        msg = f"String should have at most {MAX_KEY_CHARS} characters"
        errors.append(_error([*loc, key], "string_too_long", msg, value))


def _check_time(loc: list[Any], parent: dict[str, Any], key: str, errors: list[dict[str, Any]]) -> None:
    if key not in parent:
        errors.append(_error([*loc, key], "missing", "Field required", parent))
    elif timestamp_ms(parent[key]) is None:
        msg = f"Input should be a valid datetime: {_ISO_HINT} or a Unix time in seconds"
        errors.append(_error([*loc, key], "datetime_parsing", msg, parent[key]))


def explain(event: Any, loc: list[Any]) -> list[dict[str, Any]]:
    """Every schema problem of one event (empty when it is valid)."""
    if not isinstance(event, dict):
        msg = "Input should be a valid dictionary or object to extract fields from"
        return [_error(loc, "model_attributes_type", msg, event)]
    errors: list[dict[str, Any]] = []
    for key in ("event_id", "topic", "source"):
        _check_text(loc, event, key, errors)
    payload = event.get("payload")
    if "payload" not in event:
        errors.append(_error([*loc, "payload"], "missing", "Field required", event))
    elif not isinstance(payload, dict):
        msg = "Input should be a valid dictionary or object to extract fields from"
        errors.append(_error([*loc, "payload"], "model_attributes_type", msg, payload))
    else:
        _check_text([*loc, "payload"], payload, "message", errors)
        _check_time([*loc, "payload"], payload, "timestamp", errors)
    _check_time(loc, event, "timestamp", errors)
    return errors


def _row(event: Any) -> Row | None:
    """The store row of a valid event, or None (then `explain` says why). The hot path of /publish."""
    if type(event) is not dict:
        return None
    event_id, topic, source = event.get("event_id"), event.get("topic"), event.get("source")
    payload, stamp = event.get("payload"), event.get("timestamp")
    if not (
        type(event_id) is str
        and type(topic) is str
        and type(source) is str
        and type(payload) is dict
        and 0 < len(event_id) <= MAX_KEY_CHARS
        and 0 < len(topic) <= MAX_KEY_CHARS
        and type(payload.get("message")) is str
    ):
        return None
    ts = timestamp_ms(stamp)
    if ts is None or timestamp_ms(payload.get("timestamp")) is None:
        return None
    # Top-level keys beyond the schema are dropped (as the seed's model does); payload keeps its extras.
    doc = orjson.dumps(
        {"event_id": event_id, "topic": topic, "source": source, "payload": payload, "timestamp": stamp}
    )
    return (topic, event_id, source, ts, doc)


def events_of(body: Any) -> tuple[list[Any], list[Any]]:
    """The events of a publish body and the loc prefix of their errors.

    `{"events": [...]}` (the seed's shape), one bare event object (its README's promise), or a JSON array.
    """
    if isinstance(body, list):
        return body, ["body"]
    if isinstance(body, dict) and "events" in body:
        events = body["events"]
        if not isinstance(events, list):
            msg = "Input should be a valid list"
            raise InvalidEvents([_error(["body", "events"], "list_type", msg, events)])
        return events, ["body", "events"]
    if isinstance(body, dict):
        return [body], []
    msg = 'Input should be {"events": [...]}, one event object or a list of events'
    raise InvalidEvents([_error(["body"], "model_attributes_type", msg, body)])


def rows_of(body: Any) -> list[Row]:
    """Validated store rows of a publish body; InvalidEvents lists every problem of the whole batch."""
    events, loc = events_of(body)
    rows: list[Row] = []
    append = rows.append
    for event in events:
        row = _row(event)
        if row is None:
            break
        append(row)
    else:
        return rows
    detail: list[dict[str, Any]] = []
    single = not loc
    for index, event in enumerate(events):
        detail.extend(explain(event, ["body"] if single else [*loc, index]))
    raise InvalidEvents(detail)
