"""FileSource on a memory cache, the shipped zresponse/ answers, and source_from_settings."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from llmkit.core.cache import Cache, MemoryCache
from llmkit.errors import BackendError
from llmkit.settings import Settings, SimulateSettings
from llmkit.simulate.sources import (
    ClickHouseSource,
    FileSource,
    QaSource,
    SourceUnavailable,
    source_from_settings,
)
from llmkit.simulate.sources.file import FILE_LIST_KEY, file_key

ZRESPONSE = Path(__file__).resolve().parents[2] / "zresponse"

FILES = {
    "nasi-goreng.md": "# Resep Nasi Goreng\n\nNasi goreng kampung dengan telur dan kecap manis. 🍳\n",
    "python-asyncio.md": "# Concurrent HTTP in Python\n\nUse asyncio and aiohttp to fetch many URLs.\n",
    "tcp-udp.md": "# Perbedaan TCP dan UDP\n\n| TCP | UDP |\n|---|---|\n| andal | cepat |\n",
}


@pytest.fixture
def responses(tmp_path: Path) -> Path:
    for name, text in FILES.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    (tmp_path / "notes.txt").write_text("not markdown")
    return tmp_path


@pytest.fixture
async def cache() -> AsyncIterator[Cache]:
    made = MemoryCache(max_size_mb=16)
    yield made
    await made.close()


async def test_answers_the_best_matching_file(responses: Path, cache: Cache) -> None:
    source = FileSource(responses, cache, ttl=60)
    await source.start()
    rng = random.Random(1)
    assert await source.answer("bagaimana cara membuat nasi goreng?", rng) == FILES["nasi-goreng.md"]
    assert await source.answer("Concurrent HTTP requests in PYTHON", rng) == FILES["python-asyncio.md"]
    assert await source.answer("apa perbedaan tcp dan udp?", rng) == FILES["tcp-udp.md"]
    stats = source.stats()
    assert stats["files"] == 3
    assert stats["answers"] == 3
    assert stats["matched"] == 3
    assert stats["random"] == 0
    await source.close()


async def test_unmatched_prompts_pick_randomly_and_repeatably(responses: Path, cache: Cache) -> None:
    source = FileSource(responses, cache, ttl=60)
    await source.start()
    first = [await source.answer("Hello!", random.Random(7)) for _ in range(3)]
    rng_a, rng_b = random.Random(3), random.Random(3)
    seq_a = [await source.answer("xyzzy", rng_a) for _ in range(10)]
    seq_b = [await source.answer("xyzzy", rng_b) for _ in range(10)]
    assert len(set(first)) == 1
    assert seq_a == seq_b
    assert set(seq_a) <= set(FILES.values())
    assert source.stats()["random"] == 23


async def test_caches_the_file_list_and_contents(responses: Path, cache: Cache) -> None:
    source = FileSource(responses, cache, ttl=60)
    await source.start()
    assert await cache.get(FILE_LIST_KEY) == b'["nasi-goreng.md","python-asyncio.md","tcp-udp.md"]'
    await source.answer("nasi goreng", random.Random(0))
    assert (await cache.get(file_key("nasi-goreng.md")) or b"").decode() == FILES["nasi-goreng.md"]
    # Served from the cache now: the file on disk is no longer read.
    (responses / "nasi-goreng.md").write_text("# changed\n")
    assert await source.answer("nasi goreng", random.Random(0)) == FILES["nasi-goreng.md"]
    assert source.stats()["cache_hits"] >= 2


async def test_new_files_show_up_when_the_file_list_expires(responses: Path, cache: Cache) -> None:
    source = FileSource(responses, cache, ttl=60)
    await source.start()
    (responses / "rendang.md").write_text("# Resep Rendang Padang\n\nDaging sapi dimasak santan.\n")
    assert "Rendang" not in await source.answer("resep rendang padang", random.Random(0))
    await cache.delete(FILE_LIST_KEY)  # what the 600 s TTL does eventually
    assert "Rendang" in await source.answer("resep rendang padang", random.Random(0))
    assert source.stats()["files"] == 4


async def test_missing_directory_is_a_backend_error(tmp_path: Path, cache: Cache) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(BackendError, match=str(missing)):
        await FileSource(missing, cache, ttl=60).start()


async def test_directory_without_markdown_is_a_backend_error(tmp_path: Path, cache: Cache) -> None:
    (tmp_path / "readme.txt").write_text("hi")
    with pytest.raises(BackendError, match=rf"{tmp_path}.*no \.md files"):
        await FileSource(tmp_path, cache, ttl=60).start()


async def test_a_file_deleted_after_listing_is_unavailable(responses: Path, cache: Cache) -> None:
    source = FileSource(responses, cache, ttl=60)
    await source.start()
    (responses / "tcp-udp.md").unlink()
    with pytest.raises(SourceUnavailable, match="tcp-udp.md"):
        await source.answer("perbedaan tcp udp", random.Random(0))
    # The stale list was dropped, so the next request lists the directory again.
    assert await cache.get(FILE_LIST_KEY) is None
    assert await source.answer("perbedaan tcp udp", random.Random(0)) in FILES.values()


async def test_a_foreign_file_list_in_the_cache_is_ignored(responses: Path, cache: Cache) -> None:
    await cache.set(FILE_LIST_KEY, b'["../../etc/passwd"]', ttl=600)
    source = FileSource(responses, cache, ttl=60)
    assert await source.answer("nasi goreng", random.Random(0)) == FILES["nasi-goreng.md"]


def test_shipped_zresponse_files() -> None:
    files = sorted(ZRESPONSE.glob("*.md"))
    assert len(files) >= 12
    texts = {f.name: f.read_text(encoding="utf-8") for f in files}
    for name, text in texts.items():
        assert text.startswith("# "), name
    assert sum(len(t.encode()) for t in texts.values()) < 60_000
    assert any("|---" in t for t in texts.values()), "a table"
    assert any("```" in t for t in texts.values()), "a code block"
    indonesian = [n for n, t in texts.items() if {"yang", "dan", "adalah"} <= set(t.lower().split())]
    assert indonesian, "an Indonesian answer"
    assert any(any(ord(ch) > 0xFFFF for ch in t) for t in texts.values()), "an emoji"


async def test_shipped_zresponse_answers_match_their_topics(cache: Cache) -> None:
    source = FileSource(ZRESPONSE, cache, ttl=60)
    await source.start()
    rng = random.Random(0)
    assert (await source.answer("resep nasi goreng", rng)).startswith("# Resep Nasi Goreng")
    assert "Canberra" in await source.answer("What is the capital of Australia?", rng)
    assert "git revert" in await source.answer("how to undo my last git commit", rng)


async def test_source_from_settings(tmp_path: Path, cache: Cache) -> None:
    settings = Settings(simulate=SimulateSettings(responses_dir=str(tmp_path)))
    # By default the shipped question-answer set answers first, the markdown files after it.
    qa_source = source_from_settings(settings, cache)
    assert isinstance(qa_source, QaSource) and qa_source.name == "file"
    assert isinstance(qa_source.fallback, FileSource) and qa_source.fallback.directory == tmp_path
    off = dataclasses.replace(
        settings, simulate=SimulateSettings(responses_dir=str(tmp_path), qa_enabled=False)
    )
    file_source = source_from_settings(off, cache)
    assert isinstance(file_source, FileSource)
    assert file_source.directory == tmp_path
    db_settings = dataclasses.replace(settings, simulate=SimulateSettings(source="database"))
    db_source = source_from_settings(db_settings, cache)
    assert isinstance(db_source, ClickHouseSource)
    assert db_source.config.url == "clickhouse://127.0.0.1:9000/default"
    await db_source.close()
