"""OpenAI's `POST /v1/embeddings`: deterministic, unit-length fake vectors from hashed words of the text.

Each model answers vectors as wide as the real one (`EMBEDDING_MODELS`, the one table of widths, which
Ollama's /api/embed reads too); a model it does not know gets DEFAULT_DIMENSIONS.

Each word and each pair of neighbouring words is hashed (SHAKE-256, as long as the vector) into a
pseudo-random direction; a text's vector is the normalised sum of its features' directions, so texts that
share words point the same way more than unrelated ones do. SHAKE's output for fewer dimensions is a prefix
of the longer one, so `dimensions` shortens a vector the way text-embedding-3 does (cut, then renormalise).
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
import sys
from array import array
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from llmkit.core.http import add_route, json_response, openapi, read_json
from llmkit.core.sampling import is_int
from llmkit.core.tokenizer import count_tokens
from llmkit.simulate.latency import latency_for
from llmkit.simulate.openai import check_model, int_param, invalid
from llmkit.simulate.openapi import EMBEDDINGS_DOC
from llmkit.simulate.reply import limit_headers, wait_or_gone
from llmkit.simulate.slot import request_slot
from llmkit.simulate.state import STATE_KEY

# The width of a model the table does not name (text-embedding-3-small's and ada-002's).
DEFAULT_DIMENSIONS = 1536
# The most `dimensions` may ask of a model the table does not name.
MAX_DIMENSIONS = 3072
MAX_INPUTS = 2048
MAX_INPUT_TOKENS = 8192
ENCODINGS = ("float", "base64")
_WORD_RE = re.compile(r"\w+")
# Each dimension sums unsigned bytes in a 32-bit field of one big int: no carry until 16 million features.
_FIELD = 4
_UNIGRAM_WEIGHT = 2


@dataclass(frozen=True, slots=True)
class EmbeddingModel:
    """What the simulator mimics of a real embedding model: its vector width and context length."""

    dimensions: int
    # Tokens per input: OpenAI refuses more; Ollama cuts the input to it (unless `truncate: false`).
    context: int = MAX_INPUT_TOKENS
    # Whether OpenAI's `dimensions` may shorten its vectors (text-embedding-3 may, ada-002 may not).
    shortens: bool = True


# Model name (without an Ollama tag such as ":latest") -> the model. One table for every route.
EMBEDDING_MODELS: dict[str, EmbeddingModel] = {
    "text-embedding-3-large": EmbeddingModel(3072),
    "text-embedding-3-small": EmbeddingModel(1536),
    "text-embedding-ada-002": EmbeddingModel(1536, shortens=False),
    "nomic-embed-text": EmbeddingModel(768, 2048),
    "mxbai-embed-large": EmbeddingModel(1024, 512),
    "all-minilm": EmbeddingModel(384, 512),
    "snowflake-arctic-embed": EmbeddingModel(1024, 512),
    "bge-m3": EmbeddingModel(1024, 8192),
}
UNKNOWN_MODEL = EmbeddingModel(DEFAULT_DIMENSIONS)


def embedding_model(name: str) -> EmbeddingModel | None:
    """The table's entry for `name` (an Ollama tag such as ":latest" ignored), or None for another model."""
    return EMBEDDING_MODELS.get(name.partition(":")[0])


@dataclass(frozen=True, slots=True)
class EmbeddingRequest:
    """A validated embeddings request; token-array inputs are kept as text of their ids."""

    model: str
    texts: tuple[str, ...]
    token_counts: tuple[int, ...]
    dimensions: int = DEFAULT_DIMENSIONS
    encoding_format: str = "float"


def _features(text: str) -> dict[str, int]:
    words = _WORD_RE.findall(text.lower()) or [text]
    features = dict.fromkeys(words, _UNIGRAM_WEIGHT)
    for first, second in zip(words, words[1:], strict=False):
        features.setdefault(f"{first} {second}", 1)
    return features


def embed(text: str, dimensions: int = DEFAULT_DIMENSIONS) -> list[float]:
    """The unit-length vector of `text`: the same text always gives the same vector."""
    total, weight = 0, 0
    spread = bytearray(dimensions * _FIELD)
    for feature, w in _features(text).items():
        # One C-speed pass per feature: hash bytes spread into 32-bit fields of a big int, summed as ints.
        spread[::_FIELD] = hashlib.shake_256(feature.encode()).digest(dimensions)
        total += int.from_bytes(spread, "little") * w
        weight += w
    fields = array("I", total.to_bytes(dimensions * _FIELD, "little"))
    if sys.byteorder == "big":
        fields.byteswap()
    # Hash bytes average 127.5: removing that centres each direction on zero.
    centre = 127.5 * weight
    values = [f - centre for f in fields]
    norm = math.sqrt(math.fsum(v * v for v in values)) or 1.0
    return [v / norm for v in values]


