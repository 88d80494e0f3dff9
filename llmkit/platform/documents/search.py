"""Keyword, semantic and hybrid search over a tenant's chunks.

keyword: the store's BM25. semantic: the query's embedding against the chunk vectors (vectors.py), the
hits' text read back from the store (with the metadata filters applied there). hybrid: reciprocal rank
fusion (k = 60) of the two lists, each taken `HYBRID_DEPTH` deep, so a chunk high in either list ranks
high and one in both ranks higher; a list that holds another chunk of the same document counts for it
at that document's rank (see fuse).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from llmkit.core import telemetry
from llmkit.platform.documents.embeddings import EmbeddingsClient
from llmkit.platform.documents.vectors import VectorIndex
from llmkit.platform.store.base import PlatformStore, SearchHit

RRF_K = 60
HYBRID_DEPTH = 50
# With filters, vector candidates are taken this many times the hits asked, then four times as many
# again while the filters leave too few, up to MAX_CANDIDATES.
FILTER_WIDEN = 8
MAX_CANDIDATES = 4000
# Chunks one store call reads back (two statement parameters each).
HITS_SLICE = 500

# How long a tenant's search version read from the store is trusted (another replica's write is seen
# within it; this process's own writes at once).
VERSION_TTL_S = 0.5
MAX_VERSIONS = 100_000

Key = tuple[str, int]


def fuse(lists: Sequence[Sequence[SearchHit]], limit: int, k: int = RRF_K) -> list[SearchHit]:
    """Reciprocal rank fusion: each hit scores the sum over the lists of 1 / (k + rank) (rank from 1).
    A list without the chunk but with another chunk of its document counts that document's best rank:
    two rankers often pick different chunks of the right document, and per chunk each winner would get
    one list's vote while a middling chunk both lists hold got two. Ties by document id and ordinal. A
    hit keeps the first list's highlights that has some."""
    scores: dict[Key, float] = {}
    best: dict[Key, SearchHit] = {}
    chunk_ranks: list[dict[Key, int]] = []
    document_ranks: list[dict[str, int]] = []
    for hits in lists:
        chunks: dict[Key, int] = {}
        documents: dict[str, int] = {}
        for rank, hit in enumerate(hits, start=1):
            key = (hit.document_id, hit.ordinal)
            chunks.setdefault(key, rank)
            documents.setdefault(hit.document_id, rank)
            if key not in best or (not best[key].highlights and hit.highlights):
                best[key] = hit
        chunk_ranks.append(chunks)
        document_ranks.append(documents)
    for key in best:
        total = 0.0
        for chunks, documents in zip(chunk_ranks, document_ranks, strict=True):
            at = chunks.get(key) or documents.get(key[0])
            if at is not None:
                total += 1.0 / (k + at)
        scores[key] = total
    ranked = sorted(scores, key=lambda key: (-scores[key], key))[:limit]
    return [replace(best[key], score=scores[key]) for key in ranked]


class Searcher:
    """Runs a search of one type for a tenant; semantic and hybrid need `embeddings` and `vectors`."""

    def __init__(
        self,
        store: PlatformStore,
        embeddings: EmbeddingsClient | None = None,
        vectors: VectorIndex | None = None,
    ) -> None:
        self.store = store
        self.embeddings = embeddings
        self.vectors = vectors

    @property
    def model(self) -> str:
        """The embeddings model the vectors are of ("" without embeddings)."""
        return "" if self.embeddings is None else self.embeddings.model

    @property
    def semantic(self) -> bool:
        """Whether semantic and hybrid search are available (an embeddings upstream is configured)."""
        return self.embeddings is not None and self.vectors is not None

    async def search(
        self,
        tenant_id: str,
        version: int,
        kind: str,
        query: str,
        limit: int,
        filters: Mapping[str, Any] | None = None,
    ) -> list[SearchHit]:
        """The hits, best first; `version` is the tenant's search version (store.search_version)."""
        if not telemetry.recording():
            return await self._search(tenant_id, version, kind, query, limit, filters)
        with telemetry.span("search", {"llmkit.search.type": kind, "llmkit.search.limit": limit}):
            hits = await self._search(tenant_id, version, kind, query, limit, filters)
            telemetry.set_attribute("llmkit.search.hits", len(hits))
            return hits

    async def _search(
        self,
        tenant_id: str,
        version: int,
        kind: str,
        query: str,
        limit: int,
        filters: Mapping[str, Any] | None,
    ) -> list[SearchHit]:
        if kind == "keyword":
            return await self.store.keyword_search(tenant_id, query, limit, filters)
        if kind == "semantic":
            return await self._semantic(tenant_id, version, query, limit, filters)
        depth = max(limit, HYBRID_DEPTH)
        keyword = await self.store.keyword_search(tenant_id, query, depth, filters)
        semantic = await self._semantic(tenant_id, version, query, depth, filters)
        return fuse([keyword, semantic], limit)

    async def _semantic(
        self, tenant_id: str, version: int, query: str, limit: int, filters: Mapping[str, Any] | None
    ) -> list[SearchHit]:
        if self.embeddings is None or self.vectors is None:
            raise RuntimeError("semantic search needs embeddings")
        vector = await self.embeddings.embed_query(query)
        depth = limit * FILTER_WIDEN if filters else limit
        while True:
            nearest = await self.vectors.search(tenant_id, version, vector, depth)
            hits = await self._hits(tenant_id, nearest, filters)
            if len(hits) >= limit or len(nearest) < depth or depth >= MAX_CANDIDATES:
                return hits[:limit]
            depth = min(MAX_CANDIDATES, depth * 4)

    async def _hits(
        self, tenant_id: str, nearest: Sequence[tuple[str, int, float]], filters: Mapping[str, Any] | None
    ) -> list[SearchHit]:
        """The nearest chunks' text, in their order, scored by cosine (a chunk deleted since is left out)."""
        keys = [(d, o) for d, o, _ in nearest]
        found: dict[Key, SearchHit] = {}
        for at in range(0, len(keys), HITS_SLICE):
            for hit in await self.store.chunk_hits(tenant_id, keys[at : at + HITS_SLICE], filters):
                found[(hit.document_id, hit.ordinal)] = hit
        return [replace(found[(d, o)], score=s) for d, o, s in nearest if (d, o) in found]


class SearchVersions:
    """Each tenant's search version as this process last read it, trusted `ttl` seconds: a write here
    forgets it at once (`changed`), a write on another replica is seen within `ttl`."""

    def __init__(self, store: PlatformStore, ttl: float = VERSION_TTL_S) -> None:
        self.store = store
        self.ttl = ttl
        self._known: dict[str, tuple[float, int]] = {}

    async def get(self, tenant_id: str) -> int:
        now = time.monotonic()
        known = self._known.get(tenant_id)
        if known is not None and now - known[0] < self.ttl:
            return known[1]
        version = await self.store.search_version(tenant_id)
        if len(self._known) >= MAX_VERSIONS:
            self._known.clear()
        self._known[tenant_id] = (now, version)
        return version

    def changed(self, tenant_id: str) -> None:
        """This process changed the tenant's documents: read the version again at the next search."""
        self._known.pop(tenant_id, None)
