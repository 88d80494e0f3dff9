"""What every platform store provides: tenants, API keys, documents, jobs and webhooks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from llmkit.errors import ConfigError, LlmkitError
from llmkit.platform.quota_types import Quotas

# What a key may do: chat (the chat routes), search (search and documents, issue 16), admin (/api/admin/*).
SCOPES = ("chat", "search", "admin")


@dataclass(frozen=True, slots=True)
class Tenant:
    """An organisation: its keys, quotas, cache, conversations and analytics are its own."""

    id: str
    name: str
    quotas: Quotas
    created_at: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A stored key: never its secret, only the secret's SHA-256 (HMAC with the pepper when set)."""

    id: str
    secret_hash: str = field(repr=False)
    name: str = ""
    description: str = ""
    tenant_id: str | None = None
    scopes: tuple[str, ...] = ("chat",)
    created_at: float = 0.0
    expires_at: float | None = None
    revoked_at: float | None = None
    last_used_at: float | None = None


@dataclass(frozen=True, slots=True)
class Document:
    """A tenant's document; its id is unique within the tenant only (another tenant may use the same id)."""

    id: str
    tenant_id: str
    title: str
    content: str
    metadata: Mapping[str, Any] = field(default_factory=dict)
    created_at: float = 0.0
    updated_at: float = 0.0


@dataclass(frozen=True, slots=True)
class Chunk:
    """A piece of a document that search answers: its place, text, size and the headings above it."""

    ordinal: int
    text: str
    tokens: int
    headings: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ChunkVectors:
    """A document's chunk vectors from one embedding model: one float32 little-endian row per chunk, in
    the chunks' order."""

    model: str
    rows: Sequence[bytes]


@dataclass(frozen=True, slots=True)
class SearchHit:
    """One ranked chunk: higher scores are better; highlights are snippets with <mark>ed terms."""

    document_id: str
    title: str
    ordinal: int
    text: str
    score: float
    highlights: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Job:
    """Background work of a tenant (store/jobs_sql.py says how its state moves): `kind` names the work,
    `subject` what it works on (a document id), `payload` its arguments."""

    id: str
    tenant_id: str
    kind: str
    subject: str
    payload: Mapping[str, Any] = field(default_factory=dict)
    state: str = "queued"
    attempts: int = 0
    max_attempts: int = 5
    run_at: float = 0.0  # not before
    lease_until: float | None = None
    worker: str | None = None
    error: str | None = None
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None


@dataclass(frozen=True, slots=True)
class Webhook:
    """A target for events (store/webhooks_sql.py): `tenant_id` None receives every tenant's; `events` the
    types it wants (`*`: all). Its secrets sign deliveries (never shown but at creation and rotation); the
    previous secret still signs until `previous_until`."""

    id: str
    url: str
    events: tuple[str, ...]
    secret: str = field(repr=False)
    tenant_id: str | None = None
    description: str = ""
    previous_secret: str | None = field(default=None, repr=False)
    previous_until: float | None = None
    disabled_at: float | None = None
    disabled_reason: str | None = None
    created_at: float = 0.0
    updated_at: float = 0.0

    def wants(self, event_type: str, tenant_id: str | None) -> bool:
        """Whether an event of this type and tenant goes to this webhook."""
        if self.disabled_at is not None:
            return False
        if self.tenant_id is not None and self.tenant_id != tenant_id:
            return False
        return "*" in self.events or event_type in self.events

    def secrets(self, now: float) -> tuple[str, ...]:
        """The secrets that sign a delivery now: the current one, and the previous one while it is valid."""
        if self.previous_secret is not None and self.previous_until is not None and now < self.previous_until:
            return (self.secret, self.previous_secret)
        return (self.secret,)


@dataclass(frozen=True, slots=True)
class Delivery:
    """One event for one webhook in the outbox: `pending` (due at `next_at`; leased to a worker while it
    is sent) -> `delivered`, or `failed` once its attempts are spent or the webhook is gone. `id` is the
    `webhook-id` header: the same on every retry."""

    id: str
    webhook_id: str
    event_id: str
    event_type: str
    payload: bytes
    tenant_id: str | None = None
    state: str = "pending"
    attempts: int = 0
    next_at: float = 0.0
    lease_until: float | None = None
    worker: str | None = None
    last_status: int | None = None
    last_error: str | None = None
    created_at: float = 0.0
    finished_at: float | None = None


@dataclass(frozen=True, slots=True)
class DeliveryAttempt:
    """One POST of a delivery, as the delivery log shows it: its HTTP status (None: no answer), time taken
    and error."""

    delivery_id: str
    webhook_id: str
    attempt: int
    at: float
    status: int | None
    duration_ms: float
    error: str | None = None


