"""ClickHouseAnalyticsStore: a MergeTree partitioned by month; blocking driver calls in a thread pool."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from llmkit.core.clickhouse import ClickHouseConfig, ClickHousePool, backend_error, clickhouse_config
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
    from clickhouse_driver import Client

T = TypeVar("T")
TABLE = "analytics_queries"
# Plain types, a partition expression and ORDER BY that ClickHouse 18.16 and current servers both accept
# (18.16 has no TTL clause, so retention is purge(); no LowCardinality, which 18.16 only has as experimental).
# day is derived by the server, so writers send the record's columns only.
SCHEMA = """CREATE TABLE IF NOT EXISTS {db}.analytics_queries (
    ts Float64,
    day Date DEFAULT toDate(toDateTime(toUInt32(ts))),
    tenant_id String,
    key_id String,
    route String,
    model String,
    query String,
    status UInt16,
    latency_ms Float64,
    ttfb_ms Nullable(Float64),
    tokens_in UInt64,
    tokens_out UInt64,
    cached UInt8,
    coalesced UInt8,
    upstream String
) ENGINE = MergeTree() PARTITION BY toYYYYMM(day) ORDER BY (tenant_id, day, query)"""
INSERT = f"INSERT INTO {{db}}.{TABLE} ({', '.join(COLUMNS)}) VALUES"
THREADS = 4
# A purge waits this long for its DELETE mutation to be applied before it reports failure.
MUTATION_TIMEOUT_S = 300.0
_SCHEMA_GONE = (60, 81)


def clickhouse_analytics_from_url(url: str, pool_size: int = 10) -> ClickHouseAnalyticsStore:
    """The store `clickhouse://host:9000/db` names; pool_size bounds the driver threads (at most 4 used)."""
    return ClickHouseAnalyticsStore(clickhouse_config(url), threads=max(1, min(pool_size, THREADS)))


def _window(since: float, now: float, tenant_id: str | None) -> tuple[str, dict[str, Any]]:
    where = "ts > %(since)s AND ts <= %(now)s"
    params: dict[str, Any] = {"since": since, "now": now}
    if tenant_id is not None:
        where += " AND tenant_id = %(tenant)s"
        params["tenant"] = tenant_id
    return where, params


class ClickHouseAnalyticsStore:
    """Each pool thread uses a client of its own; writes and purges are serialized within a process."""

    kind = "clickhouse"

    def __init__(self, config: ClickHouseConfig, threads: int = THREADS) -> None:
        self.config = config
        self.where = config.url
        self.threads = threads
        self._db = config.database
        self._pool = ClickHousePool(config, threads, "analytics-ch", self._error)
        self._writing = asyncio.Lock()

    async def _run(self, fn: Callable[[Client], T]) -> T:
        return await self._pool.run(fn)

    def _error(self, exc: BaseException) -> BackendError:
        if getattr(exc, "code", None) in _SCHEMA_GONE:
            return BackendError(
                f"ClickHouse at {self.where}: table {self._db}.{TABLE} is missing (it is made when the "
                "analytics store opens; restart to make it again)"
            )
        return backend_error(exc, self.config)

    async def _select(self, sql: str, params: dict[str, Any]) -> list[Any]:
        text = sql.replace("{t}", f"{self._db}.{TABLE}")
        rows: list[Any] = await self._run(lambda client: client.execute(text, params))
        return rows

    def _create(self, client: Client) -> None:
        client.execute(f"CREATE DATABASE IF NOT EXISTS {self._db}")
        client.execute(SCHEMA.format(db=self._db))

    async def open(self) -> None:
        """Create the database and the table if missing."""
        self._pool.start()
        try:
            await self._run(self._create)
        except BaseException:
            await self.close()
            raise

    async def write(self, records: Sequence[Record]) -> None:
        """One INSERT block, which ClickHouse writes as one part, whole or not at all."""
        if not records:
            return
        rows = rows_of(records)
        sql = INSERT.format(db=self._db)
        async with self._writing:
            await self._run(
                lambda client: client.execute(sql, rows, settings={"insert_block_size": max(len(rows), 1)})
            )

    async def popular(self, *, limit: int, days: int, tenant_id: str | None, now: float) -> JSON:
        """Counts per query; ORDER BY compares String bytes, which is code-point order for UTF-8."""
        where, params = _window(now - days * DAY, now, tenant_id)
        rows = await self._select(
            f"SELECT query, count() AS n FROM {{t}} WHERE {where} AND query != '' "
            "GROUP BY query ORDER BY n DESC, query ASC LIMIT %(limit)s",
            {**params, "limit": limit},
        )
        return popular_answer(days, tenant_id, rows)

    async def trending(self, *, limit: int, window_hours: int, tenant_id: str | None, now: float) -> JSON:
        """Counts per query in both windows; division by a zero previous is guarded by if()."""
        where, params = _window(now - 2 * window_hours * HOUR, now, tenant_id)
        rows = await self._select(
            "SELECT query, cur, prev FROM (SELECT query, countIf(ts > %(mid)s) AS cur, "
            f"countIf(ts <= %(mid)s) AS prev FROM {{t}} WHERE {where} AND query != '' GROUP BY query) "
            "WHERE cur > prev ORDER BY prev = 0 DESC, "
            "if(prev = 0, 0, (toFloat64(cur) - prev) / prev) DESC, cur DESC, query ASC LIMIT %(limit)s",
            {**params, "mid": now - window_hours * HOUR, "limit": limit},
        )
        return trending_answer(window_hours, tenant_id, rows)

    async def stats(self, *, days: int, tenant_id: str | None, now: float) -> JSON:
        """Totals and quantiles (reservoir sampling of 8192 values, interpolated) in one scan."""
        where, params = _window(now - days * DAY, now, tenant_id)
        levels = ", ".join(str(p) for p in PERCENTILES)
        (row,) = await self._select(
            "SELECT count(), uniqExactIf(query, query != ''), uniqExact(tenant_id), sum(cached), "
            "countIf(status >= 400), countIf(status >= 500), sum(coalesced), sum(tokens_in), "
            "sum(tokens_out), "
            f"avg(latency_ms), quantiles({levels})(latency_ms) FROM {{t}} WHERE {where}",
            params,
        )
        totals = list(row[:10])
        if not totals[0]:
            totals[9] = None  # avg() of no rows is nan
        latency = list(row[10]) or [None] * len(PERCENTILES)
        return stats_answer(days, tenant_id, totals, latency)

    async def timeseries(self, *, interval_hours: int, days: int, tenant_id: str | None, now: float) -> JSON:
        """Buckets of interval_hours aligned on the epoch; percentiles per bucket with stats' quantiles()."""
        step = interval_hours * 3600
        where, params = _window(now - days * DAY, now, tenant_id)
        levels = ", ".join(str(p) for p in BUCKET_PERCENTILES)
        rows = await self._select(
            "SELECT toInt64(floor(ts / %(step)s)) AS b, count(), countIf(status >= 400), sum(cached), "
            f"sum(tokens_in), sum(tokens_out), avg(latency_ms), quantiles({levels})(latency_ms) "
            f"FROM {{t}} WHERE {where} GROUP BY b ORDER BY b",
            {**params, "step": step},
        )
        return timeseries_answer(interval_hours, days, tenant_id, rows)

    def _purge(self, client: Client, older_than: float) -> int:
        table = f"{self._db}.{TABLE}"
        params = {"cut": older_than}
        rows = client.execute(f"SELECT count() FROM {table} WHERE ts < %(cut)s", params)
        doomed = int(rows[0][0]) if rows else 0
        if not doomed:
            return 0
        # Months entirely older than the cutoff go as whole partitions (cheap: files are unlinked); the
        # rest through a DELETE mutation, which rewrites only the parts holding old rows.
        old_months = client.execute(
            f"SELECT toYYYYMM(day) AS m FROM {table} GROUP BY m HAVING max(ts) < %(cut)s", params
        )
        for (month,) in old_months:
            client.execute(f"ALTER TABLE {table} DROP PARTITION {int(month)}")
        left = client.execute(f"SELECT count() FROM {table} WHERE ts < %(cut)s", params)
        if left and left[0][0]:
            client.execute(f"ALTER TABLE {table} DELETE WHERE ts < {float(older_than)!r}")
            self._wait_for_mutations(client)
        return doomed

    def _wait_for_mutations(self, client: Client) -> None:
        """ClickHouse 18.16 has no mutations_sync, so poll system.mutations (current servers too)."""
        pending_sql = (
            "SELECT count() FROM system.mutations "
            "WHERE database = %(db)s AND table = %(table)s AND is_done = 0"
        )
        params = {"db": self._db, "table": TABLE}
        deadline, delay = time.monotonic() + MUTATION_TIMEOUT_S, 0.005
        while client.execute(pending_sql, params)[0][0]:
            if time.monotonic() > deadline:
                raise BackendError(
                    f"ClickHouse at {self.where}: the purge's DELETE on {self._db}.{TABLE} was not applied "
                    f"within {MUTATION_TIMEOUT_S:.0f}s; see system.mutations"
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.2)

    async def purge(self, older_than: float) -> int:
        """Drop whole old months, delete the rest of the old rows; how many rows went."""
        async with self._writing:
            return await self._run(lambda client: self._purge(client, older_than))

    async def close(self) -> None:
        """Disconnect every idle client and stop the threads."""
        await self._pool.close()
