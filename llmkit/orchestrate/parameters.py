"""Validation of a job's `parameters`: sampling values checked as the simulator and the gateway check them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from llmkit.core.http import ApiError
from llmkit.core.sampling import INT64_MAX, MAX_STOP, SAMPLING_RANGES, is_int, is_stop

# name -> (low, high) for numbers; OpenAI's ranges, which the simulator and Ollama accept too.
NUMBERS: dict[str, tuple[float, float]] = {
    **{name: (float(low), float(high)) for name, (low, high) in SAMPLING_RANGES.items()},
    "repeat_penalty": (0.0, 100.0),
    "min_p": (0.0, 1.0),
}
# name -> the smallest valid integer; the token limits under OpenAI's and Ollama's names.
INTEGERS: dict[str, int] = {"max_tokens": 1, "max_completion_tokens": 1, "num_predict": 1, "top_k": 1}


def _bad(name: str, message: str) -> ApiError:
    return ApiError(400, "invalid_parameter", message, param=f"parameters.{name}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check(name: str, value: Any) -> None:
    if name in NUMBERS:
        low, high = NUMBERS[name]
        if not _is_number(value) or not low <= value <= high:
            raise _bad(name, f"parameters.{name} must be a number from {low:g} to {high:g}; got {value!r}")
    elif name in INTEGERS:
        low_int = INTEGERS[name]
        if not is_int(value, low_int):
            raise _bad(
                name, f"parameters.{name} must be an integer from {low_int} to {INT64_MAX}; got {value!r}"
            )
    elif name == "n":
        # A job has one result: more choices would cost tokens no client can read (as in the gateway).
        if type(value) is not int or value != 1:
            raise _bad(name, f"parameters.n must be 1 (a job has one result); got {value!r}")
    elif name == "seed":
        if not is_int(value):
            raise _bad(name, f"parameters.seed must be a 64-bit integer; got {value!r}")
    elif name == "stop":
        if not is_stop(value):
            message = f"parameters.stop must be a string or a list of up to {MAX_STOP} strings; got {value!r}"
            raise _bad(name, message)
    elif name == "stream":
        raise _bad(name, "parameters.stream is not a sampling parameter; send stream at the top level")


def check_parameters(parameters: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters unchanged, or a 400 naming the first invalid one and what is valid."""
    for name, value in parameters.items():
        if value is None:
            continue  # JSON null: the backend's default, as if the key were absent
        _check(name, value)
    return dict(parameters)
