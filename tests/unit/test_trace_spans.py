"""The lean span recorder's rules: W3C traceparent, parent-based ratio sampling as the SDK's, ids, and
nothing made for an unsampled request (the export itself is tested end to end, test_tracing*.py)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace.sampling import TraceIdRatioBased

from llmkit.core import span_recorder, telemetry
from llmkit.core.span_recorder import RecordingSpan, Sampler, SpanContext, extract

TRACE, SPAN = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"


@pytest.fixture
def traced(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[object, ...]]]:
    """Tracing on at rate 1.0 in this process, the ended spans kept in a list (no exporter process)."""
    ended: list[tuple[object, ...]] = []

    class Kept:
        def ended(self, row: tuple[object, ...]) -> None:
            ended.append(row)

    monkeypatch.setattr(span_recorder, "active", Kept())
    monkeypatch.setattr(telemetry, "tracer", Sampler(1.0))
    yield ended


def test_a_traceparent_is_read_as_the_w3c_spec_says() -> None:
    found = extract(f"00-{TRACE}-{SPAN}-01", "vendor=1")
    assert found is not None
    assert (found.trace_id, found.span_id) == (int(TRACE, 16), int(SPAN, 16))
    assert found.sampled and found.remote
    assert found.tracestate == "vendor=1"
    assert extract(f"00-{TRACE}-{SPAN}-00").sampled is False  # type: ignore[union-attr]
    # A later version may add fields; version 00 may not; ff, zero ids, upper case and junk are invalid.
    assert extract(f"01-{TRACE}-{SPAN}-01-more") is not None
    for bad in (
        f"00-{TRACE}-{SPAN}-01-more",
        f"ff-{TRACE}-{SPAN}-01",
        f"00-{'0' * 32}-{SPAN}-01",
        f"00-{TRACE}-{'0' * 16}-01",
        f"00-{TRACE.upper()}-{SPAN}-01",
        "junk",
        f"00-{TRACE}-{SPAN}-01" + " " * 600,
    ):
        assert extract(bad) is None, bad


@pytest.mark.parametrize("rate", [0.0, 1e-9, 0.1, 0.5, 0.999, 1.0])
def test_the_ratio_bound_is_the_sdks(rate: float) -> None:
    assert Sampler(rate).bound == TraceIdRatioBased(rate).bound


def test_new_traces_are_kept_at_the_rate_and_children_follow_their_parent() -> None:
    sampler = Sampler(0.25)
    made = [sampler.start("s", span_recorder.SERVER, None, None) for _ in range(20_000)]
    share = sum(m.sampled for m in made) / len(made)
    assert 0.22 < share < 0.28
    # Ids are random and valid (never zero), one trace id per new trace.
    assert len({m.trace_id for m in made}) == len(made) and all(m.trace_id and m.span_id for m in made)
    for parent in made[:200]:
        child = sampler.start("c", span_recorder.INTERNAL, parent, None)
        assert child.sampled is parent.sampled and child.trace_id == parent.trace_id
        assert child.span_id != parent.span_id
    # A caller's decision wins over the rate, both ways.
    assert Sampler(0.0).start("s", 1, extract(f"00-{TRACE}-{SPAN}-01"), None).sampled
    assert not Sampler(1.0).start("s", 1, extract(f"00-{TRACE}-{SPAN}-00"), None).sampled


def test_spans_nest_and_carry_their_traceparent(traced: list[tuple[object, ...]]) -> None:
    with telemetry.span("outer", {"a": 1}) as outer:
        assert isinstance(outer, RecordingSpan)
        carried = telemetry.inject({"x": "y"})
        assert carried["traceparent"] == f"00-{outer.trace_id:032x}-{outer.span_id:016x}-01"
        assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-01", carried["traceparent"])
        with pytest.raises(KeyError), telemetry.client_span("inner", {"b": "c"}):
            telemetry.set_attribute("d", True)
            raise KeyError("a prompt, maybe")
    inner, done = traced
    assert done[0] == "outer" and inner[0] == "inner"
    assert inner[2] == done[2] and inner[4] == done[3]  # same trace; the parent is the outer span
    assert inner[1] == span_recorder.CLIENT and inner[9] == span_recorder.ERROR
    assert inner[8] == {"b": "c", "d": True, "error.type": "KeyError"}
    assert done[4] == 0 and done[8] == {"a": 1}
    start, end = done[6], done[7]
    assert isinstance(start, int) and isinstance(end, int) and start <= end
    assert telemetry.inject({"x": "y"}) == {"x": "y"}  # outside any span


def test_an_unsampled_request_makes_no_child_span(
    traced: list[tuple[object, ...]], monkeypatch: pytest.MonkeyPatch
) -> None:
    unsampled = SpanContext(int(TRACE, 16), int(SPAN, 16), False, False)
    token = span_recorder.current.set(unsampled)
    try:
        assert not telemetry.recording()
        # The one shared no-op: no span object, no attribute dict, no context change.
        assert telemetry.span("cache lookup") is telemetry.span("queue wait") is telemetry._NOOP
        assert telemetry.client_span("chat m", {"k": "v"}) is telemetry._NOOP
        assert telemetry.detached_span("coalescing wait") is telemetry._NOOP
        telemetry.set_attribute("llmkit.coalesced", True)
        # What it calls is told the trace is not sampled.
        assert telemetry.inject({})["traceparent"] == f"00-{TRACE}-{SPAN}-00"
    finally:
        span_recorder.current.reset(token)
    assert traced == []
