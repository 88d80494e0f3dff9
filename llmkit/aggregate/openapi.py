"""OpenAPI fields of the aggregator's routes: the event schema and what each answer means."""

from __future__ import annotations

from typing import Any

from llmkit.aggregate.events import _MAX_MS, _MIN_MS, MAX_KEY_CHARS
from llmkit.core.openapi import answer, json_body, query, ref

_ISO = {"type": "string", "format": "date-time", "example": "2025-10-28T10:00:00Z"}
# A number is a Unix time: seconds up to 2e10, milliseconds above (pydantic's rule), within years 1..9999.
_TIME = {
    "anyOf": [
        _ISO,
        {"type": "number", "minimum": _MIN_MS, "maximum": _MAX_MS, "example": 1761645600},
    ]
}
_KEY = {"type": "string", "minLength": 1, "maxLength": MAX_KEY_CHARS}
EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["event_id", "topic", "source", "payload", "timestamp"],
    "properties": {
        "event_id": _KEY,
        "topic": _KEY,
        "source": {"type": "string"},
        "payload": {
            "type": "object",
            "required": ["message", "timestamp"],
            "properties": {"message": {"type": "string"}, "timestamp": _TIME},
            "additionalProperties": True,
        },
        "timestamp": _TIME,
    },
}
_EVENT = ref("Event")
_EXAMPLE = {
    "events": [
        {
            "event_id": "event-001",
            "topic": "user-actions",
            "source": "web-app",
            "payload": {"message": "User logged in", "timestamp": "2025-10-28T10:00:00Z"},
            "timestamp": "2025-10-28T10:00:00Z",
        }
    ]
}
_STORED = {
    "type": "object",
    "required": ["status", "message", "events_count"],
    "properties": {
        "status": {"type": "string", "enum": ["success", "queued"]},
        "message": {"type": "string"},
        "events_count": {"type": "integer", "minimum": 0},
        "accepted": {"type": "integer", "minimum": 0},
        "duplicates": {"type": "integer", "minimum": 0},
    },
}
_INVALID: dict[str, Any] = {
    "description": "schema errors, none stored: {detail: [{type, loc, msg, input}]}",
    "content": {"application/json": {"schema": ref("ValidationError")}},
}

SCHEMAS: dict[str, Any] = {"Event": EVENT_SCHEMA}

PUBLISH_DOC: dict[str, Any] = {
    "requestBody": json_body(
        {
            # The server reads an object with "events" as a batch and any other object as one event.
            "oneOf": [
                {
                    "type": "object",
                    "required": ["events"],
                    "properties": {"events": {"type": "array", "items": _EVENT}},
                },
                {"allOf": [_EVENT, {"not": {"required": ["events"]}}]},
                {"type": "array", "items": _EVENT},
            ]
        },
        example=_EXAMPLE,
    ),
    "responses": {
        "200": answer("stored: {status, message, events_count, accepted, duplicates}", _STORED),
        "202": answer("queued, not yet stored (ack: queued): {status, message, events_count}", _STORED),
        "422": _INVALID,
    },
    "errors": [429, 503],
}


# Cursors are 64-bit sequence numbers; anything larger is a client's mistake, not a query to run.
MAX_CURSOR = 2**63 - 1


def events_parameters(max_page: int) -> list[dict[str, Any]]:
    """The query parameters of GET /events, `limit` bounded by aggregate.max_page."""
    return [
        query("topic", "only this topic"),
        query("source", "only this source"),
        query("since", "event timestamp >= this ISO 8601 time", _ISO),
        query("until", "event timestamp < this ISO 8601 time", _ISO),
        query(
            "after",
            "cursor: events after this one (next_after of the previous page)",
            {"type": "integer", "minimum": 0, "maximum": MAX_CURSOR},
        ),
        query(
            "limit",
            "at most this many events (1..aggregate.max_page); omit for all",
            {"type": "integer", "minimum": 1, "maximum": max_page},
        ),
    ]


_LISTING = {
    "type": "object",
    "required": ["count", "events", "next_after"],
    "properties": {
        "count": {"type": "integer", "minimum": 0},
        "events": {"type": "array", "items": _EVENT},
        "next_after": {"type": "integer", "nullable": True},
    },
}
EVENTS_DOC: dict[str, Any] = {
    "responses": {
        "200": answer("{count, events: [...], next_after}: unique events in arrival order", _LISTING),
        "422": {**_INVALID, "description": "a bad parameter: {detail: [{loc: [query, name], msg, type}]}"},
    },
}
ROOT_DOC: dict[str, Any] = {
    "responses": {
        "200": answer(
            "the seed's liveness answer",
            {"type": "object", "required": ["message"], "properties": {"message": {"type": "string"}}},
        )
    }
}
