"""Ollama's wire format, shared by its routes: the JSON body whatever its Content-Type, the model name,
NDJSON answers and errors in Ollama's shape `{"error": "..."}`."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web

from llmkit.core.http import ApiError

NDJSON_HEADERS = {"Content-Type": "application/x-ndjson", "Cache-Control": "no-cache"}


def ollama_error_body(status: int, code: str, message: str, extra: Mapping[str, Any]) -> Any:
    """`{"error": "message"}`: the shape the ollama clients read."""
    return {"error": message}


def bad(message: str) -> ApiError:
    """A 400 whose message says what to fix."""
    return ApiError(400, "invalid_request", message)


def not_found(model: str) -> ApiError:
    """Ollama's 404 for a model it does not have, in its words."""
    return ApiError(404, "model_not_found", f"model '{model}' not found")


def check_model(data: Mapping[str, Any], *, legacy_name: bool = False) -> str:
    """The body's model name; `legacy_name` also reads `name`, which Ollama's model routes still take."""
    model = data.get("model")
    if legacy_name and model is None:
        model = data.get("name")
    if not isinstance(model, str) or not model.strip():
        raise bad(f'model is required: a non-empty string such as "llama3.2"; got {model!r}')
    return model


def check_stream(data: Mapping[str, Any]) -> bool:
    """Whether to stream: Ollama does unless told `"stream": false`."""
    stream = data.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise bad(f"stream must be true or false; got {stream!r}")
    return stream is not False


async def read_body(request: web.Request) -> dict[str, Any]:
    """The JSON object of the body, whatever the Content-Type: Ollama's docs post JSON with bare `curl -d`."""
    body = await request.read()
    try:
        data = orjson.loads(body) if body.strip() else None
    except orjson.JSONDecodeError as exc:
        raise bad(f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise bad('request body must be a JSON object such as {"model": "llama3.2", ...}')
    return data


def timestamp(epoch: float | None = None) -> str:
    """RFC 3339 in UTC with nanoseconds, as Ollama writes created_at and modified_at."""
    epoch = time.time() if epoch is None else epoch
    whole = int(epoch)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{int((epoch - whole) * 1e9):09d}Z"
