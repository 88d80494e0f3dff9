"""The SQLite store's keyword search: its own read connection on its own thread, one trip per search.

A search needs the query words' chunk counts (which words pick the candidates, documents_sql.rare_words)
before its statement can be written. Through the store's one aiosqlite connection that was two or three
trips to its thread (~0.25 ms each on a 2-core VM), and every key lookup and write waited behind the
search's ~3 ms statement. Here the counts, the statement and the check that the counts are still fresh
run together in one call on a second connection (WAL: it reads while the store's connection writes),
and the counts are kept on that thread only, so nothing else touches them.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from llmkit.errors import BackendError
from llmkit.platform.store import documents_sql as ds
from llmkit.platform.store import migrations as m

# The words whose chunk counts the reader keeps at most (then starts again).
MAX_CACHED_WORDS = 100_000
BUSY_TIMEOUT_MS = 10_000
_SEARCH_VERSIONS = m.qmark(ds.SUM_SEARCH_VERSIONS)
_CHUNKS = m.qmark(ds.SQLITE_CHUNKS)


class KeywordReader:
    """BM25 search rows (documents_sql.search_statement) read on a connection of its own."""

    def __init__(self, path: Path | str, where: str, *, shared_memory: bool = False) -> None:
        # A path, or (shared_memory) the `file:...?mode=memory&cache=shared` URI of the store's database.
        self.path = path
        self.where = where
        self.shared_memory = shared_memory
        self._pool: ThreadPoolExecutor | None = None
        self._db: sqlite3.Connection | None = None
        # How many chunks hold each word (fts5vocab counts them by reading the word's whole list: 0.1 ms
        # for a common word) and how many chunks there are (-1: to read), as of SUM_SEARCH_VERSIONS
        # `_of` (-1: not read yet); versions only go up, so an equal version means no chunk changed.
        self._frequencies: dict[str, int] = {}
        self._of = -1
        self._chunks = -1

    def open(self) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="llmkit-search")

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await asyncio.get_running_loop().run_in_executor(pool, self._close)
            pool.shutdown(wait=False)

    def _close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            db.close()

    async def rows(
        self, tenant_id: str, words: Sequence[str], limit: int, filters: Mapping[str, Any] | None
    ) -> list[Any]:
        if self._pool is None:
            raise BackendError(f"platform store {self.where} is not open")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, self._search, tenant_id, words, limit, filters)
        except sqlite3.Error as exc:
            raise BackendError(f"platform store {self.where}: {exc}") from exc

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            db = sqlite3.connect(self.path, isolation_level=None, uri=self.shared_memory)
            db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            if self.shared_memory:
                # Shared-cache locks are per table and ignore the busy timeout: a search while the store's
                # connection writes would fail at once. Reading uncommitted rows takes no such lock (a
                # database of tests only).
                db.execute("PRAGMA read_uncommitted = 1")
            db.execute("PRAGMA query_only = 1")
            self._db = db
        return self._db

    def _search(
        self, tenant_id: str, words: Sequence[str], limit: int, filters: Mapping[str, Any] | None
    ) -> list[Any]:
        db = self._connection()
        if self._of < 0 or len(self._frequencies) > MAX_CACHED_WORDS:
            self._forget(db.execute(_SEARCH_VERSIONS).fetchone()[0])
        rows = self._statement(db, tenant_id, words, limit, filters)
        # Each row says which version its snapshot read; no rows (or no statement) say nothing: ask.
        version = rows[0][6] if rows else db.execute(_SEARCH_VERSIONS).fetchone()[0]
        if version != self._of:  # a chunk changed since the counts were read: read them again
            self._forget(version)
            rows = self._statement(db, tenant_id, words, limit, filters)
        return rows

    def _forget(self, version: int) -> None:
        self._frequencies, self._of, self._chunks = {}, int(version), -1

    def _statement(
        self,
        db: sqlite3.Connection,
        tenant_id: str,
        words: Sequence[str],
        limit: int,
        filters: Mapping[str, Any] | None,
    ) -> list[Any]:
        if self._chunks < 0:
            self._chunks = int(db.execute(_CHUNKS).fetchone()[0])
        known = self._frequencies
        missing = [w for w in words if w not in known]
        if missing:
            marks = ", ".join("?" for _ in missing)
            counts = dict(db.execute(ds.SQLITE_DOCUMENT_FREQUENCIES.format(marks=marks), missing).fetchall())
            known.update((w, int(counts.get(w, 0))) for w in missing)
        frequencies = {w: known[w] for w in words}
        statement = ds.search_statement("sqlite", tenant_id, words, frequencies, self._chunks, limit, filters)
        if statement is None:
            return []
        sql, head = statement
        return db.execute(m.qmark(sql), (*head, *ds.filter_args(filters))).fetchall()
