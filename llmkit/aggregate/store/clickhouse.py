"""ClickHouseEventStore: a ReplacingMergeTree keyed by (topic, event_id); exact reads through FINAL."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from llmkit.aggregate.store.base import EventQuery, Listed, Row, TopicCounts
from llmkit.core.clickhouse import ClickHouseConfig, ClickHousePool, backend_error, clickhouse_config
from llmkit.errors import BackendError

if TYPE_CHECKING:
    from clickhouse_driver import Client

    from llmkit.settings import Settings

T = TypeVar("T")
log = logging.getLogger("llmkit.aggregate")

# Prefixed names: the ha profile shares one database between the simulate source and the aggregator.
EVENTS, RECEIPTS, PURGES = "aggregate_events", "aggregate_receipts", "aggregate_purges"
# Plain types and the MergeTree ORDER BY syntax, which ClickHouse 18.16 and current ones both accept.
# ReplacingMergeTree keeps the row with the highest ver; ver = VER_TOP - seq, so FINAL keeps the first
# arrival should a race between processes ever store one key twice.
SCHEMA = (
    """CREATE TABLE IF NOT EXISTS {db}.aggregate_events (
        topic String,
        event_id String,
        source String,
        ts Int64,
        stored_at Int64,
        seq UInt64,
        ver UInt64,
        doc String
    ) ENGINE = ReplacingMergeTree(ver) ORDER BY (topic, event_id)""",
    # Every published event, duplicates included; summed at read time, so unmerged parts count exactly.
    """CREATE TABLE IF NOT EXISTS {db}.aggregate_receipts (
        topic String,
        received UInt64
    ) ENGINE = SummingMergeTree(received) ORDER BY topic""",
    # One row per topic and purge: how many events with bound_before < seq <= bound it deleted.
    """CREATE TABLE IF NOT EXISTS {db}.aggregate_purges (
        topic String,
        bound UInt64,
        purged UInt64
    ) ENGINE = MergeTree() ORDER BY (topic, bound)""",
)
VER_TOP = 2**63
READERS = 4
# A purge waits this long for its DELETE mutation to be applied before it reports failure.
MUTATION_TIMEOUT_S = 300.0
# Server error codes meaning the schema open() made has gone (unknown table, unknown database).
_SCHEMA_GONE = (60, 81)


def clickhouse_store_from_url(url: str, settings: Settings) -> ClickHouseEventStore:
    """The store `aggregate.store = clickhouse://host:9000/db` names, as the `clickhouse` section's user."""
    return ClickHouseEventStore(
        clickhouse_config(url, settings.clickhouse.username, settings.clickhouse.password)
    )


