"""PostgresAnalyticsStore: query records in one PostgreSQL table through an asyncpg pool."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from llmkit.core.secrets import mask_url
from llmkit.errors import BackendError
from llmkit.platform.analytics.base import (
    BUCKET_PERCENTILES,
    DAY,
    HOUR,
    JSON,
    PERCENTILES,
    popular_answer,
    stats_answer,
    timeseries_answer,
    trending_answer,
)
from llmkit.platform.analytics.record import COLUMNS, Record, rows_of

if TYPE_CHECKING:
    import asyncpg

TABLE = "analytics_queries"
SCHEMA = (
    """CREATE TABLE IF NOT EXISTS analytics_queries (
        ts double precision NOT NULL,
        tenant_id text NOT NULL,
        key_id text NOT NULL,
        route text NOT NULL,
        model text NOT NULL,
        query text NOT NULL,
        status integer NOT NULL,
        latency_ms double precision NOT NULL,
        ttfb_ms double precision,
        tokens_in bigint NOT NULL,
        tokens_out bigint NOT NULL,
        cached boolean NOT NULL,
        coalesced boolean NOT NULL,
        upstream text NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS analytics_queries_ts ON analytics_queries (ts)",
    "CREATE INDEX IF NOT EXISTS analytics_queries_tenant_ts ON analytics_queries (tenant_id, ts)",
)
# COLLATE "C": code-point order, the order SQLite and ClickHouse use, whatever the database's locale.
BY_QUERY = 'query COLLATE "C" ASC'


def postgres_analytics_from_url(url: str, pool_size: int = 10) -> PostgresAnalyticsStore:
    """The store `postgresql://user:pw@host:5432/db` (or postgres://) names, with a pool of pool_size."""
    return PostgresAnalyticsStore(url, pool_size=pool_size)


def _window(since: float, now: float, tenant_id: str | None, first: int = 1) -> tuple[str, list[Any]]:
    where = f"ts > ${first} AND ts <= ${first + 1}"
    params: list[Any] = [since, now]
    if tenant_id is not None:
        where += f" AND tenant_id = ${first + 2}"
        params.append(tenant_id)
    return where, params


# pg_advisory_xact_lock key for creating the table (the platform store's migrations use their own).
SCHEMA_LOCK = 0x6C6C6D6B_69740002  # "llmkit" + 2