class StoreConflict(LlmkitError):
    """The row exists already (an id or a unique name)."""


class SchemaTooNew(ConfigError):
    """The store was migrated by a newer llmkit than this one."""


class PlatformStore(Protocol):
    """Tenants and keys in one database; `open()` migrates the schema to the version this code knows."""

    kind: str
    where: str

    async def open(self) -> None:
        """Connect and migrate; SchemaTooNew when the database is ahead of this code."""
        ...

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """One round trip; BackendError when the database cannot be reached."""
        ...

    async def schema_version(self) -> int: ...

    async def add_tenant(self, tenant: Tenant) -> None:
        """Store a new tenant; StoreConflict when its id or name is taken."""
        ...

    async def tenant(self, tenant_id: str) -> Tenant | None: ...

    async def tenants(self) -> list[Tenant]:
        """Every tenant, oldest first."""
        ...

    async def update_tenant(self, tenant: Tenant) -> bool:
        """Replace the tenant's name and quotas; False when it does not exist; StoreConflict on its name."""
        ...

    async def delete_tenant(self, tenant_id: str, at: float) -> int | None:
        """Delete the tenant and its documents and revoke its keys in one transaction: the keys revoked, None
        when missing."""
        ...

    async def add_key(self, key: ApiKey, deliveries: Sequence[Delivery] = ()) -> None:
        """Store a new key and queue `deliveries` (its key.created event) in one transaction; StoreConflict
        (and nothing queued) when its id is taken."""
        ...

    async def key(self, key_id: str) -> ApiKey | None: ...

    async def keys(self, tenant_id: str | None = None) -> list[ApiKey]:
        """Every key (or a tenant's), oldest first."""
        ...

    async def revoke_key(self, key_id: str, at: float, deliveries: Sequence[Delivery] = ()) -> ApiKey | None:
        """Mark the key revoked at `at` (a second revoke keeps the first time) and queue `deliveries` (its
        key.revoked event) in one transaction; None (and nothing queued) when missing."""
        ...

    async def touch_keys(self, used: Mapping[str, float]) -> None:
        """Record when keys were last used, many at once (written off the request path)."""
        ...

    async def add_document(self, document: Document, chunks: Sequence[Chunk]) -> None:
        """Store a new document and its chunks in one transaction; StoreConflict on an id the tenant has."""
        ...

    async def add_documents(
        self, items: Sequence[tuple[Document, Sequence[Chunk]]], jobs: Sequence[Job] = ()
    ) -> None:
        """Store documents with their chunks (and the jobs that index them) in one transaction: all of
        them, or (StoreConflict on an id the tenant has) none."""
        ...

    async def update_document(self, document: Document, job: Job | None = None) -> bool:
        """Replace title, content and metadata (created_at kept) and queue `job` in one transaction; the
        chunks stay, still searchable, until replace_chunks. False when it does not exist."""
        ...

    async def replace_chunks(
        self,
        tenant_id: str,
        document_id: str,
        updated_at: float,
        chunks: Sequence[Chunk],
        vectors: ChunkVectors | None = None,
    ) -> bool:
        """Put these chunks (with their vectors) in place of the document's, if it is still the version of
        `updated_at`; False (and nothing written) when it changed since or is gone."""
        ...

    async def search_version(self, tenant_id: str) -> int:
        """A number every write that changes the tenant's search answers moves on (0 before the first)."""
        ...

    async def vector_versions(self, tenant_id: str, model: str) -> dict[str, float]:
        """Document id -> the version (updated_at) its chunk vectors are of, for the documents whose
        vectors came from `model`."""
        ...

    async def chunk_vectors(
        self, tenant_id: str, document_ids: Sequence[str]
    ) -> list[tuple[str, int, bytes]]:
        """(document id, ordinal, vector) of these documents' chunks that have one (at most 500 ids a call:
        each is a statement parameter)."""
        ...

    async def chunk_hits(
        self,
        tenant_id: str,
        keys: Sequence[tuple[str, int]],
        filters: Mapping[str, Any] | None = None,
    ) -> list[SearchHit]:
        """The chunks named by (document id, ordinal) whose documents pass `filters`, unscored, any order."""
        ...

    async def document(self, tenant_id: str, document_id: str) -> Document | None: ...

    async def documents(
        self, tenant_id: str, limit: int = 50, offset: int = 0, filters: Mapping[str, Any] | None = None
    ) -> list[Document]:
        """A page of the tenant's documents, oldest first, whose metadata has every key of `filters` equal."""
        ...

    async def document_chunks(self, tenant_id: str, document_id: str) -> list[Chunk]:
        """The document's chunks in order (none when it does not exist)."""
        ...

    async def delete_document(self, tenant_id: str, document_id: str) -> bool:
        """Delete the document, its chunks and their index rows; False when it does not exist."""
        ...

    async def keyword_search(
        self, tenant_id: str, query: str, limit: int = 10, filters: Mapping[str, Any] | None = None
    ) -> list[SearchHit]:
        """The tenant's chunks matching any word of `query`, best first; no hits for a query without words."""
        ...

    async def add_job(self, job: Job) -> None:
        """Store a new job; StoreConflict when its id is taken."""
        ...

    async def latest_jobs(self, tenant_id: str, kind: str, subjects: Sequence[str]) -> dict[str, Job]:
        """The newest job of `kind` on each of `subjects` (subject -> job) that has one."""
        ...

    async def job(self, job_id: str, tenant_id: str | None = None) -> Job | None:
        """The job (only if it is `tenant_id`'s, when given); None when missing."""
        ...

    async def jobs(
        self, state: str | None = None, tenant_id: str | None = None, limit: int = 50, offset: int = 0
    ) -> list[Job]:
        """A page of jobs, newest first, of one state and one tenant when given."""
        ...

    async def prune_jobs(self, before: float, limit: int) -> int:
        """Delete at most `limit` jobs finished before `before` that a newer job on their subject
        replaced (or whose document is gone); how many. A subject's newest job stays."""
        ...

    async def claim_job(self, worker: str, now: float, lease: float) -> Job | None:
        """Take the oldest due job for `worker` (running, attempts + 1, leased until now + lease), or None.
        Jobs left running by a gone worker are due again, or failed when their attempts are spent."""
        ...

    async def extend_job(self, job_id: str, worker: str, lease_until: float) -> bool:
        """Renew the worker's lease; False when it no longer holds the job."""
        ...

    async def finish_job(self, job_id: str, worker: str, now: float) -> bool:
        """Mark the worker's job completed; False when it no longer holds it."""
        ...

    async def fail_job(
        self, job_id: str, worker: str, now: float, error: str, retry_at: float | None = None
    ) -> bool:
        """Record the worker's failure: queued again for `retry_at`, or failed for good when None; False
        when the worker no longer holds the job."""
        ...

    async def requeue_job(self, job_id: str, now: float, tenant_id: str | None = None) -> bool:
        """Queue a failed job again with fresh attempts (only `tenant_id`'s, when given); False when it is
        missing or not failed."""
        ...

    async def add_webhook(self, webhook: Webhook) -> None:
        """Store a new webhook; StoreConflict when its id is taken."""
        ...

    async def webhook(self, webhook_id: str, tenant_id: str | None = None) -> Webhook | None:
        """The webhook (only if it is `tenant_id`'s, when given); None when missing."""
        ...

    async def webhooks(self, tenant_id: str | None = None) -> list[Webhook]:
        """Every webhook (with `tenant_id`: only that tenant's own), oldest first."""
        ...

    async def delete_webhook(self, webhook_id: str, tenant_id: str | None = None) -> bool:
        """Delete the webhook with its outbox and log; False when missing (or not `tenant_id`'s)."""
        ...

    async def rotate_webhook_secret(
        self, webhook_id: str, secret: str, previous_until: float, now: float, tenant_id: str | None = None
    ) -> Webhook | None:
        """Make `secret` the webhook's, the current one its previous (valid until `previous_until`); the
        webhook as changed, None when missing."""
        ...

    async def disable_webhook(self, webhook_id: str, reason: str, at: float) -> bool:
        """Stop deliveries to the webhook (a 410 Gone), keeping the first reason; False when missing."""
        ...

    async def add_deliveries(self, deliveries: Sequence[Delivery]) -> None:
        """Put deliveries in the outbox, all in one transaction."""
        ...

    async def claim_deliveries(self, worker: str, now: float, lease: float, limit: int) -> list[Delivery]:
        """Lease up to `limit` due pending deliveries (oldest first) to `worker` until now + lease; a lease
        that ran out (its worker died) is due again. No two claims get one delivery."""
        ...

    async def record_attempt(
        self, attempt: DeliveryAttempt, worker: str, state: str, next_at: float | None = None
    ) -> bool:
        """Log one attempt and move the worker's delivery to `state` (pending again at `next_at`,
        delivered or failed), in one transaction; False (nothing written) when the worker lost it."""
        ...

    async def deliveries(self, webhook_id: str, limit: int = 50, offset: int = 0) -> list[Delivery]:
        """A page of the webhook's deliveries, newest first."""
        ...

    async def delivery_attempts(self, delivery_ids: Sequence[str]) -> list[DeliveryAttempt]:
        """The attempts of these deliveries, in the order they were made."""
        ...
