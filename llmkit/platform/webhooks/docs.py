"""OpenAPI documents of the webhook admin routes, and their schemas."""

from __future__ import annotations

from typing import Any

from llmkit.core.openapi import answer, json_body, query, ref
from llmkit.platform.webhooks.events import ALL_EVENTS, EVENT_TYPES

_TIME = {"type": "string", "format": "date-time", "nullable": True}
_EVENTS = {
    "type": "array",
    "minItems": 1,
    "items": {"type": "string", "enum": [*EVENT_TYPES, ALL_EVENTS]},
    "description": "the event types it receives; * for all",
}
_SECRET = {
    "type": "string",
    "description": "whsec_<base64 of 24-64 bytes> (Standard Webhooks), or 8-256 characters of text; "
    "absent: one is generated",
    "minLength": 8,
    "maxLength": 256,
}
_WEBHOOK_PROPERTIES: dict[str, Any] = {
    "id": {"type": "string"},
    "url": {"type": "string", "format": "uri"},
    "events": _EVENTS,
    "tenant_id": {"type": "string", "nullable": True, "description": "null: every tenant's events"},
    "description": {"type": "string"},
    "status": {"type": "string", "enum": ["active", "disabled"]},
    "disabled_at": _TIME,
    "disabled_reason": {"type": "string", "nullable": True},
    "previous_secret_expires_at": {**_TIME, "description": "after a rotation: until then both secrets sign"},
    "created_at": {"type": "string", "format": "date-time"},
    "updated_at": {"type": "string", "format": "date-time"},
}
_ATTEMPT: dict[str, Any] = {
    "type": "object",
    "required": ["attempt", "at", "status", "duration_ms", "error"],
    "properties": {
        "attempt": {"type": "integer", "minimum": 1},
        "at": {"type": "string", "format": "date-time"},
        "status": {"type": "integer", "nullable": True, "description": "null: no answer"},
        "duration_ms": {"type": "number"},
        "error": {"type": "string", "nullable": True},
    },
}
_DELIVERY_PROPERTIES: dict[str, Any] = {
    "id": {"type": "string", "description": "the webhook-id header (the same on every attempt)"},
    "event_id": {"type": "string"},
    "type": {"type": "string"},
    "state": {"type": "string", "enum": ["pending", "delivered", "failed"]},
    "attempts": {"type": "integer", "minimum": 0},
    "last_status": {"type": "integer", "nullable": True},
    "last_error": {"type": "string", "nullable": True},
    "created_at": {"type": "string", "format": "date-time"},
    "next_at": {**_TIME, "description": "when a pending delivery is tried next"},
    "finished_at": _TIME,
    "log": {"type": "array", "items": _ATTEMPT},
}

SCHEMAS: dict[str, dict[str, Any]] = {
    "Webhook": {"type": "object", "required": list(_WEBHOOK_PROPERTIES), "properties": _WEBHOOK_PROPERTIES},
    "NewWebhook": {
        "type": "object",
        "required": [*_WEBHOOK_PROPERTIES, "secret"],
        "properties": {
            **_WEBHOOK_PROPERTIES,
            "secret": {"type": "string", "description": "the signing secret: shown in this answer only"},
        },
    },
    "WebhookDelivery": {
        "type": "object",
        "required": list(_DELIVERY_PROPERTIES),
        "properties": _DELIVERY_PROPERTIES,
    },
}

_ERRORS = [401, 403, 503]

LIST_WEBHOOKS: dict[str, Any] = {
    "tags": ["admin", "webhooks"],
    "responses": {
        "200": answer(
            "the webhooks, oldest first (never a secret; a tenant's admin: its tenant's)",
            {
                "type": "object",
                "required": ["webhooks"],
                "properties": {"webhooks": {"type": "array", "items": ref("Webhook")}},
            },
        )
    },
    "errors": _ERRORS,
}
CREATE_WEBHOOK: dict[str, Any] = {
    "tags": ["admin", "webhooks"],
    "requestBody": json_body(
        {
            "type": "object",
            "required": ["url", "events"],
            "additionalProperties": False,
            "properties": {
                "url": {
                    "type": "string",
                    "format": "uri",
                    "maxLength": 2048,
                    "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://",
                },
                "secret": {**_SECRET, "nullable": True},
                "events": _EVENTS,
                "tenant_id": {
                    "type": "string",
                    "nullable": True,
                    "description": "an existing tenant's id; null: every tenant's (platform admins only)",
                },
                "description": {"type": "string", "maxLength": 2000, "nullable": True},
            },
        },
        example={"url": "https://example.com/webhook", "events": ["document.indexed", "search.performed"]},
    ),
    "responses": {"201": answer("the new webhook, with its secret this once", ref("NewWebhook"))},
    "errors": [422, *_ERRORS],
}
DELETE_WEBHOOK: dict[str, Any] = {
    "tags": ["admin", "webhooks"],
    "responses": {
        "200": answer(
            "the webhook is gone, with its pending deliveries and log",
            {
                "type": "object",
                "required": ["id", "deleted"],
                "properties": {"id": {"type": "string"}, "deleted": {"type": "boolean"}},
            },
        )
    },
    "errors": [404, *_ERRORS],
}
TEST_WEBHOOK: dict[str, Any] = {
    "tags": ["admin", "webhooks"],
    "responses": {
        "202": answer(
            "a webhook.test event is queued for this webhook",
            {
                "type": "object",
                "required": ["delivery_id", "event_id", "type"],
                "properties": {
                    "delivery_id": {"type": "string"},
                    "event_id": {"type": "string"},
                    "type": {"type": "string", "enum": ["webhook.test"]},
                },
            },
        )
    },
    "errors": [404, 409, *_ERRORS],
}
LIST_DELIVERIES: dict[str, Any] = {
    "tags": ["admin", "webhooks"],
    "parameters": [
        query(
            "limit",
            "at most this many (1-200, default 50)",
            {"type": "integer", "minimum": 1, "maximum": 200},
        ),
        query("offset", "skip this many (default 0)", {"type": "integer", "minimum": 0}),
    ],
    "responses": {
        "200": answer(
            "the webhook's deliveries, newest first, each with its attempts",
            {
                "type": "object",
                "required": ["deliveries", "limit", "offset"],
                "properties": {
                    "deliveries": {"type": "array", "items": ref("WebhookDelivery")},
                    "limit": {"type": "integer"},
                    "offset": {"type": "integer"},
                },
            },
        )
    },
    "errors": [400, 404, *_ERRORS],
}
ROTATE_WEBHOOK: dict[str, Any] = {
    "tags": ["admin", "webhooks"],
    "requestBody": json_body(
        {"type": "object", "additionalProperties": False, "properties": {"secret": _SECRET}},
        required=False,
        example={},
    ),
    "responses": {
        "200": answer(
            "the new secret, this once; the previous one signs too until previous_secret_expires_at",
            ref("NewWebhook"),
        )
    },
    "errors": [404, 422, *_ERRORS],
}
