"""llmkit.core.tokenizer: tokens concatenate back to the text; counts for text and chat prompts."""

from __future__ import annotations

import random

import pytest

from llmkit.core.tokenizer import content_text, count_prompt_tokens, count_tokens, tokenize

SAMPLES = [
    "",
    "Hello, world!",
    "Halo! Apa kabar? Terima kasih banyak 🙏😀👍🏽",
    "```python\ndef f(x):\n    return x**2  # it's 12345678\n```\n",
    "café naïve — 日本語のテキスト ✓\r\n\ttab  and   spaces   ",
    "👨‍👩‍👧‍👦 family, 🇮🇩 flag, e\u0301 combining",
    "\x00\x01 control \x7f chars",
]


@pytest.mark.parametrize("text", SAMPLES)
def test_tokens_concatenate_to_the_text(text: str) -> None:
    tokens = tokenize(text)
    assert "".join(tokens) == text
    assert all(tokens)
    assert count_tokens(text) == len(tokens)


def test_random_text_round_trips() -> None:
    rng = random.Random(7)
    alphabet = "ab Z09 .,!?'\n\t-_*`#é日😀\u200d🏽\x00"
    for _ in range(300):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 80)))
        assert "".join(tokenize(text)) == text


def test_words_keep_their_leading_space_and_numbers_group_by_three() -> None:
    assert tokenize("the cat sat") == ["the", " cat", " sat"]
    assert tokenize("1234567") == ["123", "456", "7"]
    assert tokenize("it's") == ["it", "'s"]


def test_counts_are_in_a_plausible_range() -> None:
    english = "The quick brown fox jumps over the lazy dog. " * 10
    # Real BPE gives about 10 tokens per sentence here; the approximation should be close.
    assert 90 <= count_tokens(english) <= 120
    assert count_tokens("😀" * 10) >= 5


def test_prompt_tokens_add_per_message_overhead_and_content_parts() -> None:
    one = [{"role": "user", "content": "Hello there"}]
    assert count_prompt_tokens(one) == 3 + 3 + count_tokens("user") + count_tokens("Hello there")
    parts = [{"role": "user", "content": [{"type": "text", "text": "Hello there"}]}]
    assert count_prompt_tokens(parts) == count_prompt_tokens(one)
    with_image = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]
    assert count_prompt_tokens(with_image) > count_prompt_tokens([{"role": "user", "content": None}])
    named = [{"role": "user", "content": "Hello there", "name": "bob"}]
    assert count_prompt_tokens(named) == count_prompt_tokens(one) + 1 + count_tokens("bob")


def test_content_text() -> None:
    assert content_text("hi") == "hi"
    assert (
        content_text([{"type": "text", "text": "a"}, {"type": "image_url"}, {"type": "text", "text": "b"}])
        == "ab"
    )
    assert content_text(None) == ""
