"""Semantic search: cosine over a tenant's chunk vectors, in a per-process index kept fresh from the store.

Each tenant's vectors are read once, then only the documents whose indexed version changed (the store's
`vector_versions`), when its search version moved on (any write to its documents, on any replica). The
rows sit in one float32 matrix, so a query is one matrix-vector product and an argpartition.

Where it stops: memory is chunks x dimensions x 4 bytes per process (100,000 chunks of 1536 dimensions is
614 MB; ask for fewer dimensions with gateway.embeddings_dimensions), and a tenant's first search (or one
after a change) reads the changed vectors from the store. Past ~100k chunks a tenant wants a vector
database (pgvector, an ANN index); up to it, brute force is exact and a query takes milliseconds.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from llmkit.platform.store.base import PlatformStore

# Tenants whose vectors a process keeps (the least recently searched go first).
MAX_TENANTS = 64
# Documents whose vectors one store call reads (each is a statement parameter).
READ_SLICE = 500


@dataclass(slots=True)
class _Tenant:
    """One tenant's vectors: per document (its version, ordinals and rows), and all of them stacked."""

    version: int = -1
    documents: dict[str, tuple[float, np.ndarray, np.ndarray]] = field(default_factory=dict)
    matrix: np.ndarray | None = None
    # Row r of `matrix` is chunk ordinals[r] of document names[owners[r]].
    names: list[str] = field(default_factory=list)
    owners: np.ndarray | None = None
    ordinals: np.ndarray | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def stack(self) -> None:
        names, owners, ordinals, rows = [], [], [], []
        for n, (name, (_, ords, vectors)) in enumerate(self.documents.items()):
            names.append(name)
            owners.append(np.full(len(ords), n, dtype=np.int32))
            ordinals.append(ords)
            rows.append(vectors)
        self.names = names
        if rows:
            self.matrix = np.concatenate(rows)
            self.owners = np.concatenate(owners)
            self.ordinals = np.concatenate(ordinals)
        else:
            self.matrix = self.owners = self.ordinals = None


class VectorIndex:
    """Vectors of `model` for the tenants searched here; `search` brings a tenant up to date first."""

    def __init__(self, store: PlatformStore, model: str, max_tenants: int = MAX_TENANTS) -> None:
        self.store = store
        self.model = model
        self.max_tenants = max_tenants
        self._tenants: OrderedDict[str, _Tenant] = OrderedDict()
        self.counts = {"refreshes": 0, "documents_read": 0}

    def chunks(self, tenant_id: str) -> int:
        """How many chunk vectors of the tenant are held."""
        held = self._tenants.get(tenant_id)
        return 0 if held is None or held.matrix is None else len(held.matrix)

    async def _fresh(self, tenant_id: str, version: int) -> _Tenant:
        held = self._tenants.get(tenant_id)
        if held is None:
            held = self._tenants[tenant_id] = _Tenant()
            while len(self._tenants) > self.max_tenants:
                self._tenants.popitem(last=False)
        self._tenants.move_to_end(tenant_id)
        if held.version == version:
            return held
        async with held.lock:
            if held.version != version:
                await self._refresh(tenant_id, held)
                held.version = version
        return held

    async def _refresh(self, tenant_id: str, held: _Tenant) -> None:
        versions = await self.store.vector_versions(tenant_id, self.model)
        stale = [d for d, v in versions.items() if d not in held.documents or held.documents[d][0] != v]
        gone = [d for d in held.documents if d not in versions]
        if not stale and not gone:
            return
        for d in gone:
            del held.documents[d]
        rows: dict[str, tuple[list[int], list[bytes]]] = {d: ([], []) for d in stale}
        for at in range(0, len(stale), READ_SLICE):
            for document_id, ordinal, vector in await self.store.chunk_vectors(
                tenant_id, stale[at : at + READ_SLICE]
            ):
                ords, vectors = rows[document_id]
                ords.append(ordinal)
                vectors.append(vector)
        for d, (ords, vectors) in rows.items():
            if not vectors:
                held.documents.pop(d, None)
                continue
            matrix = np.frombuffer(b"".join(vectors), dtype="<f4").reshape(len(vectors), -1)
            held.documents[d] = (versions[d], np.asarray(ords, dtype=np.int32), matrix)
        widths = {m.shape[1] for _, _, m in held.documents.values()}
        if len(widths) > 1:
            # Vectors of another width (gateway.embeddings_dimensions changed): only the newest width.
            newest = max(held.documents.values(), key=lambda e: e[0])[2].shape[1]
            held.documents = {d: e for d, e in held.documents.items() if e[2].shape[1] == newest}
        held.stack()
        self.counts["refreshes"] += 1
        self.counts["documents_read"] += len(stale)

    async def search(
        self,
        tenant_id: str,
        version: int,
        query: np.ndarray,
        limit: int,
    ) -> list[tuple[str, int, float]]:
        """The `limit` chunks (document id, ordinal, cosine) nearest `query` (a unit vector), best first
        (metadata filters are the caller's: search.py reads the hits back through them)."""
        held = await self._fresh(tenant_id, version)
        if held.matrix is None or held.owners is None or held.ordinals is None or limit < 1:
            return []
        if query.shape[0] != held.matrix.shape[1]:
            return []  # the query's model answers another width than the stored vectors: reindex
        scores = held.matrix @ query
        k = min(limit, len(scores))
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.lexsort((held.ordinals[top], held.owners[top], -scores[top]))]
        return [(held.names[held.owners[r]], int(held.ordinals[r]), float(scores[r])) for r in top]
