"""The markdown chunker: headings, paragraphs, token bounds with overlap, empty and unicode text."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmkit.core.tokenizer import count_tokens, tokenize
from llmkit.platform.documents.chunking import chunk_markdown, sections

GUIDE = """# Guide

Intro paragraph.

## Install

```sh
# a comment, not a heading
pip install llmkit
```

Then run it.

### Linux ###
Use apt.

## Use

Call the API.
"""


def test_sections_follow_the_heading_path_and_skip_code_fences() -> None:
    got = [(s.headings, s.paragraphs[0].splitlines()[0]) for s in sections(GUIDE)]
    assert got == [
        (("Guide",), "# Guide"),
        (("Guide", "Install"), "## Install"),
        (("Guide", "Install", "Linux"), "### Linux ###"),
        (("Guide", "Use"), "## Use"),
    ]


def test_each_chunk_keeps_its_headings_and_small_sections_stay_whole() -> None:
    chunks = chunk_markdown(GUIDE, max_tokens=64, overlap_tokens=8)
    assert [c.ordinal for c in chunks] == [0, 1, 2, 3]
    assert [c.headings for c in chunks] == [
        ("Guide",),
        ("Guide", "Install"),
        ("Guide", "Install", "Linux"),
        ("Guide", "Use"),
    ]
    assert (
        chunks[1].text
        == "## Install\n\n```sh\n# a comment, not a heading\npip install llmkit\n```\n\nThen run it."
    )
    assert all(c.tokens == count_tokens(c.text) for c in chunks)


def test_paragraphs_pack_up_to_the_budget_and_never_straddle_a_heading() -> None:
    text = "# A\n\n" + "\n\n".join(f"Paragraph {n} has five words." for n in range(10)) + "\n\n# B\n\nLast."
    chunks = chunk_markdown(text, max_tokens=30, overlap_tokens=4)
    assert all(c.tokens <= 30 for c in chunks)
    assert chunks[-1].text == "# B\n\nLast." and chunks[-1].headings == ("B",)
    body = [c for c in chunks if c.headings == ("A",)]
    # Whole paragraphs only: each is in exactly one chunk, in order.
    joined = "\n\n".join(c.text for c in body)
    assert joined == "# A\n\n" + "\n\n".join(f"Paragraph {n} has five words." for n in range(10))
    assert len(body) > 1


def test_a_long_paragraph_is_cut_into_overlapping_windows() -> None:
    words = " ".join(f"w{n}" for n in range(200))
    chunks = chunk_markdown(words, max_tokens=50, overlap_tokens=10)
    assert len(chunks) > 1
    assert all(c.tokens <= 50 for c in chunks)
    for before, after in zip(chunks, chunks[1:], strict=False):
        tail = "".join(tokenize(before.text)[-10:]).strip()
        assert after.text.startswith(tail)
    # Nothing is lost: every word is in some chunk.
    assert set(words.split()) <= {w for c in chunks for w in c.text.split()}
    assert chunks[-1].text.endswith("w199")


def test_empty_and_whitespace_content_gives_no_chunks() -> None:
    assert chunk_markdown("") == []
    assert chunk_markdown(" \n\t\n\r\n  ") == []


def test_unicode_text_is_cut_between_characters() -> None:
    text = "# Café ñandú\n\n" + "日本語のテキスト 🙂 " * 80
    chunks = chunk_markdown(text, max_tokens=40, overlap_tokens=5)
    assert chunks[0].headings == ("Café ñandú",)
    assert all(c.tokens <= 40 for c in chunks)
    assert all("🙂" in c.text or "日本" in c.text or c.text.startswith("#") for c in chunks)


def test_windows_reject_budgets_they_cannot_keep() -> None:
    with pytest.raises(ValueError, match="max_tokens"):
        chunk_markdown("x", max_tokens=0)
    with pytest.raises(ValueError, match="overlap_tokens"):
        chunk_markdown("x", max_tokens=10, overlap_tokens=10)


@given(st.text(max_size=2000), st.integers(2, 80), st.data())
def test_chunks_are_deterministic_bounded_and_numbered(
    text: str, max_tokens: int, data: st.DataObject
) -> None:
    overlap = data.draw(st.integers(0, max_tokens - 1))
    chunks = chunk_markdown(text, max_tokens, overlap)
    assert chunks == chunk_markdown(text, max_tokens, overlap)
    assert [c.ordinal for c in chunks] == list(range(len(chunks)))
    for c in chunks:
        assert c.text and c.text == c.text.strip()
        assert 0 < c.tokens <= max_tokens
