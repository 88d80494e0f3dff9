"""Prompt matching: normalised, IDF-weighted word overlap between a prompt and candidate key texts."""

from __future__ import annotations

import math
import random
import re
import unicodedata
from collections.abc import Iterable

from llmkit.core.memo import Memo

# Words that say nothing about the topic, in English and Indonesian; kept small on purpose, since a
# word missing here only adds a little noise while a topic word listed here would never match. Kept apart
# by language too: which of them a text uses says which language it is in (`language_of`).
ENGLISH_STOPWORDS = frozenset(
    """
    a an the is are was were be been being am do does did doing of to in on at by for from with about as
    into and or but if then than so that this these those it its i me my we our you your he she they them
    their his her what which who whom whose when where why how can could should would will shall may might
    must please tell explain give describe there here some any not no yes just also very
    """.split()
)
INDONESIAN_STOPWORDS = frozenset(
    """
    apa yang dan di ke dari ini itu adalah ialah merupakan untuk dengan pada dalam atau juga tidak bisa
    dapat akan sudah telah saya aku kamu anda kami kita mereka dia ia bagaimana mengapa kenapa kapan siapa
    mana berapa tolong mohon jelaskan sebutkan beri berikan buat buatkan tentang secara sebagai oleh lagi
    ada agar supaya karena jika kalau maka seperti hal cara para sebuah suatu pun nya lah kah dong ya
    """.split()
)
STOPWORDS = ENGLISH_STOPWORDS | INDONESIAN_STOPWORDS
_ENGLISH_CONTAINS = ENGLISH_STOPWORDS.__contains__
_INDONESIAN_ONLY_CONTAINS = (INDONESIAN_STOPWORDS - ENGLISH_STOPWORDS).__contains__

# Runs of two or more letters or digits: single characters say nothing about a topic.
_WORD = re.compile(r"[^\W_]{2,}")
# The same on lowercased ASCII text, where a letter or digit is one of these: a plain range is cheaper
# for the regex engine to test than a Unicode category.
_ASCII_WORD = re.compile(r"[a-z0-9]{2,}")


# The last text plain_words split and its words: a prompt the question-answer set does not answer is
# split again by the file source's Matcher in the same request.
_last_plain: tuple[str, list[str]] = ("", [])


def plain_words(text: str) -> list[str]:
    """Lowercased words of `text` without accents, punctuation or single characters (stopwords kept).

    The list is shared with the next caller for the same text: read it, do not change it."""
    global _last_plain
    last = _last_plain
    if last[0] is text:
        return last[1]
    found = _split_plain(text)
    _last_plain = (text, found)
    return found


def _split_plain(text: str) -> list[str]:
    if text.isascii():
        # ASCII has no accents to strip and casefolds to its lowercase: skip the per-character pass.
        return _ASCII_WORD.findall(text.lower())
    # NFKD splits "é" into "e" + a combining accent, which the category filter then drops.
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    plain = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return _WORD.findall(plain)


def words(text: str) -> list[str]:
    """Lowercased words of `text` without accents, punctuation, stopwords or single characters."""
    return [w for w in plain_words(text) if w not in STOPWORDS]


def language_of(plain: Iterable[str]) -> str | None:
    """The language ("en" or "id") whose stopwords `plain` (from `plain_words`) uses more; None if even."""
    # Counted in C: a word in both lists (none so far) counts as English.
    english = sum(map(_ENGLISH_CONTAINS, plain))
    indonesian = sum(map(_INDONESIAN_ONLY_CONTAINS, plain))
    if english == indonesian:
        return None
    return "en" if english > indonesian else "id"


class Matcher:
    """Finds the candidate whose key text shares the most (rare) words with a prompt.

    score = sum(idf(w) for w in prompt ∩ candidate) / sum(idf(w) for w in prompt), in [0, 1]: the share of
    the prompt's information the candidate covers. Rare words weigh more than ones every candidate has.
    Ties go to the candidate with fewer words (the more specific one), then to the lower index.
    """

    def __init__(self, keys: Iterable[str], threshold: float = 0.25) -> None:
        self.threshold = threshold
        word_sets = [frozenset(words(key)) for key in keys]
        self.size = len(word_sets)
        self._lengths = [len(ws) for ws in word_sets]
        # The inverted index means a prompt only touches candidates that share a word with it.
        self._index: dict[str, list[int]] = {}
        for i, ws in enumerate(word_sets):
            for w in ws:
                self._index.setdefault(w, []).append(i)
        # The words some candidate has, as a frozenset: intersecting a prompt's words with it gives one.
        self._vocabulary = frozenset(self._index)
        n = self.size
        self._idf = {w: math.log(1.0 + (n + 1) / (len(ids) + 1)) for w, ids in self._index.items()}
        # A prompt word no candidate has weighs as much as the rarest possible word: it lowers the score.
        self._unknown_idf = math.log(1.0 + (n + 1))
        # Prompts repeat (tests, retries, benchmarks, canned conversations) and the keys never change:
        # remember the best candidate per prompt, up to this many characters of prompts (-1: none).
        self._best: Memo[str, int] = Memo(max_weight=2_000_000)
        # The best candidate per (known words, count of unknown ones), weighed in words (see _find).
        self._by_words: Memo[tuple[frozenset[str], int], int] = Memo(max_weight=1_000_000)

    def __len__(self) -> int:
        return self.size

    def scores(self, prompt: str) -> dict[int, float]:
        """The score of every candidate sharing at least one word with `prompt`."""
        prompt_words = set(words(prompt))
        known = prompt_words & self._index.keys()
        return self._scores(known, len(prompt_words) - len(known))

    def _scores(self, known: Iterable[str], unknown: int) -> dict[int, float]:
        # Words no candidate has only add to the total, each as much as the rarest word could weigh.
        idf = self._idf
        ordered = sorted(known)  # one summation order in every process
        total = sum([idf[w] for w in ordered]) + unknown * self._unknown_idf
        if not total:
            return {}
        acc: dict[int, float] = {}
        index = self._index
        for w in ordered:
            weight = idf[w]
            for i in index[w]:
                acc[i] = acc.get(i, 0.0) + weight
        return {i: s / total for i, s in acc.items()}

    def best(self, prompt: str) -> int | None:
        """Index of the best candidate scoring at least `threshold`, or None."""
        best = self._best.get(prompt)
        if best is None:
            best = self._best.put(prompt, self._find(prompt), len(prompt) + 64)
        return None if best < 0 else best

    def choose(self, prompt: str, rng: random.Random) -> tuple[int, bool]:
        """The best candidate's index and True, or a random index (drawn from `rng`) and False."""
        found = self.best(prompt)
        if found is None:
            return rng.randrange(self.size), False
        return found, True

    def _find(self, prompt: str) -> int:
        # The best candidate depends only on the prompt's words that some candidate has and on how many
        # others it has: prompts that differ in words no candidate has (a counter, a name, an id in a
        # load test's template) share one ranking.
        prompt_words = set(plain_words(prompt))
        prompt_words -= STOPWORDS  # set(words(prompt)), in C
        known = self._vocabulary.intersection(prompt_words)
        key = (known, len(prompt_words) - len(known))
        best = self._by_words.get(key)
        if best is None:
            best = self._by_words.put(key, self._rank(*key), len(known) + 1)
        return best

    def _rank(self, known: frozenset[str], unknown: int) -> int:
        found = self._scores(known, unknown)
        if not found:
            return -1
        lengths = self._lengths
        # Round so float noise from summation order never decides a tie.
        i = min(found, key=lambda i: (-round(found[i], 9), lengths[i], i))
        return i if found[i] >= self.threshold else -1
