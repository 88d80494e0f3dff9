"""The `index_document` job: chunk a stored document, embed its chunks (when an embeddings upstream is
configured) and put both in the index: the keyword index follows the chunks, the vectors are stored with
them. An embeddings outage fails the attempt; the runner retries it with backoff (jobs.py).

Idempotent, as a job must be (jobs.py): it indexes the document as it is when the job runs, and writes
its chunks only if the document is still that version (`replace_chunks`), so a job that read content a
later PUT replaced leaves the index to that PUT's job, and one whose document was deleted does nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from llmkit.core.ids import fresh_hex
from llmkit.platform.documents.chunking import chunked
from llmkit.platform.documents.embeddings import EmbeddingsClient
from llmkit.platform.store.base import Chunk, ChunkVectors, Document, Job, PlatformStore

INDEX_DOCUMENT = "index_document"
INDEX_ATTEMPTS = 5


def index_job(tenant_id: str, document_id: str, now: float | None = None) -> Job:
    """A new job indexing the tenant's document."""
    at = time.time() if now is None else now
    return Job(
        id=f"job_{fresh_hex()}",
        tenant_id=tenant_id,
        kind=INDEX_DOCUMENT,
        subject=document_id,
        max_attempts=INDEX_ATTEMPTS,
        run_at=at,
        created_at=at,
    )


def embedded_text(document: Document, chunk: Chunk) -> str:
    """What a chunk's vector is of: its document's title and headings give the words around it."""
    return "\n".join([document.title, " > ".join(chunk.headings), chunk.text]).strip()


@dataclass(frozen=True, slots=True)
class Indexed:
    """What an index job stored: the document as it read it, its chunk count, the embedding model."""

    document: Document
    chunks: int
    embedding_model: str | None


async def index_document(
    store: PlatformStore, embeddings: EmbeddingsClient | None, job: Job
) -> Indexed | None:
    """Chunk (and embed) the job's document and store its chunks (the keyword index follows them in the
    same transaction): None when there was nothing to do (the document is gone or changed meanwhile)."""
    document = await store.document(job.tenant_id, job.subject)
    if document is None:
        return None  # deleted since it was queued
    [chunks] = await chunked([document.content])
    vectors = None
    if embeddings is not None and chunks:
        rows = await embeddings.embed([embedded_text(document, c) for c in chunks])
        vectors = ChunkVectors(embeddings.model, [row.astype("<f4").tobytes() for row in rows])
    if not await store.replace_chunks(document.tenant_id, document.id, document.updated_at, chunks, vectors):
        return None
    return Indexed(document, len(chunks), vectors.model if vectors is not None else None)
