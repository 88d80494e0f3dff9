"""Keyword search's pure parts: which query words pick the candidates, and the highlight window."""

from __future__ import annotations

import pytest

from llmkit.platform.store import documents_sql as ds


def test_the_rarest_words_pick_the_candidates_within_the_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ds, "CANDIDATE_BUDGET", 110)
    df = {"the": 900, "port": 400, "kafka": 30, "broker": 60, "zookeeper": 20}
    words = ["the", "kafka", "broker", "port", "zookeeper", "unknown"]
    assert ds.rare_words(words, df, 10_000) == (["kafka", "broker", "zookeeper"], ["port", "the"])
    # The rarest word is always a candidate picker, even past the budget; absent words are in neither.
    assert ds.rare_words(["the", "port"], df, 10_000) == (["port"], ["the"])  # 400 > 110
    assert ds.rare_words(["unknown"], df, 10_000) == ([], [])
    assert ds.search_statement("sqlite", "t1", ["unknown"], df, 10_000, 10, None) is None


def test_words_in_half_the_chunks_or_more_weigh_nothing_and_are_left_out() -> None:
    df = {"the": 900, "port": 450, "kafka": 30}
    assert ds.rare_words(["the", "port", "kafka"], df, 1800) == (["port", "kafka"], [])
    assert ds.rare_words(["the", "port", "kafka"], df, 1801) == (["port", "kafka"], ["the"])
    # A query of only such words still searches them all.
    assert ds.rare_words(["the", "port"], df, 900) == (["port"], ["the"])


def test_a_search_of_only_rare_words_is_one_fts_match() -> None:
    statement = ds.search_statement("sqlite", "t1", ["kafka"], {"kafka": 3}, 100, 5, None)
    assert statement is not None
    sql, params = statement
    assert params == ('"kafka"', "t1", 5) and "UNION" not in sql
    sql, params = ds.search_statement(
        "sqlite", "t1", ["kafka", "the"], {"kafka": 3, "the": 2000}, 10_000, 5, None
    ) or ("", ())
    assert params == ('("kafka") AND ("the")', "t1", 5, '("kafka") NOT ("the")') and "UNION ALL" in sql


def test_the_highlight_is_the_window_with_the_most_distinct_words() -> None:
    text = " ".join(["filler"] * 30 + ["kafka", "and", "the", "broker"] + ["filler"] * 30 + ["kafka"])
    marked = ds.highlight(text, ["kafka", "broker"])
    assert marked.startswith("…") and marked.endswith("…")
    assert "<mark>kafka</mark> and the <mark>broker</mark>" in marked
    assert len(marked.replace("<mark>", "").replace("</mark>", "").strip("…").split()) == ds.HIGHLIGHT_WORDS
    assert ds.highlight("short kafka text", ["kafka"]) == "short <mark>kafka</mark> text"
    assert ds.highlight("Ärger in Köln", ["köln"]) == "Ärger in <mark>Köln</mark>"
    assert ds.highlight("nothing here", ["kafka"]) == ""
