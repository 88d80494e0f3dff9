"""OpenAPI documents of the admin API's key, tenant, stats and health routes, and their schemas."""

from __future__ import annotations

from typing import Any

from llmkit.core.auth import KEY_SCOPES
from llmkit.core.openapi import answer, json_body, query, ref
from llmkit.platform.analytics.queries import SCHEMAS as ANALYTICS_SCHEMAS
from llmkit.platform.webhooks.docs import SCHEMAS as WEBHOOK_SCHEMAS

_TIME = {"type": "string", "format": "date-time", "nullable": True}
# Names must hold some non-blank text (bodies.py strips them).
_NONBLANK = "\\S"
_QUOTA = {"type": "integer", "minimum": 1, "nullable": True}
_QUOTA_NAMES = ["rpm", "tpm", "max_concurrent", "daily_tokens", "monthly_tokens"]
_QUOTAS: dict[str, Any] = {
    "type": "object",
    "description": "each quota optional; null or absent: no limit",
    "additionalProperties": False,
    "properties": {name: _QUOTA for name in _QUOTA_NAMES},
}
_SCOPES = {"type": "array", "items": {"type": "string", "enum": list(KEY_SCOPES)}, "minItems": 1}
_KEY_PROPERTIES: dict[str, Any] = {
    "id": {"type": "string"},
    "prefix": {"type": "string", "description": "llk_<id>_: how the key's text starts"},
    "name": {"type": "string"},
    "description": {"type": "string"},
    "tenant_id": {"type": "string", "nullable": True},
    "scopes": _SCOPES,
    "status": {"type": "string", "enum": ["active", "revoked", "expired"]},
    "created_at": {"type": "string", "format": "date-time"},
    "last_used_at": _TIME,
    "expires_at": _TIME,
    "revoked_at": _TIME,
}
_TENANT: dict[str, Any] = {
    "type": "object",
    "required": ["id", "name", "quotas", "created_at"],
    "properties": {
        "id": {"type": "string"},
        "name": {"type": "string"},
        "quotas": {**_QUOTAS, "required": _QUOTA_NAMES},
        "created_at": {"type": "string", "format": "date-time"},
        "updated_at": {"type": "string", "format": "date-time"},
    },
}

_JOB_PROPERTIES: dict[str, Any] = {
    "id": {"type": "string"},
    "tenant_id": {"type": "string"},
    "kind": {"type": "string", "description": "the work: index_document"},
    "subject": {"type": "string", "description": "what it works on (a document id)"},
    "state": {"type": "string", "enum": ["queued", "running", "completed", "failed"]},
    "attempts": {"type": "integer", "minimum": 0},
    "max_attempts": {"type": "integer", "minimum": 1},
    "error": {"type": "string", "nullable": True, "description": "the last failed attempt's error"},
    "worker": {"type": "string", "nullable": True, "description": "who runs it, while it runs"},
    "created_at": {"type": "string", "format": "date-time"},
    "run_at": {**_TIME, "description": "not before (a queued job, a retry's backoff)"},
    "started_at": _TIME,
    "finished_at": _TIME,
}

SCHEMAS: dict[str, dict[str, Any]] = {
    **ANALYTICS_SCHEMAS,
    **WEBHOOK_SCHEMAS,
    "ApiKey": {"type": "object", "required": list(_KEY_PROPERTIES), "properties": _KEY_PROPERTIES},
    "NewApiKey": {
        "type": "object",
        "required": [*_KEY_PROPERTIES, "key"],
        "properties": {
            **_KEY_PROPERTIES,
            "key": {"type": "string", "description": "llk_<id>_<secret>: shown in this answer only"},
        },
    },
    "Tenant": _TENANT,
    "Job": {"type": "object", "required": list(_JOB_PROPERTIES), "properties": _JOB_PROPERTIES},
}

_ADMIN_ERRORS = [401, 403, 503]
_TENANT_QUERY = query("tenant_id", "only this tenant's (an admin key of a tenant always sees its own)")

