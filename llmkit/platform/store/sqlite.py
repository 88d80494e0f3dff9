"""SqlitePlatformStore: tenants, keys and documents in one SQLite file (WAL), through aiosqlite's one
connection; keyword search on FTS5 (BM25) through a read connection of its own (sqlite_search.py)."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import sqlite3
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmkit.core.sqlite import use_wal, while_locked
from llmkit.errors import BackendError
from llmkit.platform.store import documents_sql as ds
from llmkit.platform.store import jobs_sql as js
from llmkit.platform.store import migrations as m
from llmkit.platform.store import webhooks_sql as ws
from llmkit.platform.store.base import (
    ApiKey,
    Chunk,
    ChunkVectors,
    Delivery,
    DeliveryAttempt,
    Document,
    Job,
    SearchHit,
    StoreConflict,
    Tenant,
    Webhook,
)
from llmkit.platform.store.sqlite_search import KeywordReader

if TYPE_CHECKING:
    import aiosqlite

BUSY_TIMEOUT_MS = 10_000
CLAIM_BUSY_TIMEOUT_MS = 200
# Every statement, numbered for SQLite once at import rather than per call.
Q = {
    n: m.qmark(sql)
    for module in (m, ds, js, ws)
    for n in dir(module)
    if n.isupper() and isinstance(sql := getattr(module, n), str)
}


async def rollback(db: aiosqlite.Connection) -> None:
    """Undo the open transaction, if one is: a COMMIT cancelled while aiosqlite's thread ran it leaves none,
    and then the cancellation (not a "no transaction is active" error in its place) must propagate."""
    if db.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            await db.execute("ROLLBACK")


def conflict_message(exc: Exception) -> str:
    """What a unique-constraint failure means, in the words of the API."""
    text = str(exc)
    if "name" in text:
        return "a tenant with that name exists; choose another name"
    return "a row with that id exists"


async def queue(db: aiosqlite.Connection, deliveries: Sequence[Delivery]) -> None:
    """Write outbox rows within the caller's transaction."""
    await db.executemany(Q["INSERT_DELIVERY"], [ws.delivery_row(d) for d in deliveries])


