"""The platform one gateway process runs: the store, key verification, tenant quotas, analytics, background
jobs and webhooks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from llmkit.core import telemetry
from llmkit.core.auth import DEFAULT_TENANT, Guard, Identity
from llmkit.core.cache.base import Cache
from llmkit.core.limiter.base import Window
from llmkit.core.secrets import mask_url
from llmkit.errors import BackendError
from llmkit.platform.analytics import analytics_store_from_url
from llmkit.platform.analytics.base import AnalyticsStore
from llmkit.platform.analytics.offload import OffloadedStore
from llmkit.platform.analytics.writer import AnalyticsWriter
from llmkit.platform.documents.embeddings import EmbeddingsClient, EmbeddingsConfig
from llmkit.platform.documents.index_job import INDEX_DOCUMENT, index_document
from llmkit.platform.documents.metrics import SearchMetrics
from llmkit.platform.documents.search import Searcher, SearchVersions
from llmkit.platform.documents.vectors import VectorIndex
from llmkit.platform.jobs import BACKOFF_BASE_S, RETENTION_S, JobRunner
from llmkit.platform.keys import MISS, KeyVerifier
from llmkit.platform.quota_types import Quotas
from llmkit.platform.quotas import (
    PLANS_MAX,
    Admission,
    QuotaEnforcer,
    QuotaExceeded,
    QuotaPlan,
    quota_enforcer_from_url,
)
from llmkit.platform.store import platform_store_from_url
from llmkit.platform.store.base import Delivery, Job, PlatformStore, Tenant
from llmkit.platform.webhooks.delivery import DeliveryWorker
from llmkit.platform.webhooks.events import WebhookDirectory, deliveries_of
from llmkit.settings import Settings

log = logging.getLogger("llmkit.platform")

# The most of a search query an analytics record keeps before its batch normalises it.
MAX_RECORDED_QUERY = 4096
# How often last-used times of keys go to the store.
USAGE_FLUSH_S = 5.0
NO_QUOTAS = Quotas()
# What /api/admin/health reads (and never counts in) to see that the quota counters answer.
HEALTH_WINDOW = Window("health", 1, "minute")
# quota.exceeded: at most one event per tenant and quota per this many seconds in a process (a tenant over
# its rpm would otherwise send one per refused request).
QUOTA_EVENT_EVERY_S = 60.0


@dataclass(frozen=True, slots=True)
class PlatformConfig:
    """What the platform needs from the settings, read once."""

    platform_url: str
    pool_size: int
    quota_url: str
    admin_key: str
    key_pepper: str
    require_api_key: bool
    analytics_enabled: bool
    analytics_url: str
    retention_days: int
    workers: int = 1
    analytics_writer_process: bool = True
    embeddings: EmbeddingsConfig | None = None
    jobs_backoff_s: float = BACKOFF_BASE_S
    jobs_retention_s: float = RETENTION_S
    webhooks_timeout_s: float = 10.0
    webhooks_max_attempts: int = 8
    webhooks_rotation_grace_s: float = 86400.0
    webhooks_lease_margin_s: float = 30.0
    webhooks_allow_private: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> PlatformConfig:
        """The gateway section's platform settings; quotas count in limiter.url (Redis for replicas)."""
        g = settings.gateway
        return cls(
            platform_url=g.platform_url,
            pool_size=g.platform_pool_size,
            quota_url=settings.limiter.url,
            admin_key=g.admin_key,
            key_pepper=g.key_pepper,
            require_api_key=g.require_api_key,
            analytics_enabled=g.analytics_enabled,
            analytics_url=g.analytics_url or g.platform_url,
            retention_days=g.analytics_retention_days,
            workers=settings.server.workers,
            analytics_writer_process=g.analytics_writer_process,
            embeddings=EmbeddingsConfig.from_settings(settings),
            jobs_backoff_s=g.jobs_backoff_s,
            jobs_retention_s=g.jobs_retention_s,
            webhooks_timeout_s=g.webhooks_timeout_s,
            webhooks_max_attempts=g.webhooks_max_attempts,
            webhooks_rotation_grace_s=g.webhooks_rotation_grace_s,
            webhooks_lease_margin_s=g.webhooks_lease_margin_s,
            webhooks_allow_private=g.webhooks_allow_private,
        )


ADMIN_SETTING = "gateway.admin_key (env LLMKIT_GATEWAY_ADMIN_KEY)"


