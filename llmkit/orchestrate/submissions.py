"""A submitted job's body, from POST /api/v1/infer or a WebSocket message, checked into a `Submission`."""

from __future__ import annotations

from typing import Any

from llmkit.core.http import ApiError
from llmkit.core.queue.base import Priority
from llmkit.orchestrate.parameters import check_parameters
from llmkit.orchestrate.service import Submission

PRIORITIES = tuple(level.name.lower() for level in Priority)


def _text(body: dict[str, Any], name: str, required: bool = False) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise ApiError(400, "invalid_request", f"{name} is required: a non-empty string", param=name)
        return None
    if not isinstance(value, str) or (required and not value.strip()):
        raise ApiError(400, "invalid_request", f"{name} must be a non-empty string", param=name)
    return value


def _object(body: dict[str, Any], name: str) -> dict[str, Any]:
    value = body.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ApiError(400, "invalid_request", f"{name} must be a JSON object", param=name)
    return value


def parse_submission(body: dict[str, Any], idempotency_key: str | None = None) -> Submission:
    """The seed's {prompt, session_id?, metadata?: {priority, ...}, stream?} plus model and parameters."""
    prompt = _text(body, "prompt", required=True)
    assert prompt is not None
    metadata = _object(body, "metadata")
    priority = metadata.get("priority", body.get("priority", "normal"))
    try:
        level = Priority.parse(priority).name.lower()
    except ValueError:
        raise ApiError(
            400,
            "invalid_priority",
            f"metadata.priority must be one of {', '.join(PRIORITIES)}; got {priority!r}",
            param="metadata.priority",
        ) from None
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise ApiError(400, "invalid_request", "stream must be true or false", param="stream")
    return Submission(
        prompt=prompt,
        priority=level,
        session_id=_text(body, "session_id"),
        metadata=metadata,
        model=_text(body, "model") or "",
        parameters=check_parameters(_object(body, "parameters")),
        stream=stream,
        idempotency_key=idempotency_key,
    )
