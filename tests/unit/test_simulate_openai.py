"""llmkit.simulate.openai, latency and stream planning: validation, cutting answers, delays, chunk plans."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest

from llmkit.core.http import ApiError
from llmkit.core.tokenizer import tokenize
from llmkit.settings import SimulateSettings
from llmkit.simulate.latency import Latency, latency_for
from llmkit.simulate.openai import ChunkWriter, cut_answer, parse_chat_request
from llmkit.simulate.stream import plan_pieces

USER = [{"role": "user", "content": "hi"}]


def test_parse_defaults_and_fields() -> None:
    chat = parse_chat_request({"model": "m", "messages": USER, "temperature": 0.3, "top_p": 1})
    assert (chat.model, chat.n, chat.max_tokens, chat.stop, chat.stream) == ("m", 1, None, (), False)
    assert chat.prompt == "hi"
    full = parse_chat_request(
        {
            "model": "m",
            "messages": USER,
            "n": 2,
            "max_tokens": 9,
            "max_completion_tokens": 4,
            "stop": "x",
            "stream": True,
            "stream_options": {"include_usage": True},
        }
    )
    assert (full.n, full.max_tokens, full.stop, full.stream, full.include_usage) == (2, 4, ("x",), True, True)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": USER}, "model"),
        ({"model": "  ", "messages": USER}, "model"),
        ({"model": "m", "messages": "hi"}, "messages"),
        ({"model": "m", "messages": ["hi"]}, "messages"),
        ({"model": "m", "messages": USER, "n": True}, "n"),
        ({"model": "m", "messages": USER, "max_tokens": -1}, "max_tokens"),
        ({"model": "m", "messages": USER, "stop": [1]}, "stop"),
        ({"model": "m", "messages": USER, "stream_options": []}, "stream_options"),
    ],
)
def test_parse_rejects_with_the_param(body: dict[str, Any], param: str) -> None:
    with pytest.raises(ApiError) as caught:
        parse_chat_request(body)
    assert caught.value.status == 400 and caught.value.extra["param"] == param


def test_cut_answer_stop_and_length() -> None:
    text = "alpha beta gamma delta"
    assert cut_answer(text, (), None) == (tokenize(text), "stop")
    assert cut_answer(text, ("delta", " beta"), None) == (["alpha"], "stop")
    assert cut_answer(text, ("zzz",), 2) == (["alpha", " beta"], "length")
    assert cut_answer(text, (), 4) == (tokenize(text), "stop")


def test_chunk_writer_events_are_valid_json() -> None:
    writer = ChunkWriter("m", 2)
    events = [writer.role(1), writer.content(0, 'é😀"\n'), writer.finish(1, "length"), writer.usage(1, 2)]
    parsed = [orjson.loads(e.removeprefix(b"data: ").removesuffix(b"\n\n")) for e in events]
    assert parsed[0]["choices"][0] == {
        "index": 1,
        "delta": {"role": "assistant", "content": ""},
        "logprobs": None,
        "finish_reason": None,
    }
    assert parsed[1]["choices"][0]["delta"] == {"content": 'é😀"\n'}
    assert parsed[2]["choices"][0]["finish_reason"] == "length"
    assert parsed[3]["choices"] == [] and parsed[3]["usage"]["total_tokens"] == 3
    assert len({p["id"] for p in parsed}) == 1


def test_plan_pieces_groups_tokens() -> None:
    tokens = ["a", " b", " c", " d", " e"]
    assert plan_pieces(tokens, 1) == (tokens, [1] * 5)
    assert plan_pieces(tokens, 2) == (["a b", " c d", " e"], [2, 2, 1])
    assert plan_pieces([], 4) == ([], [])


def test_latency_from_settings_and_headers() -> None:
    settings = SimulateSettings(ttft_ms=100, itl_ms=10, jitter=0.5)
    latency = latency_for({}, settings)
    assert (latency.ttft, latency.itl, latency.jitter) == (0.1, 0.01, 0.5)
    override = latency_for({"x-llmkit-ttft-ms": "0", "x-llmkit-itl-ms": " 0 "}, settings)
    assert override.instant
    rng = random.Random(1)
    for _ in range(100):
        assert 0.05 <= latency.first_token(rng) <= 0.15
        assert 0.005 <= latency.next_token(rng) <= 0.015
    assert Latency(0.1, 0.01).whole_answer(11, rng) == pytest.approx(0.2)
    assert Latency(0.0, 0.0, 1.0).first_token(rng) == 0.0


@pytest.mark.parametrize("value", ["", "x", "-1", "inf", "nan", "700000"])
def test_latency_header_rejected(value: str) -> None:
    with pytest.raises(ApiError) as caught:
        latency_for({"x-llmkit-itl-ms": value}, SimulateSettings())
    assert caught.value.status == 400 and caught.value.extra["param"] == "x-llmkit-itl-ms"
