"""OpenAPI pieces every server shares: the route decorator, error shapes, common answers and the document."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterable, Mapping
from http import HTTPStatus
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

JSON = "application/json"
SSE = "text/event-stream"
NDJSON = "application/x-ndjson"
PROMETHEUS = "text/plain"

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
        }
    },
}
OPENAI_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": "string", "nullable": True},
                "code": {"type": "string", "nullable": True},
            },
        }
    },
}
# The aggregator keeps ChronicleWeaver's (FastAPI's) schema errors.
VALIDATION_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["detail"],
    "properties": {
        "detail": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["type", "loc", "msg"],
                "properties": {
                    "type": {"type": "string"},
                    "loc": {"type": "array", "items": {"oneOf": [{"type": "string"}, {"type": "integer"}]}},
                    "msg": {"type": "string"},
                    "input": {},
                },
            },
        }
    },
}
# One server-sent event as clients (and fuzzers) parse it; `data` is JSON text or [DONE].
SSE_EVENT: dict[str, Any] = {
    "type": "object",
    "required": ["data"],
    "properties": {"data": {"type": "string"}, "event": {"type": "string"}, "id": {"type": "string"}},
}
SHARED_SCHEMAS: dict[str, dict[str, Any]] = {
    "Error": ERROR_SCHEMA,
    "OpenAIError": OPENAI_ERROR_SCHEMA,
    "ValidationError": VALIDATION_ERROR_SCHEMA,
}
# OpenAI's chat `response_format`: what the simulator validates and the gateway passes on to its upstreams.
SCHEMA_NAME: dict[str, Any] = {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"}
RESPONSE_FORMAT: dict[str, Any] = {
    "nullable": True,
    "oneOf": [
        {
            "type": "object",
            "required": ["type"],
            "properties": {"type": {"type": "string", "enum": ["text", "json_object"]}},
        },
        {
            "type": "object",
            "required": ["type", "json_schema"],
            "properties": {
                "type": {"type": "string", "enum": ["json_schema"]},
                "json_schema": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {
                        "name": SCHEMA_NAME,
                        "schema": {"type": "object"},
                        "strict": {"type": "boolean", "nullable": True},
                    },
                },
            },
        },
    ],
}
_RETRY_AFTER = {
    "description": "seconds to wait before trying again",
    "schema": {"type": "integer", "minimum": 0},
}
# What an error status means on an llmkit server, when a route does not say more.
_ERROR_TEXT = {
    400: "the request is malformed or a field is invalid; the message names it",
    401: "missing or wrong credentials",
    403: "the credentials may not do this",
    404: "no such resource",
    408: "the wait ended before the resource was ready",
    409: "the resource is in a state that does not allow this",
    413: "request body over server.max_body_mb",
    415: "the body is not application/json",
    422: "a field is invalid",
    429: "too many requests; retry after the Retry-After header's seconds",
    502: "the upstream answered with an error",
    503: "unavailable for now (a backend is down, a queue is full or the server is stopping)",
    504: "the upstream did not answer in time",
}


def ref(name: str) -> dict[str, str]:
    """A JSON reference to the component schema `name`."""
    return {"$ref": f"#/components/schemas/{name}"}


def openapi(**operation: Any) -> Callable[[F], F]:
    """Attach OpenAPI operation fields (requestBody, responses, tags, ...) to a handler.

    `errors=[400, 404, ...]` lists error statuses answered in the route's error shape (the one the app
    registered for the path); a JSON `requestBody` adds 400, 413 and 415 itself.
    """

    def attach(handler: F) -> F:
        handler.__dict__.setdefault("__openapi__", {}).update(operation)
        return handler

    return attach


def json_body(schema: Mapping[str, Any], *, required: bool = True, example: Any = None) -> dict[str, Any]:
    """A JSON `requestBody` with `schema`."""
    media: dict[str, Any] = {"schema": dict(schema)}
    if example is not None:
        media["example"] = example
    return {"required": required, "content": {JSON: media}}


def answer(description: str, schema: Mapping[str, Any] | None = None, media: str = JSON) -> dict[str, Any]:
    """A response of `media` (JSON by default) whose body follows `schema` (any JSON object when omitted)."""
    if schema is None:
        schema = {"type": "object"} if media == JSON else {"type": "string"}
    return {"description": description, "content": {media: {"schema": dict(schema)}}}


def streams(
    description: str, json_schema: Mapping[str, Any] | None = None, media: str = SSE
) -> dict[str, Any]:
    """A 200 that is one JSON body, or a stream of `media` when the request asks for one."""
    ok = answer(description, json_schema)
    ok["content"][media] = {"schema": SSE_EVENT if media == SSE else {}}
    return ok


def query(
    name: str, description: str, schema: Mapping[str, Any] | None = None, required: bool = False
) -> dict[str, Any]:
    """A query parameter (a string unless `schema` says otherwise)."""
    return {
        "name": name,
        "in": "query",
        "required": required,
        "description": description,
        "schema": dict(schema or {"type": "string"}),
    }


def error_answer(status: int, shape: str, description: str | None = None) -> dict[str, Any]:
    """The documented answer of an error `status` with the body in the component schema `shape`."""
    text = description or _ERROR_TEXT.get(status) or HTTPStatus(status).phrase
    out: dict[str, Any] = {"description": text, "content": {JSON: {"schema": ref(shape)}}}
    if status in (429, 503):
        out["headers"] = {"Retry-After": _RETRY_AFTER}
    return out


_HEALTH_SCHEMA = {
    "type": "object",
    "required": ["status", "service", "version"],
    "properties": {
        "status": {"type": "string"},
        "service": {"type": "string"},
        "version": {"type": "string"},
        "pid": {"type": "integer"},
        "uptime": {"type": "number"},
        "checks": {"type": "object"},
    },
}
# The common routes of every server (core/http.py).
HEALTH_DOC: dict[str, Any] = {
    "parameters": [
        query("deep", "1, true or yes also checks what the server depends on (503 when one fails)")
    ],
    "responses": {
        "200": answer("alive (and, with ?deep=1, every dependency answered)", _HEALTH_SCHEMA),
        "503": answer(
            "unhealthy: a dependency failed (with ?deep=1), or the process is stopping", _HEALTH_SCHEMA
        ),
    },
}
_WORKERS_PARAM = query(
    "workers",
    "all (the default): every worker of a server with server.workers > 1; self: only the one that answers",
    {"type": "string", "enum": ["all", "self"]},
)
STATS_DOC: dict[str, Any] = {
    "parameters": [_WORKERS_PARAM],
    "errors": [400],
    "responses": {
        "200": answer(
            "the server's numbers, summed over its workers (each one's under `workers.each`); "
            "`http` counts requests"
        )
    },
}
METRICS_DOC: dict[str, Any] = {
    "parameters": [_WORKERS_PARAM],
    "errors": [400],
    "responses": {
        "200": answer(
            "Prometheus text exposition format 0.0.4; with several workers, each sample is labelled with "
            "its `worker`",
            media=PROMETHEUS,
        )
    },
}
OPENAPI_DOC: dict[str, Any] = {
    "responses": {"200": answer("an OpenAPI 3.0 document", {"type": "object", "required": ["openapi"]})}
}

_PATH_PARAM_RE = re.compile(r"\{([^}:]+)(?::[^}]*)?\}")


def _body_errors(op: Mapping[str, Any]) -> list[int]:
    body = op.get("requestBody")
    if not body:
        return []
    return [400, 413, 415] if JSON in body.get("content", {}) else [413]


def operation(handler: Any, path: str, error_shape: str, context: Any = None) -> dict[str, Any]:
    """The OpenAPI operation of `handler` at `path`: summary from its docstring, then its @openapi fields.

    A field given as a function is called with `context` (the app), for bounds that settings decide.
    """
    doc = inspect.getdoc(handler) or ""
    summary, _, description = doc.partition("\n")
    op: dict[str, Any] = {"summary": summary.strip()}
    if description.strip():
        op["description"] = description.strip()
    params = _PATH_PARAM_RE.findall(path)
    if params:
        op["parameters"] = [
            {"name": p, "in": "path", "required": True, "schema": {"type": "string"}} for p in params
        ]
    fields = {
        key: value(context) if callable(value) else value
        for key, value in getattr(handler, "__openapi__", {}).items()
    }
    errors: Iterable[int] = fields.pop("errors", ())
    if "parameters" in fields and params:
        # A route that describes its path parameters replaces the plain-string default.
        named = {p["name"] for p in fields["parameters"]}
        fields["parameters"] = [p for p in op["parameters"] if p["name"] not in named] + fields["parameters"]
    op.update(fields)
    responses = dict(op.get("responses") or {"200": {"description": "OK"}})
    for status in sorted({*errors, *_body_errors(op)}):
        responses.setdefault(str(status), error_answer(status, error_shape))
    op["responses"] = responses
    return op


def clean_path(path: str) -> str:
    """An aiohttp path pattern (`{name:regex}`) in OpenAPI's form (`{name}`)."""
    return _PATH_PARAM_RE.sub(lambda m: "{" + m.group(1) + "}", path)


def document(
    title: str,
    version: str,
    routes: Iterable[tuple[str, str, Any]],
    error_shape: Callable[[str], str],
    schemas: Mapping[str, Mapping[str, Any]] | None = None,
    context: Any = None,
) -> dict[str, Any]:
    """An OpenAPI 3 document of `routes` ((method, path, handler)); `error_shape(path)` names its errors."""
    paths: dict[str, dict[str, Any]] = {}
    for method, path, handler in routes:
        op = operation(handler, path, error_shape(path), context)
        paths.setdefault(clean_path(path), {})[method.lower()] = op
    return {
        "openapi": "3.0.3",
        "info": {"title": title, "version": version},
        "paths": dict(sorted(paths.items())),
        "components": {"schemas": {**SHARED_SCHEMAS, **(schemas or {})}},
    }
