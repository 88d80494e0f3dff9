"""SqliteEventStore: events in one SQLite file (WAL); a unique index on (topic, event_id) does the dedup."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from llmkit.aggregate.store.base import EventQuery, Listed, Row, TopicCounts
from llmkit.core.sqlite import sqlite_path
from llmkit.errors import BackendError

if TYPE_CHECKING:
    import aiosqlite

    from llmkit.settings import Settings

T = TypeVar("T")
log = logging.getLogger("llmkit.aggregate")

# seq is the arrival order and the `after` cursor; AUTOINCREMENT so a purge that empties the table never
# hands out an old seq again (a client's cursor would skip new events).
SCHEMA = (
    """CREATE TABLE IF NOT EXISTS events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        topic TEXT NOT NULL,
        event_id TEXT NOT NULL,
        source TEXT NOT NULL,
        ts INTEGER NOT NULL,
        stored_at INTEGER NOT NULL,
        doc BLOB NOT NULL
    )""",
    "CREATE UNIQUE INDEX IF NOT EXISTS events_key ON events (topic, event_id)",
    "CREATE INDEX IF NOT EXISTS events_topic_seq ON events (topic, seq)",
    # Committed in the same transaction as the events, so the numbers never drift from the rows.
    """CREATE TABLE IF NOT EXISTS topic_counts (
        topic TEXT PRIMARY KEY,
        received INTEGER NOT NULL,
        unique_count INTEGER NOT NULL,
        stored INTEGER NOT NULL
    )""",
)
# stored_at comes from SQLite's clock: the rows bind as they are, with no tuple rebuilt per row.
INSERT = """INSERT OR IGNORE INTO events (topic, event_id, source, ts, doc, stored_at)
    VALUES (?, ?, ?, ?, ?, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER))"""
COUNT = """INSERT INTO topic_counts (topic, received, unique_count, stored) VALUES (?, ?, ?, ?)
    ON CONFLICT (topic) DO UPDATE SET received = received + excluded.received,
    unique_count = unique_count + excluded.unique_count, stored = stored + excluded.stored"""
NEW_PER_TOPIC = "SELECT topic, count(*) FROM events WHERE seq > ? GROUP BY topic"
UNSTORE = "UPDATE topic_counts SET stored = stored - ? WHERE topic = ?"
# ChronicleWeaver's table, in its rowid (arrival) order; timestamps it stored as Python isoformat().
IMPORT_SEED = """INSERT OR IGNORE INTO events (topic, event_id, source, ts, doc, stored_at)
    SELECT topic, event_id, source,
        coalesce(CAST((julianday(timestamp) - 2440587.5) * 86400000 AS INTEGER), 0),
        CAST(json_object('event_id', event_id, 'topic', topic, 'source', source,
            'payload', json(payload), 'timestamp', timestamp) AS BLOB),
        CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)
    FROM processed_events ORDER BY rowid"""
IMPORT_COUNTS = (
    "INSERT INTO topic_counts SELECT topic, count(*), count(*), count(*) FROM events GROUP BY topic"
)
# Purges delete this many rows per transaction, so publishes wait for a short lock, never a long one.
PURGE_CHUNK = 10_000
BUSY_TIMEOUT_MS = 10_000


def sqlite_store_from_url(url: str, settings: Settings) -> SqliteEventStore:
    """The store `aggregate.store = sqlite:///...` names, with the profile's sync setting."""
    return SqliteEventStore(sqlite_path(url, "aggregate.store"), synchronous=settings.aggregate.sync)


