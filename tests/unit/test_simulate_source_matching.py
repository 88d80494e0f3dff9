"""Prompt matching: normalised word overlap, stopwords, threshold and the random fallback."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from llmkit.simulate.sources.matching import STOPWORDS, Matcher, words

CANDIDATES = [
    "Resep Nasi Goreng Kampung sederhana dengan telur dan kecap",
    "Making concurrent HTTP requests in Python with asyncio",
    "Perbedaan TCP dan UDP: protokol lapisan transport",
    "SQL window functions explained: ROW_NUMBER, RANK, LAG",
    "Café crème brûlée: a French dessert recipe",
]


def test_words_lowercases_and_strips_accents_punctuation_and_stopwords() -> None:
    assert words("What is the Crème Brûlée?!") == ["creme", "brulee"]
    assert words("Apa yang dimaksud dengan nasi-goreng, dan di mana?") == ["dimaksud", "nasi", "goreng"]
    assert words("a I x 😀 …") == []


def test_stopwords_cover_english_and_indonesian() -> None:
    assert {"the", "a", "is", "what", "how", "apa", "yang", "dan", "di", "bagaimana"} <= STOPWORDS


def test_best_match_wins() -> None:
    matcher = Matcher(CANDIDATES)
    assert matcher.best("How do I make HTTP requests concurrently with asyncio in Python?") == 1
    assert matcher.best("bagaimana cara membuat nasi goreng?") == 0
    assert matcher.best("apa perbedaan tcp dan udp") == 2
    assert matcher.best("explain SQL window functions like rank") == 3


def test_case_accents_and_punctuation_are_ignored() -> None:
    matcher = Matcher(CANDIDATES)
    assert matcher.best("CREME BRULEE") == 4
    assert matcher.best("crème-brûlée!!!") == 4
    assert matcher.best("  nasi   GORENG ... ") == 0


def test_indonesian_stopwords_alone_do_not_match() -> None:
    matcher = Matcher(CANDIDATES)
    # "dan" appears in two candidates, but it says nothing about the topic.
    assert matcher.best("apa yang dan di") is None


def test_below_threshold_is_none() -> None:
    matcher = Matcher(CANDIDATES, threshold=0.25)
    assert matcher.best("Hello!") is None
    assert matcher.best("") is None
    # One shared word among many unknown ones covers too little of the prompt.
    assert (
        matcher.best("python tell me about quantum chromodynamics gluons quarks and lattice theory") is None
    )


def test_ties_are_broken_deterministically() -> None:
    matcher = Matcher(["alpha beta gamma", "alpha beta", "alpha beta"])
    # Same coverage: the candidate with fewer words wins, then the lower index.
    assert matcher.best("alpha beta") == 1
    assert all(Matcher(["xx yy", "xx yy"]).best("yy xx") == 0 for _ in range(5))


def test_rare_words_weigh_more_than_common_ones() -> None:
    matcher = Matcher(["python asyncio", "python list", "python dict", "go channels"])
    assert matcher.best("python asyncio") == 0
    assert matcher.best("asyncio python tips") == 0


def test_no_candidates() -> None:
    matcher = Matcher([])
    assert len(matcher) == 0
    assert matcher.best("anything at all") is None


def test_random_fallback_is_repeatable_with_a_seeded_random() -> None:
    matcher = Matcher(CANDIDATES)
    prompts = ["Hello!", "xyzzy", "tell me a joke", "hmm"]

    def picks(seed: int) -> list[int]:
        rng = random.Random(seed)
        out = []
        for prompt in prompts:
            found = matcher.best(prompt)
            out.append(found if found is not None else rng.randrange(len(matcher)))
        return out

    assert picks(42) == picks(42)
    assert all(matcher.best(p) is None for p in prompts)


def test_large_candidate_set_still_finds_the_right_one() -> None:
    keys = [f"topic{i} subject{i % 37} common words here" for i in range(1000)]
    matcher = Matcher(keys)
    assert matcher.best("tell me about topic777") == 777
    assert matcher.scores("unrelated") == {}


@given(
    st.lists(
        st.sampled_from([*sorted({w for c in CANDIDATES for w in words(c)}), "zork", "99", "blarg", "qq"]),
        min_size=1,
        max_size=10,
    ).map(" ".join)
)
@settings(max_examples=300, deadline=None)
def test_the_known_words_memo_gives_what_scoring_the_prompt_gives(prompt: str) -> None:
    matcher = Matcher(CANDIDATES)
    found = matcher.scores(prompt)
    expected = -1
    if found:
        best = min(found, key=lambda i: (-round(found[i], 9), matcher._lengths[i], i))
        expected = best if found[best] >= matcher.threshold else -1
    assert matcher._find(prompt) == expected
    assert matcher._find(prompt + " zzz") == matcher._rank(*_known(matcher, prompt + " zzz"))


def _known(matcher: Matcher, prompt: str) -> tuple[frozenset[str], int]:
    ws = set(words(prompt))
    known = frozenset(w for w in ws if w in matcher._index)
    return known, len(ws) - len(known)


def test_prompts_that_differ_only_in_unknown_words_are_ranked_once() -> None:
    matcher = Matcher(CANDIDATES)
    ranked = []
    real = matcher._rank
    matcher._rank = lambda known, unknown: ranked.append(known) or real(known, unknown)  # type: ignore[method-assign]
    found = {matcher.best(f"concurrent HTTP requests in Python, run {n}") for n in range(10, 30)}
    assert found == {1} and len(ranked) == 1
