"""The platform schema, versioned, and the statements both stores run (SQL SQLite and PostgreSQL accept).

Parameters are written `$1, $2, ...` (asyncpg's); the SQLite store turns them into `?1, ?2, ...`.
A migration is one statement list for both databases, or a `Dialects` where their DDL differs.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from llmkit.platform.quota_types import Quotas
from llmkit.platform.store import webhooks_sql
from llmkit.platform.store.base import ApiKey, SchemaTooNew, Tenant

SCHEMA_TABLE = "CREATE TABLE IF NOT EXISTS llmkit_schema (version INTEGER NOT NULL)"
READ_VERSION = "SELECT max(version) FROM llmkit_schema"
WRITE_VERSION = "INSERT INTO llmkit_schema (version) VALUES ($1)"


@dataclass(frozen=True, slots=True)
class Dialects:
    """A migration whose statements differ by database: each store runs the list named by its `kind`."""

    sqlite: tuple[str, ...]
    postgresql: tuple[str, ...]

    def statements(self, kind: str) -> tuple[str, ...]:
        """The statements for a store of `kind` ("sqlite" or "postgresql")."""
        if kind == "sqlite":
            return self.sqlite
        if kind == "postgresql":
            return self.postgresql
        raise ValueError(f"no migration statements for a {kind!r} store")


_DOCUMENTS = """CREATE TABLE documents (
    tenant_id TEXT NOT NULL,
    id TEXT NOT NULL,
    title TEXT NOT NULL,
    content TEXT NOT NULL,
    metadata TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (tenant_id, id)
)"""
_DOCUMENTS_BY_AGE = "CREATE INDEX documents_tenant_created ON documents (tenant_id, created_at, id)"

_INDEXED_VERSION = (
    "ALTER TABLE documents ADD COLUMN indexed_at DOUBLE PRECISION",
    "ALTER TABLE documents ADD COLUMN embedding_model TEXT",
    "CREATE TABLE search_versions (tenant_id TEXT PRIMARY KEY, version BIGINT NOT NULL)",
)

# Version N is MIGRATIONS[N - 1]. Append only: a released migration never changes, a new one follows it.
MIGRATIONS: tuple[tuple[str, ...] | Dialects, ...] = (
    (
        """CREATE TABLE tenants (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            rpm BIGINT, tpm BIGINT, max_concurrent BIGINT, daily_tokens BIGINT, monthly_tokens BIGINT,
            created_at DOUBLE PRECISION NOT NULL,
            updated_at DOUBLE PRECISION NOT NULL
        )""",
        """CREATE TABLE api_keys (
            id TEXT PRIMARY KEY,
            secret_hash TEXT NOT NULL,
            name TEXT NOT NULL,
            description TEXT NOT NULL,
            tenant_id TEXT,
            scopes TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL,
            expires_at DOUBLE PRECISION,
            revoked_at DOUBLE PRECISION,
            last_used_at DOUBLE PRECISION
        )""",
        "CREATE INDEX api_keys_tenant ON api_keys (tenant_id)",
    ),
    # 2: documents and their chunks, with a keyword index over chunk text. Both indexes split words the
    # same way (lower case, no stemming, no stop words, accents kept) so the two databases match alike.
    Dialects(
        sqlite=(
            _DOCUMENTS,
            _DOCUMENTS_BY_AGE,
            # seq aliases the rowid, which FTS5's external content points at: VACUUM never renumbers it.
            """CREATE TABLE document_chunks (
                seq INTEGER PRIMARY KEY,
                tenant_id TEXT NOT NULL,
                document_id TEXT NOT NULL,
                ordinal INTEGER NOT NULL,
                heading TEXT NOT NULL,
                text TEXT NOT NULL,
                tokens INTEGER NOT NULL,
                UNIQUE (tenant_id, document_id, ordinal)
            )""",
            """CREATE VIRTUAL TABLE document_chunks_fts USING fts5(
                text, content='document_chunks', content_rowid='seq',
                tokenize='unicode61 remove_diacritics 0'
            )""",
            """CREATE TRIGGER document_chunks_indexed AFTER INSERT ON document_chunks BEGIN
                INSERT INTO document_chunks_fts (rowid, text) VALUES (new.seq, new.text);
            END""",
            """CREATE TRIGGER document_chunks_unindexed AFTER DELETE ON document_chunks BEGIN
                INSERT INTO document_chunks_fts (document_chunks_fts, rowid, text)
                VALUES ('delete', old.seq, old.text);
            END""",
        ),
        postgresql=(
            _DOCUMENTS,
            _DOCUMENTS_BY_AGE,
            """CREATE TABLE document_chunks (
                tenant_id TEXT NOT NULL,
                document_id TEXT NOT NULL,
                ordinal INTEGER NOT NULL,
                heading TEXT NOT NULL,
                text TEXT NOT NULL,
                tokens INTEGER NOT NULL,
                words tsvector GENERATED ALWAYS AS (to_tsvector('simple', text)) STORED,
                PRIMARY KEY (tenant_id, document_id, ordinal)
            )""",
            "CREATE INDEX document_chunks_words ON document_chunks USING GIN (words)",
        ),
    ),
    # 3: background jobs (store/jobs_sql.py): one row each, claimed by the worker that runs it.
    (
        """CREATE TABLE jobs (
            id TEXT PRIMARY KEY,
            tenant_id TEXT NOT NULL,
            kind TEXT NOT NULL,
            subject TEXT NOT NULL,
            payload TEXT NOT NULL,
            state TEXT NOT NULL,
            attempts INTEGER NOT NULL,
            max_attempts INTEGER NOT NULL,
            run_at DOUBLE PRECISION NOT NULL,
            lease_until DOUBLE PRECISION,
            worker TEXT,
            error TEXT,
            created_at DOUBLE PRECISION NOT NULL,
            started_at DOUBLE PRECISION,
            finished_at DOUBLE PRECISION
        )""",
        "CREATE INDEX jobs_due ON jobs (state, run_at)",
        "CREATE INDEX jobs_tenant ON jobs (tenant_id, created_at)",
    ),
    # 4: a document's indexing state is its latest job: found by subject.
    ("CREATE INDEX jobs_subject ON jobs (tenant_id, subject, created_at)",),
    # 5: embeddings. Each chunk's vector (float32, little-endian); a document's indexed version and the
    # model of its vectors (what a process's vector index loads); a tenant's search version, moved on by
    # every write that changes what its searches answer (cache keys and vector indexes follow it).
    Dialects(
        sqlite=(
            "ALTER TABLE document_chunks ADD COLUMN embedding BLOB",
            *_INDEXED_VERSION,
        ),
        postgresql=(
            "ALTER TABLE document_chunks ADD COLUMN embedding BYTEA",
            *_INDEXED_VERSION,
        ),
    ),
    # 6: webhooks, their outbox of deliveries and the delivery log (store/webhooks_sql.py).
    webhooks_sql.MIGRATION,
    # 7: keyword ranking alike on both. SQLite: a view of the keyword index's terms and how many chunks
    # hold each (fts5vocab, no storage of its own). PostgreSQL: the words are split as FTS5's unicode61
    # splits them (by documents_sql.text_words, kept in `terms`; a chunk stored before this keeps its text
    # split by PostgreSQL's parser until it is indexed again) and counted (`word_count`), which BM25 needs.
    Dialects(
        sqlite=("CREATE VIRTUAL TABLE document_chunks_vocab USING fts5vocab(document_chunks_fts, 'row')",),
        postgresql=(
            "ALTER TABLE document_chunks ADD COLUMN terms TEXT",
            "ALTER TABLE document_chunks ADD COLUMN word_count INTEGER",
            "DROP INDEX document_chunks_words",
            "ALTER TABLE document_chunks DROP COLUMN words",
            """ALTER TABLE document_chunks ADD COLUMN words tsvector
                GENERATED ALWAYS AS (to_tsvector('simple', coalesce(terms, text))) STORED""",
            "CREATE INDEX document_chunks_words ON document_chunks USING GIN (words)",
            """UPDATE document_chunks
                SET word_count = (SELECT coalesce(sum(array_length(positions, 1)), 0) FROM unnest(words))""",
        ),
    ),
)
LATEST = len(MIGRATIONS)

_TENANT_COLUMNS = "id, name, rpm, tpm, max_concurrent, daily_tokens, monthly_tokens, created_at, updated_at"
_KEY_COLUMNS = (
    "id, secret_hash, name, description, tenant_id, scopes, created_at, expires_at, revoked_at, last_used_at"
)
INSERT_TENANT = f"INSERT INTO tenants ({_TENANT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
SELECT_TENANT = f"SELECT {_TENANT_COLUMNS} FROM tenants WHERE id = $1"
SELECT_TENANTS = f"SELECT {_TENANT_COLUMNS} FROM tenants ORDER BY created_at, id"
UPDATE_TENANT = """UPDATE tenants SET name = $2, rpm = $3, tpm = $4, max_concurrent = $5, daily_tokens = $6,
    monthly_tokens = $7, updated_at = $8 WHERE id = $1"""
DELETE_TENANT = "DELETE FROM tenants WHERE id = $1"
REVOKE_TENANT_KEYS = "UPDATE api_keys SET revoked_at = $2 WHERE tenant_id = $1 AND revoked_at IS NULL"
INSERT_KEY = f"INSERT INTO api_keys ({_KEY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
SELECT_KEY = f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE id = $1"
SELECT_KEYS = f"SELECT {_KEY_COLUMNS} FROM api_keys ORDER BY created_at, id"
SELECT_TENANT_KEYS = f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE tenant_id = $1 ORDER BY created_at, id"
REVOKE_KEY = "UPDATE api_keys SET revoked_at = coalesce(revoked_at, $2) WHERE id = $1"
# Never moves last_used_at back: two replicas flush their touches in any order.
TOUCH_KEY = (
    "UPDATE api_keys SET last_used_at = $2 WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < $2)"
)

_DOLLAR = re.compile(r"\$(\d+)")


def qmark(sql: str) -> str:
    """`$1` -> `?1`: SQLite's numbered parameters for the same statement."""
    return _DOLLAR.sub(r"?\1", sql)


