"""Keyword search ranks alike on SQLite (FTS5's bm25) and a real PostgreSQL (BM25 in SQL over the same
words): the shipped benchmark corpus and its questions get the same top hits, in the same order, with the
same scores; and a PostgreSQL store migrated from schema 6 still finds what it held."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from llmkit.platform.documents.chunking import chunk_markdown
from llmkit.platform.quota_types import Quotas
from llmkit.platform.store import platform_store_from_url
from llmkit.platform.store.base import Document, PlatformStore, Tenant
from llmkit.platform.store.migrations import LATEST, MIGRATIONS, statements_of

pytestmark = pytest.mark.postgres

DATA = Path(__file__).parents[2] / "bench" / "data"
DOCUMENTS = 150


def corpus() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The first DOCUMENTS documents of the benchmark corpus and the questions about them."""
    docs = [json.loads(line) for line in (DATA / "search_corpus.jsonl").read_text().splitlines()][:DOCUMENTS]
    ids = {d["id"] for d in docs}
    questions = [json.loads(line) for line in (DATA / "search_questions.jsonl").read_text().splitlines()]
    return docs, [q for q in questions if set(q["relevant"]) <= ids]


async def loaded(url: str, docs: list[dict[str, Any]]) -> PlatformStore:
    store = platform_store_from_url(url)
    await store.open()
    await store.add_tenant(Tenant(id="t1", name="Acme", quotas=Quotas(), created_at=1.0, updated_at=1.0))
    items = [
        (
            Document(d["id"], "t1", d["title"], d["content"], d["metadata"], 1.0, 1.0),
            chunk_markdown(d["content"]),
        )
        for d in docs
    ]
    await store.add_documents(items)
    return store


@pytest.fixture
async def stores(tmp_path: Path, postgres_url: str) -> AsyncIterator[tuple[PlatformStore, PlatformStore]]:
    docs, _ = corpus()
    sqlite, postgres = await loaded(f"sqlite:///{tmp_path}/p.db", docs), await loaded(postgres_url, docs)
    yield sqlite, postgres
    await sqlite.close()
    await postgres.close()


async def test_both_stores_give_the_same_top_hits_with_the_same_scores(
    stores: tuple[PlatformStore, PlatformStore],
) -> None:
    sqlite, postgres = stores
    _, questions = corpus()
    assert len(questions) >= 100
    found = 0
    for question in questions:
        a = await sqlite.keyword_search("t1", question["question"], 5)
        b = await postgres.keyword_search("t1", question["question"], 5)
        assert [(h.document_id, h.ordinal) for h in a] == [(h.document_id, h.ordinal) for h in b], question
        assert [h.score for h in a] == pytest.approx([h.score for h in b], rel=1e-6), question
        found += a[0].document_id in question["relevant"]
    assert found >= 0.75 * len(questions)  # and the ranking is a good one (119 of 150), not merely the same


async def test_filters_and_a_rare_word_rank_alike(stores: tuple[PlatformStore, PlatformStore]) -> None:
    sqlite, postgres = stores
    for query, filters in (("broker state PostgreSQL", {"team": "storage"}), ("MQTT", None), ("zzzz", None)):
        a = await sqlite.keyword_search("t1", query, 10, filters)
        b = await postgres.keyword_search("t1", query, 10, filters)
        assert [(h.document_id, h.ordinal) for h in a] == [(h.document_id, h.ordinal) for h in b]
        assert all(h.highlights and "<mark>" in h.highlights[0] for h in a + b)


async def test_chunks_stored_before_schema_7_are_still_found(postgres_url: str) -> None:
    # A deployment upgraded from schema 6: its chunks have no split words yet; the migration counts
    # their words from PostgreSQL's own split, and BM25 still ranks them.
    conn = await asyncpg.connect(postgres_url)
    try:
        for statement in (
            "CREATE TABLE llmkit_schema (version INTEGER NOT NULL)",
            *(s for number in range(6) for s in statements_of(MIGRATIONS[number], "postgresql")),
            "INSERT INTO llmkit_schema (version) VALUES (6)",
        ):
            await conn.execute(statement)
        await conn.execute(
            "INSERT INTO documents (tenant_id, id, title, content, metadata, created_at, updated_at)"
            " VALUES ('t1', 'old', 'Old', 'Kafka brokers rebalance.', '{}', 1, 1)"
        )
        await conn.execute(
            "INSERT INTO document_chunks (tenant_id, document_id, ordinal, heading, text, tokens)"
            " VALUES ('t1', 'old', 0, '[]', 'Kafka brokers rebalance.', 4)"
        )
    finally:
        await conn.close()
    store = platform_store_from_url(postgres_url)
    await store.open()
    try:
        assert await store.schema_version() == LATEST
        (hit,) = await store.keyword_search("t1", "kafka rebalance", 5)
        assert hit.document_id == "old" and hit.score > 0
    finally:
        await store.close()