class Platform:
    """Built from settings before the app starts (its guard checks every route); `open()` connects."""

    def __init__(self, config: PlatformConfig) -> None:
        self.config = config
        self.store: PlatformStore = platform_store_from_url(config.platform_url, pool_size=config.pool_size)
        self.verifier = KeyVerifier(self.store, pepper=config.key_pepper)
        self.guard = Guard(
            admin_key=config.admin_key,
            admin_setting=ADMIN_SETTING,
            verifier=self.verifier,
            require_key=config.require_api_key,
            require_setting="gateway.require_api_key",
        )
        self.quotas: QuotaEnforcer = quota_enforcer_from_url(config.quota_url)
        # tenant id -> (the tenant row last read, its quota plan or None when it has no quotas)
        self._plans: dict[str, tuple[Tenant, QuotaPlan | None]] = {}
        self.analytics: AnalyticsStore | None = None
        self.writer: AnalyticsWriter | None = None
        if config.analytics_enabled:
            self.analytics = analytics_store_from_url(config.analytics_url, pool_size=config.pool_size)
            if config.analytics_writer_process:
                self.analytics = OffloadedStore(
                    config.analytics_url, self.analytics, pool_size=config.pool_size
                )
        self._flusher: asyncio.Task[None] | None = None
        # Background jobs (document indexing): every replica runs them; the store gives each to one.
        self.jobs: JobRunner | None = None
        # Search: embeddings and the vector index only with an embeddings upstream.
        self.embeddings = EmbeddingsClient(config.embeddings) if config.embeddings is not None else None
        vectors = VectorIndex(self.store, self.embeddings.model) if self.embeddings is not None else None
        self.searcher = Searcher(self.store, self.embeddings, vectors)
        self.search_versions = SearchVersions(self.store)
        self.search_metrics = SearchMetrics()
        # Where search answers are cached (the gateway's shared cache, set by the server that has one).
        self.search_cache: Cache | None = None
        # Webhooks: events go to the store's outbox (emit), every replica's worker sends them.
        self.webhook_directory = WebhookDirectory(self.store)
        self.deliveries: DeliveryWorker | None = None
        self._quota_events: dict[tuple[str, str], float] = {}
        self._emitting: set[asyncio.Task[int]] = set()

    async def open(self) -> None:
        """Connect and migrate the store, open analytics, start the background writers."""
        await self.store.open()
        if self.analytics is not None:
            try:
                await self.analytics.open()
            except BaseException:
                await self.store.close()
                raise
            self.writer = AnalyticsWriter(self.analytics, retention_days=self.config.retention_days)
            self.writer.start()
        self._flusher = asyncio.create_task(self._flush_usage(), name="llmkit-key-usage")
        self.jobs = JobRunner(
            self.store,
            {INDEX_DOCUMENT: self._index},
            backoff_base=self.config.jobs_backoff_s,
            on_failure=self._job_failed,
            retention=self.config.jobs_retention_s,
        )
        self.jobs.start()
        self.deliveries = DeliveryWorker(
            self.store,
            self.webhook_directory,
            timeout_s=self.config.webhooks_timeout_s,
            max_attempts=self.config.webhooks_max_attempts,
            allow_private=self.config.webhooks_allow_private,
            lease_margin=self.config.webhooks_lease_margin_s,
        )
        self.deliveries.start()
        if not self.quotas_shared:
            log.warning(
                "limiter.url %s with server.workers %d: each worker counts tenant quotas on its own, so a "
                "tenant gets up to %d times its quota; use a redis:// limiter.url for exact quotas",
                self.config.quota_url,
                self.config.workers,
                self.config.workers,
            )
        log.info(
            "platform store %s (%s); api keys %s; analytics %s",
            self.store.where,
            self.store.kind,
            "required" if self.config.require_api_key else "optional",
            self.analytics.kind if self.analytics is not None else "off",
        )

    async def _index(self, job: Job) -> None:
        """The index_document job; this process's searches see its chunks at once; document.indexed once
        they are stored (its id derives from the job, so a job run again after a crash queues it once)."""
        try:
            indexed = await index_document(self.store, self.embeddings, job)
        finally:
            self.search_versions.changed(job.tenant_id)
        if indexed is not None:
            doc = indexed.document
            data = {
                "id": doc.id,
                "title": doc.title,
                "chunks": indexed.chunks,
                "embedding_model": indexed.embedding_model,
                "job_id": job.id,
                "updated_at": doc.updated_at,
            }
            await self.emit("document.indexed", data, job.tenant_id, event_key=job.id)

    def record_search(
        self,
        identity: Identity,
        kind: str,
        query: str,
        status: int,
        started: float,
        cached: bool,
        hits: int = 0,
    ) -> None:
        """Record a search in the analytics like a chat request (route /api/search, model `search:<type>`):
        buffered, never blocking; nothing when analytics are off. An answered search is also the
        search.performed event, for the webhooks that take it."""
        if status == 200:
            data = {"type": kind, "query": query[:MAX_RECORDED_QUERY], "hits": hits, "cached": cached}
            self.emit_soon("search.performed", {**data, "key_id": identity.key_id}, identity.tenant_id)
        if self.writer is None:
            return
        self.writer.record(
            (
                time.time(),
                identity.tenant_id,
                identity.key_id or "",
                "/api/search",
                f"search:{kind}",
                query[:MAX_RECORDED_QUERY],
                status,
                (time.perf_counter() - started) * 1000,
                None,
                0,
                0,
                cached,
                False,
                "",
            )
        )

    async def _flush_usage(self) -> None:
        while True:
            await asyncio.sleep(USAGE_FLUSH_S)
            await self.verifier.flush_usage()

    async def close(self) -> None:
        """Flush what is buffered, then close everything this platform opened (all of it, even when one
        step fails: the first failure is raised once the rest is closed)."""
        async with contextlib.AsyncExitStack() as closing:
            closing.push_async_callback(self.store.close)
            if self.embeddings is not None:
                closing.push_async_callback(self.embeddings.close)
            closing.push_async_callback(self.quotas.close)
            if self.analytics is not None:
                closing.push_async_callback(self.analytics.close)
            if self.writer is not None:
                closing.push_async_callback(self.writer.close)
            await self._stop_workers()
            with contextlib.suppress(BackendError):
                await self.verifier.flush_usage()

    async def _stop_workers(self) -> None:
        if self.jobs is not None:
            await self.jobs.close()  # its running jobs are queued again for the next start or replica
            self.jobs = None
        if self._emitting:
            await asyncio.wait(set(self._emitting))
        if self.deliveries is not None:
            await self.deliveries.close()  # what it could not send waits in the outbox
            self.deliveries = None
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher

    async def admit(self, identity: Identity) -> Admission | None:
        """Take the request out of its tenant's quotas (QuotaExceeded: 429); None when it has none."""
        tenant_id = identity.tenant_id
        if tenant_id == DEFAULT_TENANT:
            return None
        tenant = self.verifier.tenants.peek(tenant_id)  # a hit needs no await
        if tenant is MISS:
            tenant = await self.verifier.tenant(tenant_id)
        if tenant is None:
            return None
        # The plan of the tenant row as last read (a new row, perhaps with new quotas, gets its own).
        known = self._plans.get(tenant_id)
        if known is None or known[0] is not tenant:
            plan = None if tenant.quotas == NO_QUOTAS else self.quotas.plan(tenant.quotas)
            if len(self._plans) >= PLANS_MAX:
                self._plans.clear()
            known = self._plans[tenant_id] = (tenant, plan)
        plan = known[1]
        if plan is None:
            return None
        try:
            with telemetry.span("quota"):
                # Counted in this process (the usual single server): admitted with no await.
                return self.quotas.admit_now(tenant_id, plan) or await self.quotas.admit(tenant_id, plan)
        except QuotaExceeded as exc:
            self._quota_exceeded(exc)
            raise

    async def emit(
        self,
        event_type: str,
        data: Mapping[str, Any],
        tenant_id: str | None = None,
        event_key: str | None = None,
    ) -> int:
        """Queue an event for every enabled webhook that takes it (the tenant's and the every-tenant ones):
        one outbox row each, sent by the delivery worker; the rows queued. An `event_key` makes the ids
        stable, so the same event emitted twice (a job rerun) is queued once (see deliveries_of). No
        webhook: no query (the list is read at most once a second). A store that fails is logged, never
        raised: the caller's work is done and must not fail for an event."""
        deliveries = await self.event_deliveries(event_type, data, tenant_id, event_key)
        if not deliveries:
            return 0
        try:
            await self.store.add_deliveries(deliveries)
        except BackendError as exc:
            log.warning("webhooks: event %s of tenant %s not queued: %s", event_type, tenant_id, exc)
            return 0
        self.wake_deliveries()
        return len(deliveries)

    async def event_deliveries(
        self,
        event_type: str,
        data: Mapping[str, Any],
        tenant_id: str | None = None,
        event_key: str | None = None,
    ) -> list[Delivery]:
        """The outbox rows of an event (as emit() queues them), for a caller that writes them in the
        transaction of the change they tell of, then calls wake_deliveries(); none when no webhook takes
        it or the webhook list cannot be read (logged)."""
        try:
            hooks = await self.webhook_directory.wanting(event_type, tenant_id)
        except BackendError as exc:
            log.warning("webhooks: event %s of tenant %s not queued: %s", event_type, tenant_id, exc)
            return []
        return deliveries_of(hooks, event_type, data, tenant_id, time.time(), event_key) if hooks else []

    def wake_deliveries(self) -> None:
        """Tell this process's delivery worker that rows were queued (it also polls)."""
        if self.deliveries is not None:
            self.deliveries.wake()

    def emit_soon(self, event_type: str, data: Mapping[str, Any], tenant_id: str | None = None) -> None:
        """emit() in the background, for a caller on the request path that must not wait for the store
        (nothing at all when the webhooks read within the second take no such event)."""
        hooks = self.webhook_directory.fresh()
        if hooks is not None and not any(h.wants(event_type, tenant_id) for h in hooks.values()):
            return
        task = asyncio.create_task(self.emit(event_type, data, tenant_id), name=f"llmkit-emit-{event_type}")
        self._emitting.add(task)
        task.add_done_callback(self._emitting.discard)

    def _quota_exceeded(self, exc: QuotaExceeded) -> None:
        now = time.monotonic()
        key = (exc.tenant_id, exc.quota)
        if now - self._quota_events.get(key, -QUOTA_EVENT_EVERY_S) < QUOTA_EVENT_EVERY_S:
            return
        if len(self._quota_events) >= PLANS_MAX:
            self._quota_events.clear()
        self._quota_events[key] = now
        data = {"tenant_id": exc.tenant_id, "quota": exc.quota, "retry_after_s": exc.retry_after}
        self.emit_soon("quota.exceeded", data, exc.tenant_id)

    async def _job_failed(self, job: Job, error: str) -> None:
        data = {"job_id": job.id, "kind": job.kind, "subject": job.subject, "attempts": job.attempts}
        await self.emit("job.failed", {**data, "error": error}, job.tenant_id)
        if job.kind == INDEX_DOCUMENT:
            failed = {"id": job.subject, "job_id": job.id, "attempts": job.attempts, "error": error}
            await self.emit("document.failed", failed, job.tenant_id, event_key=f"{job.id}.failed")

    def upstream_circuit(self, upstream: str, state: str) -> None:
        """The gateway's breaker for `upstream` opened or closed again: upstream.circuit_open|recovered, to
        the every-tenant webhooks (each replica has its own breakers, so each tells its own)."""
        event = "upstream.circuit_open" if state == "open" else "upstream.recovered"
        self.emit_soon(event, {"upstream": mask_url(upstream), "state": state})

    @property
    def quotas_shared(self) -> bool:
        """Whether every process serving this gateway counts quotas in one place (not memory per worker)."""
        return self.config.workers <= 1 or not self.config.quota_url.startswith("memory")

    async def quotas_health(self) -> dict[str, Any]:
        """Whether the quota counters (limiter.url: Redis for replicas) answer a read, and are exact."""
        state: dict[str, Any] = {"url": mask_url(self.config.quota_url), "exact": self.quotas_shared}
        try:
            await self.quotas.counter.usage("llmkit-health", [HEALTH_WINDOW])
            state["ok"] = True
        except BackendError as exc:
            state.update(ok=False, error=str(exc))
        return state

    async def health(self) -> dict[str, Any]:
        """The store's state, the analytics writer's figures and the job runner's."""
        state: dict[str, Any] = {"kind": self.store.kind, "where": self.store.where}
        try:
            await self.store.ping()
            state["ok"] = True
        except BackendError as exc:
            state.update(ok=False, error=str(exc))
        return {
            "store": state,
            "analytics": self.writer.stats() if self.writer is not None else None,
            "jobs": self.jobs.stats() if self.jobs is not None else None,
            "embeddings": self._embeddings_health(),
            "webhooks": self.deliveries.stats() if self.deliveries is not None else None,
        }

    def _embeddings_health(self) -> dict[str, Any] | None:
        """The embeddings upstream's figures (None: not configured): its last error says why jobs fail."""
        if self.embeddings is None:
            return None
        return {
            "url": mask_url(self.embeddings.config.url),
            "model": self.embeddings.model,
            **self.embeddings.counts,
            "last_error": self.embeddings.last_error,
        }


PLATFORM_KEY = web.AppKey("llmkit_platform", Platform)