def encode_base64(vector: list[float]) -> str:
    """The vector as OpenAI's base64: little-endian float32 bytes."""
    packed = array("f", vector)
    if sys.byteorder == "big":
        packed.byteswap()
    return base64.b64encode(packed.tobytes()).decode()


def _check_input(data: Mapping[str, Any]) -> tuple[tuple[str, ...], tuple[int, ...]]:
    raw = data.get("input")
    if raw is None:
        raise invalid(
            "input", 'you must provide an input, e.g. "input": "some text"', "missing_required_parameter"
        )
    if isinstance(raw, str) or (isinstance(raw, list) and raw and all(isinstance(t, int) for t in raw)):
        raw = [raw]
    if not isinstance(raw, list) or not raw or len(raw) > MAX_INPUTS:
        raise invalid(
            "input",
            f"input must be a string, an array of up to {MAX_INPUTS} strings, or token arrays; "
            f"got {raw!r:.80}",
        )
    texts, counts = [], []
    for i, item in enumerate(raw):
        if isinstance(item, str) and item:
            texts.append(item)
            counts.append(count_tokens(item))
        elif isinstance(item, list) and item and all(is_int(t, 0) for t in item):
            # A token array hashes as the text of its ids: stable, and distinct from any plain text.
            texts.append("\x00tokens " + " ".join(map(str, item)))
            counts.append(len(item))
        else:
            raise invalid(
                "input", f"input[{i}] must be a non-empty string or array of token ids; got {item!r:.80}"
            )
        if counts[-1] > MAX_INPUT_TOKENS:
            raise invalid(
                "input",
                f"input[{i}] has {counts[-1]} tokens; the maximum context length is {MAX_INPUT_TOKENS}",
            )
    return tuple(texts), tuple(counts)


def parse_embedding_request(data: Mapping[str, Any]) -> EmbeddingRequest:
    """Validate an embeddings body; raise a 400 ApiError that names the parameter to fix."""
    model = check_model(data)
    texts, counts = _check_input(data)
    dimensions = _check_dimensions(data, model)
    encoding = data.get("encoding_format", "float")
    if encoding is None:
        encoding = "float"
    if encoding not in ENCODINGS:
        raise invalid("encoding_format", f"encoding_format must be float or base64; got {encoding!r}")
    return EmbeddingRequest(model, texts, counts, dimensions, encoding)


def _check_dimensions(data: Mapping[str, Any], model: str) -> int:
    """The width to answer: the model's own, or `dimensions` where the model takes it (OpenAI's 400s)."""
    known = embedding_model(model)
    if data.get("dimensions") is None:
        return DEFAULT_DIMENSIONS if known is None else known.dimensions
    if known is None:
        return int_param(data, "dimensions", 1, MAX_DIMENSIONS) or DEFAULT_DIMENSIONS
    if not known.shortens:
        # OpenAI's words; the simulator adds what to change.
        raise invalid(
            "dimensions",
            f"This model does not support specifying dimensions. ({model} is always {known.dimensions} wide: "
            "drop dimensions, or use text-embedding-3-small or -large)",
        )
    return int_param(data, "dimensions", 1, known.dimensions) or known.dimensions


def embedding_body(req: EmbeddingRequest) -> dict[str, Any]:
    """OpenAI's list of embedding objects, in the requested encoding, with usage."""
    data = []
    for i, text in enumerate(req.texts):
        vector = embed(text, req.dimensions)
        value: list[float] | str = encode_base64(vector) if req.encoding_format == "base64" else vector
        data.append({"object": "embedding", "index": i, "embedding": value})
    tokens = sum(req.token_counts)
    return {
        "object": "list",
        "data": data,
        "model": req.model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


@openapi(**EMBEDDINGS_DOC)
async def embeddings(request: web.Request) -> web.Response:
    """OpenAI embeddings: deterministic unit vectors, after the time to first token of the latency model."""
    state = request.app[STATE_KEY]
    latency = latency_for(request.headers, state.settings, state.load)
    req = parse_embedding_request(await read_json(request))
    async with request_slot(state, request):
        if not await wait_or_gone(request, state, latency.first_token(state.rng)):
            return web.Response(status=499)
        tokens = sum(req.token_counts)
        state.stats.prompt_tokens += tokens
        return json_response(embedding_body(req), headers=limit_headers(state, req.model, tokens))


def add_routes(app: web.Application) -> None:
    """Register POST /v1/embeddings."""
    add_route(app, "POST", "/v1/embeddings", embeddings)
