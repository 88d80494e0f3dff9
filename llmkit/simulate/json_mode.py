"""JSON mode (`json_object`, Ollama's `format: "json"`): a JSON object whose fields fit the prompt.

A model in JSON mode writes what the prompt asks for, so the simulator reads the conversation's texts (the
question first) for, in this order: a JSON schema in the text (as LangChain's and other parsers' format
instructions embed one) -> an instance of it; a JSON object example -> an object with the same keys and
value types; quoted or listed key names ("keys `setup` and `punchline`") -> those keys; else the
question's first content words as keys. Values take their type from the example or the key's name
(`count`, `price`, `is_open`, `tags`) and their words from the source's answer.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from typing import Any

import orjson

from llmkit.simulate.schema_sample import SchemaError, sample_instance

# Where a text is scanned for embedded JSON, at most: a prompt with a 1 MB document pays nothing.
_SCAN_CHARS = 20_000
_MAX_CANDIDATES = 32
_WORD_RE = re.compile(r"[^\W\d_]{3,}")
_KEY = r"[A-Za-z_][A-Za-z0-9_]{0,40}"
_QUOTED_KEY_RE = re.compile(rf"[`\"']({_KEY})[`\"']")
_LISTED_RE = re.compile(
    r"\b(?:keys?|fields?|properties|attributes|kunci|kolom)\b\s*(?:named|called|like|:)?\s*([^.\n;]{1,200})",
    re.IGNORECASE,
)
_LIST_SPLIT_RE = re.compile(r"\s*(?:,|\band\b|\bor\b|\bdan\b|\batau\b)\s*", re.IGNORECASE)
_STOP = frozenset(
    """a an and are as be by for from give in is it json me my of on or please reply respond return
    the their this to with what which who why how when where answer object output format keys key fields
    field include including using use only tell write list make about your you yang dan di ke dari untuk
    apa ini itu saya""".split()
)
_INT_HINTS = (
    "count",
    "number",
    "num",
    "age",
    "year",
    "rating",
    "score",
    "quantity",
    "total",
    "stars",
    "rank",
)
_FLOAT_HINTS = ("price", "cost", "temperature", "latitude", "longitude", "percent", "ratio", "confidence")
_BOOL_PREFIXES = ("is_", "has_", "can_", "should_", "was_")
_SINGULAR_S = ("ss", "us", "is", "news", "series")


def prompt_object(prompts: Sequence[str], answer: str, rng: random.Random) -> dict[str, Any]:
    """A JSON object fitting the conversation's texts `prompts` (question first); `answer` lends words."""
    words = _WORD_RE.findall(answer)[:64] or ["jawaban"]
    for text in prompts:
        for found in _embedded_objects(text):
            if isinstance(found.get("properties"), dict):
                try:
                    value = sample_instance(found, rng, words)
                except SchemaError:
                    continue
                if isinstance(value, dict):
                    return value
            elif found:
                return _like(found, words, rng)
    question = prompts[0] if prompts else ""
    keys = next((k for k in map(_named_keys, prompts) if k), None) or _content_keys(question)
    if not keys:
        return {"answer": answer}
    return {key: _value_for(key, words, rng) for key in keys}


def _embedded_objects(text: str) -> list[dict[str, Any]]:
    """The JSON objects written in `text` (outermost first), found by matching braces."""
    text = text[:_SCAN_CHARS]
    found: list[dict[str, Any]] = []
    start = text.find("{")
    tries = 0
    while start >= 0 and tries < _MAX_CANDIDATES:
        tries += 1
        end = _closing_brace(text, start)
        if end is not None:
            try:
                value = orjson.loads(text[start : end + 1])
            except orjson.JSONDecodeError:
                value = None
            if isinstance(value, dict):
                found.append(value)
                start = text.find("{", end + 1)
                continue
        start = text.find("{", start + 1)
    return found


def _closing_brace(text: str, start: int) -> int | None:
    depth, in_string, escaped = 0, False, False
    for i in range(start, len(text)):
        c = text[i]
        if in_string:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i
    return None


def _named_keys(question: str) -> list[str]:
    keys = [k for k in _QUOTED_KEY_RE.findall(question) if k.lower() not in _STOP]
    if not keys:
        for listed in _LISTED_RE.findall(question):
            for part in _LIST_SPLIT_RE.split(listed):
                word = part.strip().strip("`'\"")
                if re.fullmatch(_KEY, word) and word.lower() not in _STOP:
                    keys.append(word)
    return list(dict.fromkeys(keys))[:16]


def _content_keys(question: str) -> list[str]:
    words = [w.lower() for w in _WORD_RE.findall(question) if w.lower() not in _STOP]
    return list(dict.fromkeys(words))[:3]


def _words(words: Sequence[str], rng: random.Random) -> str:
    return " ".join(rng.choice(words) for _ in range(rng.randint(1, 5)))


def _value_for(key: str, words: Sequence[str], rng: random.Random) -> Any:
    lowered = key.lower()
    parts = set(re.split(r"[_\W]+", lowered))
    if lowered.startswith(_BOOL_PREFIXES):
        return rng.random() < 0.5
    if parts & set(_INT_HINTS):
        return rng.randint(1, 10)
    if parts & set(_FLOAT_HINTS):
        return round(rng.uniform(1, 100), 2)
    if len(lowered) > 3 and lowered.endswith("s") and not lowered.endswith(_SINGULAR_S):
        return [_words(words, rng) for _ in range(rng.randint(1, 3))]
    return _words(words, rng)


def _like(example: Any, words: Sequence[str], rng: random.Random, depth: int = 0) -> Any:
    """A value of the same shape as `example`: same keys, same value types, new contents."""
    if depth > 8:
        return example
    if isinstance(example, dict):
        return {k: _like(v, words, rng, depth + 1) for k, v in example.items()}
    if isinstance(example, list):
        return [_like(example[0], words, rng, depth + 1) for _ in range(rng.randint(1, 3))] if example else []
    if isinstance(example, bool):
        return rng.random() < 0.5
    if isinstance(example, int):
        return rng.randint(1, 100)
    if isinstance(example, float):
        return round(rng.uniform(1, 100), 2)
    if isinstance(example, str):
        return _words(words, rng)
    return example
