"""OpenAPI fields of the aggregator's routes: the event schema and what each answer means."""

from __future__ import annotations

from typing import Any

_TIME = {"type": "string", "format": "date-time", "example": "2025-10-28T10:00:00Z"}
EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["event_id", "topic", "source", "payload", "timestamp"],
    "properties": {
        "event_id": {"type": "string", "minLength": 1, "maxLength": 1024},
        "topic": {"type": "string", "minLength": 1, "maxLength": 1024},
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
_EVENT = EVENT_SCHEMA
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
_ERROR = "a JSON error {error: {code, message}} saying what to change"

PUBLISH_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        {"type": "object", "properties": {"events": {"type": "array", "items": _EVENT}}},
                        EVENT_SCHEMA,
                    ]
                },
                "example": _EXAMPLE,
            }
        },
    },
    "responses": {
        "200": {"description": "stored: {status, message, events_count, accepted, duplicates}"},
        "202": {"description": "queued, not yet stored (ack: queued): {status, message, events_count}"},
        "400": {"description": f"malformed JSON: {_ERROR}"},
        "413": {"description": f"body over server.max_body_mb: {_ERROR}"},
        "415": {"description": f"not application/json: {_ERROR}"},
        "422": {"description": "schema errors, none stored: {detail: [{loc, msg, type, input}]}"},
        "429": {"description": "the channel is full; retry after the Retry-After header's seconds"},
        "503": {"description": f"the store failed or the server is stopping; nothing acknowledged: {_ERROR}"},
    },
}


def _param(name: str, description: str, kind: str = "string") -> dict[str, Any]:
    schema = {"type": kind}
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


EVENTS_DOC: dict[str, Any] = {
    "parameters": [
        _param("topic", "only this topic"),
        _param("source", "only this source"),
        _param("since", "event timestamp >= this ISO 8601 time"),
        _param("until", "event timestamp < this ISO 8601 time"),
        _param("after", "cursor: events after this one (next_after of the previous page)", "integer"),
        _param("limit", "at most this many events (1..aggregate.max_page); omit for all", "integer"),
    ],
    "responses": {
        "200": {"description": "{count, events: [...], next_after}: unique events in arrival order"},
        "422": {"description": "a bad parameter: {detail: [{loc: [query, name], msg, type}]}"},
    },
}
