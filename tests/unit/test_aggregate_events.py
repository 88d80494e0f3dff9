"""Event validation: the fast path and the error explainer agree on every input; timestamps; body shapes."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmkit.aggregate.events import InvalidEvents, _row, explain, rows_of, timestamp_ms

VALID = {
    "event_id": "e-1",
    "topic": "t",
    "source": "s",
    "payload": {"message": "m", "timestamp": "2025-10-28T10:00:00Z"},
    "timestamp": "2025-10-28T10:00:00Z",
}
ANY_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
    st.sampled_from(["", "2025-10-28T10:00:00Z", "2025-10-28", "2025-10-28T10:00:00+07:00", "nope"]),
    st.dictionaries(st.sampled_from(["message", "timestamp", "x"]), st.text(max_size=4), max_size=3),
)


@st.composite
def event_like(draw: st.DrawFn) -> Any:
    """Valid events with some fields dropped or replaced by anything."""
    event: dict[str, Any] = {**VALID, "payload": dict(VALID["payload"])}
    for key in ("event_id", "topic", "source", "payload", "timestamp"):
        choice = draw(st.sampled_from(["keep", "keep", "drop", "replace"]))
        if choice == "drop":
            del event[key]
        elif choice == "replace":
            event[key] = draw(ANY_VALUE)
    if isinstance(event.get("payload"), dict):
        for key in ("message", "timestamp"):
            choice = draw(st.sampled_from(["keep", "keep", "drop", "replace"]))
            if choice == "drop":
                event["payload"].pop(key, None)
            elif choice == "replace":
                event["payload"][key] = draw(ANY_VALUE)
    return event if draw(st.integers(0, 20)) else draw(ANY_VALUE)


@settings(max_examples=500, deadline=None)
@given(event_like())
def test_the_fast_path_accepts_exactly_what_the_explainer_finds_no_fault_in(event: Any) -> None:
    assert (_row(event) is None) == bool(explain(event, ["body"]))


def test_a_valid_event_becomes_its_row_with_the_seed_fields_only() -> None:
    topic, event_id, source, ts, doc = rows_of({"events": [{**VALID, "extra_top_level": 1}]})[0]
    assert (topic, event_id, source) == ("t", "e-1", "s")
    assert ts == 1761645600000
    assert orjson.loads(doc) == VALID


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2025-10-28T10:00:00Z", 1761645600000),
        ("2025-10-28T10:00:00", 1761645600000),  # naive reads as UTC
        ("2025-10-28T17:00:00+07:00", 1761645600000),
        ("2025-10-28T10:00:00.250Z", 1761645600250),
        ("2025-10-28", 1761609600000),
        (1761645600, 1761645600000),
        (1761645600.5, 1761645600500),
        (1761645600000, 1761645600000),  # above 2e10: milliseconds already
        ("tomorrow", None),
        (1e300, None),  # beyond year 9999: would not fit the store's 64-bit column
        (-(10**20), None),
        (True, None),
        (None, None),
    ],
)
def test_timestamps(value: Any, expected: int | None) -> None:
    assert timestamp_ms(value) == expected


def test_all_problems_of_a_batch_are_listed_and_none_is_stored() -> None:
    with pytest.raises(InvalidEvents) as caught:
        rows_of({"events": [VALID, {"topic": "t"}, VALID, 3]})
    locs = [entry["loc"] for entry in caught.value.detail]
    assert ["body", "events", 1, "event_id"] in locs and ["body", "events", 3] in locs
    assert not any(loc[2] in (0, 2) for loc in locs if len(loc) > 2)


def test_a_bare_event_and_a_list_are_batches_too() -> None:
    assert len(rows_of(VALID)) == 1
    assert len(rows_of([VALID, VALID])) == 2
    with pytest.raises(InvalidEvents) as caught:
        rows_of({"topic": "t"})
    assert ["body", "event_id"] in [entry["loc"] for entry in caught.value.detail]
