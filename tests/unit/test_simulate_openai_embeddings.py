"""llmkit.simulate.embeddings and completions parsing: vectors, encodings, validation."""

from __future__ import annotations

import base64
import math
import struct
from typing import Any

import pytest

from llmkit.core.http import ApiError
from llmkit.simulate.completions import (
    DEFAULT_MAX_TOKENS,
    TextChunkWriter,
    parse_completion_request,
)
from llmkit.simulate.embeddings import (
    DEFAULT_DIMENSIONS,
    embed,
    embedding_body,
    encode_base64,
    parse_embedding_request,
)


def _dot(a: list[float], b: list[float]) -> float:
    return math.fsum(x * y for x, y in zip(a, b, strict=True))


def test_vectors_are_deterministic_unit_and_sized() -> None:
    vector = embed("Halo, apa kabar?")
    assert len(vector) == DEFAULT_DIMENSIONS
    assert vector == embed("Halo, apa kabar?")
    assert math.isclose(_dot(vector, vector), 1.0, abs_tol=1e-9)
    for size in (1, 2, 256, 3072):
        short = embed("Halo, apa kabar?", size)
        assert len(short) == size and math.isclose(_dot(short, short), 1.0, abs_tol=1e-9)


def test_fewer_dimensions_are_the_renormalised_prefix() -> None:
    full, short = embed("the cat sat on the mat"), embed("the cat sat on the mat", 64)
    norm = math.sqrt(_dot(full[:64], full[:64]))
    assert all(math.isclose(a / norm, b, abs_tol=1e-9) for a, b in zip(full[:64], short, strict=True))


def test_similar_texts_are_closer_than_unrelated_ones() -> None:
    base = embed("the cat sat on the mat")
    assert _dot(base, embed("The cat sat on a mat!")) > 0.6
    assert abs(_dot(base, embed("quarterly revenue grew strongly in Asia"))) < 0.3
    assert embed("a") != embed("b")


def test_base64_round_trip_is_little_endian_float32() -> None:
    vector = embed("hello", 8)
    raw = base64.b64decode(encode_base64(vector))
    decoded = struct.unpack("<8f", raw)
    assert all(math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-7) for a, b in zip(decoded, vector, strict=True))


def test_body_shape_usage_and_token_arrays() -> None:
    req = parse_embedding_request({"model": "e", "input": ["one two", [1, 2, 3]], "dimensions": 4})
    body = embedding_body(req)
    assert [d["index"] for d in body["data"]] == [0, 1]
    assert all(d["object"] == "embedding" and len(d["embedding"]) == 4 for d in body["data"])
    assert body["usage"] == {"prompt_tokens": 2 + 3, "total_tokens": 5} and body["model"] == "e"
    single = parse_embedding_request({"model": "e", "input": [5, 6], "encoding_format": "base64"})
    assert single.token_counts == (2,)
    assert isinstance(embedding_body(single)["data"][0]["embedding"], str)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "x"}, "model"),
        ({"model": "e"}, "input"),
        ({"model": "e", "input": ""}, "input"),
        ({"model": "e", "input": []}, "input"),
        ({"model": "e", "input": ["ok", 3.5]}, "input"),
        ({"model": "e", "input": [[]]}, "input"),
        ({"model": "e", "input": "x " * 9000}, "input"),
        ({"model": "e", "input": "x", "dimensions": 0}, "dimensions"),
        ({"model": "e", "input": "x", "dimensions": 3073}, "dimensions"),
        ({"model": "e", "input": "x", "encoding_format": "int8"}, "encoding_format"),
    ],
)
def test_embedding_errors_name_their_parameter(body: dict[str, Any], param: str) -> None:
    with pytest.raises(ApiError) as caught:
        parse_embedding_request(body)
    assert caught.value.status == 400 and caught.value.extra["param"] == param


