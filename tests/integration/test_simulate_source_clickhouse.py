"""ClickHouseSource and init_db against a real clickhouse-server, with a real Redis as the cache."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import orjson
import pytest
import redis.asyncio as aioredis
from clickhouse_driver import Client

from llmkit.core.cache import Cache, MemoryCache, cache_from_url
from llmkit.errors import BackendError, ConfigError
from llmkit.simulate.sources import (
    SAMPLE_QA,
    ClickHouseSource,
    SourceUnavailable,
    clickhouse_config,
    init_db,
    read_qa_jsonl,
)
from llmkit.simulate.sources.clickhouse import DB_RESPONSES_KEY
from tests.servers import ClickHouseServer, RedisServer, free_port

pytestmark = [pytest.mark.clickhouse, pytest.mark.redis]

SAMPLE = read_qa_jsonl(SAMPLE_QA)


@pytest.fixture
def ch_url(clickhouse_server: ClickHouseServer) -> Iterator[str]:
    """A database of its own on the session server, dropped after the test."""
    name = f"llmkit_t{uuid.uuid4().hex[:12]}"
    yield f"clickhouse://127.0.0.1:{clickhouse_server.tcp_port}/{name}"
    client = Client("127.0.0.1", port=clickhouse_server.tcp_port)
    try:
        client.execute(f"DROP DATABASE IF EXISTS {name}")
    finally:
        client.disconnect()


@pytest.fixture
def dead_url() -> str:
    return f"clickhouse://127.0.0.1:{free_port()}/default"


@pytest.fixture
async def cache(redis_server: RedisServer, redis_prefix: str) -> AsyncIterator[Cache]:
    made = cache_from_url(f"{redis_server.url}?prefix={redis_prefix}", default_ttl=3600)
    yield made
    await made.close()


@pytest.fixture
async def make_source() -> AsyncIterator[list[ClickHouseSource]]:
    made: list[ClickHouseSource] = []
    yield made
    for source in made:
        await source.close()


def new_source(made: list[ClickHouseSource], url: str, cache: Cache, ttl: float = 60) -> ClickHouseSource:
    source = ClickHouseSource(clickhouse_config(url), cache, ttl)
    made.append(source)
    return source


async def test_init_db_loads_the_sample_file_once(ch_url: str) -> None:
    assert await init_db(ch_url, "default", "", SAMPLE_QA) == len(SAMPLE)
    # The same qa_ids again add nothing.
    assert await init_db(ch_url, "default", "", SAMPLE_QA) == 0
    assert await init_db(ch_url, "default", "", None) == 0


async def test_answers_the_matching_row_in_the_seeds_format(
    ch_url: str, cache: Cache, make_source: list[ClickHouseSource]
) -> None:
    await init_db(ch_url, "default", "", SAMPLE_QA)
    source = new_source(make_source, ch_url, cache)
    await source.start()
    rng = random.Random(0)

    answer = await source.answer("apa ibu kota indonesia", rng)
    row = next(r for r in SAMPLE if r.pertanyaan == "Apa ibu kota Indonesia?")
    assert answer == (
        f"**Pertanyaan:** {row.pertanyaan}\n\n**Jawaban:** {row.jawaban}\n\n**Referensi:** {row.referensi}"
    )

    no_ref = next(r for r in SAMPLE if r.pertanyaan.startswith("Mengapa langit"))
    assert not no_ref.referensi
    answer = await source.answer("Mengapa langit berwarna BIRU?", rng)
    assert answer == f"**Pertanyaan:** {no_ref.pertanyaan}\n\n**Jawaban:** {no_ref.jawaban}"
    assert "Referensi" not in answer

    unmatched = await source.answer("Hello!", random.Random(5))
    assert unmatched == await source.answer("Hello!", random.Random(5))
    stats = source.stats()
    assert (stats["rows"], stats["matched"], stats["random"], stats["loads"]) == (len(SAMPLE), 2, 2, 1)


async def test_rows_are_cached_in_redis_with_the_ttl(
    ch_url: str,
    cache: Cache,
    make_source: list[ClickHouseSource],
    redis_client: aioredis.Redis,
    redis_prefix: str,
) -> None:
    await init_db(ch_url, "default", "", SAMPLE_QA)
    source = new_source(make_source, ch_url, cache, ttl=45)
    await source.start()
    key = f"{redis_prefix}:{DB_RESPONSES_KEY}"
    assert 35 <= await redis_client.ttl(key) <= 45
    raw = await redis_client.get(key)
    assert isinstance(raw, bytes)
    cached = orjson.loads(raw)
    assert len(cached) == len(SAMPLE)
    # ClickHouse orders UUIDs by their binary halves, not as text: compare as sets.
    assert {r["qa_id"] for r in cached} == {r.qa_id for r in SAMPLE}
    assert set(cached[0]) == {"qa_id", "pertanyaan", "jawaban", "referensi"}


async def test_unreachable_at_start_names_the_url(
    dead_url: str, cache: Cache, make_source: list[ClickHouseSource]
) -> None:
    source = new_source(make_source, dead_url, cache)
    with pytest.raises(BackendError, match=f"cannot reach ClickHouse at {dead_url}: .*refused"):
        await source.start()


async def test_missing_table_says_how_to_create_it(
    ch_url: str, clickhouse_server: ClickHouseServer, cache: Cache, make_source: list[ClickHouseSource]
) -> None:
    await init_db(ch_url, "default", "", None)  # database and empty table
    empty = new_source(make_source, ch_url, cache)
    with pytest.raises(BackendError, match="has no rows"):
        await empty.start()
    url = f"clickhouse://127.0.0.1:{clickhouse_server.tcp_port}/system"
    missing = new_source(make_source, url, cache)
    with pytest.raises(BackendError, match="has no table system.response_simulator.*llmkit simulate init-db"):
        await missing.start()
    no_db = new_source(make_source, f"clickhouse://127.0.0.1:{clickhouse_server.tcp_port}/nope_db", cache)
    with pytest.raises(BackendError, match="has no database nope_db"):
        await no_db.start()


async def test_cached_rows_are_served_while_clickhouse_is_down(
    ch_url: str, dead_url: str, cache: Cache, make_source: list[ClickHouseSource]
) -> None:
    await init_db(ch_url, "default", "", SAMPLE_QA)
    live = new_source(make_source, ch_url, cache)
    await live.start()
    expected = await live.answer("How do I reverse a list in Python?", random.Random(0))

    # Another replica whose ClickHouse is down, sharing the cache the first one filled.
    down = new_source(make_source, dead_url, cache)
    assert await down.answer("How do I reverse a list in Python?", random.Random(0)) == expected
    assert down.stats()["cache_hits"] == 1
    assert down.stats()["loads"] == 0


async def test_nothing_cached_and_clickhouse_down_is_unavailable(
    dead_url: str, make_source: list[ClickHouseSource]
) -> None:
    cache = MemoryCache()
    try:
        source = new_source(make_source, dead_url, cache)
        with pytest.raises(SourceUnavailable, match=f"cannot reach ClickHouse at {dead_url}.*no cached rows"):
            await source.answer("apa itu inflasi?", random.Random(0))
        # Within retry_after the next request fails fast with the same message.
        with pytest.raises(SourceUnavailable, match=dead_url):
            await source.answer("apa itu inflasi?", random.Random(0))
        assert source.stats()["unavailable"] == 2
        assert source.stats()["load_errors"] == 1
    finally:
        await cache.close()


async def test_expired_rows_are_reloaded_from_clickhouse(
    ch_url: str, cache: Cache, make_source: list[ClickHouseSource]
) -> None:
    await init_db(ch_url, "default", "", SAMPLE_QA)
    source = new_source(make_source, ch_url, cache, ttl=0.2)
    await source.start()
    deadline = time.monotonic() + 10
    while await cache.get(DB_RESPONSES_KEY) is not None:
        assert time.monotonic() < deadline, "the cached rows did not expire"
        await asyncio.sleep(0.05)
    answer = await source.answer("What is the boiling point of water?", random.Random(0))
    assert answer.startswith("**Pertanyaan:** What is the boiling point of water at sea level?")
    assert source.stats()["loads"] == 2
    assert await cache.get(DB_RESPONSES_KEY) is not None


async def test_bad_jsonl_line_names_file_and_line(ch_url: str, tmp_path: Path) -> None:
    path = tmp_path / "qa.jsonl"
    path.write_text('{"pertanyaan": "q1", "jawaban": "a1"}\n{"pertanyaan": "q2"}\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"{path}:2: jawaban must be a string"):
        await init_db(ch_url, "default", "", path)
    # Nothing was inserted: the whole file is checked first.
    assert await init_db(ch_url, "default", "", None) == 0