class SqliteEventStore:
    """Writes go through one thread holding one connection (one hop per group commit, not per statement);
    reads use an aiosqlite connection, which WAL lets run beside the writer."""

    kind = "sqlite"

    def __init__(self, path: Path, synchronous: str = "full") -> None:
        self.path = path
        self.where = str(path)
        self.synchronous = synchronous.upper()
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        self._reader: aiosqlite.Connection | None = None

    # -- the writer thread ---------------------------------------------------------------------------

    async def _in_writer(self, fn: Callable[..., T], *args: Any) -> T:
        if self._executor is None:
            raise BackendError(f"sqlite store {self.where} is closed")
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        except (sqlite3.Error, OverflowError) as exc:
            raise BackendError(f"sqlite store {self.where}: {exc}") from exc

    def _connect(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {self.synchronous}")
        for statement in SCHEMA:
            conn.execute(statement)
        self._conn = conn
        self._import_chronicleweaver()

    def _import_chronicleweaver(self) -> None:
        """Take over the dedup history of a ChronicleWeaver database (DEDUPLICATION_DB_PATH pointing at it).

        Runs once, when its processed_events table is there and ours is still empty, in one transaction.
        """
        conn = self._conn
        assert conn is not None
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "processed_events" not in tables or conn.execute("SELECT 1 FROM events LIMIT 1").fetchone():
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            imported = conn.execute(IMPORT_SEED).rowcount
            conn.execute(IMPORT_COUNTS)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        log.info(
            "imported %d events of ChronicleWeaver's processed_events from %s: their ids stay deduplicated "
            "(its received/dropped totals are not per topic and start again from these events)",
            imported,
            self.where,
        )

    def _write(self, batches: Sequence[Sequence[Row]]) -> list[int]:
        conn = self._conn
        assert conn is not None
        new: list[int] = []
        received: Counter[str] = Counter()
        conn.execute("BEGIN IMMEDIATE")
        try:
            # AUTOINCREMENT: the rows inserted now get seqs above every seq ever used, in publish order.
            last = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
            for batch in batches:
                # rowcount of an INSERT OR IGNORE executemany: the rows that were new.
                new.append(conn.executemany(INSERT, batch).rowcount)
                received.update(row[0] for row in batch)
            added = dict(conn.execute(NEW_PER_TOPIC, (last[0] if last else 0,)).fetchall())
            conn.executemany(COUNT, [(t, n, added.get(t, 0), added.get(t, 0)) for t, n in received.items()])
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return new

    def _purge_before(self, before_ms: int) -> int:
        conn = self._conn
        assert conn is not None
        # stored_at grows with seq, so the first row stored at or after the cutoff bounds what goes.
        found = conn.execute("SELECT seq FROM events WHERE stored_at >= ? ORDER BY seq LIMIT 1", (before_ms,))
        row = found.fetchone()
        if row is None:
            last = conn.execute("SELECT max(seq) FROM events").fetchone()[0]
            return 0 if last is None else self._purge_through(last)
        return self._purge_through(row[0] - 1)

    def _purge_keep(self, keep: int) -> int:
        conn = self._conn
        assert conn is not None
        stored = conn.execute("SELECT coalesce(sum(stored), 0) FROM topic_counts").fetchone()[0]
        excess = stored - keep
        if excess <= 0:
            return 0
        row = conn.execute("SELECT seq FROM events ORDER BY seq LIMIT 1 OFFSET ?", (excess - 1,)).fetchone()
        return 0 if row is None else self._purge_through(row[0])

    def _purge_through(self, last_seq: int) -> int:
        """Delete every event with seq <= last_seq, a chunk per transaction."""
        conn = self._conn
        assert conn is not None
        deleted = 0
        while True:
            conn.execute("BEGIN IMMEDIATE")
            try:
                bound = conn.execute(
                    "SELECT max(seq) FROM (SELECT seq FROM events WHERE seq <= ? ORDER BY seq LIMIT ?)",
                    (last_seq, PURGE_CHUNK),
                ).fetchone()[0]
                if bound is None:
                    conn.execute("COMMIT")
                    return deleted
                gone = conn.execute(
                    "SELECT topic, count(*) FROM events WHERE seq <= ? GROUP BY topic", (bound,)
                ).fetchall()
                conn.executemany(UNSTORE, [(count, topic) for topic, count in gone])
                deleted += conn.execute("DELETE FROM events WHERE seq <= ?", (bound,)).rowcount
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def _purge(self, before_ms: int | None, keep: int | None) -> int:
        deleted = self._purge_before(before_ms) if before_ms is not None else 0
        if keep is not None:
            deleted += self._purge_keep(keep)
        return deleted

    def _close_writer(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # -- the EventStore protocol ---------------------------------------------------------------------

    async def open(self) -> None:
        """Create the file, the schema and both connections."""
        import aiosqlite

        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llmkit-sqlite-writer")
        try:
            await self._in_writer(self._connect)
            self._reader = await aiosqlite.connect(self.path)
            await self._reader.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        except (OSError, sqlite3.Error) as exc:
            await self.close()
            raise BackendError(f"sqlite store {self.where}: cannot open it: {exc}") from exc

    async def write(self, batches: Sequence[Sequence[Row]]) -> list[int]:
        """Store the batches in one transaction; the new-row count of each."""
        return await self._in_writer(self._write, batches)

    async def counts(self) -> list[TopicCounts]:
        """Per-topic numbers from the topic_counts table."""
        rows = await self._read(
            "SELECT topic, received, unique_count, stored FROM topic_counts ORDER BY topic", ()
        )
        return [TopicCounts(*row) for row in rows]

    async def pages(self, query: EventQuery, page_size: int) -> AsyncIterator[list[Listed]]:
        """(seq, doc) pages in arrival order."""
        where, params = ["seq > ?"], list[Any]([query.after])
        for column, op, value in (
            ("topic", "=", query.topic),
            ("source", "=", query.source),
            ("ts", ">=", query.since_ms),
            ("ts", "<", query.until_ms),
        ):
            if value is not None:
                where.append(f"{column} {op} ?")
                params.append(value)
        sql = f"SELECT seq, doc FROM events WHERE {' AND '.join(where)} ORDER BY seq LIMIT ?"
        left = query.limit
        while left is None or left > 0:
            size = page_size if left is None else min(page_size, left)
            page: list[Listed] = await self._read(sql, (*params, size))
            if not page:
                return
            yield page
            if len(page) < size:
                return
            params[0] = page[-1][0]
            if left is not None:
                left -= len(page)

    async def _read(self, sql: str, params: Sequence[Any]) -> list[Any]:
        if self._reader is None:
            raise BackendError(f"sqlite store {self.where} is closed")
        try:
            async with self._reader.execute(sql, params) as cursor:
                rows: list[Any] = list(await cursor.fetchall())
                return rows
        except sqlite3.Error as exc:
            raise BackendError(f"sqlite store {self.where}: {exc}") from exc

    async def purge(self, before_ms: int | None, keep: int | None) -> int:
        """Delete old events through the writer thread, so publishes and purges never interleave."""
        return await self._in_writer(self._purge, before_ms, keep)

    async def size_bytes(self) -> int:
        """The database file plus its WAL."""
        total = 0
        for suffix in ("", "-wal"):
            try:
                total += self.path.with_name(self.path.name + suffix).stat().st_size
            except OSError:
                pass
        return total

    async def close(self) -> None:
        """Close the reader, then the writer connection and its thread."""
        if self._reader is not None:
            reader, self._reader = self._reader, None
            await reader.close()
        if self._executor is not None:
            executor, self._executor = self._executor, None
            await asyncio.get_running_loop().run_in_executor(executor, self._close_writer)
            executor.shutdown(wait=True)
