"""SqliteAnalyticsStore: query records in one SQLite file (WAL) through one aiosqlite connection."""

from __future__ import annotations

import itertools
import json
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmkit.core.sqlite import run_in_background, sqlite_path, use_wal, while_locked
from llmkit.errors import BackendError
from llmkit.platform.analytics.base import (
    BUCKET_PERCENTILES,
    DAY,
    HOUR,
    JSON,
    PERCENTILES,
    nearest_rank,
    popular_answer,
    stats_answer,
    timeseries_answer,
    trending_answer,
)
from llmkit.platform.analytics.record import COLUMNS, Record, rows_of

if TYPE_CHECKING:
    import aiosqlite

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS analytics_queries (
        ts REAL NOT NULL,
        tenant_id TEXT NOT NULL,
        key_id TEXT NOT NULL,
        route TEXT NOT NULL,
        model TEXT NOT NULL,
        query TEXT NOT NULL,
        status INTEGER NOT NULL,
        latency_ms REAL NOT NULL,
        ttfb_ms REAL,
        tokens_in INTEGER NOT NULL,
        tokens_out INTEGER NOT NULL,
        cached INTEGER NOT NULL,
        coalesced INTEGER NOT NULL,
        upstream TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS analytics_queries_ts ON analytics_queries (ts)",
    "CREATE INDEX IF NOT EXISTS analytics_queries_tenant_ts ON analytics_queries (tenant_id, ts)",
    # No (latency_ms, ...) index for the percentiles: it made them 9 ms but halved ingest (47k -> 22-26k
    # records/s, docs/benchmarks.md); one sort of the window serves instead.
)
_ROW = f"({', '.join('?' * len(COLUMNS))})"
INSERT = f"INSERT INTO analytics_queries ({', '.join(COLUMNS)}) VALUES {_ROW}"
# Rows per statement: a batch goes in as statements of CHUNK rows (one step, one GIL hand-over each,
# always the same prepared statement) and the rest one row per step. 32 rows are 448 parameters, under
# the 999 of the oldest SQLite builds. Measured against one INSERT ... FROM json_each(?) per batch, this
# does half the work: SQLite 3.40's `->>` copied and re-read each row's JSON text once per column.
CHUNK = 32
INSERT_CHUNK = f"INSERT INTO analytics_queries ({', '.join(COLUMNS)}) VALUES " + ", ".join([_ROW] * CHUNK)
BUSY_TIMEOUT_MS = 10_000


def sqlite_analytics_from_url(url: str, pool_size: int = 10) -> SqliteAnalyticsStore:
    """The store `sqlite:///path.db` names; SQLite has one writer, so pool_size does not apply."""
    return SqliteAnalyticsStore(sqlite_path(url, "analytics.store"))


# A window holding at least 1/WIDE of the table is read by a plain scan: measured on 100,000 rows, a
# search through the ts index costs about 1.2 us a row it finds (one table lookup each), a scan about
# 0.1 us a row of the table, so the index only wins on windows under about a tenth of the table.
WIDE = 10


def _window(since: float, now: float, tenant_id: str | None, *, scan: bool = False) -> tuple[str, list[Any]]:
    # A unary + makes a column unusable for an index: the planner then scans, which it never picks itself
    # for a range of bound parameters (it guesses the range holds few rows).
    col = "+" if scan else ""
    where = f"{col}ts > ? AND {col}ts <= ?"
    params: list[Any] = [since, now]
    if tenant_id is not None:
        where += f" AND {col}tenant_id = ?"
        params.append(tenant_id)
    return where, params


