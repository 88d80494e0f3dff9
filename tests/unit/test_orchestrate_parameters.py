"""check_parameters on any JSON: the parameters back unchanged, or a 400 naming one of them; never a crash."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from llmkit.core.http import ApiError
from llmkit.core.sampling import INT64_MAX
from llmkit.orchestrate.parameters import INTEGERS, NUMBERS, check_parameters

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
NAMES = st.sampled_from([*NUMBERS, *INTEGERS, "n", "seed", "stop", "stream", "logit_bias", "user"])


@given(st.dictionaries(NAMES | st.text(max_size=8), JSON, max_size=4))
def test_any_json_parameters_are_accepted_or_400_naming_one(parameters: dict[str, Any]) -> None:
    try:
        assert check_parameters(parameters) == parameters
    except ApiError as exc:
        assert exc.status == 400 and exc.code == "invalid_parameter"
        name = exc.extra["param"].removeprefix("parameters.")
        assert name in parameters and exc.extra["param"] in exc.message


@given(
    st.integers(min_value=1, max_value=INT64_MAX),
    st.floats(min_value=0, max_value=2),
    st.floats(min_value=0, max_value=1),
)
def test_values_in_range_are_accepted(max_tokens: int, temperature: float, top_p: float) -> None:
    parameters = {"max_tokens": max_tokens, "temperature": temperature, "top_p": top_p, "n": 1}
    assert check_parameters(parameters) == parameters
