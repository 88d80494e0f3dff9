"""FileSource on a real Redis: the seed's keys (`{prefix}:file_list`, `{prefix}:file:{name}`) and TTLs."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import orjson
import pytest
import redis.asyncio as aioredis

from llmkit.core.cache import Cache, cache_from_url
from llmkit.errors import BackendError
from llmkit.simulate.sources import FileSource
from tests.servers import RedisServer

pytestmark = pytest.mark.redis

ZRESPONSE = Path(__file__).resolve().parents[2] / "zresponse"


@pytest.fixture
async def cache(redis_server: RedisServer, redis_prefix: str) -> AsyncIterator[Cache]:
    made = cache_from_url(f"{redis_server.url}?prefix={redis_prefix}", default_ttl=3600)
    yield made
    await made.close()


async def test_keys_and_ttls_as_the_seed_writes_them(
    cache: Cache, redis_client: aioredis.Redis, redis_prefix: str
) -> None:
    source = FileSource(ZRESPONSE, cache, ttl=60)
    await source.start()
    answer = await source.answer("apa perbedaan TCP dan UDP?", random.Random(0))
    assert answer == (ZRESPONSE / "perbedaan-tcp-udp.md").read_text(encoding="utf-8")

    list_ttl = await redis_client.ttl(f"{redis_prefix}:file_list")
    assert 590 <= list_ttl <= 600
    names = sorted(p.name for p in ZRESPONSE.glob("*.md"))
    listed = await redis_client.get(f"{redis_prefix}:file_list")
    assert isinstance(listed, bytes)
    assert orjson.loads(listed) == names

    file_ttl = await redis_client.ttl(f"{redis_prefix}:file:perbedaan-tcp-udp.md")
    assert 50 <= file_ttl <= 60
    raw = await redis_client.get(f"{redis_prefix}:file:perbedaan-tcp-udp.md")
    assert raw == (ZRESPONSE / "perbedaan-tcp-udp.md").read_bytes()
    await source.close()


async def test_second_replica_reads_contents_from_redis(
    cache: Cache, redis_server: RedisServer, redis_prefix: str, tmp_path: Path
) -> None:
    (tmp_path / "emoji.md").write_text("# Emoji ✨\n\nSelamat pagi ☀️ — café 😀\n", encoding="utf-8")
    first = FileSource(tmp_path, cache, ttl=120)
    await first.start()
    text = await first.answer("emoji", random.Random(0))
    assert text == "# Emoji ✨\n\nSelamat pagi ☀️ — café 😀\n"

    other = cache_from_url(f"{redis_server.url}?prefix={redis_prefix}")
    try:
        second = FileSource(tmp_path, other, ttl=120)
        assert await second.answer("emoji", random.Random(0)) == text
        assert second.stats()["cache_hits"] == 2  # file list and content
        assert second.stats()["disk_reads"] == 0
    finally:
        await other.close()


async def test_redis_down_falls_back_to_disk(
    redis_factory: Callable[[], RedisServer], tmp_path: Path
) -> None:
    server = redis_factory()
    (tmp_path / "a.md").write_text("# Alpha\n\nalpha text\n")
    cache = cache_from_url(f"{server.url}?prefix=down&timeout=1")
    try:
        source = FileSource(tmp_path, cache, ttl=60)
        await source.start()
        server.stop()
        assert await source.answer("alpha", random.Random(0)) == "# Alpha\n\nalpha text\n"
        assert source.stats()["cache_errors"] >= 1
    finally:
        await cache.close()


async def test_missing_directory_names_it(cache: Cache, tmp_path: Path) -> None:
    with pytest.raises(BackendError, match=f"{tmp_path / 'missing'} does not exist"):
        await FileSource(tmp_path / "missing", cache, ttl=60).start()