def test_completion_defaults_and_fields() -> None:
    req = parse_completion_request({"model": "m", "prompt": "Say hi"})
    assert (req.prompts, req.n, req.max_tokens, req.echo, req.stream) == (
        ("Say hi",),
        1,
        DEFAULT_MAX_TOKENS,
        False,
        False,
    )
    full = parse_completion_request(
        {
            "model": "m",
            "prompt": ["a", "b"],
            "n": 2,
            "max_tokens": 0,
            "echo": True,
            "stop": ["x"],
            "stream": True,
            "stream_options": {"include_usage": True},
        }
    )
    assert (full.prompts, full.n, full.max_tokens, full.echo, full.stop) == (("a", "b"), 2, 0, True, ("x",))
    assert full.include_usage


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"prompt": "x"}, "model"),
        ({"model": "m"}, "prompt"),
        ({"model": "m", "prompt": [1, 2, 3]}, "prompt"),
        ({"model": "m", "prompt": [[1, 2], [3]]}, "prompt"),
        ({"model": "m", "prompt": []}, "prompt"),
        ({"model": "m", "prompt": "x", "max_tokens": -1}, "max_tokens"),
        ({"model": "m", "prompt": ["a"] * 10, "n": 20}, "n"),
        ({"model": "m", "prompt": "x", "echo": "yes"}, "echo"),
    ],
)
def test_completion_errors_name_their_parameter(body: dict[str, Any], param: str) -> None:
    with pytest.raises(ApiError) as caught:
        parse_completion_request(body)
    assert caught.value.status == 400 and caught.value.extra["param"] == param


def test_text_completion_events() -> None:
    writer = TextChunkWriter("m", "cmpl-1", 2)
    assert writer.role(0) == b""
    event = writer.content(1, "hé")
    assert event.startswith(b'data: {"id":"cmpl-1","object":"text_completion"') and event.endswith(b"\n\n")
    assert b'"text":"h\xc3\xa9","index":1,"logprobs":null,"finish_reason":null' in event
    assert b'"text":"","index":0,"logprobs":null,"finish_reason":"length"' in writer.finish(0, "length")


@pytest.mark.parametrize(
    ("model", "width"),
    [
        ("text-embedding-3-large", 3072),
        ("text-embedding-3-small", 1536),
        ("text-embedding-ada-002", 1536),
        ("nomic-embed-text", 768),
        ("some-other-model", DEFAULT_DIMENSIONS),
    ],
)
def test_each_model_has_its_width(model: str, width: int) -> None:
    req = parse_embedding_request({"model": model, "input": "x"})
    assert req.dimensions == width and len(embedding_body(req)["data"][0]["embedding"]) == width


def test_dimensions_shorten_text_embedding_3_up_to_its_width() -> None:
    assert (
        parse_embedding_request(
            {"model": "text-embedding-3-large", "input": "x", "dimensions": 256}
        ).dimensions
        == 256
    )
    assert (
        parse_embedding_request(
            {"model": "text-embedding-3-large", "input": "x", "dimensions": 3072}
        ).dimensions
        == 3072
    )
    # A model the table does not name takes any width up to 3072.
    assert parse_embedding_request({"model": "e", "input": "x", "dimensions": 3072}).dimensions == 3072
    with pytest.raises(ApiError) as wider:
        parse_embedding_request({"model": "text-embedding-3-small", "input": "x", "dimensions": 2000})
    assert wider.value.extra["param"] == "dimensions" and "<= 1536" in wider.value.message


def test_ada_002_refuses_dimensions_as_openai_does() -> None:
    with pytest.raises(ApiError) as refused:
        parse_embedding_request({"model": "text-embedding-ada-002", "input": "x", "dimensions": 1536})
    assert refused.value.status == 400 and refused.value.extra["param"] == "dimensions"
    assert refused.value.message.startswith("This model does not support specifying dimensions.")
    # null is no dimensions at all.
    assert (
        parse_embedding_request(
            {"model": "text-embedding-ada-002", "input": "x", "dimensions": None}
        ).dimensions
        == 1536
    )