class SqliteAnalyticsStore:
    """One connection (one thread) does writes and reads: the writer batches, so reads wait little."""

    kind = "sqlite"

    def __init__(self, path: Path, synchronous: str = "normal") -> None:
        self.path = path
        self.where = str(path)
        # NORMAL in WAL mode loses at most the last commits on power loss, never corrupts: fine for analytics.
        self.synchronous = synchronous.upper()
        self._conn: aiosqlite.Connection | None = None

    def _db(self) -> aiosqlite.Connection:
        if self._conn is None:
            raise BackendError(f"analytics store {self.where} is not open")
        return self._conn

    async def _rows(self, sql: str, params: Sequence[Any]) -> list[Any]:
        try:
            async with self._db().execute(sql, params) as cursor:
                return list(await cursor.fetchall())
        except sqlite3.Error as exc:
            raise BackendError(f"analytics store {self.where}: {exc}") from exc

    async def _count(self, since: float, now: float, tenant_id: str | None) -> tuple[int, bool]:
        """Rows in the window (from the index alone) and whether the window is wide enough to scan."""
        where, params = _window(since, now, tenant_id)
        ((found,),) = await self._rows(f"SELECT count(*) FROM analytics_queries WHERE {where}", params)
        ((total,),) = await self._rows("SELECT count(*) FROM analytics_queries", ())
        return int(found), int(found) * WIDE >= int(total) > 0

    async def _where(self, since: float, now: float, tenant_id: str | None) -> tuple[str, list[Any]]:
        """The WHERE of a window, written so SQLite reads it the cheaper way."""
        _, scan = await self._count(since, now, tenant_id)
        return _window(since, now, tenant_id, scan=scan)

    async def open(self) -> None:
        """Create the file and the table; WAL so readers of the file never block the writer."""
        import aiosqlite

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = await aiosqlite.connect(self.path, isolation_level=None)
            run_in_background(self._conn)
            await self._conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            await use_wal(self._conn)
            await self._conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            await while_locked(self._create)
        except (OSError, sqlite3.Error) as exc:
            await self.close()
            raise BackendError(f"analytics store {self.where}: cannot open it: {exc}") from exc

    async def _create(self) -> None:
        assert self._conn is not None
        for statement in SCHEMA:
            await self._conn.execute(statement)

    async def write(self, records: Sequence[Record]) -> None:
        """One transaction per batch: all its rows or none."""
        if not records:
            return
        db = self._db()
        rows = rows_of(records)
        whole = len(rows) - len(rows) % CHUNK
        chunks = [list(itertools.chain.from_iterable(rows[i : i + CHUNK])) for i in range(0, whole, CHUNK)]
        try:
            await db.execute("BEGIN IMMEDIATE")
            try:
                if chunks:
                    await db.executemany(INSERT_CHUNK, chunks)
                if whole < len(rows):
                    await db.executemany(INSERT, rows[whole:])
                await db.execute("COMMIT")
            except BaseException:
                await db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise BackendError(f"analytics store {self.where}: {exc}") from exc

    async def popular(self, *, limit: int, days: int, tenant_id: str | None, now: float) -> JSON:
        """Counts per query, count desc then query asc (SQLite compares text by code point)."""
        where, params = await self._where(now - days * DAY, now, tenant_id)
        rows = await self._rows(
            f"SELECT query, count(*) AS n FROM analytics_queries WHERE {where} AND query <> '' "
            "GROUP BY query ORDER BY n DESC, query ASC LIMIT ?",
            [*params, limit],
        )
        return popular_answer(days, tenant_id, rows)

    async def trending(self, *, limit: int, window_hours: int, tenant_id: str | None, now: float) -> JSON:
        """Counts per query in the last window and the one before, rising ones only."""
        mid = now - window_hours * HOUR
        where, params = await self._where(now - 2 * window_hours * HOUR, now, tenant_id)
        rows = await self._rows(
            "SELECT query, cur, prev FROM (SELECT query, sum(ts > ?) AS cur, sum(ts <= ?) AS prev "
            f"FROM analytics_queries WHERE {where} AND query <> '' GROUP BY query) WHERE cur > prev "
            "ORDER BY prev = 0 DESC, CASE WHEN prev = 0 THEN 0 ELSE (cur - prev) * 1.0 / prev END DESC, "
            "cur DESC, query ASC LIMIT ?",
            [mid, mid, *params, limit],
        )
        return trending_answer(window_hours, tenant_id, rows)

    async def stats(self, *, days: int, tenant_id: str | None, now: float) -> JSON:
        """Totals in one read of the window; percentiles by nearest rank, from one sort of it."""
        since = now - days * DAY
        _, scan = await self._count(since, now, tenant_id)
        where, params = _window(since, now, tenant_id, scan=scan)
        (totals,) = await self._rows(
            "SELECT count(*), count(DISTINCT nullif(query, '')), count(DISTINCT tenant_id), sum(cached), "
            "sum(status >= 400), sum(status >= 500), sum(coalesced), sum(tokens_in), sum(tokens_out), "
            f"avg(latency_ms) FROM analytics_queries WHERE {where}",
            params,
        )
        # Every percentile from one sort of the window (it was one sort each): the nearest ranks' rows.
        ranks = [nearest_rank(int(totals[0]), p) for p in PERCENTILES]
        found = dict(
            await self._rows(
                f"SELECT rn, latency_ms FROM (SELECT latency_ms, row_number() OVER (ORDER BY latency_ms) - 1 "
                f"AS rn FROM analytics_queries WHERE {where}) WHERE rn IN ({', '.join('?' * len(ranks))})",
                [*params, *ranks],
            )
        )
        latency: list[float | None] = [found.get(rank) for rank in ranks]
        return stats_answer(days, tenant_id, totals, latency)

    async def timeseries(self, *, interval_hours: int, days: int, tenant_id: str | None, now: float) -> JSON:
        """Buckets of interval_hours aligned on the epoch; ts is positive, so CAST truncates as floor.
        Each bucket's percentiles by nearest rank, from one sort of the window, as stats does."""
        step = interval_hours * 3600
        where, params = await self._where(now - days * DAY, now, tenant_id)
        rows = await self._rows(
            "SELECT CAST(ts / ? AS INTEGER) AS b, count(*), sum(status >= 400), sum(cached), sum(tokens_in), "
            f"sum(tokens_out), avg(latency_ms) FROM analytics_queries WHERE {where} GROUP BY b ORDER BY b",
            [step, *params],
        )
        ranks = [[nearest_rank(int(row[1]), p) for p in BUCKET_PERCENTILES] for row in rows]
        found: dict[tuple[int, int], float] = {}
        if rows:
            # As stats: ranks from the counts just read, then one sort (by bucket, then latency) for every
            # bucket. On 100,000 rows the sort is the cost; a count(*) OVER (PARTITION BY b) in this statement
            # instead of these ranks took a second pass (+50-90%). The (bucket, rank) pairs go in as one JSON
            # parameter: 30 days of hourly buckets are 1,440 pairs, past the 999 parameters of old SQLite.
            wanted = [[row[0], rank] for row, pair in zip(rows, ranks, strict=True) for rank in pair]
            picked = await self._rows(
                "SELECT b, rn, latency_ms FROM (SELECT b, latency_ms, "
                "row_number() OVER (PARTITION BY b ORDER BY latency_ms) - 1 AS rn FROM "
                f"(SELECT CAST(ts / ? AS INTEGER) AS b, latency_ms FROM analytics_queries WHERE {where})) "
                "WHERE (b, rn) IN (SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') "
                "FROM json_each(?))",
                [step, *params, json.dumps(wanted)],
            )
            found = {(b, rn): latency for b, rn, latency in picked}
        series = [
            (*row, [found.get((row[0], rank)) for rank in pair])
            for row, pair in zip(rows, ranks, strict=True)
        ]
        return timeseries_answer(interval_hours, days, tenant_id, series)

    async def purge(self, older_than: float) -> int:
        """One DELETE; the ts index finds the rows."""
        db = self._db()
        try:
            cursor = await db.execute("DELETE FROM analytics_queries WHERE ts < ?", (older_than,))
            return int(cursor.rowcount)
        except sqlite3.Error as exc:
            raise BackendError(f"analytics store {self.where}: {exc}") from exc

    async def close(self) -> None:
        """Close the connection and its thread."""
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await conn.close()
