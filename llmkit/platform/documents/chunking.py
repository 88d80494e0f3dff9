"""Markdown to search chunks: sections by heading, paragraphs packed up to a token budget, long ones cut."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from llmkit.core.tokenizer import tokenize
from llmkit.platform.store.base import Chunk

DEFAULT_MAX_TOKENS = 256
DEFAULT_OVERLAP_TOKENS = 32

# ATX headings only ("# Title", closing hashes dropped); setext underlines are read as paragraph text.
_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")


@dataclass(frozen=True, slots=True)
class Section:
    """The paragraphs under one heading path (the heading line is the first paragraph)."""

    headings: tuple[str, ...]
    paragraphs: tuple[str, ...]


def sections(text: str) -> list[Section]:
    """`text` split at its headings (outside code fences), paragraphs at blank lines; empty ones dropped."""
    found: list[Section] = []
    path: list[tuple[int, str]] = []
    paragraphs: list[str] = []
    lines: list[str] = []
    fence = ""

    def end_paragraph() -> None:
        if body := "\n".join(lines).strip():
            paragraphs.append(body)
        lines.clear()

    def end_section() -> None:
        end_paragraph()
        if paragraphs:
            found.append(Section(tuple(title for _, title in path), tuple(paragraphs)))
        paragraphs.clear()

    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        if fence:
            lines.append(line)
            if line.strip().startswith(fence):
                fence = ""
            continue
        if opened := _FENCE.match(line):
            fence = opened.group(1)[0] * 3
            lines.append(line)
        elif heading := _HEADING.match(line):
            end_section()
            level = len(heading.group(1))
            while path and path[-1][0] >= level:
                path.pop()
            path.append((level, heading.group(2).strip()))
            paragraphs.append(line.strip())
        elif line.strip():
            lines.append(line)
        else:
            end_paragraph()
    end_section()
    return found


def _windows(tokens: list[str], max_tokens: int, overlap: int) -> Iterator[str]:
    # Each window repeats the last `overlap` tokens of the one before, so a sentence cut in two is whole in
    # one of them.
    step = max_tokens - overlap
    start = 0
    while True:
        piece = "".join(tokens[start : start + max_tokens]).strip()
        if piece:
            yield piece
        if start + max_tokens >= len(tokens):
            return
        start += step


def _section_texts(section: Section, max_tokens: int, overlap: int) -> Iterator[str]:
    # Paragraphs are packed whole while they fit ("\n\n" between them is one token); a paragraph longer
    # than the budget is cut into overlapping windows on its own.
    packed: list[str] = []
    size = 0
    for paragraph in section.paragraphs:
        tokens = tokenize(paragraph)
        if packed and size + 1 + len(tokens) <= max_tokens:
            packed.append(paragraph)
            size += 1 + len(tokens)
            continue
        if packed:
            yield "\n\n".join(packed)
            packed, size = [], 0
        if len(tokens) <= max_tokens:
            packed, size = [paragraph], len(tokens)
        else:
            yield from _windows(tokens, max_tokens, overlap)
    if packed:
        yield "\n\n".join(packed)


def chunk_markdown(
    text: str, max_tokens: int = DEFAULT_MAX_TOKENS, overlap_tokens: int = DEFAULT_OVERLAP_TOKENS
) -> list[Chunk]:
    """`text` as chunks of at most `max_tokens` tokens (llmkit's tokenizer), each with its heading path;
    the same text always gives the same chunks."""
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")
    if not 0 <= overlap_tokens < max_tokens:
        raise ValueError(f"overlap_tokens must be from 0 to max_tokens - 1, got {overlap_tokens}")
    chunks: list[Chunk] = []
    for section in sections(text):
        for piece in _section_texts(section, max_tokens, overlap_tokens):
            chunks.append(Chunk(len(chunks), piece, len(tokenize(piece)), section.headings))
    return chunks


async def chunked(texts: Sequence[str]) -> list[list[Chunk]]:
    """`chunk_markdown` of each text, in a thread: a batch of large documents takes long enough (~50 ms a
    million characters) that the loop must go on serving other requests meanwhile."""
    return await asyncio.to_thread(lambda: [chunk_markdown(text) for text in texts])
