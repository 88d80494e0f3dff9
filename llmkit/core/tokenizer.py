"""A fast regex approximation of a BPE tokenizer, used both to count usage and to cut stream chunks."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from llmkit.core.memo import Memo

# Shaped like cl100k's pre-tokenizer, with lengths capped so long words, digit runs and non-ASCII text
# split into several tokens as BPE would. Every alternative consumes at least one character and the last
# one matches anything, so the tokens always concatenate back to the text exactly. We cut `str`, never
# bytes, so a token (and hence a stream chunk) can never end inside a UTF-8 sequence.
_TOKEN_RE = re.compile(
    r"'(?i:[sdmt]|ll|ve|re)(?![A-Za-z])"  # contractions: 's 't 're 've 'm 'll 'd
    r"| ?[A-Za-z]{1,10}"  # a word (or a piece of a long one) with its leading space
    r"| ?\d{1,3}"  # numbers in groups of up to three digits
    r"| ?[^\x00-\x7f\s]{1,2}"  # non-ASCII (accented letters, CJK, emoji): about a token per 1-2 chars
    r"| ?[!-/:-@\[-`{-~]{1,3}"  # ASCII punctuation runs such as ``` or ** or ."
    r"|\s*[\r\n]+"  # line breaks with the spaces before them
    r"|\s+(?!\S)"  # a whitespace run, leaving its last space to the next word
    r"|\s+"
    r"|[\s\S]",  # anything else (control characters): one token each
)

# OpenAI's accounting for chat prompts: a few tokens frame each message, three prime the reply.
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING_TOKENS = 3
# What a non-text content part (image, audio, file) costs: a flat guess, like a low-detail image.
TOKENS_PER_MEDIA_PART = 85


def tokenize(text: str) -> list[str]:
    """`text` split into tokens whose concatenation is exactly `text`."""
    return _TOKEN_RE.findall(text)


# Clients resend the same system prompts and conversation prefixes; remember their counts (up to this many
# characters of text in all).
_COUNTS: Memo[str, int] = Memo(max_weight=4_000_000)


def count_tokens(text: str) -> int:
    """How many tokens `tokenize(text)` gives."""
    count = _COUNTS.get(text)
    if count is None:
        count = _COUNTS.put(text, len(_TOKEN_RE.findall(text)), len(text) + 64)
    return count


def content_text(content: Any) -> str:
    """The text of a message's content: a string, or the text parts of a content-part array joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        )
    return ""


def _content_tokens(content: Any) -> int:
    if isinstance(content, str):
        return count_tokens(content)
    if not isinstance(content, list):
        return 0
    total = 0
    for part in content:
        if not isinstance(part, dict):
            continue
        if part.get("type") == "text":
            total += count_tokens(str(part.get("text", "")))
        else:
            total += TOKENS_PER_MEDIA_PART
    return total


def count_prompt_tokens(messages: Iterable[Mapping[str, Any]]) -> int:
    """Prompt tokens of a chat messages list, with OpenAI's per-message overhead."""
    total = REPLY_PRIMING_TOKENS
    for message in messages:
        total += TOKENS_PER_MESSAGE + count_tokens(str(message.get("role", "")))
        total += _content_tokens(message.get("content"))
        name = message.get("name")
        if isinstance(name, str):
            total += TOKENS_PER_NAME + count_tokens(name)
    return total
