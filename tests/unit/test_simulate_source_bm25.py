"""Okapi BM25 and the question matcher: ranking, idf, saturation, length, coverage, threshold and ties."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmkit.simulate.sources.bm25 import Bm25
from llmkit.simulate.sources.matching import STOPWORDS
from llmkit.simulate.sources.questions import DEFAULT_THRESHOLD, QuestionMatcher, fold_suffix, question_terms

DOCS = [
    ["capital", "france"],
    ["capital", "germany"],
    ["capital", "japan"],
    ["river", "nile", "longest"],
]


def best_of(index: Bm25, query: list[str]) -> int:
    score, _ = index.scores(query)
    return max(score, key=lambda i: (score[i], -i))


def test_the_document_with_the_query_words_ranks_first() -> None:
    index = Bm25(DOCS)
    assert best_of(index, ["capital", "france"]) == 0
    assert best_of(index, ["longest", "river"]) == 3
    score, coverage = index.scores(["capital", "japan"])
    assert set(score) == {0, 1, 2}
    assert score[2] > score[0] == score[1]
    assert coverage[2] == pytest.approx(1.0)


def test_rare_words_weigh_more_than_common_ones() -> None:
    index = Bm25(DOCS)
    assert index.idf["capital"] < index.idf["france"]
    # Lucene's idf: ln(1 + (N - df + 0.5) / (df + 0.5)).
    assert index.idf["capital"] == pytest.approx(math.log(1 + (4 - 3 + 0.5) / (3 + 0.5)))
    # The document with the rare word beats the one with the common word.
    score, _ = Bm25(
        [["capital", "paris"], ["capital", "rome"], ["capital", "oslo"], ["france", "wine"]]
    ).scores(["capital", "france"])
    assert score[3] > score[0]


def test_term_frequency_saturates_and_long_documents_are_discounted() -> None:
    index = Bm25([["tea"], ["tea", "tea"], ["tea", "milk", "sugar", "cup", "hot"], ["coffee"]])
    score, _ = index.scores(["tea"])
    once, twice, long = score[0], score[1], score[2]
    assert once < twice < 2 * once
    assert long < once


def test_coverage_is_the_idf_share_of_the_query_and_unknown_words_lower_it() -> None:
    index = Bm25(DOCS)
    _, full = index.scores(["capital", "france"])
    assert full[0] == pytest.approx(1.0)
    _, partial = index.scores(["capital", "france", "zzzunknown"])
    expected = (index.idf["capital"] + index.idf["france"]) / (
        index.idf["capital"] + index.idf["france"] + index.unknown_idf
    )
    assert partial[0] == pytest.approx(expected)
    assert index.unknown_idf > max(index.idf.values())
    assert all(0 < c <= 1 for c in partial.values())


def test_no_shared_word_and_no_documents() -> None:
    assert Bm25(DOCS).scores(["nothing", "here"]) == ({}, {})
    assert Bm25([]).scores(["anything"]) == ({}, {})
    assert Bm25([[], ["a"]]).scores(["a"])[0].keys() == {1}


QUESTIONS = [
    "What is the capital of France?",
    "What is the capital of Germany?",
    "What is DNS?",
    "Apa itu DNS?",
    "How are you?",
    "Who are you?",
    "How do I convert Celsius to Fahrenheit?",
    "How do I convert Fahrenheit to Celsius?",
    "Apa ibu kota Prancis?",
    "Apa gunung tertinggi di dunia?",
    "How many planets are in the solar system?",
]


def test_a_paraphrase_finds_its_question() -> None:
    matcher = QuestionMatcher(QUESTIONS)
    assert matcher.best("Which city is the capital of France?") == 0
    assert matcher.best("germany capital") == 1
    assert matcher.best("Ibukota Prancis di mana?") == 8
    assert matcher.best("Gunung paling tinggi di dunia apa?") == 9
    assert matcher.best("how many planets does the solar system have") == 10


def test_the_threshold_decides_between_an_answer_and_none() -> None:
    prompt = "Which city is the capital of France?"
    assert QuestionMatcher(QUESTIONS).best(prompt) == 0
    # "city" is in no question: at threshold 1 every prompt word must be in the question.
    assert QuestionMatcher(QUESTIONS, threshold=1.0).best(prompt) is None
    assert QuestionMatcher(QUESTIONS, threshold=1.0).best("capital of France") == 0
    # Off topic: one shared common word among unknown ones covers too little.
    assert QuestionMatcher(QUESTIONS).best("What is the capital of Australia?") is None
    assert QuestionMatcher(QUESTIONS).best("Write a haiku about autumn leaves") is None
    found = QuestionMatcher(QUESTIONS).explain("What is the capital of Australia?")
    assert found is not None and found[0] in (0, 1) and 0 < found[1] < DEFAULT_THRESHOLD


def test_the_prompts_language_wins_a_tie_across_languages() -> None:
    matcher = QuestionMatcher(QUESTIONS)
    assert matcher.best("Apa itu DNS?") == 3
    assert matcher.best("What is DNS?") == 2
    assert matcher.best("jelaskan DNS dong") == 3
    # No language to go by: the lower index.
    assert matcher.best("DNS") == 2


def test_prompts_of_function_words_only_match_such_questions() -> None:
    matcher = QuestionMatcher(QUESTIONS)
    assert matcher.best("How are you?") == 4
    assert matcher.best("who are you") == 5
    assert matcher.best("what is it?") is None
    assert matcher.best("") is None


def test_ties_are_deterministic_and_word_order_breaks_them() -> None:
    matcher = QuestionMatcher(QUESTIONS)
    assert matcher.best("convert celsius to fahrenheit") == 6
    assert matcher.best("Fahrenheit to Celsius, how?") == 7
    assert all(QuestionMatcher(["alpha beta", "alpha beta"]).best("beta alpha") == 0 for _ in range(5))


def test_a_remembered_prompt_is_not_ranked_again(monkeypatch: pytest.MonkeyPatch) -> None:
    matcher = QuestionMatcher(QUESTIONS)
    assert matcher.best("capital of germany") == 1
    assert matcher.best("zzz qqq") is None

    def fail(prompt: str, threshold: float) -> tuple[int, float]:
        raise AssertionError("ranked again")

    monkeypatch.setattr(matcher, "_rank", fail)
    assert matcher.best("capital of germany") == 1
    assert matcher.best("zzz qqq") is None


def test_an_empty_question_set_matches_nothing() -> None:
    matcher = QuestionMatcher([])
    assert len(matcher) == 0 and matcher.best("anything at all") is None


def test_question_terms() -> None:
    assert question_terms(["gunung", "paling", "tinggi"]) == ["gunung", "tertinggi"]
    assert question_terms(["ibukota", "jerman"]) == ["ibu", "kota", "jerman"]
    assert question_terms(["the", "biggest", "planets"]) == ["largest", "planet"]
    assert question_terms(["gimana", "bikin", "teh"]) == ["teh"]
    assert not set(question_terms(sorted(STOPWORDS))) & STOPWORDS


@pytest.mark.parametrize(
    ("word", "folded"),
    [
        ("planets", "planet"),
        ("countries", "country"),
        ("inches", "inch"),
        ("boiling", "boil"),
        ("invented", "invent"),
        ("population", "popul"),
        ("populous", "popul"),
        ("speed", "speed"),
        ("during", "during"),
        ("glass", "glass"),
        ("nation", "nation"),
        ("café", "café"),
    ],
)
def test_fold_suffix(word: str, folded: str) -> None:
    assert fold_suffix(word) == folded


def _shipped_matcher() -> QuestionMatcher:
    from llmkit.simulate.sources.qa import SHIPPED_QA, load_qa

    return QuestionMatcher([row.pertanyaan for row in load_qa(SHIPPED_QA)])


SHIPPED = _shipped_matcher()
QUESTION_WORDS = sorted(
    {
        w
        for q in (
            "capital France",
            "ibu kota Prancis",
            "how are you",
            "paling tinggi gunung",
            "Fahrenheit to Celsius",
            "Celsius to Fahrenheit",
            "thank you",
            "apa itu DNS",
        )
        for w in q.split()
    }
)


@given(
    st.lists(
        st.one_of(st.sampled_from(QUESTION_WORDS), st.sampled_from(["zork", "qwx", "12345", "blarg"])),
        min_size=1,
        max_size=12,
    ).map(" ".join)
)
@settings(max_examples=300, deadline=None)
def test_a_prompt_ranked_by_its_shape_gets_what_ranking_it_directly_gives(prompt: str) -> None:
    # The shape memo (unknown words as placeholders) never changes an answer.
    expected = SHIPPED._rank(prompt, SHIPPED.threshold)[0]
    assert SHIPPED._find(prompt) == expected
    assert SHIPPED._find(prompt) == expected  # the memo's answer too


def test_prompts_that_differ_only_in_unknown_words_share_one_ranking() -> None:
    matcher = _shipped_matcher()
    calls = []
    real = matcher._rank_terms

    def counting(*args: object, **kwargs: object) -> tuple[int, float]:
        calls.append(args)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    matcher._rank_terms = counting  # type: ignore[method-assign]
    answers = {matcher.best(f"What is the capital of France? (request {n})") for n in range(10, 60)}
    assert len(answers) == 1 and answers != {None}
    assert len(calls) == 1
    # A different number of unknown words is a different shape: it may lower the coverage.
    matcher.best("What is the capital of France? zork blarg qwx")
    assert len(calls) == 2
