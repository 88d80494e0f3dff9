"""Answers grounded in the tenant's documents: `"rag": {"top_k": 4, "type": "hybrid"}` on a chat request
(or gateway.rag_default) searches the documents for the last user message and puts the chunks found, with
their titles, in a system message before the conversation; the answer names them as `sources`.

The upstream sees the chunks' text, so the cache key (over the messages) changes with them; the chunk ids
are in it too. The conversation remembers the messages without the context: each turn retrieves afresh.
A semantic or hybrid search whose embeddings upstream fails falls back to keyword search (logged), so an
embeddings outage degrades answers rather than failing them.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from llmkit.core import telemetry
from llmkit.errors import ConfigError
from llmkit.gateway.chat import ChatRequest, bad, cache_key, last_user_text
from llmkit.platform.documents.bodies import SEARCH_TYPES
from llmkit.platform.documents.embeddings import EmbeddingsError
from llmkit.platform.service import Platform
from llmkit.platform.store.base import SearchHit

log = logging.getLogger("llmkit.gateway.rag")

DEFAULT_TOP_K = 4
MAX_TOP_K = 20
# The most characters of one chunk put in the context (a chunk is ~256 tokens; this bounds a huge one).
MAX_CHUNK_CHARS = 4000
CONTEXT_HEADER = (
    "Answer using the documents below when they are relevant; say which document you used by its title. "
    "If they do not contain the answer, say so.\n"
)


@dataclass(frozen=True, slots=True)
class RagSpec:
    """How many chunks to retrieve, by which search."""

    top_k: int = DEFAULT_TOP_K
    type: str = "hybrid"


@functools.lru_cache(maxsize=8)
def rag_default(value: str) -> RagSpec | None:
    """gateway.rag_default: "" (off), "<type>" or "<type>:<top_k>", e.g. "hybrid:4"."""
    text = value.strip()
    if not text:
        return None
    kind, _, top_k = text.partition(":")
    if kind not in SEARCH_TYPES or (top_k and not (top_k.isdigit() and 1 <= int(top_k) <= MAX_TOP_K)):
        raise ConfigError(
            f"gateway.rag_default must be empty (off) or TYPE[:TOP_K] with TYPE one of "
            f"{', '.join(SEARCH_TYPES)} and TOP_K 1 to {MAX_TOP_K}, e.g. hybrid:4; got {value!r}"
        )
    return RagSpec(int(top_k) if top_k else DEFAULT_TOP_K, kind)


def parse_rag(value: Any, default: RagSpec | None) -> RagSpec | None:
    """The request's `rag` field: absent or null (the default), false (off), true (the default or hybrid:4),
    or {top_k?, type?}; 400 naming the field otherwise."""
    if value is None:
        return default
    if value is False:
        return None
    if value is True:
        return default or RagSpec()
    if not isinstance(value, Mapping):
        raise bad(
            f'rag must be true, false or an object like {{"top_k": 4, "type": "hybrid"}}; got {value!r:.60}',
            "rag",
        )
    unknown = sorted(set(value) - {"top_k", "type"})
    if unknown:
        raise bad(f"rag takes top_k and type; drop {', '.join(unknown)}", f"rag.{unknown[0]}")
    base = default or RagSpec()
    top_k = value.get("top_k", base.top_k)
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= MAX_TOP_K:
        raise bad(f"rag.top_k must be an integer from 1 to {MAX_TOP_K}; got {top_k!r:.40}", "rag.top_k")
    kind = value.get("type", base.type)
    if kind not in SEARCH_TYPES:
        raise bad(f"rag.type must be one of {', '.join(SEARCH_TYPES)}; got {kind!r:.40}", "rag.type")
    return RagSpec(top_k, kind)


def context_message(hits: Sequence[SearchHit]) -> dict[str, Any]:
    """The system message that carries the retrieved chunks, each under its document's title."""
    parts = [CONTEXT_HEADER]
    for n, hit in enumerate(hits, start=1):
        parts.append(f"\n[{n}] {hit.title} (document {hit.document_id})\n{hit.text[:MAX_CHUNK_CHARS]}\n")
    return {"role": "system", "content": "".join(parts)}


def sources_of(hits: Sequence[SearchHit]) -> tuple[dict[str, Any], ...]:
    """What the answer says it was grounded in."""
    return tuple(
        {"id": h.document_id, "title": h.title, "chunk": h.ordinal, "score": round(h.score, 6)} for h in hits
    )


async def ground(platform: Platform, req: ChatRequest, spec: RagSpec) -> ChatRequest:
    """The request with the retrieved chunks before its messages and its sources; unchanged (no sources)
    when the question finds nothing."""
    question = last_user_text(req.call.messages)
    if not question.strip():
        return req
    kind = spec.type
    if kind != "keyword" and not platform.searcher.semantic:
        raise bad(
            f"rag.type {kind} needs embeddings: set gateway.embeddings_url, or send "
            '"rag": {"type": "keyword"}',
            "rag.type",
        )
    tenant_id = req.tenant_id
    with telemetry.span("retrieval", {"llmkit.search.type": kind}):
        version = await platform.search_versions.get(tenant_id)
        try:
            hits = await platform.searcher.search(tenant_id, version, kind, question, spec.top_k)
        except EmbeddingsError as exc:
            log.warning("rag: %s search failed (%s); answering from keyword search", kind, exc)
            hits = await platform.searcher.search(tenant_id, version, "keyword", question, spec.top_k)
        telemetry.set_attribute("llmkit.retrieval.chunks", len(hits))
    if not hits:
        return req
    messages = (context_message(hits), *req.call.messages)
    chunks = [[h.document_id, h.ordinal] for h in hits]
    call = replace(req.call, messages=messages)
    key = cache_key(call.model, messages, {**call.params, "rag_chunks": chunks}, tenant_id)
    return replace(req, call=call, key=key, history=req.call.messages, sources=sources_of(hits))
