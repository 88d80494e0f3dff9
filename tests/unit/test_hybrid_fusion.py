"""Hybrid search's reciprocal rank fusion, document-aware."""

from __future__ import annotations

from llmkit.platform.documents.search import RRF_K, fuse
from llmkit.platform.store.base import SearchHit


def hits(*keys: str) -> list[SearchHit]:
    """Hits named "doc:ordinal", best first."""
    out = []
    for key in keys:
        document, ordinal = key.split(":")
        out.append(SearchHit(document, document.title(), int(ordinal), f"text of {key}", 1.0))
    return out


def test_each_rankers_winning_chunk_of_the_same_document_outranks_a_middling_chunk_both_hold() -> None:
    keyword = hits("a:0", "x:0", "b:0", "c:0")
    semantic = hits("a:1", "y:0", "b:0", "d:0")
    fused = fuse([keyword, semantic], 3)
    assert [(h.document_id, h.ordinal) for h in fused] == [("a", 0), ("a", 1), ("b", 0)]
    assert fused[0].score == 2 / (RRF_K + 1) and fused[2].score == 2 / (RRF_K + 3)


def test_a_chunk_in_one_list_only_scores_that_list_and_ties_break_by_document_then_ordinal() -> None:
    fused = fuse([hits("b:0", "a:0"), hits("z:0")], 10)
    assert [(h.document_id, h.score) for h in fused] == [
        ("b", 1 / (RRF_K + 1)),
        ("z", 1 / (RRF_K + 1)),
        ("a", 1 / (RRF_K + 2)),
    ]
    assert [h.document_id for h in fuse([hits("b:0", "a:0"), hits("z:0")], 2)] == ["b", "z"]
