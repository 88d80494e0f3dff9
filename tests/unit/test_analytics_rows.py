"""rows_of: a batch checked a column at a time gives exactly the rows to_row gives record by record."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from llmkit.platform.analytics.record import MAX_INT, QueryRecord, rows_of, to_row

USUAL = QueryRecord(
    1.7e9, "t1", "k1", "/v1/chat/completions", "m", "Hello  World", 200, 3.5, None, 5, 7, False, True, "u"
)

texts = st.one_of(
    st.sampled_from(["", "t1", "Hello  World", "ß Straße", "x\x00y", "lone \ud800", "é"]), st.text()
)
floats = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 5))
counts = st.one_of(st.integers(-5, 2000), st.integers(MAX_INT - 2, MAX_INT + 2), st.booleans())


@st.composite
def records(draw: st.DrawFn) -> QueryRecord:
    """A usual record with some fields replaced by anything a buggy upstream or client could put there."""
    rec = USUAL
    if draw(st.booleans()):
        rec = rec._replace(query=draw(texts), model=draw(texts))
    if draw(st.booleans()):
        rec = rec._replace(tenant_id=draw(texts), key_id=draw(texts), upstream=draw(texts))
    if draw(st.booleans()):
        rec = rec._replace(
            ts=draw(floats), latency_ms=draw(floats), ttfb_ms=draw(st.one_of(st.none(), floats))
        )
    if draw(st.booleans()):
        rec = rec._replace(status=draw(counts), tokens_in=draw(counts), tokens_out=draw(counts))
    if draw(st.booleans()):
        rec = rec._replace(cached=draw(st.one_of(st.booleans(), st.integers(0, 1))))
    return rec


@settings(max_examples=400, deadline=None)
@given(st.lists(records(), min_size=1, max_size=40))
def test_rows_of_a_batch_equal_to_row_of_each_record(batch: list[QueryRecord]) -> None:
    assert rows_of(batch) == [to_row(rec) for rec in batch]


def test_the_usual_batch_is_normalised_without_repairs() -> None:
    batch = [
        USUAL,
        USUAL._replace(query="  What IS\tthis?  ", ttfb_ms=1.25),
        USUAL._replace(query="x" * 3000),
    ]
    rows = rows_of(batch)
    assert [row[5] for row in rows] == ["hello world", "what is this?", "x" * 512]
    assert rows[1][8] == 1.25 and rows[0][8] is None
    assert rows[0] == (
        1.7e9,
        "t1",
        "k1",
        "/v1/chat/completions",
        "m",
        "hello world",
        200,
        3.5,
        None,
        5,
        7,
        False,
        True,
        "u",
    )


def test_plain_tuples_are_records_too() -> None:
    assert rows_of([tuple(USUAL)]) == [to_row(USUAL)]
    assert rows_of([]) == []
