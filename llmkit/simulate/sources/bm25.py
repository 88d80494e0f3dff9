"""Okapi BM25: documents (word lists) ranked for a query by the rare words they share with it."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

# The usual Okapi constants: how fast a repeated word stops adding (k1) and how much a long document is
# discounted (b).
K1 = 1.2
B = 0.75


class Bm25:
    """An inverted index of documents, scored with Okapi BM25 and with the query's coverage.

    score(q, d) = sum over q's distinct words w in d of
        idf(w) * tf(w, d) * (k1 + 1) / (tf(w, d) + k1 * (1 - b + b * len(d) / average len))
    with idf(w) = ln(1 + (N - df(w) + 0.5) / (df(w) + 0.5)) (Lucene's form: never negative).

    coverage(q, d) = sum(idf(w) for w in q and d) / sum(idf(w) for w in q), in [0, 1]: the share of the
    query's information the document has, where a word no document has weighs as much as the rarest word
    could (it lowers every document's coverage). It is BM25 without term frequency and length, over its
    maximum: a score that means the same whatever the query's length, so one threshold fits all queries.
    """

    def __init__(self, docs: Sequence[Sequence[str]], k1: float = K1, b: float = B) -> None:
        n = len(docs)
        self.size = n
        self.lengths = [len(doc) for doc in docs]
        average = sum(self.lengths) / n if n else 0.0
        counts: list[dict[str, int]] = []
        df: dict[str, int] = {}
        for doc in docs:
            tf: dict[str, int] = {}
            for w in doc:
                tf[w] = tf.get(w, 0) + 1
            counts.append(tf)
            for w in tf:
                df[w] = df.get(w, 0) + 1
        self.idf = {w: math.log(1.0 + (n - c + 0.5) / (c + 0.5)) for w, c in df.items()}
        self.unknown_idf = math.log(1.0 + (n + 0.5) / 0.5)
        postings: dict[str, list[tuple[int, float]]] = {}
        for i, tf in enumerate(counts):
            norm = k1 * (1.0 - b + b * self.lengths[i] / average) if average else k1
            for w, f in tf.items():
                postings.setdefault(w, []).append((i, self.idf[w] * f * (k1 + 1.0) / (f + norm)))
        # Per word: (its idf, the documents having it with their part of the score); one lookup a word.
        self._postings = {w: (self.idf[w], tuple(docs_of)) for w, docs_of in postings.items()}
        # The words some document has (`w in vocabulary`).
        self.vocabulary = self._postings.keys()

    def __len__(self) -> int:
        return self.size

    def scores(self, query: Iterable[str]) -> tuple[dict[int, float], dict[int, float]]:
        """(BM25 score, coverage) of every document sharing a word with `query`; empty dicts if none."""
        # dict.fromkeys keeps the query's order, so sums add up the same way in every process.
        terms = dict.fromkeys(query)
        postings = self._postings
        unknown = self.unknown_idf
        total = 0.0
        score: dict[int, float] = {}
        covered: dict[int, float] = {}
        for w in terms:
            found = postings.get(w)
            if found is None:
                total += unknown
                continue
            idf, docs_of = found
            total += idf
            for i, part in docs_of:
                score[i] = score.get(i, 0.0) + part
                covered[i] = covered.get(i, 0.0) + idf
        if not score:
            return {}, {}
        return score, {i: c / total for i, c in covered.items()}