LIST_KEYS: dict[str, Any] = {
    "tags": ["admin"],
    "parameters": [_TENANT_QUERY],
    "responses": {
        "200": answer(
            "the keys, oldest first (never a secret)",
            {
                "type": "object",
                "required": ["keys"],
                "properties": {"keys": {"type": "array", "items": ref("ApiKey")}},
            },
        )
    },
    "errors": _ADMIN_ERRORS,
}
CREATE_KEY: dict[str, Any] = {
    "tags": ["admin"],
    "requestBody": json_body(
        {
            "type": "object",
            "required": ["name"],
            "additionalProperties": False,
            "properties": {
                "name": {"type": "string", "minLength": 1, "maxLength": 200, "pattern": _NONBLANK},
                "description": {"type": "string", "maxLength": 2000, "nullable": True},
                "tenant_id": {"type": "string", "nullable": True, "description": "an existing tenant's id"},
                "scopes": _SCOPES,
                "expires_at": {
                    "description": "ISO 8601 time or epoch seconds, in the future",
                    "oneOf": [{"type": "string", "format": "date-time"}, {"type": "number"}],
                    "nullable": True,
                },
            },
        },
        example={"name": "Production API Key", "description": "Main production key"},
    ),
    "responses": {"201": answer("the new key, with its secret this once", ref("NewApiKey"))},
    "errors": [422, *_ADMIN_ERRORS],
}
REVOKE_KEY: dict[str, Any] = {
    "tags": ["admin"],
    "responses": {"200": answer("the key, revoked", ref("ApiKey"))},
    "errors": [404, *_ADMIN_ERRORS],
}
LIST_TENANTS: dict[str, Any] = {
    "tags": ["admin"],
    "responses": {
        "200": answer(
            "the tenants, oldest first",
            {
                "type": "object",
                "required": ["tenants"],
                "properties": {"tenants": {"type": "array", "items": ref("Tenant")}},
            },
        )
    },
    "errors": _ADMIN_ERRORS,
}
CREATE_TENANT: dict[str, Any] = {
    "tags": ["admin"],
    "requestBody": json_body(
        {
            "type": "object",
            "required": ["name"],
            "additionalProperties": False,
            "properties": {
                "id": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"},
                "name": {"type": "string", "minLength": 1, "maxLength": 200, "pattern": _NONBLANK},
                "quotas": {**_QUOTAS, "nullable": True},
            },
        },
        example={"name": "Acme", "quotas": {"rpm": 60, "tpm": 100000}},
    ),
    "responses": {"201": answer("the new tenant", ref("Tenant"))},
    "errors": [409, 422, *_ADMIN_ERRORS],
}
GET_TENANT: dict[str, Any] = {
    "tags": ["admin"],
    "responses": {"200": answer("the tenant", ref("Tenant"))},
    "errors": [404, *_ADMIN_ERRORS],
}
PATCH_TENANT: dict[str, Any] = {
    "tags": ["admin"],
    "requestBody": json_body(
        {
            "type": "object",
            "additionalProperties": False,
            "minProperties": 1,
            "properties": {
                "name": {"type": "string", "minLength": 1, "maxLength": 200, "pattern": _NONBLANK},
                "quotas": {**_QUOTAS, "nullable": True, "description": "only the quotas given change"},
            },
        },
        example={"quotas": {"rpm": 120}},
    ),
    "responses": {"200": answer("the tenant as changed", ref("Tenant"))},
    "errors": [404, 409, 422, *_ADMIN_ERRORS],
}
DELETE_TENANT: dict[str, Any] = {
    "tags": ["admin"],
    "responses": {
        "200": answer(
            "the tenant is gone and its keys revoked",
            {
                "type": "object",
                "required": ["id", "deleted", "revoked_keys"],
                "properties": {
                    "id": {"type": "string"},
                    "deleted": {"type": "boolean"},
                    "revoked_keys": {"type": "integer", "minimum": 0},
                },
            },
        )
    },
    "errors": [404, *_ADMIN_ERRORS],
}
ADMIN_STATS: dict[str, Any] = {
    "tags": ["admin"],
    "responses": {"200": answer("the server's /stats with a platform section")},
    "errors": _ADMIN_ERRORS,
}
ADMIN_HEALTH: dict[str, Any] = {
    "tags": ["admin"],
    "responses": {
        "200": answer(
            "each dependency with its state",
            {
                "type": "object",
                "required": ["status", "down", "components"],
                "properties": {
                    "status": {"type": "string", "enum": ["healthy", "degraded"]},
                    "down": {"type": "array", "items": {"type": "string"}},
                    "components": {"type": "object"},
                },
            },
        ),
        "503": answer("the platform store is down", {"type": "object"}),
    },
    "errors": [401, 403],
}
LIST_JOBS: dict[str, Any] = {
    "tags": ["admin"],
    "parameters": [
        query(
            "state",
            "only jobs in this state",
            {"type": "string", "enum": ["queued", "running", "completed", "failed"]},
        ),
        _TENANT_QUERY,
        query(
            "limit",
            "at most this many (1-500, default 50)",
            {"type": "integer", "minimum": 1, "maximum": 500},
        ),
        query("offset", "skip this many (default 0)", {"type": "integer", "minimum": 0}),
    ],
    "responses": {
        "200": answer(
            "the jobs, newest first",
            {
                "type": "object",
                "required": ["jobs", "limit", "offset"],
                "properties": {
                    "jobs": {"type": "array", "items": ref("Job")},
                    "limit": {"type": "integer"},
                    "offset": {"type": "integer"},
                },
            },
        )
    },
    "errors": [400, *_ADMIN_ERRORS],
}
GET_JOB: dict[str, Any] = {
    "tags": ["admin"],
    "responses": {"200": answer("the job", ref("Job"))},
    "errors": [404, *_ADMIN_ERRORS],
}
RETRY_JOB: dict[str, Any] = {
    "tags": ["admin"],
    "responses": {"200": answer("the job, queued again with fresh attempts", ref("Job"))},
    "errors": [404, 409, *_ADMIN_ERRORS],
}
_USE = {"type": "integer", "minimum": 0}
TENANT_USAGE: dict[str, Any] = {
    "tags": ["admin"],
    "responses": {
        "200": answer(
            "each quota of the tenant with what it has used of it now (no quotas: an empty list)",
            {
                "type": "object",
                "required": ["tenant_id", "quotas"],
                "properties": {
                    "tenant_id": {"type": "string"},
                    "quotas": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["quota", "limit", "used", "remaining", "resets_at"],
                            "properties": {
                                "quota": {"type": "string", "enum": _QUOTA_NAMES},
                                "limit": {"type": "integer", "minimum": 1},
                                "used": _USE,
                                "remaining": _USE,
                                "resets_at": {**_TIME, "description": "null for max_concurrent"},
                            },
                        },
                    },
                },
            },
        )
    },
    "errors": [404, *_ADMIN_ERRORS],
}
