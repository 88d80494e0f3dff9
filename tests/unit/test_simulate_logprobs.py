"""llmkit.simulate.logprobs: made-up logprobs that look like a model's, and their chat and legacy shapes."""

from __future__ import annotations

import math
import random

import orjson
from hypothesis import given
from hypothesis import strategies as st

from llmkit.core.tokenizer import tokenize
from llmkit.simulate.bounds import MAX_TOP_LOGPROBS
from llmkit.simulate.logprobs import (
    chat_logprobs,
    chat_piece_logprobs,
    legacy_logprobs,
    legacy_piece_logprobs,
    logprob_rng,
    token_logprobs,
)

TEXT = "Halo! Ini adalah jawaban simulasi, selamat pagi 🙏."


@given(st.lists(st.sampled_from(["a", " b", "c", "\n", "🙏", " the", ","]), max_size=30), st.integers())
def test_every_position_is_a_plausible_distribution(tokens: list[str], seed: int) -> None:
    entries = token_logprobs(tokens, random.Random(seed))
    assert [e.token for e in entries] == tokens
    for entry in entries:
        assert len(entry.top) == MAX_TOP_LOGPROBS + 1 and entry.top[0] == (entry.token, entry.logprob)
        logprobs = [lp for _, lp in entry.top]
        assert all(lp <= 0 for lp in logprobs) and logprobs == sorted(logprobs, reverse=True)
        alternatives = [t for t, _ in entry.top[1:]]
        assert entry.token not in alternatives and len(set(alternatives)) == len(alternatives)
        # Probabilities of the listed tokens never add up past 1.
        assert math.fsum(math.exp(lp) for lp in logprobs) <= 1 + 1e-9


def test_seed_fixes_the_numbers_and_only_the_seed() -> None:
    tokens = tokenize(TEXT)
    first = token_logprobs(tokens, logprob_rng(7, tokens, random.Random()))
    assert first == token_logprobs(tokens, logprob_rng(7, tokens, random.Random()))
    assert first != token_logprobs(tokens, logprob_rng(8, tokens, random.Random()))
    # Without a seed the request's own rng draws them.
    rng = random.Random(3)
    assert logprob_rng(None, tokens, rng) is rng


def test_chat_shape_and_its_pieces() -> None:
    tokens = tokenize(TEXT)
    entries = token_logprobs(tokens, random.Random(1))
    whole = chat_logprobs(entries, 2)
    assert whole["refusal"] is None and [e["token"] for e in whole["content"]] == tokens
    first = whole["content"][0]
    assert first["bytes"] == list(tokens[0].encode()) and len(first["top_logprobs"]) == 2
    assert first["top_logprobs"][0] == {
        "token": first["token"],
        "logprob": first["logprob"],
        "bytes": first["bytes"],
    }
    assert all(e["top_logprobs"] == [] for e in chat_logprobs(entries, 0)["content"])
    counts = [4] * (len(tokens) // 4) + ([len(tokens) % 4] if len(tokens) % 4 else [])
    pieces = [orjson.loads(p)["content"] for p in chat_piece_logprobs(entries, 2, counts)]
    assert [len(p) for p in pieces] == counts and [e for p in pieces for e in p] == whole["content"]


def test_legacy_shape_offsets_and_echo() -> None:
    tokens = tokenize(TEXT)
    entries = token_logprobs(tokens, random.Random(2))
    legacy = legacy_logprobs(entries, 3)
    assert legacy["tokens"] == tokens and len(legacy["token_logprobs"]) == len(tokens)
    assert legacy["text_offset"] == [len("".join(tokens[:i])) for i in range(len(tokens))]
    assert all(
        len(top) == 3 and max(top.values()) == top[t]
        for t, top in zip(tokens, legacy["top_logprobs"], strict=True)
    )
    echoed = legacy_logprobs(entries, 3, first_unknown=True)
    assert echoed["token_logprobs"][0] is None and echoed["top_logprobs"][0] is None
    assert echoed["token_logprobs"][1:] == legacy["token_logprobs"][1:]
    spans = [2, 0, len(tokens) - 2]
    pieces = [orjson.loads(p) for p in legacy_piece_logprobs(entries, 3, spans, first_unknown=True)]
    assert [p["tokens"] for p in pieces] == [tokens[:2], [], tokens[2:]]
    assert [o for p in pieces for o in p["text_offset"]] == legacy["text_offset"]
    assert (
        pieces[0]["token_logprobs"][0] is None and pieces[2]["token_logprobs"] == legacy["token_logprobs"][2:]
    )
