"""Which question of a question-answer set a prompt asks: BM25 over normalised words, a coverage threshold."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from llmkit.core.memo import Memo
from llmkit.simulate.sources.bm25 import Bm25
from llmkit.simulate.sources.matching import STOPWORDS, language_of, plain_words

# The share of a prompt's information (idf-weighted words) the best question must have. Chosen on
# bench/data/qa_paraphrases_dev.jsonl (236 prompts): 86.6% top-1 with 2 of its 34 off-topic prompts
# matched, as many as at 0.4 (84.2%); at 0.3 three were. bench/simulate_match.py measures held-out ones.
DEFAULT_THRESHOLD = 0.35

# Forms people type for the words the questions use (both sides are folded, so either may appear in a
# question): informal Indonesian, compounds written as one word, abbreviations, British spellings.
THESAURUS = {
    "biggest": "largest",
    "bigger": "larger",
    "tallest": "highest",
    "tiniest": "smallest",
    "metre": "meter",
    "metres": "meters",
    "centimetre": "centimeter",
    "centimetres": "centimeters",
    "kilometre": "kilometer",
    "kilometres": "kilometers",
    "litre": "liter",
    "litres": "liters",
    "km": "kilometer",
    "cm": "centimeter",
    "kg": "kilogram",
    "kilo": "kilogram",
    "uk": "united kingdom",
    "usa": "united states",
    "thx": "thank",
    "smartphone": "phone",
    "cellphone": "phone",
    "ibukota": "ibu kota",
    "wapres": "wakil presiden",
    "makasih": "terima kasih",
    "trims": "terima kasih",
    "gimana": "bagaimana",
    "bikin": "buat",
    "nggak": "tidak",
    "gak": "tidak",
    "enggak": "tidak",
    "handphone": "hp",
    "ponsel": "hp",
    "hape": "hp",
}
# Light suffix folding ("planets" meets "planet", "population" meets "populous"), tried in this order;
# at least four letters stay, so short words ("speed", "nation", "during") are left alone.
_SUFFIXES = ("ations", "ation", "ous", "ing", "ed", "ly", "ies", "es", "s")
_MIN_STEM = 4
_EPSILON = 1e-9


def fold_suffix(word: str) -> str:
    """`word` without one common English suffix (-s, -es, -ies -> -y, -ing, -ed, -ly, -ous, -ation)."""
    if len(word) <= _MIN_STEM or not word.isascii() or word.endswith("ss"):
        return word
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= _MIN_STEM:
            return word[: -len(suffix)] + ("y" if suffix == "ies" else "")
    return word


def question_terms(plain: Sequence[str]) -> list[str]:
    """The words a question (or prompt) is matched on, from its `plain_words`: Indonesian `paling X` as
    `terX`, thesaurus forms, no stopwords, suffixes folded."""
    out: list[str] = []
    i, n = 0, len(plain)
    while i < n:
        w = plain[i]
        i += 1
        if w == "paling" and i < n:
            # "paling besar" is "terbesar": the superlative both ways.
            w = "ter" + plain[i]
            i += 1
        parts = _WORD_TERMS.get(w)
        if parts is None:
            if w.isdigit():
                # A number is its own term (no thesaurus entry, stopword or suffix) and a load test's
                # counter is new every time: not worth remembering.
                out.append(w)
                continue
            parts = _WORD_TERMS.put(w, _terms_of_word(w), len(w) + 16)
        out.extend(parts)
    return out


def _terms_of_word(w: str) -> tuple[str, ...]:
    return tuple(fold_suffix(part) for part in THESAURUS.get(w, w).split() if part not in STOPWORDS)


# The terms of each word seen (prompts reuse words): one lookup a word instead of the folding.
_WORD_TERMS: Memo[str, tuple[str, ...]] = Memo(max_weight=2_000_000)
# Stands for the n-th distinct word of a prompt that no question has: never a word (words hold no NUL).
_UNKNOWN = tuple(f"\x00{n}" for n in range(64))


Terms = Callable[[Sequence[str]], list[str]]


class QuestionMatcher:
    """Finds the question a prompt asks, or None when no question covers enough of it.

    Questions are ranked with BM25 over `terms` (content words); among those whose coverage of the prompt
    reaches `threshold`, the best-ranked one in the prompt's language wins (else the best-ranked one in
    any language: "Apa itu DNS?" gets the Indonesian answer, not the English one it ties with). A prompt
    of function words only ("How are you?") is ranked on all its words against the questions that have
    no content words either. Ties go to the question sharing more word pairs in order ("Fahrenheit to
    Celsius" is not "Celsius to Fahrenheit"), then fewer words, then the lower index.
    """

    def __init__(
        self, questions: Sequence[str], threshold: float = DEFAULT_THRESHOLD, terms: Terms = question_terms
    ) -> None:
        self.threshold = threshold
        self.size = len(questions)
        self._terms = terms
        plains = [plain_words(q) for q in questions]
        term_lists = [terms(p) for p in plains]
        self._languages = [language_of(p) for p in plains]
        # Each question's words as its index ranks them: content words, or all words when it has none.
        ranked = [t or p for t, p in zip(term_lists, plains, strict=True)]
        self._pairs = [frozenset(zip(r, r[1:], strict=False)) for r in ranked]
        self._content = Bm25(term_lists)
        self._function_ids = [i for i, t in enumerate(term_lists) if not t]
        self._function = Bm25([plains[i] for i in self._function_ids])
        # Prompts repeat (load tests, retries, canned conversations) and the questions never change:
        # remember the answer per prompt, up to this many characters of prompts (-1: none).
        self._best: Memo[str, int] = Memo(max_weight=2_000_000)
        # The answer per prompt shape (see _find), weighed in words.
        self._by_shape: Memo[tuple[bool, tuple[str, ...], str | None], int] = Memo(max_weight=1_000_000)

    def __len__(self) -> int:
        return self.size

    def best(self, prompt: str) -> int | None:
        """Index of the question `prompt` asks (coverage >= threshold), or None."""
        best = self._best.get(prompt)
        if best is None:
            best = self._best.put(prompt, self._find(prompt), len(prompt) + 64)
        return None if best < 0 else best

    def explain(self, prompt: str) -> tuple[int, float] | None:
        """The best-ranked question for `prompt` and its coverage, whatever the threshold; None if none."""
        found, coverage = self._rank(prompt, 0.0)
        return None if found < 0 else (found, coverage)

    def _find(self, prompt: str) -> int:
        # The ranking depends only on the prompt's language and its terms in order, where every word no
        # question has counts the same whatever it is: prompts that differ only in such words (a counter,
        # a name, an id in a load test's template) share one ranking. They stand as _UNKNOWN placeholders.
        plain = plain_words(prompt)
        terms = self._terms(plain)
        content = bool(terms)
        vocabulary = (self._content if content else self._function).vocabulary
        seen: dict[str, str] = {}
        shape = []
        for w in terms if content else plain:
            if w in vocabulary:
                shape.append(w)
                continue
            placeholder = seen.get(w)
            if placeholder is None:
                if len(seen) == len(_UNKNOWN):  # too many unknown words to stand for: rank as they are
                    return self._rank_terms(terms, plain, self.threshold)[0]
                placeholder = seen[w] = _UNKNOWN[len(seen)]
            shape.append(placeholder)
        key = (content, tuple(shape), language_of(plain))
        best = self._by_shape.get(key)
        if best is None:
            terms, plain = (shape, plain) if content else ([], shape)
            best = self._by_shape.put(
                key, self._rank_terms(terms, plain, self.threshold, key[2])[0], len(shape) + 4
            )
        return best

    def _rank(self, prompt: str, threshold: float) -> tuple[int, float]:
        plain = plain_words(prompt)
        return self._rank_terms(self._terms(plain), plain, threshold)

    def _rank_terms(
        self, terms: list[str], plain: list[str], threshold: float, language: str | None | bool = False
    ) -> tuple[int, float]:
        index, ids = self._content, None
        if not terms:
            index, ids, terms = self._function, self._function_ids, plain
        score, coverage = index.scores(terms)
        # A margin, so float noise from summation order never decides a threshold or a tie.
        least = threshold - _EPSILON
        passing = [i for i, c in coverage.items() if c >= least]
        if not passing:
            return -1, 0.0
        if language is False:
            language = language_of(plain)
        if language is not None:
            languages = self._languages
            if ids is None:
                same = [i for i in passing if languages[i] in (language, None)]
            else:
                same = [i for i in passing if languages[ids[i]] in (language, None)]
            passing = same or passing
        top = max(score[i] for i in passing) - _EPSILON
        tied = [i for i in passing if score[i] >= top]
        chosen = tied[0] if len(tied) == 1 else self._break_tie(tied, terms, index, ids)
        return (chosen if ids is None else ids[chosen]), coverage[chosen]

    def _break_tie(self, tied: list[int], terms: list[str], index: Bm25, ids: list[int] | None) -> int:
        pairs = set(zip(terms, terms[1:], strict=False))
        lengths = index.lengths

        def key(i: int) -> tuple[int, int, int]:
            question = i if ids is None else ids[i]
            return (-len(pairs & self._pairs[question]), lengths[i], i)

        return min(tied, key=key)