def pending(version: int, where: str, kind: str) -> tuple[tuple[int, tuple[str, ...]], ...]:
    """The migrations (with a `kind` store's statements) a database at `version` still needs; SchemaTooNew
    when it is ahead of this code."""
    if version > LATEST:
        raise SchemaTooNew(
            f"platform store {where} has schema version {version}, newer than this llmkit knows "
            f"({LATEST}); upgrade llmkit, or point gateway.platform_url at another database"
        )
    return tuple((n, statements_of(MIGRATIONS[n - 1], kind)) for n in range(version + 1, LATEST + 1))


def statements_of(migration: tuple[str, ...] | Dialects, kind: str) -> tuple[str, ...]:
    """What a store of `kind` runs for one migration."""
    return migration.statements(kind) if isinstance(migration, Dialects) else migration


def tenant_row(tenant: Tenant) -> tuple[Any, ...]:
    """A tenant as INSERT_TENANT's parameters."""
    q = tenant.quotas
    return (
        tenant.id,
        tenant.name,
        q.rpm,
        q.tpm,
        q.max_concurrent,
        q.daily_tokens,
        q.monthly_tokens,
        tenant.created_at,
        tenant.updated_at,
    )


def tenant_of(row: Sequence[Any]) -> Tenant:
    """A SELECT_TENANT row as a Tenant."""
    quotas = Quotas(rpm=row[2], tpm=row[3], max_concurrent=row[4], daily_tokens=row[5], monthly_tokens=row[6])
    return Tenant(id=row[0], name=row[1], quotas=quotas, created_at=row[7], updated_at=row[8])


def key_row(key: ApiKey) -> tuple[Any, ...]:
    """A key as INSERT_KEY's parameters (scopes space-separated)."""
    return (
        key.id,
        key.secret_hash,
        key.name,
        key.description,
        key.tenant_id,
        " ".join(key.scopes),
        key.created_at,
        key.expires_at,
        key.revoked_at,
        key.last_used_at,
    )


def key_of(row: Sequence[Any]) -> ApiKey:
    """A SELECT_KEY row as an ApiKey."""
    return ApiKey(
        id=row[0],
        secret_hash=row[1],
        name=row[2],
        description=row[3],
        tenant_id=row[4],
        scopes=tuple(row[5].split()),
        created_at=row[6],
        expires_at=row[7],
        revoked_at=row[8],
        last_used_at=row[9],
    )
