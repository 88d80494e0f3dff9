"""OpenAPI fields of the orchestrator's routes: the job submission, the job and what each route answers."""

from __future__ import annotations

from typing import Any

from llmkit.core.openapi import answer, json_body, query, ref
from llmkit.core.sampling import INT64_MAX, INT64_MIN

_NAMES = ["critical", "high", "normal", "low"]


def _number(low: float, high: float) -> dict[str, Any]:
    return {"type": "number", "minimum": low, "maximum": high, "nullable": True}


_AT_LEAST_ONE = {"type": "integer", "minimum": 1, "maximum": INT64_MAX, "nullable": True}
# The sampling parameters a job may carry (null: the backend's default); OpenAI's ranges.
PARAMETERS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "nullable": True,
    "description": "sampling parameters passed to the backend; other keys are passed on unchecked",
    "properties": {
        "temperature": _number(0, 2),
        "top_p": _number(0, 1),
        "presence_penalty": _number(-2, 2),
        "frequency_penalty": _number(-2, 2),
        "repeat_penalty": _number(0, 100),
        "min_p": _number(0, 1),
        "max_tokens": _AT_LEAST_ONE,
        "max_completion_tokens": _AT_LEAST_ONE,
        "num_predict": _AT_LEAST_ONE,
        "top_k": _AT_LEAST_ONE,
        "n": {"type": "integer", "enum": [1, None], "nullable": True, "description": "a job has one result"},
        "seed": {"type": "integer", "minimum": INT64_MIN, "maximum": INT64_MAX, "nullable": True},
        "stop": {
            "nullable": True,
            "oneOf": [{"type": "string"}, {"type": "array", "maxItems": 4, "items": {"type": "string"}}],
        },
    },
}
SUBMISSION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["prompt"],
    "properties": {
        "prompt": {"type": "string", "pattern": "[^\\s\\x1c-\\x1f]", "example": "Hello"},
        "session_id": {"type": "string", "nullable": True, "description": "the rate limit's bucket"},
        "model": {"type": "string", "nullable": True, "description": "orchestrate.model when omitted"},
        "stream": {"type": "boolean", "description": "deltas over the WebSocket while the job runs"},
        "metadata": {
            "type": "object",
            "nullable": True,
            "properties": {
                "priority": {
                    "oneOf": [
                        {"type": "string", "enum": _NAMES},
                        {"type": "integer", "minimum": 0, "maximum": 3, "description": "0 critical .. 3 low"},
                    ]
                }
            },
        },
        "parameters": ref("JobParameters"),
    },
}
JOB_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["request_id", "status", "priority", "attempts", "created_at", "updated_at"],
    "properties": {
        "request_id": {"type": "string"},
        "status": {
            "type": "string",
            "enum": ["pending", "processing", "completed", "failed", "timeout", "cancelled"],
        },
        "result": {"nullable": True},
        "error": {"nullable": True},
        "priority": {"type": "string", "enum": _NAMES},
        "session_id": {"type": "string", "nullable": True},
        "cached": {"type": "boolean"},
        "attempts": {"type": "integer", "minimum": 0},
        "created_at": {"type": "number"},
        "updated_at": {"type": "number"},
        "tenant_id": {"type": "string", "description": "the tenant of the API key that submitted it"},
    },
}
SCHEMAS: dict[str, Any] = {
    "JobSubmission": SUBMISSION_SCHEMA,
    "Job": JOB_SCHEMA,
    "JobParameters": PARAMETERS_SCHEMA,
}

_JOB = answer("the job", ref("Job"))
# Every API route answers 503 with Retry-After while the process drains after SIGTERM, and 401/403 for a
# missing (when orchestrate.require_api_key), unknown, revoked or chat-less API key.
INFER_DOC: dict[str, Any] = {
    "tags": ["jobs"],
    "parameters": [
        {
            "name": "Idempotency-Key",
            "in": "header",
            "required": False,
            "description": "a repeated submit with the same key answers the first job",
            "schema": {"type": "string"},
        }
    ],
    "requestBody": json_body(
        ref("JobSubmission"), example={"prompt": "Hello", "metadata": {"priority": "high"}}
    ),
    "responses": {"200": _JOB},
    "errors": [401, 403, 429, 503],
}
STATUS_DOC: dict[str, Any] = {"tags": ["jobs"], "responses": {"200": _JOB}, "errors": [401, 403, 404, 503]}
CANCEL_DOC: dict[str, Any] = {
    "tags": ["jobs"],
    "responses": {"200": answer("the job, now cancelled", ref("Job"))},
    "errors": [401, 403, 404, 409, 503],
}


def result_parameters(long_poll_max_s: float) -> list[dict[str, Any]]:
    """The query of GET /api/v1/result/{id}: `timeout` bounded by orchestrate.long_poll_max_s."""
    return [
        query(
            "timeout",
            "seconds to wait for a terminal state (default 30, at most orchestrate.long_poll_max_s)",
            {"type": "number", "minimum": 0, "maximum": long_poll_max_s},
        )
    ]


RESULT_DOC: dict[str, Any] = {
    "tags": ["jobs"],
    "responses": {
        "200": answer("the job, terminal", ref("Job")),
        "408": answer("the wait ended first: the job in its current state", ref("Job")),
    },
    "errors": [400, 401, 403, 404, 503],
}
STREAM_DOC: dict[str, Any] = {
    "tags": ["jobs"],
    "responses": {
        "101": {"description": "the WebSocket is open; send one JSON job submission per text message"},
    },
    "errors": [400, 401, 403],
}
PREFLIGHT_DOC: dict[str, Any] = {
    "tags": ["cors"],
    "responses": {
        "204": {
            "description": "any origin may call the API",
            "headers": {
                "Access-Control-Allow-Methods": {"schema": {"type": "string"}},
                "Access-Control-Allow-Headers": {"schema": {"type": "string"}},
            },
        }
    },
}
