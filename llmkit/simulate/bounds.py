"""OpenAI's bounds on sampling fields (temperature, top_p, the penalties, n, logprobs), refused in its words.

OpenAI's message names the bound that was crossed ("3 is greater than the maximum of 2 - 'temperature'");
the simulator adds the allowed range. Every check is one dict lookup while its field is absent: the chat
route is a hot path, and most requests send none of these.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from llmkit.core.http import ApiError
from llmkit.core.sampling import INT64_MAX, SAMPLING_RANGES, is_int

# (field, lowest, highest) of the numbers every OpenAI text route bounds.
NUMBER_BOUNDS: tuple[tuple[str, int, int], ...] = tuple(
    (name, low, high) for name, (low, high) in SAMPLING_RANGES.items()
)
# Alternatives per token: chat's and the Responses API's top_logprobs, legacy completions' logprobs.
MAX_TOP_LOGPROBS = 20
MAX_LEGACY_LOGPROBS = 5
_JSON_TYPES = {str: "a string", bool: "a boolean", list: "an array", dict: "an object"}


def _bad(param: str, message: str, code: str = "invalid_value") -> ApiError:
    return ApiError(400, code, message, param=param)


def _out_of_range(name: str, value: Any, low: int, high: int) -> ApiError:
    side = f"less than the minimum of {low}" if value < low else f"greater than the maximum of {high}"
    return _bad(name, f"{value!r} is {side} - '{name}' ({name} must be from {low} to {high})")


def check_numbers(data: Mapping[str, Any]) -> None:
    """400 for temperature, top_p, presence_penalty or frequency_penalty out of OpenAI's range (null is
    absent)."""
    for name, low, high in NUMBER_BOUNDS:
        if name in data:
            value = data[name]
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                kind = _JSON_TYPES.get(type(value), type(value).__name__)
                expected = f"expected a number from {low} to {high}, but got {kind} instead."
                raise _bad(name, f"Invalid type for '{name}': {expected}", "invalid_type")
            if not low <= value <= high:
                raise _out_of_range(name, value, low, high)


def bounded_int(data: Mapping[str, Any], name: str, low: int, high: int) -> int | None:
    """The integer `data[name]` (None when absent or null); 400 for another type or outside low..high."""
    value = data.get(name)
    if value is None:
        return None
    if not is_int(value, -INT64_MAX - 1):
        raise _bad(name, f"{name} must be an integer from {low} to {high}; got {value!r:.80}")
    if not low <= value <= high:
        raise _out_of_range(name, value, low, high)
    return value


def chat_logprobs(data: Mapping[str, Any]) -> tuple[bool, int]:
    """Chat's `logprobs` (true or false) and `top_logprobs` (0..20, only with logprobs true)."""
    logprobs = data.get("logprobs")
    if logprobs is not None and not isinstance(logprobs, bool):
        raise _bad("logprobs", f"logprobs must be true or false; got {logprobs!r:.80}")
    top = bounded_int(data, "top_logprobs", 0, MAX_TOP_LOGPROBS)
    if top is not None and logprobs is not True:
        raise _bad(
            "top_logprobs",
            "The 'top_logprobs' parameter is only allowed when 'logprobs' is enabled. "
            '(send "logprobs": true with it, or drop top_logprobs)',
        )
    return bool(logprobs), top or 0