class PostgresAnalyticsStore:
    """Batches go in with COPY inside one transaction; reads share the pool."""

    kind = "postgresql"

    def __init__(self, dsn: str, pool_size: int = 10) -> None:
        self.dsn = dsn
        self.where = mask_url(dsn)
        self.pool_size = pool_size
        self._pool: asyncpg.Pool | None = None

    def _error(self, exc: BaseException) -> BackendError:
        return BackendError(f"analytics store {self.where}: {type(exc).__name__}: {exc}")

    async def _rows(self, sql: str, params: Sequence[Any]) -> list[Any]:
        import asyncpg

        if self._pool is None:
            raise BackendError(f"analytics store {self.where} is not open")
        try:
            async with self._pool.acquire() as conn:
                return list(await conn.fetch(sql, *params))
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            raise self._error(exc) from exc

    async def open(self) -> None:
        """Create the pool and the table."""
        import asyncpg

        try:
            self._pool = await asyncpg.create_pool(self.dsn, min_size=1, max_size=self.pool_size)
            # CREATE ... IF NOT EXISTS races between replicas starting together (a duplicate pg_type
            # row): they take turns under a transaction-scoped advisory lock.
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", SCHEMA_LOCK)
                for statement in SCHEMA:
                    await conn.execute(statement)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            await self.close()
            raise BackendError(f"analytics store {self.where}: cannot open it: {exc}") from exc

    async def write(self, records: Sequence[Record]) -> None:
        """COPY is PostgreSQL's fastest insert; the transaction makes the batch all or nothing."""
        import asyncpg

        if not records:
            return
        if self._pool is None:
            raise BackendError(f"analytics store {self.where} is not open")
        rows = rows_of(records)
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.copy_records_to_table(TABLE, records=rows, columns=list(COLUMNS))
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            raise self._error(exc) from exc

    async def popular(self, *, limit: int, days: int, tenant_id: str | None, now: float) -> JSON:
        """Counts per query, count desc then query asc."""
        where, params = _window(now - days * DAY, now, tenant_id)
        rows = await self._rows(
            f"SELECT query, count(*) AS n FROM {TABLE} WHERE {where} AND query <> '' "
            f"GROUP BY query ORDER BY n DESC, {BY_QUERY} LIMIT ${len(params) + 1}",
            [*params, limit],
        )
        return popular_answer(days, tenant_id, rows)

    async def trending(self, *, limit: int, window_hours: int, tenant_id: str | None, now: float) -> JSON:
        """Counts per query in both windows, rising ones only."""
        where, params = _window(now - 2 * window_hours * HOUR, now, tenant_id, first=2)
        rows = await self._rows(
            "SELECT query, cur, prev FROM (SELECT query, count(*) FILTER (WHERE ts > $1) AS cur, "
            f"count(*) FILTER (WHERE ts <= $1) AS prev FROM {TABLE} WHERE {where} AND query <> '' "
            "GROUP BY query) s WHERE cur > prev ORDER BY prev = 0 DESC, "
            "CASE WHEN prev = 0 THEN 0 ELSE (cur - prev)::float8 / prev END DESC, cur DESC, "
            f"{BY_QUERY} LIMIT ${len(params) + 2}",
            [now - window_hours * HOUR, *params, limit],
        )
        return trending_answer(window_hours, tenant_id, rows)

    async def stats(self, *, days: int, tenant_id: str | None, now: float) -> JSON:
        """Totals and exact nearest-rank percentiles (percentile_disc) in one scan."""
        where, params = _window(now - days * DAY, now, tenant_id)
        levels = ", ".join(str(p) for p in PERCENTILES)
        (row,) = await self._rows(
            "SELECT count(*), count(DISTINCT nullif(query, '')), count(DISTINCT tenant_id), "
            "count(*) FILTER (WHERE cached), count(*) FILTER (WHERE status >= 400), "
            "count(*) FILTER (WHERE status >= 500), count(*) FILTER (WHERE coalesced), sum(tokens_in), "
            "sum(tokens_out), avg(latency_ms), "
            f"percentile_disc(ARRAY[{levels}]::float8[]) WITHIN GROUP (ORDER BY latency_ms) "
            f"FROM {TABLE} WHERE {where}",
            params,
        )
        latency = list(row[10]) if row[10] is not None else [None] * len(PERCENTILES)
        return stats_answer(days, tenant_id, list(row[:10]), latency)

    async def timeseries(self, *, interval_hours: int, days: int, tenant_id: str | None, now: float) -> JSON:
        """Buckets of interval_hours aligned on the epoch; percentile_disc per bucket, as stats does."""
        step = interval_hours * 3600
        where, params = _window(now - days * DAY, now, tenant_id, first=2)
        levels = ", ".join(str(p) for p in BUCKET_PERCENTILES)
        rows = await self._rows(
            "SELECT floor(ts / $1)::bigint AS b, count(*), count(*) FILTER (WHERE status >= 400), "
            "count(*) FILTER (WHERE cached), sum(tokens_in), sum(tokens_out), avg(latency_ms), "
            f"percentile_disc(ARRAY[{levels}]::float8[]) WITHIN GROUP (ORDER BY latency_ms) "
            f"FROM {TABLE} WHERE {where} GROUP BY b ORDER BY b",
            [float(step), *params],
        )
        return timeseries_answer(interval_hours, days, tenant_id, rows)

    async def purge(self, older_than: float) -> int:
        """One DELETE; its status line says how many rows went."""
        import asyncpg

        if self._pool is None:
            raise BackendError(f"analytics store {self.where} is not open")
        try:
            async with self._pool.acquire() as conn:
                status = await conn.execute(f"DELETE FROM {TABLE} WHERE ts < $1", older_than)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            raise self._error(exc) from exc
        return int(status.split()[-1])

    async def close(self) -> None:
        """Close the pool; idempotent."""
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()
