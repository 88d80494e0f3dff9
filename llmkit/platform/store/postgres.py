"""PostgresPlatformStore: tenants, keys and documents in PostgreSQL through an asyncpg pool, shared by
replicas; keyword search on a tsvector GIN index, ranked by BM25 as SQLite's FTS5 ranks (documents_sql)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import asyncpg

from llmkit.core.secrets import mask_secrets, mask_url
from llmkit.errors import BackendError, ConfigError
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

if TYPE_CHECKING:
    from asyncpg import Connection, Pool

# pg_advisory_xact_lock key for migrating: replicas starting together take turns, the later ones then find
# nothing pending. Advisory locks are per database, so stores on other databases never wait for it.
MIGRATION_LOCK = 0x6C6C6D6B_69740001  # "llmkit" + 1
CONNECT_TIMEOUT_S = 10.0
# What asyncpg raises when the server is unreachable, refuses us or fails a statement.
# InternalClientError: asyncpg's protocol state machine, e.g. a pool resetting a connection whose query a
# cancellation interrupted (MagicStack/asyncpg#784).
_DRIVER_ERRORS = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
    TimeoutError,
)


def conflict_message(exc: asyncpg.UniqueViolationError) -> str:
    """What a unique-constraint failure means, in the words of the API."""
    # PostgreSQL names a UNIQUE column's constraint <table>_<column>_key; the primary key is <table>_pkey.
    if (exc.constraint_name or "").endswith("_name_key"):
        return "a tenant with that name exists; choose another name"
    return "a row with that id exists"


def rowcount(status: str) -> int:
    """`UPDATE 3` (asyncpg's command status) -> 3."""
    tail = status.rsplit(" ", 1)[-1]
    return int(tail) if tail.isdigit() else 0


async def queue(conn: Connection, deliveries: Sequence[Delivery]) -> None:
    """Write outbox rows within the caller's transaction."""
    await conn.executemany(ws.INSERT_DELIVERY, [ws.delivery_row(d) for d in deliveries])


class PostgresPlatformStore:
    """A pool of `pool_size` connections; statements are the ones SqlitePlatformStore runs."""

    kind = "postgresql"

    def __init__(self, dsn: str, pool_size: int = 10) -> None:
        if pool_size < 1:
            raise ConfigError(f"platform store pool size must be at least 1, got {pool_size}")
        self.dsn = dsn
        self.pool_size = pool_size
        # Every message and repr shows this, never the DSN: it carries the password.
        self.where = mask_url(dsn)
        self._pool: Pool | None = None

    def __repr__(self) -> str:
        return f"PostgresPlatformStore({self.where!r}, pool_size={self.pool_size})"

    def _backend_error(self, doing: str, exc: BaseException) -> BackendError:
        return BackendError(
            f"platform store {self.where}: {doing}{type(exc).__name__}: {mask_secrets(str(exc))}"
        )

    @asynccontextmanager
    async def _errors(self) -> AsyncIterator[Pool]:
        if self._pool is None:
            raise BackendError(f"platform store {self.where} is not open")
        try:
            yield self._pool
        except asyncpg.UniqueViolationError as exc:
            raise StoreConflict(conflict_message(exc)) from exc
        except _DRIVER_ERRORS as exc:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                # The driver failed while a cancellation unwound (a shutdown stopping a worker mid-query):
                # the task stays cancelled, so whoever cancelled it sees what it asked for.
                raise asyncio.CancelledError from exc
            raise self._backend_error("", exc) from exc

    async def open(self) -> None:
        """Connect the pool and migrate, holding the migration lock, in one transaction."""
        try:
            self._pool = await asyncpg.create_pool(
                self.dsn, min_size=1, max_size=self.pool_size, timeout=CONNECT_TIMEOUT_S
            )
        except ValueError as exc:
            # asyncpg's DSN parser: a malformed URL is a setting to fix, not an outage.
            raise ConfigError(f"platform store {self.where}: {mask_secrets(str(exc))}") from None
        except _DRIVER_ERRORS as exc:
            raise self._backend_error("cannot connect: ", exc) from exc
        try:
            async with self._errors() as pool, pool.acquire() as conn:
                await self._migrate(conn)
        except BaseException:
            # A half-opened store holds no connections: the caller may not call close() after a failure.
            await self.close()
            raise

    async def _migrate(self, conn: Connection) -> None:
        async with conn.transaction():
            # Before CREATE TABLE IF NOT EXISTS: two sessions creating the same table at once can both
            # pass the "not exists" check and one then fails on the catalog's unique index.
            await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
            await conn.execute(m.SCHEMA_TABLE)
            version = await conn.fetchval(m.READ_VERSION)
            for number, statements in m.pending(int(version or 0), self.where, self.kind):
                for statement in statements:
                    await conn.execute(statement)
                await conn.execute(m.WRITE_VERSION, number)

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                await asyncio.wait_for(pool.close(), timeout=CONNECT_TIMEOUT_S)
            except _DRIVER_ERRORS:
                # A connection stuck on a dead server must not hang shutdown.
                pool.terminate()

    async def ping(self) -> None:
        await self._value("SELECT 1")

    async def schema_version(self) -> int:
        version = await self._value(m.READ_VERSION)
        return int(version) if version is not None else 0

    async def _value(self, sql: str, *args: Any) -> Any:
        async with self._errors() as pool:
            return await pool.fetchval(sql, *args)

    async def _one(self, sql: str, *args: Any) -> Any:
        async with self._errors() as pool:
            return await pool.fetchrow(sql, *args)

    async def _all(self, sql: str, *args: Any) -> list[Any]:
        async with self._errors() as pool:
            return list(await pool.fetch(sql, *args))

    async def _write(self, sql: str, *args: Any) -> int:
        async with self._errors() as pool:
            return rowcount(await pool.execute(sql, *args))

    async def add_tenant(self, tenant: Tenant) -> None:
        await self._write(m.INSERT_TENANT, *m.tenant_row(tenant))

    async def tenant(self, tenant_id: str) -> Tenant | None:
        row = await self._one(m.SELECT_TENANT, tenant_id)
        return m.tenant_of(row) if row else None

    async def tenants(self) -> list[Tenant]:
        return [m.tenant_of(row) for row in await self._all(m.SELECT_TENANTS)]

    async def update_tenant(self, tenant: Tenant) -> bool:
        row = m.tenant_row(tenant)
        return await self._write(m.UPDATE_TENANT, *row[:7], tenant.updated_at) > 0

    async def delete_tenant(self, tenant_id: str, at: float) -> int | None:
        async with self._errors() as pool, pool.acquire() as conn, conn.transaction():
            if rowcount(await conn.execute(m.DELETE_TENANT, tenant_id)) == 0:
                return None
            # A tenant created later with the same id must not inherit these.
            await conn.execute(ds.DELETE_TENANT_CHUNKS, tenant_id)
            await conn.execute(ds.DELETE_TENANT_DOCUMENTS, tenant_id)
            await conn.execute(js.DELETE_TENANT_JOBS, tenant_id)
            await conn.execute(ds.BUMP_SEARCH_VERSION, tenant_id)
            for sql in (ws.DELETE_TENANT_ATTEMPTS, ws.DELETE_TENANT_OUTBOX, ws.DELETE_TENANT_WEBHOOKS):
                await conn.execute(sql, tenant_id)
            return rowcount(await conn.execute(m.REVOKE_TENANT_KEYS, tenant_id, at))

    async def add_key(self, key: ApiKey, deliveries: Sequence[Delivery] = ()) -> None:
        async with self._errors() as pool, pool.acquire() as conn, conn.transaction():
            await conn.execute(m.INSERT_KEY, *m.key_row(key))
            if deliveries:
                await queue(conn, deliveries)

    async def key(self, key_id: str) -> ApiKey | None:
        row = await self._one(m.SELECT_KEY, key_id)
        return m.key_of(row) if row else None

    async def keys(self, tenant_id: str | None = None) -> list[ApiKey]:
        if tenant_id is None:
            rows = await self._all(m.SELECT_KEYS)
        else:
            rows = await self._all(m.SELECT_TENANT_KEYS, tenant_id)
        return [m.key_of(row) for row in rows]

    async def revoke_key(self, key_id: str, at: float, deliveries: Sequence[Delivery] = ()) -> ApiKey | None:
        async with self._errors() as pool, pool.acquire() as conn, conn.transaction():
            await conn.execute(m.REVOKE_KEY, key_id, at)
            row = await conn.fetchrow(m.SELECT_KEY, key_id)
            if row is not None and deliveries:
                await queue(conn, deliveries)
        return m.key_of(row) if row else None

    async def touch_keys(self, used: Mapping[str, float]) -> None:
        if not used:
            return
        async with self._errors() as pool:
            await pool.executemany(m.TOUCH_KEY, list(used.items()))

    async def add_document(self, document: Document, chunks: Sequence[Chunk]) -> None:
        await self.add_documents([(document, chunks)])

    async def add_documents(
        self, items: Sequence[tuple[Document, Sequence[Chunk]]], jobs: Sequence[Job] = ()
    ) -> None:
        async with self._errors() as pool, pool.acquire() as conn, conn.transaction():
            for document, chunks in items:
                await conn.execute(ds.INSERT_DOCUMENT, *ds.document_row(document))
                await conn.executemany(
                    ds.INSERT_CHUNK_POSTGRES,
                    ds.chunk_rows(document.tenant_id, document.id, chunks, kind=self.kind),
                )
            await conn.executemany(js.INSERT_JOB, [js.job_row(job) for job in jobs])
            for tenant_id in sorted({document.tenant_id for document, _ in items}):
                await conn.execute(ds.BUMP_SEARCH_VERSION, tenant_id)

    async def update_document(self, document: Document, job: Job | None = None) -> bool:
        row = ds.document_row(document)
        async with self._errors() as pool, pool.acquire() as conn, conn.transaction():
            args = (document.tenant_id, document.id, *row[2:5], document.updated_at)
            if rowcount(await conn.execute(ds.UPDATE_DOCUMENT, *args)) == 0:
                return False
            if job is not None:
                await conn.execute(js.INSERT_JOB, *js.job_row(job))
            await conn.execute(ds.BUMP_SEARCH_VERSION, document.tenant_id)
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
        rows = ds.chunk_rows(*key, chunks, None if vectors is None else vectors.rows, self.kind)
        async with self._errors() as pool, pool.acquire() as conn, conn.transaction():
            # The row lock makes a concurrent update wait until these chunks are in (or see them fail).
            if await conn.fetchval(ds.DOCUMENT_UNCHANGED_LOCKED, *key, updated_at) is None:
                return False
            await conn.execute(ds.DELETE_CHUNKS, *key)
            await conn.executemany(ds.INSERT_CHUNK_POSTGRES, rows)
            model = None if vectors is None else vectors.model
            await conn.execute(ds.MARK_INDEXED, *key, updated_at, model)
            await conn.execute(ds.BUMP_SEARCH_VERSION, tenant_id)
        return True

    async def search_version(self, tenant_id: str) -> int:
        row = await self._one(ds.SELECT_SEARCH_VERSION, tenant_id)
        return int(row[0]) if row else 0

    async def vector_versions(self, tenant_id: str, model: str) -> dict[str, float]:
        return {row[0]: row[1] for row in await self._all(ds.SELECT_VECTOR_VERSIONS, tenant_id, model)}

    async def chunk_vectors(
        self, tenant_id: str, document_ids: Sequence[str]
    ) -> list[tuple[str, int, bytes]]:
        if not document_ids:
            return []
        rows = await self._all(ds.vectors_statement(len(document_ids)), tenant_id, *document_ids)
        return [(row[0], row[1], bytes(row[2])) for row in rows]

    async def chunk_hits(
        self,
        tenant_id: str,
        keys: Sequence[tuple[str, int]],
        filters: Mapping[str, Any] | None = None,
    ) -> list[SearchHit]:
        if not keys:
            return []
        sql = ds.chunk_hits_statement(self.kind, len(keys), filters)
        pairs = [v for key in keys for v in key]
        rows = await self._all(sql, tenant_id, *pairs, *ds.postgres_filter_args(filters))
        return [ds.hit_of(row) for row in rows]

    async def document(self, tenant_id: str, document_id: str) -> Document | None:
        row = await self._one(ds.SELECT_DOCUMENT, tenant_id, document_id)
        return ds.document_of(row) if row else None

    async def documents(
        self, tenant_id: str, limit: int = 50, offset: int = 0, filters: Mapping[str, Any] | None = None
    ) -> list[Document]:
        sql = ds.list_statement(self.kind, filters)
        rows = await self._all(sql, tenant_id, limit, offset, *ds.postgres_filter_args(filters))
        return [ds.document_of(row) for row in rows]

    async def document_chunks(self, tenant_id: str, document_id: str) -> list[Chunk]:
        return [ds.chunk_of(row) for row in await self._all(ds.SELECT_CHUNKS, tenant_id, document_id)]

    async def delete_document(self, tenant_id: str, document_id: str) -> bool:
        async with self._errors() as pool, pool.acquire() as conn, conn.transaction():
            await conn.execute(ds.DELETE_CHUNKS, tenant_id, document_id)
            if rowcount(await conn.execute(ds.DELETE_DOCUMENT, tenant_id, document_id)) == 0:
                return False
            await conn.execute(ds.BUMP_SEARCH_VERSION, tenant_id)
            return True

    async def keyword_search(
        self, tenant_id: str, query: str, limit: int = 10, filters: Mapping[str, Any] | None = None
    ) -> list[SearchHit]:
        words = ds.query_words(query)
        if not words or limit < 1:
            return []
        counts, chunks = ds.postgres_frequencies(
            await self._all(ds.POSTGRES_DOCUMENT_FREQUENCIES, tenant_id, words)
        )
        statement = ds.search_statement(self.kind, tenant_id, words, counts, chunks, limit, filters)
        if statement is None:
            return []
        sql, head = statement
        rows = await self._all(sql, *head, *ds.postgres_filter_args(filters))
        return ds.hits_of(rows, words)

    async def prune_jobs(self, before: float, limit: int) -> int:
        return await self._write(js.PRUNE_JOBS, before, limit)

    async def add_job(self, job: Job) -> None:
        await self._write(js.INSERT_JOB, *js.job_row(job))

    async def latest_jobs(self, tenant_id: str, kind: str, subjects: Sequence[str]) -> dict[str, Job]:
        if not subjects:
            return {}
        return js.latest_of(await self._all(js.latest_statement(len(subjects)), tenant_id, kind, *subjects))

    async def job(self, job_id: str, tenant_id: str | None = None) -> Job | None:
        if tenant_id is None:
            row = await self._one(js.SELECT_JOB, job_id)
        else:
            row = await self._one(js.SELECT_TENANT_JOB, job_id, tenant_id)
        return js.job_of(row) if row else None

    async def jobs(
        self, state: str | None = None, tenant_id: str | None = None, limit: int = 50, offset: int = 0
    ) -> list[Job]:
        sql, _ = js.list_statement(state, tenant_id)
        filters = tuple(v for v in (state, tenant_id) if v is not None)
        return [js.job_of(row) for row in await self._all(sql, *filters, limit, offset)]

    async def claim_job(self, worker: str, now: float, lease: float) -> Job | None:
        if await self._one(js.ANY_DUE, now) is None:
            return None
        async with self._errors() as pool, pool.acquire() as conn, conn.transaction():
            await conn.execute(js.EXPIRE_JOBS, now, js.LEASE_LOST)
            row = await conn.fetchrow(js.CLAIM_JOB_POSTGRES, now, now + lease, worker)
        return js.job_of(row) if row else None

    async def extend_job(self, job_id: str, worker: str, lease_until: float) -> bool:
        return await self._write(js.EXTEND_JOB, job_id, worker, lease_until) > 0

    async def finish_job(self, job_id: str, worker: str, now: float) -> bool:
        return await self._write(js.FINISH_JOB, job_id, worker, now) > 0

    async def fail_job(
        self, job_id: str, worker: str, now: float, error: str, retry_at: float | None = None
    ) -> bool:
        if retry_at is None:
            return await self._write(js.FAIL_JOB, job_id, worker, now, error) > 0
        return await self._write(js.RETRY_LATER, job_id, worker, retry_at, error) > 0

    async def requeue_job(self, job_id: str, now: float, tenant_id: str | None = None) -> bool:
        if tenant_id is None:
            return await self._write(js.REQUEUE_JOB, job_id, now) > 0
        return await self._write(js.REQUEUE_TENANT_JOB, job_id, now, tenant_id) > 0

    async def add_webhook(self, webhook: Webhook) -> None:
        await self._write(ws.INSERT_WEBHOOK, *ws.webhook_row(webhook))

    async def webhook(self, webhook_id: str, tenant_id: str | None = None) -> Webhook | None:
        if tenant_id is None:
            row = await self._one(ws.SELECT_WEBHOOK, webhook_id)
        else:
            row = await self._one(ws.SELECT_TENANT_WEBHOOK, webhook_id, tenant_id)
        return ws.webhook_of(row) if row else None

    async def webhooks(self, tenant_id: str | None = None) -> list[Webhook]:
        if tenant_id is None:
            rows = await self._all(ws.SELECT_WEBHOOKS)
        else:
            rows = await self._all(ws.SELECT_TENANT_WEBHOOKS, tenant_id)
        return [ws.webhook_of(row) for row in rows]

    async def delete_webhook(self, webhook_id: str, tenant_id: str | None = None) -> bool:
        async with self._errors() as pool, pool.acquire() as conn, conn.transaction():
            if tenant_id is None:
                status = await conn.execute(ws.DELETE_WEBHOOK, webhook_id)
            else:
                status = await conn.execute(ws.DELETE_TENANT_WEBHOOK, webhook_id, tenant_id)
            if rowcount(status) == 0:
                return False
            await conn.execute(ws.DELETE_WEBHOOK_OUTBOX, webhook_id)
            await conn.execute(ws.DELETE_WEBHOOK_ATTEMPTS, webhook_id)
        return True

    async def rotate_webhook_secret(
        self, webhook_id: str, secret: str, previous_until: float, now: float, tenant_id: str | None = None
    ) -> Webhook | None:
        if tenant_id is None:
            changed = await self._write(ws.ROTATE_WEBHOOK, webhook_id, secret, previous_until, now)
        else:
            args = (webhook_id, secret, previous_until, now, tenant_id)
            changed = await self._write(ws.ROTATE_TENANT_WEBHOOK, *args)
        return await self.webhook(webhook_id) if changed else None

    async def disable_webhook(self, webhook_id: str, reason: str, at: float) -> bool:
        return await self._write(ws.DISABLE_WEBHOOK, webhook_id, reason, at) > 0

    async def add_deliveries(self, deliveries: Sequence[Delivery]) -> None:
        if not deliveries:
            return
        async with self._errors() as pool, pool.acquire() as conn, conn.transaction():
            await queue(conn, deliveries)

    async def claim_deliveries(self, worker: str, now: float, lease: float, limit: int) -> list[Delivery]:
        if limit < 1 or await self._one(ws.ANY_DELIVERY_DUE, now) is None:
            return []
        rows = await self._all(ws.CLAIM_DELIVERIES_POSTGRES, now, now + lease, worker, limit)
        return ws.claimed(rows)

    async def record_attempt(
        self, attempt: DeliveryAttempt, worker: str, state: str, next_at: float | None = None
    ) -> bool:
        finished = None if state == "pending" else attempt.at
        args = (attempt.delivery_id, worker, state, next_at or attempt.at, attempt.status, attempt.error)
        async with self._errors() as pool, pool.acquire() as conn, conn.transaction():
            if rowcount(await conn.execute(ws.RECORD_DELIVERY, *args, finished)) == 0:
                return False
            await conn.execute(ws.INSERT_ATTEMPT, *ws.attempt_row(attempt))
        return True

    async def deliveries(self, webhook_id: str, limit: int = 50, offset: int = 0) -> list[Delivery]:
        rows = await self._all(ws.SELECT_DELIVERIES, webhook_id, limit, offset)
        return [ws.delivery_of(row) for row in rows]

    async def delivery_attempts(self, delivery_ids: Sequence[str]) -> list[DeliveryAttempt]:
        if not delivery_ids:
            return []
        rows = await self._all(ws.attempts_statement(len(delivery_ids)), *delivery_ids)
        return [ws.attempt_of(row) for row in rows]
