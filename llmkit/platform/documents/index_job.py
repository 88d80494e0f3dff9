"""The `index_document` job: chunk a stored document and put its chunks in the keyword index.

Idempotent, as a job must be (jobs.py): it indexes the document as it is when the job runs, and writes
its chunks only if the document is still that version (`replace_chunks`), so a job that read content a
later PUT replaced leaves the index to that PUT's job, and one whose document was deleted does nothing.
"""

from __future__ import annotations

import time

from llmkit.core.ids import fresh_hex
from llmkit.platform.documents.chunking import chunked
from llmkit.platform.store.base import Job, PlatformStore

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


async def index_document(store: PlatformStore, job: Job) -> bool:
    """Chunk the job's document and store its chunks (the index follows them in the same transaction):
    False when there was nothing to do (the document is gone or changed while it was chunked)."""
    document = await store.document(job.tenant_id, job.subject)
    if document is None:
        return False  # deleted since it was queued
    [chunks] = await chunked([document.content])
    return await store.replace_chunks(document.tenant_id, document.id, document.updated_at, chunks)
