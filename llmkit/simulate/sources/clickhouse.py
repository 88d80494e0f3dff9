"""Answers from the ClickHouse table `response_simulator`, cached as one JSON list (`db_responses`)."""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import orjson

from llmkit.core.cache.base import Cache
from llmkit.core.clickhouse import TABLE, ClickHouseConfig, backend_error, clickhouse_config
from llmkit.core.secrets import mask_url
from llmkit.errors import BackendError
from llmkit.simulate.sources.base import SourceUnavailable
from llmkit.simulate.sources.matching import Matcher
from llmkit.simulate.sources.qa_file import SAMPLE_QA, QaRow, read_qa_jsonl
from llmkit.simulate.sources.soft_cache import SoftCache

if TYPE_CHECKING:
    from clickhouse_driver import Client

__all__ = [
    "DB_RESPONSES_KEY",
    "SAMPLE_FILE",
    "TABLE",
    "ClickHouseConfig",
    "ClickHouseSource",
    "QaRow",
    "clickhouse_config",
    "format_answer",
    "init_db",
    "read_qa_jsonl",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

DB_RESPONSES_KEY = "db_responses"
# The sample rows `llmkit simulate init-db --sample` loads.
SAMPLE_FILE = SAMPLE_QA
# Plain types and the old MergeTree() ORDER BY syntax, so it runs on ClickHouse 18.16 and on current ones.
CREATE_TABLE = """CREATE TABLE IF NOT EXISTS {db}.{table} (
    qa_id UUID,
    pertanyaan String,
    jawaban String,
    referensi String
) ENGINE = MergeTree() ORDER BY qa_id"""


def format_answer(row: QaRow) -> str:
    """The seed's answer text: question, answer and, when there is one, the reference."""
    text = f"**Pertanyaan:** {row.pertanyaan}\n\n**Jawaban:** {row.jawaban}"
    if row.referensi:
        text += f"\n\n**Referensi:** {row.referensi}"
    return text


@dataclass(frozen=True)
class _Snapshot:
    rows: tuple[QaRow, ...]
    matcher: Matcher
    raw: bytes
    expires: float


def _encode(rows: tuple[QaRow, ...]) -> bytes:
    return orjson.dumps([row._asdict() for row in rows])


def _decode(raw: bytes) -> tuple[QaRow, ...] | None:
    """Rows cached by any replica, or None if the entry is not a list of rows."""
    try:
        data = orjson.loads(raw)
        return tuple(
            QaRow(str(d["qa_id"]), str(d["pertanyaan"]), str(d["jawaban"]), str(d.get("referensi") or ""))
            for d in data
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
        return None


class ClickHouseSource:
    """Picks the row whose `pertanyaan` best matches the prompt, else a random row."""

    name = "database"

    def __init__(
        self,
        config: ClickHouseConfig,
        cache: Cache,
        ttl: float,
        *,
        max_rows: int = 100_000,
        threshold: float = 0.25,
        retry_after: float = 1.0,
        executor: ThreadPoolExecutor | None = None,
    ) -> None:
        self.config = config
        self.cache = cache
        self.ttl = ttl
        self.max_rows = max_rows
        self.threshold = threshold
        # After a failed load, requests fail fast for this long instead of each waiting on a dead server.
        self.retry_after = retry_after
        # One thread is enough: loads are single-flight, and a clickhouse-driver Client is not thread-safe.
        self._owns_executor = executor is None
        self._executor = executor or ThreadPoolExecutor(max_workers=1, thread_name_prefix="llmkit-clickhouse")
        self._client: Client | None = None
        self._snapshot: _Snapshot | None = None
        self._loading: asyncio.Task[_Snapshot] | None = None
        self._failed_until = 0.0
        self._last_error = ""
        self._closed = False
        self.answers = self.matched = self.random = 0
        # The cache is an optimisation here: a failing cache is counted and logged, and ClickHouse is asked.
        self.soft_cache = SoftCache(cache, "database source", log)
        self.loads = self.load_errors = self.unavailable = 0

    async def start(self) -> None:
        """Load the rows from ClickHouse and cache them; BackendError naming the URL if that fails."""
        snapshot = await self._load_from_clickhouse()
        if not snapshot.rows:
            raise BackendError(
                f"ClickHouse at {self.config.url}: table {self.config.database}.{TABLE} has no rows; load "
                "some with `llmkit simulate init-db --load FILE.jsonl` (or --sample)"
            )
        self._snapshot = snapshot
        log.info("database source: %d rows from %s", len(snapshot.rows), self.config.url)

    async def answer(self, prompt: str, rng: random.Random) -> str:
        """The best-matching row (or a random one) formatted as the seed does."""
        snapshot = self._snapshot
        if snapshot is None or time.monotonic() >= snapshot.expires:
            snapshot = await self._refresh()
        if not snapshot.rows:
            self.unavailable += 1
            raise SourceUnavailable(f"ClickHouse at {self.config.url}: table {TABLE} has no rows")
        found, matched = snapshot.matcher.choose(prompt, rng)
        row = snapshot.rows[found]
        self.matched += matched
        self.random += not matched
        self.answers += 1
        return format_answer(row)

    def stats(self) -> dict[str, Any]:
        """Answers served, matched vs random, cache hits and misses, ClickHouse loads and failures."""
        snapshot = self._snapshot
        return {
            "source": self.name,
            "url": mask_url(self.config.url),
            "rows": len(snapshot.rows) if snapshot else 0,
            "answers": self.answers,
            "matched": self.matched,
            "random": self.random,
            **self.soft_cache.stats(),
            "loads": self.loads,
            "load_errors": self.load_errors,
            "unavailable": self.unavailable,
        }

    async def close(self) -> None:
        """Wait for a load in flight, disconnect the client and stop the thread pool."""
        if self._closed:
            return
        self._closed = True
        if self._loading is not None:
            await asyncio.gather(self._loading, return_exceptions=True)
        if self._client is not None:
            await self._run(self._disconnect)
        if self._owns_executor:
            self._executor.shutdown(wait=True)

    async def _refresh(self) -> _Snapshot:
        """The rows after the local copy expired: from the cache, else ClickHouse; one load at a time."""
        if self._loading is None:
            task = asyncio.ensure_future(self._reload())
            self._loading = task
            task.add_done_callback(self._loaded)
        # Shielded: a request that goes away must not cancel the load other requests wait for.
        return await asyncio.shield(self._loading)

    def _loaded(self, task: asyncio.Task[_Snapshot]) -> None:
        self._loading = None
        if not task.cancelled() and task.exception() is None:
            self._snapshot = task.result()

    async def _reload(self) -> _Snapshot:
        raw = await self.soft_cache.get(DB_RESPONSES_KEY)
        if raw is not None:
            old = self._snapshot
            if old is not None and raw == old.raw:
                return _Snapshot(old.rows, old.matcher, raw, self._expiry())
            rows = _decode(raw)
            if rows is not None:
                matcher = await asyncio.to_thread(Matcher, [r.pertanyaan for r in rows], self.threshold)
                return _Snapshot(rows, matcher, raw, self._expiry())
            log.warning("database source: cached %s is not a list of rows; reloading", DB_RESPONSES_KEY)
        if time.monotonic() < self._failed_until:
            self.unavailable += 1
            raise SourceUnavailable(self._last_error)
        try:
            return await self._load_from_clickhouse()
        except BackendError as exc:
            self._failed_until = time.monotonic() + self.retry_after
            self._last_error = f"{exc}; no cached rows to answer from (retry when ClickHouse is back)"
            self.unavailable += 1
            raise SourceUnavailable(self._last_error) from exc

    async def _load_from_clickhouse(self) -> _Snapshot:
        try:
            rows = await self._run(self._fetch_rows)
        except BackendError:
            self.load_errors += 1
            raise
        self.loads += 1
        # The local copy expires no later than the cache entry written below.
        expires = self._expiry()
        raw = _encode(rows)
        matcher = await asyncio.to_thread(Matcher, [r.pertanyaan for r in rows], self.threshold)
        await self.soft_cache.set(DB_RESPONSES_KEY, raw, self.ttl)
        return _Snapshot(rows, matcher, raw, expires)

    def _expiry(self) -> float:
        # The local copy lives as long as the cache entry would (the seed's cache_ttl); 0 = no expiry.
        return math.inf if self.ttl <= 0 else time.monotonic() + self.ttl

    async def _run(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    def _fetch_rows(self) -> tuple[QaRow, ...]:
        """Runs in the pool thread: all rows ordered by qa_id, at most max_rows."""
        from clickhouse_driver import errors

        if self._client is None:
            self._client = self.config.client()
        query = (
            f"SELECT toString(qa_id), pertanyaan, jawaban, referensi FROM {TABLE} "
            f"ORDER BY qa_id LIMIT {self.max_rows + 1}"
        )
        try:
            result = self._client.execute(query)
        except (errors.Error, OSError, EOFError) as exc:
            # A failed client may be half-way through a packet; start the next attempt afresh.
            self._disconnect()
            raise backend_error(exc, self.config) from exc
        if len(result) > self.max_rows:
            log.warning(
                "database source: %s has more than %d rows; answering from the first %d by qa_id",
                TABLE,
                self.max_rows,
                self.max_rows,
            )
            result = result[: self.max_rows]
        return tuple(QaRow(*row) for row in result)

    def _disconnect(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.disconnect()


async def init_db(url: str, username: str, password: str, load: Path | None) -> int:
    """Create the database and `response_simulator` if needed, insert the rows of a JSONL file; rows added."""
    config = clickhouse_config(url, username, password)
    # Parse the whole file first, so a bad line never leaves half a file inserted.
    rows = await asyncio.to_thread(read_qa_jsonl, load) if load is not None else []
    return await asyncio.to_thread(_init_sync, config, rows)


def _init_sync(config: ClickHouseConfig, rows: list[QaRow]) -> int:
    import uuid

    from clickhouse_driver import errors

    # Connect to `default`: the target database may not exist yet.
    client = config.client(database="default")
    db = config.database
    try:
        client.execute(f"CREATE DATABASE IF NOT EXISTS {db}")
        client.execute(CREATE_TABLE.format(db=db, table=TABLE))
        existing: set[str] = set()
        ids = [row.qa_id for row in rows]
        for start in range(0, len(ids), 1000):
            batch = tuple(ids[start : start + 1000])
            found = client.execute(
                f"SELECT toString(qa_id) FROM {db}.{TABLE} WHERE toString(qa_id) IN %(ids)s", {"ids": batch}
            )
            existing.update(r[0] for r in found)
        # Rows whose qa_id is already there are skipped, so loading the same file twice adds nothing.
        new = [row for row in rows if row.qa_id not in existing]
        if new:
            client.execute(
                f"INSERT INTO {db}.{TABLE} (qa_id, pertanyaan, jawaban, referensi) VALUES",
                [(uuid.UUID(r.qa_id), r.pertanyaan, r.jawaban, r.referensi) for r in new],
            )
        return len(new)
    except (errors.Error, OSError, EOFError) as exc:
        raise backend_error(exc, config) from exc
    finally:
        client.disconnect()
