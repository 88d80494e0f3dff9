"""Ollama's embeddings: /api/embed (a batch, `truncate`, `dimensions`) and the legacy /api/embeddings.

The vectors are embeddings.py's, as wide as the model's in `EMBEDDING_MODELS` (nomic-embed-text 768,
mxbai-embed-large 1024, all-minilm 384, ...; another model DEFAULT_DIMENSIONS). Any model name is
answered, listed or not, as /api/chat does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from llmkit.core.http import add_route, json_response, openapi
from llmkit.core.sampling import INT64_MAX, is_int
from llmkit.core.tokenizer import tokenize
from llmkit.simulate.embeddings import MAX_INPUTS, UNKNOWN_MODEL, EmbeddingModel, embed, embedding_model
from llmkit.simulate.latency import latency_for
from llmkit.simulate.ollama_wire import bad, check_model, read_body
from llmkit.simulate.openapi import OLLAMA_EMBED_DOC, OLLAMA_EMBEDDINGS_DOC
from llmkit.simulate.reply import wait_or_gone
from llmkit.simulate.shapes import Clock
from llmkit.simulate.slot import request_slot
from llmkit.simulate.state import STATE_KEY

# Ollama's words when an input is longer than the model's context and may not be cut.
TOO_LONG = "the input length exceeds the context length"


@dataclass(frozen=True, slots=True)
class EmbedRequest:
    """A validated /api/embed request: the texts to embed (each within the context) and their widths."""

    model: str
    texts: tuple[str, ...]
    token_counts: tuple[int, ...]
    dimensions: int


def _spec(model: str) -> EmbeddingModel:
    return embedding_model(model) or UNKNOWN_MODEL


def _fit(text: str, spec: EmbeddingModel, truncate: bool) -> tuple[str, int]:
    """`text` cut to the model's context when `truncate` allows (400 when it does not), and its tokens."""
    tokens = tokenize(text)
    if len(tokens) <= spec.context:
        return text, len(tokens)
    if not truncate:
        raise bad(
            f"{TOO_LONG} ({len(tokens)} tokens; the model takes {spec.context}): "
            'shorten the input or leave "truncate" true'
        )
    return "".join(tokens[: spec.context]), spec.context


def _check_inputs(data: Mapping[str, Any]) -> list[str]:
    raw = data.get("input")
    if raw is None or raw == "":
        return []  # Ollama then only loads the model
    if isinstance(raw, str):
        return [raw]
    if not isinstance(raw, list) or len(raw) > MAX_INPUTS:
        raise bad(f"input must be a string or an array of up to {MAX_INPUTS} strings; got {raw!r:.80}")
    for i, item in enumerate(raw):
        if not isinstance(item, str):
            raise bad(f"invalid input type: input[{i}] must be a string; got {item!r:.80}")
    return raw


def parse_embed(data: Mapping[str, Any]) -> EmbedRequest:
    """Validate an /api/embed body; a 400 says what to fix."""
    model = check_model(data)
    inputs = _check_inputs(data)
    truncate = data.get("truncate")
    if truncate is not None and not isinstance(truncate, bool):
        raise bad(f"truncate must be true or false; got {truncate!r}")
    dimensions = data.get("dimensions")
    if dimensions is not None and not is_int(dimensions, 0, INT64_MAX):
        raise bad(f"dimensions must be an integer >= 0 (0: the model's full width); got {dimensions!r}")
    spec = _spec(model)
    fitted = [_fit(text, spec, truncate is not False) for text in inputs]
    # As Ollama: 0 or more than the model has is the model's full width.
    width = dimensions if dimensions and dimensions < spec.dimensions else spec.dimensions
    return EmbedRequest(model, tuple(t for t, _ in fitted), tuple(n for _, n in fitted), width)


@openapi(**OLLAMA_EMBED_DOC)
async def embed_batch(request: web.Request) -> web.Response:
    """Ollama embeddings of one input or a list: unit vectors as wide as the model's."""
    state = request.app[STATE_KEY]
    latency = latency_for(request.headers, state.settings, state.load)
    req = parse_embed(await read_body(request))
    clock = Clock()
    async with request_slot(state, request):
        clock.mark_ready()
        if not req.texts:
            return json_response({"model": req.model, "embeddings": []})
        if not await wait_or_gone(request, state, latency.first_token(state.rng)):
            return web.Response(status=499)
        tokens = sum(req.token_counts)
        state.stats.prompt_tokens += tokens
        embeddings = [embed(text, req.dimensions) for text in req.texts]
        clock.mark_done()
        return json_response(
            {
                "model": req.model,
                "embeddings": embeddings,
                "total_duration": clock.done - clock.started,
                "load_duration": clock.ready - clock.started,
                "prompt_eval_count": tokens,
            }
        )


@openapi(**OLLAMA_EMBEDDINGS_DOC)
async def embeddings(request: web.Request) -> web.Response:
    """Ollama's legacy embedding of one prompt: {"embedding": [...]} ({"embedding": []} for no prompt)."""
    state = request.app[STATE_KEY]
    latency = latency_for(request.headers, state.settings, state.load)
    data = await read_body(request)
    model = check_model(data)
    prompt = data.get("prompt")
    if prompt is not None and not isinstance(prompt, str):
        raise bad(f"prompt must be a string; got {prompt!r:.80}")
    spec = _spec(model)
    text, tokens = _fit(prompt, spec, truncate=False) if prompt else ("", 0)
    async with request_slot(state, request):
        if not text:
            return json_response({"embedding": []})
        if not await wait_or_gone(request, state, latency.first_token(state.rng)):
            return web.Response(status=499)
        state.stats.prompt_tokens += tokens
        return json_response({"embedding": embed(text, spec.dimensions)})


def add_routes(app: web.Application) -> None:
    """Register POST /api/embed and POST /api/embeddings (their error shape is set by ollama.add_routes)."""
    # Ollama's documented examples are `curl -d` (a form Content-Type): its clients may send one.
    add_route(app, "POST", "/api/embed", embed_batch, forms=True)
    add_route(app, "POST", "/api/embeddings", embeddings, forms=True)
