"""The bounds model servers put on a request's sampling parameters, checked by every llmkit validator.

The simulator refuses what OpenAI refuses; the gateway and the orchestrator refuse it before an upstream
does, so a client gets a 400 naming the field rather than a relayed 502.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

# Integers are 64-bit upstream (OpenAI's seed, token limits): a larger one is refused, never read as a
# float or a bignum.
INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)
# OpenAI's limit on stop sequences.
MAX_STOP = 4
# OpenAI's ranges for the sampling numbers (Ollama takes them too): the simulator refuses what is outside
# in OpenAI's words, the gateway and the orchestrator before an upstream does.
SAMPLING_RANGES: dict[str, tuple[int, int]] = {
    "temperature": (0, 2),
    "top_p": (0, 1),
    "presence_penalty": (-2, 2),
    "frequency_penalty": (-2, 2),
}


def is_int(value: Any, low: int = INT64_MIN, high: int = INT64_MAX) -> bool:
    """Whether `value` is a JSON integer (not a bool) from `low` to `high`."""
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def is_stop(value: Any) -> bool:
    """Whether `value` is a stop sequence: a string, or a list of at most MAX_STOP strings."""
    if isinstance(value, str):
        return True
    return isinstance(value, list) and len(value) <= MAX_STOP and all(isinstance(s, str) for s in value)


# OpenAI's response_format kinds, and the names it allows for a json_schema (and for a tool).
FORMAT_TYPES = ("text", "json_object", "json_schema")
NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def response_format_problem(raw: Any) -> str | None:
    """What is wrong with a (non-null) `response_format`, in words, or None when OpenAI would take it."""
    kind = raw.get("type") if isinstance(raw, dict) else None
    if kind not in FORMAT_TYPES:
        got = orjson.dumps(raw, default=repr).decode()[:80]
        return f"response_format.type must be one of {', '.join(FORMAT_TYPES)}; got {got}"
    if kind != "json_schema":
        return None
    spec = raw.get("json_schema")
    where = "response_format.json_schema"
    if not isinstance(spec, dict):
        return f'{where} must be an object like {{"name": "answer", "schema": {{"type": "object", ...}}}}'
    name = spec.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name):
        return f"{where}.name must be 1-64 letters, digits, '_' or '-'; got {name!r}"
    if not isinstance(spec.get("schema", {}), dict):
        return f"{where}.schema must be a JSON schema object; got {spec.get('schema')!r:.60}"
    strict = spec.get("strict")
    # A null strict is absent, as OpenAI reads it.
    if strict is not None and not isinstance(strict, bool):
        return f"{where}.strict must be true or false; got {strict!r}"
    return None
