"""The gateway's chat validation: what the fuzzer found it let through or choked on."""

from __future__ import annotations

from typing import Any

import pytest

from llmkit.core.http import ApiError
from llmkit.gateway.chat import build_request

HI = [{"role": "user", "content": "Hi"}]


def rejected(body: dict[str, Any]) -> ApiError:
    with pytest.raises(ApiError) as caught:
        build_request(body, "m")
    assert caught.value.status == 400
    return caught.value


@pytest.mark.parametrize("role", [{}, [], 1, None])
def test_a_role_of_another_type_is_a_400_not_a_500(role: Any) -> None:
    # {} used to reach `role in frozenset(...)` and raise TypeError (unhashable): a 500.
    assert rejected({"messages": [{"role": role, "content": "x"}]}).extra["param"] == "messages[0].role"


def test_each_max_tokens_spelling_is_checked_on_its_own() -> None:
    # A valid num_predict after it used to hide max_completion_tokens: 0.
    error = rejected({"messages": HI, "options": {"max_completion_tokens": 0, "num_predict": 1}})
    assert error.extra["param"] == "max_completion_tokens"
    rejected({"messages": HI, "max_tokens": 2**63})


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("options", [None]),
        ("seed", "1"),
        ("seed", 1.5),
        ("stop", ["a", "b", "c", "d", "e"]),
        ("response_format", {"type": "xml"}),
        ("response_format", {"type": "json_schema"}),
        ("response_format", {"type": "json_schema", "json_schema": {"name": "a b"}}),
        ("response_format", {"type": "json_schema", "json_schema": {"name": "a", "strict": 1}}),
    ],
)
def test_fields_an_upstream_would_refuse_are_refused_here(field: str, value: Any) -> None:
    # Relayed, they came back as the upstream's 400 wrapped in a 502.
    assert rejected({"messages": HI, field: value}).extra["param"] == field


def test_a_name_that_is_not_a_string_is_refused_not_dropped() -> None:
    error = rejected({"messages": [{"role": "user", "content": "x", "name": {}}]})
    assert error.extra["param"] == "messages[0].name"


def test_valid_fields_still_pass() -> None:
    req = build_request(
        {
            "messages": HI,
            "seed": -(2**63),
            "stop": ["a", "b", "c", "d"],
            "options": {"num_predict": 5},
            "response_format": {"type": "json_schema", "json_schema": {"name": "answer", "strict": True}},
        },
        "m",
    )
    assert req.call.params["max_tokens"] == 5 and req.call.params["seed"] == -(2**63)


def test_a_null_strict_is_absent_as_the_simulator_reads_it() -> None:
    # The gateway must not refuse what its upstreams accept: OpenAI and the simulator take null as unset.
    body = {
        "messages": HI,
        "response_format": {"type": "json_schema", "json_schema": {"name": "a", "strict": None}},
    }
    req = build_request(body, "m")
    assert req.call.params["response_format"]["json_schema"]["strict"] is None