class SqlitePlatformStore:
    """One connection (aiosqlite's thread) does every read and write: SQLite has one writer anyway."""

    kind = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.where = str(path)
        self._db: aiosqlite.Connection | None = None
        # One connection serves every task: a statement of one task between another's BEGIN and COMMIT
        # would join (and roll back with) that transaction, and a second BEGIN would fail. Each use of
        # the connection (one statement, or one transaction) holds it alone.
        self._turn = asyncio.Lock()
        # `sqlite:///:memory:` (tests): a named in-memory database in shared-cache mode, so the keyword
        # reader's second connection opens the same one, not an empty database of its own.
        self._memory = str(path) == ":memory:"
        named = f"file:llmkit-platform-{secrets.token_hex(8)}?mode=memory&cache=shared"
        self._target: Path | str = named if self._memory else path
        self._keywords = KeywordReader(self._target, self.where, shared_memory=self._memory)

    @asynccontextmanager
    async def _errors(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._turn:
            if self._db is None:
                raise BackendError(f"platform store {self.where} is not open")
            try:
                yield self._db
            except sqlite3.IntegrityError as exc:
                raise StoreConflict(conflict_message(exc)) from exc
            except sqlite3.Error as exc:
                raise BackendError(f"platform store {self.where}: {exc}") from exc

    async def open(self) -> None:
        """Create the file's directory, connect and migrate in one transaction per version."""
        import aiosqlite

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = await aiosqlite.connect(self._target, isolation_level=None, uri=self._memory)
        except (OSError, sqlite3.Error) as exc:
            raise BackendError(f"platform store {self.where}: cannot open: {exc}") from exc
        try:
            await while_locked(self._migrate_once)
        except sqlite3.Error as exc:
            await self.close()
            raise BackendError(f"platform store {self.where}: {exc}") from exc
        except BaseException:
            # A refused schema must not leave aiosqlite's thread running: it would keep the process alive.
            await self.close()
            raise
        self._keywords.open()

    async def _migrate_once(self) -> None:
        # Raw sqlite3 errors, so while_locked sees "database is locked" and tries again.
        db = self._db
        assert db is not None
        await db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        await use_wal(db)
        await db.execute("PRAGMA synchronous = NORMAL")
        await db.execute("BEGIN IMMEDIATE")
        try:
            await db.execute(m.SCHEMA_TABLE)
            async with db.execute(m.READ_VERSION) as cursor:
                row = await cursor.fetchone()
            for version, statements in m.pending(
                int(row[0]) if row and row[0] is not None else 0, self.where, self.kind
            ):
                for statement in statements:
                    await db.execute(statement)
                await db.execute(Q["WRITE_VERSION"], (version,))
            await db.execute("COMMIT")
        except BaseException:
            await db.execute("ROLLBACK")
            raise

    async def close(self) -> None:
        await self._keywords.close()
        if self._db is not None:
            db, self._db = self._db, None
            await db.close()

    async def ping(self) -> None:
        await self._one("SELECT 1", ())

    async def schema_version(self) -> int:
        row = await self._one(m.READ_VERSION, ())
        return int(row[0]) if row and row[0] is not None else 0

    # One trip to the connection's thread per statement (execute, fetch and close there): a cursor's
    # execute, fetch and close are three, ~0.1 ms each on a loaded loop.
    async def _one(self, sql: str, args: tuple[Any, ...]) -> Any:
        async with self._errors() as db:
            rows = await db.execute_fetchall(sql, args)
        return next(iter(rows), None)

    async def _all(self, sql: str, args: tuple[Any, ...]) -> list[Any]:
        async with self._errors() as db:
            return list(await db.execute_fetchall(sql, args))

    async def _write(self, sql: str, args: tuple[Any, ...]) -> int:
        async with self._errors() as db, db.execute(sql, args) as cursor:
            return int(cursor.rowcount)

    async def add_tenant(self, tenant: Tenant) -> None:
        await self._write(Q["INSERT_TENANT"], m.tenant_row(tenant))

    async def tenant(self, tenant_id: str) -> Tenant | None:
        row = await self._one(Q["SELECT_TENANT"], (tenant_id,))
        return m.tenant_of(row) if row else None

    async def tenants(self) -> list[Tenant]:
        return [m.tenant_of(row) for row in await self._all(Q["SELECT_TENANTS"], ())]

    async def update_tenant(self, tenant: Tenant) -> bool:
        row = m.tenant_row(tenant)
        return await self._write(Q["UPDATE_TENANT"], (*row[:7], tenant.updated_at)) > 0

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._errors() as db:
            await db.execute("BEGIN IMMEDIATE")
            try:
                yield db
                await db.execute("COMMIT")
            except BaseException:
                await rollback(db)
                raise

    async def delete_tenant(self, tenant_id: str, at: float) -> int | None:
        async with self._transaction() as db:
            async with db.execute(Q["DELETE_TENANT"], (tenant_id,)) as cursor:
                deleted = cursor.rowcount
            revoked = 0
            if deleted:
                async with db.execute(Q["REVOKE_TENANT_KEYS"], (tenant_id, at)) as cursor:
                    revoked = cursor.rowcount
                # A tenant created later with the same id must not inherit these.
                await db.execute(Q["DELETE_TENANT_CHUNKS"], (tenant_id,))
                await db.execute(Q["DELETE_TENANT_DOCUMENTS"], (tenant_id,))
                await db.execute(Q["DELETE_TENANT_JOBS"], (tenant_id,))
                await db.execute(Q["BUMP_SEARCH_VERSION"], (tenant_id,))
                for name in ("DELETE_TENANT_ATTEMPTS", "DELETE_TENANT_OUTBOX", "DELETE_TENANT_WEBHOOKS"):
                    await db.execute(Q[name], (tenant_id,))
        return revoked if deleted else None

    async def add_key(self, key: ApiKey, deliveries: Sequence[Delivery] = ()) -> None:
        async with self._transaction() as db:
            await db.execute(Q["INSERT_KEY"], m.key_row(key))
            await queue(db, deliveries)

    async def key(self, key_id: str) -> ApiKey | None:
        row = await self._one(Q["SELECT_KEY"], (key_id,))
        return m.key_of(row) if row else None

    async def keys(self, tenant_id: str | None = None) -> list[ApiKey]:
        if tenant_id is None:
            rows = await self._all(Q["SELECT_KEYS"], ())
        else:
            rows = await self._all(Q["SELECT_TENANT_KEYS"], (tenant_id,))
        return [m.key_of(row) for row in rows]

    async def revoke_key(self, key_id: str, at: float, deliveries: Sequence[Delivery] = ()) -> ApiKey | None:
        async with self._transaction() as db:
            await db.execute(Q["REVOKE_KEY"], (key_id, at))
            async with db.execute(Q["SELECT_KEY"], (key_id,)) as cursor:
                row = await cursor.fetchone()
            if row is not None:
                await queue(db, deliveries)
        return m.key_of(row) if row else None

    async def touch_keys(self, used: Mapping[str, float]) -> None:
        if not used:
            return
        async with self._errors() as db:
            await db.executemany(Q["TOUCH_KEY"], list(used.items()))

    async def add_document(self, document: Document, chunks: Sequence[Chunk]) -> None:
        await self.add_documents([(document, chunks)])

    async def add_documents(
        self, items: Sequence[tuple[Document, Sequence[Chunk]]], jobs: Sequence[Job] = ()
    ) -> None:
        async with self._transaction() as db:
            for document, chunks in items:
                await db.execute(Q["INSERT_DOCUMENT"], ds.document_row(document))
                await db.executemany(
                    Q["INSERT_CHUNK"], ds.chunk_rows(document.tenant_id, document.id, chunks)
                )
            await db.executemany(Q["INSERT_JOB"], [js.job_row(job) for job in jobs])
            for tenant_id in sorted({document.tenant_id for document, _ in items}):
                await db.execute(Q["BUMP_SEARCH_VERSION"], (tenant_id,))

    async def update_document(self, document: Document, job: Job | None = None) -> bool:
        row = ds.document_row(document)
        async with self._transaction() as db:
            args = (document.tenant_id, document.id, *row[2:5], document.updated_at)
            async with db.execute(Q["UPDATE_DOCUMENT"], args) as cursor:
                if cursor.rowcount == 0:
                    return False
            if job is not None:
                await db.execute(Q["INSERT_JOB"], js.job_row(job))
            await db.execute(Q["BUMP_SEARCH_VERSION"], (document.tenant_id,))
        return True

    async def replace_chunks(
        self,
        tenant_id: str,
        document_id: str,
        updated_at: float,
        chunks: Sequence[Chunk],
        vectors: ChunkVectors | None = None,
    ) -> bool:
        key = (tenant_id, document_id)
        rows = ds.chunk_rows(*key, chunks, None if vectors is None else vectors.rows)
        async with self._transaction() as db:
            async with db.execute(Q["DOCUMENT_UNCHANGED"], (*key, updated_at)) as cursor:
                if await cursor.fetchone() is None:
                    return False
            # The delete trigger takes the old words out of the index before the new chunks go in.
            await db.execute(Q["DELETE_CHUNKS"], key)
            await db.executemany(Q["INSERT_CHUNK"], rows)
            model = None if vectors is None else vectors.model
            await db.execute(Q["MARK_INDEXED"], (*key, updated_at, model))
            await db.execute(Q["BUMP_SEARCH_VERSION"], (tenant_id,))
        return True

    async def document(self, tenant_id: str, document_id: str) -> Document | None:
        row = await self._one(Q["SELECT_DOCUMENT"], (tenant_id, document_id))
        return ds.document_of(row) if row else None

    async def documents(
        self, tenant_id: str, limit: int = 50, offset: int = 0, filters: Mapping[str, Any] | None = None
    ) -> list[Document]:
        sql = m.qmark(ds.list_statement(self.kind, filters))
        rows = await self._all(sql, (tenant_id, limit, offset, *ds.filter_args(filters)))
        return [ds.document_of(row) for row in rows]

    async def document_chunks(self, tenant_id: str, document_id: str) -> list[Chunk]:
        return [ds.chunk_of(row) for row in await self._all(Q["SELECT_CHUNKS"], (tenant_id, document_id))]

    async def delete_document(self, tenant_id: str, document_id: str) -> bool:
        async with self._transaction() as db:
            await db.execute(Q["DELETE_CHUNKS"], (tenant_id, document_id))
            async with db.execute(Q["DELETE_DOCUMENT"], (tenant_id, document_id)) as cursor:
                if cursor.rowcount == 0:
                    return False
            await db.execute(Q["BUMP_SEARCH_VERSION"], (tenant_id,))
            return True

    async def search_version(self, tenant_id: str) -> int:
        row = await self._one(Q["SELECT_SEARCH_VERSION"], (tenant_id,))
        return int(row[0]) if row else 0

    async def vector_versions(self, tenant_id: str, model: str) -> dict[str, float]:
        rows = await self._all(Q["SELECT_VECTOR_VERSIONS"], (tenant_id, model))
        return {row[0]: row[1] for row in rows}

    async def chunk_vectors(
        self, tenant_id: str, document_ids: Sequence[str]
    ) -> list[tuple[str, int, bytes]]:
        if not document_ids:
            return []
        sql = m.qmark(ds.vectors_statement(len(document_ids)))
        rows = await self._all(sql, (tenant_id, *document_ids))
        return [(row[0], row[1], bytes(row[2])) for row in rows]

    async def chunk_hits(
        self,
        tenant_id: str,
        keys: Sequence[tuple[str, int]],
        filters: Mapping[str, Any] | None = None,
    ) -> list[SearchHit]:
        if not keys:
            return []
        sql = m.qmark(ds.chunk_hits_statement(self.kind, len(keys), filters))
        pairs = [v for key in keys for v in key]
        rows = await self._all(sql, (tenant_id, *pairs, *ds.filter_args(filters)))
        return [ds.hit_of(row) for row in rows]

    async def keyword_search(
        self, tenant_id: str, query: str, limit: int = 10, filters: Mapping[str, Any] | None = None
    ) -> list[SearchHit]:
        words = ds.query_words(query)
        if not words or limit < 1:
            return []
        return ds.hits_of(await self._keywords.rows(tenant_id, words, limit, filters), words)

    async def prune_jobs(self, before: float, limit: int) -> int:
        return await self._write(Q["PRUNE_JOBS"], (before, limit))

    async def add_job(self, job: Job) -> None:
        await self._write(Q["INSERT_JOB"], js.job_row(job))

    async def latest_jobs(self, tenant_id: str, kind: str, subjects: Sequence[str]) -> dict[str, Job]:
        if not subjects:
            return {}
        sql = m.qmark(js.latest_statement(len(subjects)))
        return js.latest_of(await self._all(sql, (tenant_id, kind, *subjects)))

    async def job(self, job_id: str, tenant_id: str | None = None) -> Job | None:
        if tenant_id is None:
            row = await self._one(Q["SELECT_JOB"], (job_id,))
        else:
            row = await self._one(Q["SELECT_TENANT_JOB"], (job_id, tenant_id))
        return js.job_of(row) if row else None

    async def jobs(
        self, state: str | None = None, tenant_id: str | None = None, limit: int = 50, offset: int = 0
    ) -> list[Job]:
        sql, _ = js.list_statement(state, tenant_id)
        filters = tuple(v for v in (state, tenant_id) if v is not None)
        return [js.job_of(row) for row in await self._all(m.qmark(sql), (*filters, limit, offset))]

    @asynccontextmanager
    async def _claim_transaction(self) -> AsyncIterator[aiosqlite.Connection | None]:
        """BEGIN IMMEDIATE, waiting at most CLAIM_BUSY_TIMEOUT_MS; None (no transaction) when busy."""
        async with self._errors() as db:
            # Another connection writing the file (the analytics writer may share it) would make BEGIN
            # wait the full busy timeout, holding this store's one connection (key lookups) all along:
            # a claim waits briefly, then leaves the work to the next poll.
            await db.execute(f"PRAGMA busy_timeout = {CLAIM_BUSY_TIMEOUT_MS}")
            try:
                await db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                if "locked" in str(exc) or "busy" in str(exc):
                    yield None
                    return
                raise
            finally:
                await db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            try:
                yield db
                await db.execute("COMMIT")
            except BaseException:
                await rollback(db)
                raise

    async def claim_job(self, worker: str, now: float, lease: float) -> Job | None:
        if await self._one(Q["ANY_DUE"], (now,)) is None:
            return None
        async with self._claim_transaction() as db:
            if db is None:
                return None
            await db.execute(Q["EXPIRE_JOBS"], (now, js.LEASE_LOST))
            async with db.execute(Q["CLAIM_JOB_SQLITE"], (now, now + lease, worker)) as cursor:
                row = await cursor.fetchone()
        return js.job_of(row) if row else None

    async def extend_job(self, job_id: str, worker: str, lease_until: float) -> bool:
        return await self._write(Q["EXTEND_JOB"], (job_id, worker, lease_until)) > 0

    async def finish_job(self, job_id: str, worker: str, now: float) -> bool:
        return await self._write(Q["FINISH_JOB"], (job_id, worker, now)) > 0

    async def fail_job(
        self, job_id: str, worker: str, now: float, error: str, retry_at: float | None = None
    ) -> bool:
        if retry_at is None:
            return await self._write(Q["FAIL_JOB"], (job_id, worker, now, error)) > 0
        return await self._write(Q["RETRY_LATER"], (job_id, worker, retry_at, error)) > 0

    async def requeue_job(self, job_id: str, now: float, tenant_id: str | None = None) -> bool:
        if tenant_id is None:
            return await self._write(Q["REQUEUE_JOB"], (job_id, now)) > 0
        return await self._write(Q["REQUEUE_TENANT_JOB"], (job_id, now, tenant_id)) > 0

    async def add_webhook(self, webhook: Webhook) -> None:
        await self._write(Q["INSERT_WEBHOOK"], ws.webhook_row(webhook))

    async def webhook(self, webhook_id: str, tenant_id: str | None = None) -> Webhook | None:
        if tenant_id is None:
            row = await self._one(Q["SELECT_WEBHOOK"], (webhook_id,))
        else:
            row = await self._one(Q["SELECT_TENANT_WEBHOOK"], (webhook_id, tenant_id))
        return ws.webhook_of(row) if row else None

    async def webhooks(self, tenant_id: str | None = None) -> list[Webhook]:
        if tenant_id is None:
            rows = await self._all(Q["SELECT_WEBHOOKS"], ())
        else:
            rows = await self._all(Q["SELECT_TENANT_WEBHOOKS"], (tenant_id,))
        return [ws.webhook_of(row) for row in rows]

    async def delete_webhook(self, webhook_id: str, tenant_id: str | None = None) -> bool:
        async with self._transaction() as db:
            if tenant_id is None:
                cursor = await db.execute(Q["DELETE_WEBHOOK"], (webhook_id,))
            else:
                cursor = await db.execute(Q["DELETE_TENANT_WEBHOOK"], (webhook_id, tenant_id))
            if cursor.rowcount == 0:
                return False
            await db.execute(Q["DELETE_WEBHOOK_OUTBOX"], (webhook_id,))
            await db.execute(Q["DELETE_WEBHOOK_ATTEMPTS"], (webhook_id,))
        return True

    async def rotate_webhook_secret(
        self, webhook_id: str, secret: str, previous_until: float, now: float, tenant_id: str | None = None
    ) -> Webhook | None:
        if tenant_id is None:
            changed = await self._write(Q["ROTATE_WEBHOOK"], (webhook_id, secret, previous_until, now))
        else:
            args = (webhook_id, secret, previous_until, now, tenant_id)
            changed = await self._write(Q["ROTATE_TENANT_WEBHOOK"], args)
        return await self.webhook(webhook_id) if changed else None

    async def disable_webhook(self, webhook_id: str, reason: str, at: float) -> bool:
        return await self._write(Q["DISABLE_WEBHOOK"], (webhook_id, reason, at)) > 0

    async def add_deliveries(self, deliveries: Sequence[Delivery]) -> None:
        if not deliveries:
            return
        async with self._transaction() as db:
            await queue(db, deliveries)

    async def claim_deliveries(self, worker: str, now: float, lease: float, limit: int) -> list[Delivery]:
        if limit < 1 or await self._one(Q["ANY_DELIVERY_DUE"], (now,)) is None:
            return []
        async with self._claim_transaction() as db:
            if db is None:
                return []
            args = (now, now + lease, worker, limit)
            async with db.execute(Q["CLAIM_DELIVERIES_SQLITE"], args) as cursor:
                rows = list(await cursor.fetchall())
        return ws.claimed(rows)

    async def record_attempt(
        self, attempt: DeliveryAttempt, worker: str, state: str, next_at: float | None = None
    ) -> bool:
        finished = None if state == "pending" else attempt.at
        args = (attempt.delivery_id, worker, state, next_at or attempt.at, attempt.status, attempt.error)
        async with self._transaction() as db:
            async with db.execute(Q["RECORD_DELIVERY"], (*args, finished)) as cursor:
                if cursor.rowcount == 0:
                    return False
            await db.execute(Q["INSERT_ATTEMPT"], ws.attempt_row(attempt))
        return True

    async def deliveries(self, webhook_id: str, limit: int = 50, offset: int = 0) -> list[Delivery]:
        rows = await self._all(Q["SELECT_DELIVERIES"], (webhook_id, limit, offset))
        return [ws.delivery_of(row) for row in rows]

    async def delivery_attempts(self, delivery_ids: Sequence[str]) -> list[DeliveryAttempt]:
        if not delivery_ids:
            return []
        sql = m.qmark(ws.attempts_statement(len(delivery_ids)))
        return [ws.attempt_of(row) for row in await self._all(sql, tuple(delivery_ids))]
