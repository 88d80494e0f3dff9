"""One contract for every platform store's documents: round trip, paging, filters, keyword search, tenancy."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import asyncpg
import pytest

from llmkit.platform.documents.chunking import chunk_markdown
from llmkit.platform.documents.index_job import INDEX_DOCUMENT, index_job
from llmkit.platform.quota_types import Quotas
from llmkit.platform.store import documents_sql as ds
from llmkit.platform.store import platform_store_from_url
from llmkit.platform.store.base import ApiKey, Document, PlatformStore, StoreConflict, Tenant
from llmkit.platform.store.migrations import LATEST, MIGRATIONS, statements_of


def doc(
    did: str = "d1", content: str = "Hello world.", tenant_id: str = "t1", at: float = 100.0, **kw: object
) -> Document:
    return Document(
        id=did,
        tenant_id=tenant_id,
        title=str(kw.pop("title", f"Doc {did}")),
        content=content,
        metadata=kw.pop("metadata", {}),  # type: ignore[arg-type]
        created_at=at,
        updated_at=at,
    )


async def add(store: PlatformStore, document: Document, max_tokens: int = 64) -> None:
    await store.add_document(document, chunk_markdown(document.content, max_tokens, 8))


async def test_a_document_round_trips_with_its_chunks(store: PlatformStore) -> None:
    content = "# Guide\n\nIntro to the café.\n\n## Install\n\nRun the installer."
    document = doc(content=content, metadata={"lang": "en", "n": 3, "draft": False, "tags": ["a"]})
    await add(store, document)
    assert await store.document("t1", "d1") == document
    chunks = await store.document_chunks("t1", "d1")
    assert chunks == chunk_markdown(content, 64, 8)
    assert [c.headings for c in chunks] == [("Guide",), ("Guide", "Install")]
    assert await store.document("t1", "missing") is None
    assert await store.document_chunks("t1", "missing") == []


async def test_a_taken_id_within_the_tenant_is_a_conflict_and_changes_nothing(store: PlatformStore) -> None:
    await add(store, doc(content="original words"))
    with pytest.raises(StoreConflict):
        await add(store, doc(content="intruder words"))
    got = await store.document("t1", "d1")
    assert got is not None and got.content == "original words"
    assert await store.keyword_search("t1", "intruder") == []
    assert len(await store.keyword_search("t1", "original")) == 1


async def test_documents_are_paged_oldest_first(store: PlatformStore) -> None:
    for n in range(5):
        await add(store, doc(f"d{n}", at=100.0 + n))
    assert [d.id for d in await store.documents("t1", limit=2)] == ["d0", "d1"]
    assert [d.id for d in await store.documents("t1", limit=2, offset=2)] == ["d2", "d3"]
    assert [d.id for d in await store.documents("t1", limit=2, offset=4)] == ["d4"]
    assert await store.documents("t1", offset=10) == []


async def test_the_metadata_filter_matches_top_level_keys_exactly(store: PlatformStore) -> None:
    await add(store, doc("a", metadata={"lang": "en", "year": 2024, "public": True}, at=1.0))
    await add(store, doc("b", metadata={"lang": "fr", "year": 2024, "public": False}, at=2.0))
    await add(store, doc("c", metadata={"lang": "en", "year": "2024", "extra": None}, at=3.0))
    await add(store, doc("d", metadata={"nested": {"lang": "en"}}, at=4.0))

    async def ids(**filters: object) -> list[str]:
        return [d.id for d in await store.documents("t1", filters=filters)]

    assert await ids(lang="en") == ["a", "c"]
    assert await ids(lang="en", year=2024) == ["a"]
    assert await ids(year="2024") == ["c"]
    assert await ids(public=True) == ["a"]
    assert await ids(public=False) == ["b"]
    assert await ids(extra=None) == ["c"]
    assert await ids(lang="de") == []
    assert await ids() == ["a", "b", "c", "d"]
    with pytest.raises(ValueError, match="metadata filters"):
        await ids(nested={"lang": "en"})


async def test_search_answers_ranked_hits_with_highlights(store: PlatformStore) -> None:
    await add(store, doc("long", "Our notes mention postgres once " + "among many other words " * 30))
    await add(store, doc("short", "Postgres tuning: postgres settings for postgres.", title="Tuning"))
    await add(store, doc("none", "Nothing about databases here."))
    hits = await store.keyword_search("t1", "postgres", limit=10)
    assert [h.document_id for h in hits] == ["short", "long"]
    best = hits[0]
    assert best.title == "Tuning" and best.ordinal == 0 and best.text.startswith("Postgres tuning")
    assert best.score > hits[1].score > 0
    assert best.highlights and "<mark>" in best.highlights[0]
    assert "postgres" in best.highlights[0].lower()
    assert len(await store.keyword_search("t1", "postgres", limit=1)) == 1


async def test_only_chunks_with_a_rare_query_word_are_ranked_and_every_word_still_scores(
    store: PlatformStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    await add(store, doc("rare-only", "zebra grazes"))
    await add(store, doc("rare-and-common", "zebra grazes on the plain"))
    for n in range(4):
        await add(store, doc(f"common-{n}", "the plain the plain"))
    for n in range(6):  # "the" and "plain" stay in fewer than half the chunks: they weigh something
        await add(store, doc(f"other-{n}", "nothing of interest"))
    monkeypatch.setattr(ds, "CANDIDATE_BUDGET", 10**6)
    every = {h.document_id: h.score for h in await store.keyword_search("t1", "the zebra plain")}
    assert len(every) == 6
    # "zebra" is in 2 chunks, "the" and "plain" in 5: with room for 2 only zebra's chunks are candidates.
    monkeypatch.setattr(ds, "CANDIDATE_BUDGET", 2)
    hits = await store.keyword_search("t1", "the zebra plain")
    assert {h.document_id: h.score for h in hits} == {d: every[d] for d in ("rare-only", "rare-and-common")}
    marked = {h.document_id: h.highlights for h in hits}
    assert marked["rare-and-common"] == ("<mark>zebra</mark> grazes on <mark>the</mark> <mark>plain</mark>",)
    # A query of common words only still finds them (the rarest word always picks candidates).
    assert {h.document_id for h in await store.keyword_search("t1", "plain the")} == set(every) - {
        "rare-only"
    }
    assert await store.keyword_search("t1", "unicorn") == []


async def test_words_in_half_the_chunks_or_more_are_left_out(store: PlatformStore) -> None:
    await add(store, doc("z", "zebra of the plain"))
    for n in range(3):
        await add(store, doc(f"o{n}", "of the plain"))
    # "of", "the" and "plain" are in all 4 chunks: idf <= 0, floored to 1e-6 by FTS5, so they are
    # dropped and the score is zebra's alone.
    [alone] = await store.keyword_search("t1", "zebra")
    [hit] = await store.keyword_search("t1", "zebra of the plain")
    assert hit.document_id == "z" and hit.score == alone.score
    assert "<mark>zebra</mark>" in hit.highlights[0]
    # Only such words: they are searched after all.
    assert len(await store.keyword_search("t1", "of the plain")) == 4


async def test_which_words_pick_the_candidates_follows_new_chunks(
    store: PlatformStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ds, "CANDIDATE_BUDGET", 2)
    await add(store, doc("z", "zebra"))
    await add(store, doc("p1", "plain"))
    await add(store, doc("p2", "plain"))
    assert [h.document_id for h in await store.keyword_search("t1", "zebra plain")] == ["z"]
    for n in range(3):  # zebra becomes the common word: plain (2 chunks) picks the candidates now
        await add(store, doc(f"z{n}", "zebra zebra"))
    hits = await store.keyword_search("t1", "zebra plain")
    assert sorted(h.document_id for h in hits) == ["p1", "p2"]


async def test_a_search_sees_what_another_process_indexed_and_scores_as_a_fresh_store(
    store: PlatformStore, store_url: str
) -> None:
    other = platform_store_from_url(store_url)  # another replica or worker on the same database
    await other.open()
    try:
        await add(store, doc("a", "zebra plain"))
        for n in range(3):
            await add(store, doc(f"o{n}", "nothing here"))
        assert [h.document_id for h in await store.keyword_search("t1", "zebra unicorn")] == ["a"]
        assert await store.keyword_search("t1", "unicorn") == []
        await add(other, doc("b", "zebra unicorn"))
        await add(other, doc("c", "zebra zebra"))
        hits = await store.keyword_search("t1", "zebra unicorn")
        assert [h.document_id for h in hits][0] == "b"
        fresh = platform_store_from_url(store_url)
        await fresh.open()
        try:
            expected = await fresh.keyword_search("t1", "zebra unicorn")
        finally:
            await fresh.close()
        assert [(h.document_id, h.score) for h in hits] == [(h.document_id, h.score) for h in expected]
        assert [h.document_id for h in await store.keyword_search("t1", "unicorn")] == ["b"]
    finally:
        await other.close()


async def test_highlights_are_escaped_html_around_the_marks(store: PlatformStore) -> None:
    await add(store, doc("x", "Use <script>alert(1)</script> & postgres carefully."))
    [hit] = await store.keyword_search("t1", "postgres script")
    assert hit.highlights == (
        "Use &lt;<mark>script</mark>&gt;alert(1)&lt;/<mark>script</mark>&gt; &amp; "
        "<mark>postgres</mark> carefully",
    )


async def test_any_word_of_the_query_matches_and_more_words_rank_higher(store: PlatformStore) -> None:
    await add(store, doc("one", "apples are red"))
    await add(store, doc("both", "apples and pears together"))
    hits = await store.keyword_search("t1", "pears apples")
    assert [h.document_id for h in hits] == ["both", "one"]
    assert await store.keyword_search("t1", "APPLES") != []


async def test_search_filters_by_metadata(store: PlatformStore) -> None:
    await add(store, doc("en", "shared topic", metadata={"lang": "en"}))
    await add(store, doc("fr", "shared topic", metadata={"lang": "fr"}))
    assert [h.document_id for h in await store.keyword_search("t1", "topic", filters={"lang": "fr"})] == [
        "fr"
    ]


async def test_updating_keeps_the_old_chunks_until_the_new_version_is_indexed(store: PlatformStore) -> None:
    await add(store, doc(content="zebra stripes", at=100.0))
    replaced = doc(content="giraffe necks", title="New", metadata={"v": 2}, at=200.0)
    assert await store.update_document(replaced) is True
    got = await store.document("t1", "d1")
    assert got is not None and (got.created_at, got.updated_at, got.metadata) == (100.0, 200.0, {"v": 2})
    # The old words are found (under the new title) until the new chunks replace them.
    assert [h.title for h in await store.keyword_search("t1", "zebra")] == ["New"]
    assert await store.replace_chunks("t1", "d1", 200.0, chunk_markdown(replaced.content)) is True
    assert await store.keyword_search("t1", "zebra") == []
    assert [h.title for h in await store.keyword_search("t1", "giraffe")] == ["New"]
    assert await store.update_document(doc("missing")) is False
    assert await store.document("t1", "missing") is None
    assert await store.replace_chunks("t1", "missing", 100.0, chunk_markdown("x")) is False


async def test_chunks_of_a_version_that_was_replaced_are_not_written(store: PlatformStore) -> None:
    # A job read version 100; a PUT made version 200 before the job finished: its chunks are stale.
    await add(store, doc(content="first words", at=100.0))
    assert await store.update_document(doc(content="second words", at=200.0)) is True
    assert await store.replace_chunks("t1", "d1", 100.0, chunk_markdown("first words")) is False
    assert await store.replace_chunks("t1", "d1", 200.0, chunk_markdown("second words")) is True
    assert await store.replace_chunks("t1", "d1", 100.0, chunk_markdown("first words")) is False
    assert [c.text for c in await store.document_chunks("t1", "d1")] == ["second words"]
    assert await store.replace_chunks("t2", "d1", 200.0, chunk_markdown("other tenant")) is False


async def test_documents_and_their_jobs_are_stored_together_and_the_latest_job_is_found(
    store: PlatformStore,
) -> None:
    jobs = [index_job("t1", "a", 10.0), index_job("t1", "b", 10.0)]
    await store.add_documents([(doc("a"), ()), (doc("b"), ())], jobs)
    latest = await store.latest_jobs("t1", INDEX_DOCUMENT, ["a", "b", "c"])
    assert {k: v.id for k, v in latest.items()} == {"a": jobs[0].id, "b": jobs[1].id}
    newer = index_job("t1", "a", 20.0)
    assert await store.update_document(doc("a", "changed", at=20.0), newer) is True
    latest = await store.latest_jobs("t1", INDEX_DOCUMENT, ["a"])
    assert latest["a"].id == newer.id and latest["a"].state == "queued"
    assert await store.latest_jobs("t2", INDEX_DOCUMENT, ["a"]) == {}
    assert await store.latest_jobs("t1", "other_kind", ["a"]) == {}
    assert await store.latest_jobs("t1", INDEX_DOCUMENT, []) == {}
    # A conflict stores neither the documents nor their jobs.
    clash = index_job("t1", "c", 30.0)
    with pytest.raises(StoreConflict):
        await store.add_documents([(doc("c"), ()), (doc("a"), ())], [clash])
    assert await store.job(clash.id) is None and await store.document("t1", "c") is None


async def test_deleting_removes_the_document_from_search(store: PlatformStore) -> None:
    await add(store, doc("d1", "unicorn horn"))
    await add(store, doc("d2", "unicorn mane"))
    assert await store.delete_document("t1", "d1") is True
    assert await store.delete_document("t1", "d1") is False
    assert await store.document("t1", "d1") is None
    assert await store.document_chunks("t1", "d1") == []
    assert [h.document_id for h in await store.keyword_search("t1", "unicorn")] == ["d2"]
    assert await store.keyword_search("t1", "horn") == []


async def test_a_tenant_never_sees_finds_or_deletes_another_tenants_document(store: PlatformStore) -> None:
    # Ids are unique per tenant: tenant B may use A's id, and learns nothing about A's documents by it.
    await add(store, doc("same", "secret alpha plans", tenant_id="A", title="A's"))
    await add(store, doc("same", "public beta notes", tenant_id="B", title="B's"))
    got = await store.document("B", "same")
    assert got is not None and got.title == "B's"
    assert await store.keyword_search("B", "secret alpha") == []
    assert [d.title for d in await store.documents("B")] == ["B's"]
    assert await store.document_chunks("B", "same") == chunk_markdown("public beta notes", 64, 8)
    assert await store.delete_document("B", "same") is True
    assert await store.delete_document("B", "same") is False
    assert await store.update_document(doc("same", "overwrite", tenant_id="B")) is False
    kept = await store.document("A", "same")
    assert kept is not None and kept.content == "secret alpha plans"
    assert [h.title for h in await store.keyword_search("A", "secret")] == ["A's"]
    assert await store.keyword_search("C", "secret") == []


async def test_deleting_a_tenant_deletes_its_documents(store: PlatformStore) -> None:
    await store.add_tenant(Tenant("A", "Acme", Quotas(), 1.0, 1.0))
    await add(store, doc("d1", "ledger entries", tenant_id="A"))
    await add(store, doc("d1", "ledger entries", tenant_id="B"))
    assert await store.delete_tenant("A", at=2.0) == 0
    assert await store.document("A", "d1") is None
    assert await store.keyword_search("A", "ledger") == []
    assert len(await store.keyword_search("B", "ledger")) == 1


async def test_the_sqlite_index_survives_vacuum(tmp_path: Path) -> None:
    # FTS5 points at chunk rowids: they must be a declared column, or VACUUM may renumber them.
    store = platform_store_from_url(f"sqlite:///{tmp_path}/platform.db")
    await store.open()
    try:
        for n in range(20):
            await add(store, doc(f"d{n}", f"filler {n}"))
        for n in range(0, 20, 2):
            await store.delete_document("t1", f"d{n}")
        await add(store, doc("target", "needle in the haystack"))
        with sqlite3.connect(tmp_path / "platform.db") as conn:
            conn.execute("VACUUM")
        hits = await store.keyword_search("t1", "needle")
        assert [(h.document_id, h.text) for h in hits] == [("target", "needle in the haystack")]
    finally:
        await store.close()


HOSTILE = [
    '"',
    '"unterminated',
    "*",
    "post*",
    "NEAR(",
    "NEAR(a b",
    "text:",
    "col:word",
    "&|!",
    "a & | b !",
    "'",
    "it's",
    "'a' | 'b'",
    "(",
    ")",
    "-",
    "^word",
    "AND OR NOT",
    "\\",
    "\x00",
    "日本語",
    "ÿ🙂 ñandú",
    "  ",
    "",
]


@pytest.mark.parametrize("query", HOSTILE)
async def test_hostile_queries_answer_without_an_error(store: PlatformStore, query: str) -> None:
    await add(store, doc(content="word and text: it's a post about ñandú birds NEAR the lake 日本語"))
    hits = await store.keyword_search("t1", query)
    assert all(h.document_id == "d1" for h in hits)


async def test_queries_without_words_answer_no_hits(store: PlatformStore) -> None:
    await add(store, doc(content="anything at all"))
    for query in ("", "   ", '"*"', "&|!", "'"):
        assert await store.keyword_search("t1", query) == []
    assert await store.keyword_search("t1", "anything", limit=0) == []


async def test_unicode_words_are_found(store: PlatformStore) -> None:
    await add(store, doc(content="Le ñandú court vite dans la pampa."))
    assert [h.document_id for h in await store.keyword_search("t1", "Ñandú")] == ["d1"]


# A version-1 database as the llmkit that knew only migration 1 left it: its tables, a tenant and a key.
_V1_ROWS = (
    "INSERT INTO tenants (id, name, rpm, created_at, updated_at) VALUES ('t1', 'Acme', 5, 10, 10)",
    "INSERT INTO api_keys (id, secret_hash, name, description, tenant_id, scopes, created_at) "
    "VALUES ('k1', 'abab', 'key', '', 't1', 'chat search', 20)",
    "INSERT INTO llmkit_schema (version) VALUES (1)",
)


def _version_one_sqlite(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE llmkit_schema (version INTEGER NOT NULL)")
        for statement in (*statements_of(MIGRATIONS[0], "sqlite"), *_V1_ROWS):
            conn.execute(statement)


async def _version_one_postgres(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("CREATE TABLE llmkit_schema (version INTEGER NOT NULL)")
        for statement in (*statements_of(MIGRATIONS[0], "postgresql"), *_V1_ROWS):
            await conn.execute(statement)
    finally:
        await conn.close()


async def test_a_version_one_database_migrates_keeping_tenants_and_keys(
    store_url: str, tmp_path: Path
) -> None:
    assert LATEST >= 2
    if store_url.startswith("sqlite"):
        _version_one_sqlite(tmp_path / "platform.db")
    else:
        await _version_one_postgres(store_url)
    migrated = platform_store_from_url(store_url)
    await migrated.open()
    try:
        assert await migrated.schema_version() == LATEST
        assert await migrated.tenants() == [Tenant("t1", "Acme", Quotas(rpm=5), 10.0, 10.0)]
        assert await migrated.keys() == [ApiKey("k1", "abab", "key", "", "t1", ("chat", "search"), 20.0)]
        await add(migrated, doc(content="after the migration", tenant_id="t1"))
        assert len(await migrated.keyword_search("t1", "migration")) == 1
    finally:
        await migrated.close()


async def test_a_batch_with_a_taken_id_stores_none_of_its_documents(store: PlatformStore) -> None:
    await add(store, doc("taken", "first words"))
    batch = [doc("new1", "fresh words"), doc("taken", "other words"), doc("new2", "more words")]
    with pytest.raises(StoreConflict):
        await store.add_documents([(d, chunk_markdown(d.content)) for d in batch])
    assert await store.document("t1", "new1") is None and await store.document("t1", "new2") is None
    assert [h.document_id for h in await store.keyword_search("t1", "fresh more first")] == ["taken"]
    await store.add_documents([(d, chunk_markdown(d.content)) for d in (batch[0], batch[2])])
    assert {d.id for d in await store.documents("t1")} == {"taken", "new1", "new2"}


async def test_an_in_memory_sqlite_store_searches_its_own_documents() -> None:
    # sqlite:///:memory: (tests): the keyword reader's second connection must open the same database.
    memory = platform_store_from_url("sqlite:///:memory:")
    other = platform_store_from_url("sqlite:///:memory:")
    await memory.open()
    await other.open()
    try:
        await add(memory, doc("z", "zebra crossing"))
        await add(other, doc("o", "zebra elsewhere"))
        assert [h.document_id for h in await memory.keyword_search("t1", "zebra")] == ["z"]
        assert [h.document_id for h in await other.keyword_search("t1", "zebra")] == ["o"]
    finally:
        await memory.close()
        await other.close()