class ClickHouseEventStore:
    """Blocking clickhouse-driver calls run in a small thread pool, each on a client of its own; writes and
    purges are serialized, so dedup reads, inserts and deletes never interleave within a process."""

    kind = "clickhouse"

    def __init__(self, config: ClickHouseConfig, readers: int = READERS) -> None:
        self.config = config
        self.where = config.url
        self.readers = readers
        self._db = config.database
        self._pool = ClickHousePool(config, readers, "clickhouse-store", self._error)
        self._writing = asyncio.Lock()
        self._last_seq = 0

    # -- running driver calls -------------------------------------------------------------------------

    async def _run(self, fn: Callable[[Client], T]) -> T:
        return await self._pool.run(fn)

    def _error(self, exc: BaseException) -> BackendError:
        if getattr(exc, "code", None) in _SCHEMA_GONE:
            lines = (getattr(exc, "message", None) or str(exc)).strip().splitlines()
            return BackendError(
                f"ClickHouse at {self.where}: {lines[0] if lines else type(exc).__name__} (the event "
                f"tables in database {self._db} are made when the store opens; were they dropped? restart "
                "to make them again)"
            )
        return backend_error(exc, self.config)

    # -- pool-thread work -----------------------------------------------------------------------------

    def _create(self, client: Client) -> None:
        client.execute(f"CREATE DATABASE IF NOT EXISTS {self._db}")
        for statement in SCHEMA:
            client.execute(statement.format(db=self._db))
        # A purge interrupted after it recorded its counts must still delete what it counted.
        bound = self._last_purge_bound(client)
        if bound and self._scalar(client, f"SELECT count() FROM {self._db}.{EVENTS} WHERE seq <= {bound}"):
            log.info("clickhouse store %s: finishing an interrupted purge of seq <= %d", self.where, bound)
            self._delete_through(client, bound)
        # seq also follows the clock (see _take_seqs); the stored maximum keeps it growing across restarts.
        self._last_seq = max(bound, self._scalar(client, f"SELECT max(seq) FROM {self._db}.{EVENTS}"))

    def _scalar(self, client: Client, sql: str, params: dict[str, Any] | None = None) -> int:
        rows = client.execute(sql, params)
        return int(rows[0][0] or 0) if rows else 0

    def _last_purge_bound(self, client: Client) -> int:
        return self._scalar(client, f"SELECT max(bound) FROM {self._db}.{PURGES}")

    def _take_seqs(self, n: int) -> int:
        """The first of n consecutive seqs: after the last one handed out, and no lower than the clock in
        microseconds, so processes sharing the database rarely collide (and stay below 2**53 for JSON)."""
        first = max(self._last_seq + 1, time.time_ns() // 1000)
        self._last_seq = first + n - 1
        return first

    def _existing(self, client: Client, topic: str, ids: set[str]) -> set[str]:
        """Which of `ids` are stored under `topic`.

        Any stored version of a key makes it a duplicate, so no FINAL is needed; the ids travel as an
        external table, which has no query-size limit and lets the (topic, event_id) key prune the scan.
        """
        found = client.execute(
            f"SELECT event_id FROM {self._db}.{EVENTS} "
            "WHERE topic = %(topic)s AND event_id IN (SELECT event_id FROM _ids)",
            {"topic": topic},
            external_tables=[
                {"name": "_ids", "structure": [("event_id", "String")], "data": [(i,) for i in ids]}
            ],
        )
        return {event_id for (event_id,) in found}

    def _write(self, client: Client, batches: Sequence[Sequence[Row]]) -> list[int]:
        ids: dict[str, set[str]] = {}
        for batch in batches:
            for row in batch:
                ids.setdefault(row[0], set()).add(row[1])
        seen = {topic: self._existing(client, topic, wanted) for topic, wanted in ids.items()}
        received = dict.fromkeys(ids, 0)
        fresh: list[Row] = []
        new: list[int] = []
        for batch in batches:
            before = len(fresh)
            for row in batch:
                received[row[0]] += 1
                stored = seen[row[0]]
                if row[1] not in stored:
                    stored.add(row[1])
                    fresh.append(row)
            new.append(len(fresh) - before)
        if fresh:
            first, now_ms = self._take_seqs(len(fresh)), time.time_ns() // 1_000_000
            data = [
                (topic, event_id, source, ts, now_ms, first + i, VER_TOP - first - i, doc)
                for i, (topic, event_id, source, ts, doc) in enumerate(fresh)
            ]
            # One block is one part, which ClickHouse writes whole or not at all.
            client.execute(
                f"INSERT INTO {self._db}.{EVENTS} "
                "(topic, event_id, source, ts, stored_at, seq, ver, doc) VALUES",
                data,
                settings={"insert_block_size": len(data)},
            )
        # Receipts go in after the events. A crash (or error) between the two leaves events stored that no
        # receipt counts and no client saw acknowledged; the client retries them, the retry finds them
        # stored and counts them received as duplicates, so received == unique + dropped holds again.
        # The other order could leave receipts for events never stored: received would stay too high.
        if received:
            client.execute(
                f"INSERT INTO {self._db}.{RECEIPTS} (topic, received) VALUES", list(received.items())
            )
        return new

    def _counts(self, client: Client) -> list[TopicCounts]:
        db = self._db
        purged = dict(client.execute(f"SELECT topic, sum(purged) FROM {db}.{PURGES} GROUP BY topic"))
        received = dict(client.execute(f"SELECT topic, sum(received) FROM {db}.{RECEIPTS} GROUP BY topic"))
        # Rows at or below the last purge bound are already counted in `purged` (they linger only when a
        # purge was interrupted before its delete ran; the next open() deletes them).
        bound = self._last_purge_bound(client)
        stored = {
            topic: (count, above)
            for topic, count, above in client.execute(
                f"SELECT topic, count(), countIf(seq > {bound}) FROM {db}.{EVENTS} FINAL GROUP BY topic"
            )
        }
        return [
            TopicCounts(
                topic=topic,
                received=int(received.get(topic, 0)),
                unique=int(stored.get(topic, (0, 0))[1] + purged.get(topic, 0)),
                stored=int(stored.get(topic, (0, 0))[0]),
            )
            for topic in sorted(purged.keys() | received.keys() | stored.keys())
        ]

    def _page(self, sql: str, params: dict[str, Any], client: Client) -> list[Listed]:
        # strings_as_bytes: doc comes back as the bytes that went in, not decoded to str and back.
        rows: list[Listed] = client.execute(sql, params, settings={"strings_as_bytes": True})
        return rows

    def _bound_to_purge(self, client: Client, before_ms: int | None, keep: int | None) -> int:
        """The highest seq to delete (0: none): everything stored before before_ms, then all but `keep`."""
        table = f"{self._db}.{EVENTS} FINAL"
        bound = 0
        if before_ms is not None:
            kept, first_kept, last = client.execute(
                f"SELECT countIf(stored_at >= %(t)s), minIf(seq, stored_at >= %(t)s), max(seq) FROM {table}",
                {"t": before_ms},
            )[0]
            # stored_at grows with seq, so the first event stored at or after the cutoff bounds what goes.
            bound = int(last if kept == 0 else first_kept - 1)
        if keep is not None:
            excess = self._scalar(client, f"SELECT count() FROM {table} WHERE seq > {bound}") - keep
            if excess > 0:
                bound = self._scalar(
                    client, f"SELECT seq FROM {table} WHERE seq > {bound} ORDER BY seq LIMIT {excess - 1}, 1"
                )
        return bound

    def _purge(self, client: Client, before_ms: int | None, keep: int | None) -> int:
        # One purger at a time: two processes that read the same last bound would both record the rows
        # between it and their own bound, and `unique` would count those twice.
        bound = self._bound_to_purge(client, before_ms, keep)
        done = self._last_purge_bound(client)
        if bound <= done:
            return 0
        gone = client.execute(
            f"SELECT topic, count() FROM {self._db}.{EVENTS} FINAL WHERE seq > {done} AND seq <= {bound} "
            "GROUP BY topic"
        )
        if not gone:
            return 0
        # Counted before the delete: `unique` = rows above the last bound + purged, so it holds at every
        # step, and a crash after this insert leaves a bound that the next open() deletes through.
        client.execute(
            f"INSERT INTO {self._db}.{PURGES} (topic, bound, purged) VALUES",
            [(topic, bound, count) for topic, count in gone],
        )
        self._delete_through(client, bound)
        return sum(int(count) for _, count in gone)

    def _delete_through(self, client: Client, bound: int) -> None:
        """Delete every event with seq <= bound and wait until the mutation is applied.

        ClickHouse 18.16 has no mutations_sync, so this polls system.mutations (current servers too).
        """
        client.execute(f"ALTER TABLE {self._db}.{EVENTS} DELETE WHERE seq <= {bound}")
        pending_sql = (
            "SELECT count() FROM system.mutations "
            "WHERE database = %(db)s AND table = %(table)s AND is_done = 0"
        )
        params = {"db": self._db, "table": EVENTS}
        deadline, delay = time.monotonic() + MUTATION_TIMEOUT_S, 0.005
        while self._scalar(client, pending_sql, params):
            if time.monotonic() > deadline:
                raise BackendError(
                    f"ClickHouse at {self.where}: the purge's DELETE on {self._db}.{EVENTS} was not "
                    f"applied within {MUTATION_TIMEOUT_S:.0f}s; see system.mutations (the next open "
                    "finishes it)"
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.2)

    # -- the EventStore protocol ----------------------------------------------------------------------

    async def open(self) -> None:
        """Create the database and tables if missing, finish an interrupted purge, resume the seq."""
        self._pool.start()
        try:
            await self._run(self._create)
        except BaseException:
            await self.close()
            raise

    async def write(self, batches: Sequence[Sequence[Row]]) -> list[int]:
        """Store the new rows of every batch; the new-row count of each."""
        async with self._writing:
            return await self._run(lambda client: self._write(client, batches))

    async def counts(self) -> list[TopicCounts]:
        """Per-topic numbers derived from the rows, the receipts and the purge records."""
        return await self._run(self._counts)

    async def pages(self, query: EventQuery, page_size: int) -> AsyncIterator[list[Listed]]:
        """(seq, doc) pages in arrival order."""
        where, params = ["seq > %(after)s"], dict[str, Any](after=query.after)
        for column, op, name, value in (
            ("topic", "=", "topic", query.topic),
            ("source", "=", "source", query.source),
            ("ts", ">=", "since", query.since_ms),
            ("ts", "<", "until", query.until_ms),
        ):
            if value is not None:
                where.append(f"{column} {op} %({name})s")
                params[name] = value
        sql = (
            f"SELECT seq, doc FROM {self._db}.{EVENTS} FINAL WHERE {' AND '.join(where)} "
            "ORDER BY seq LIMIT %(size)s"
        )
        left = query.limit
        while left is None or left > 0:
            size = page_size if left is None else min(page_size, left)
            page = await self._run(partial(self._page, sql, {**params, "size": size}))
            if not page:
                return
            yield page
            if len(page) < size:
                return
            params["after"] = page[-1][0]
            if left is not None:
                left -= len(page)

    async def purge(self, before_ms: int | None, keep: int | None) -> int:
        """Delete old events with ALTER TABLE ... DELETE, visible before this returns; how many went."""
        if before_ms is None and keep is None:
            return 0
        async with self._writing:
            return await self._run(lambda client: self._purge(client, before_ms, keep))

    async def size_bytes(self) -> int:
        """Bytes of the active parts of the store's tables, from system.parts."""
        sql = (
            "SELECT sum(bytes_on_disk) FROM system.parts "
            "WHERE database = %(db)s AND table IN %(tables)s AND active"
        )
        params = {"db": self._db, "tables": (EVENTS, RECEIPTS, PURGES)}
        return await self._run(lambda client: self._scalar(client, sql, params))

    async def close(self) -> None:
        """Let running calls finish, stop the threads and disconnect the clients."""
        await self._pool.close()
