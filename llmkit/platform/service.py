"""The platform one gateway process runs: the store, key verification, tenant quotas and analytics."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

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
from llmkit.platform.jobs import BACKOFF_BASE_S, JobRunner
from llmkit.platform.keys import MISS, KeyVerifier
from llmkit.platform.quota_types import Quotas
from llmkit.platform.quotas import PLANS_MAX, Admission, QuotaEnforcer, QuotaPlan, quota_enforcer_from_url
from llmkit.platform.store import platform_store_from_url
from llmkit.platform.store.base import Job, PlatformStore, Tenant
from llmkit.settings import Settings

log = logging.getLogger("llmkit.platform")

# The most of a search query an analytics record keeps before its batch normalises it.
MAX_RECORDED_QUERY = 4096
# How often last-used times of keys go to the store.
USAGE_FLUSH_S = 5.0
NO_QUOTAS = Quotas()
# What /api/admin/health reads (and never counts in) to see that the quota counters answer.
HEALTH_WINDOW = Window("health", 1, "minute")


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
            self.store, {INDEX_DOCUMENT: self._index}, backoff_base=self.config.jobs_backoff_s
        )
        self.jobs.start()
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

    async def _index(self, job: Job) -> bool:
        """The index_document job; this process's searches see its chunks at once."""
        try:
            return await index_document(self.store, self.embeddings, job)
        finally:
            self.search_versions.changed(job.tenant_id)

    def record_search(
        self, identity: Identity, kind: str, query: str, status: int, started: float, cached: bool
    ) -> None:
        """Record a search in the analytics like a chat request (route /api/search, model `search:<type>`):
        buffered, never blocking; nothing when analytics are off."""
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
        """Flush what is buffered, then close everything this platform opened."""
        if self.jobs is not None:
            await self.jobs.close()  # its running jobs are queued again for the next start or replica
            self.jobs = None
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        with contextlib.suppress(BackendError):
            await self.verifier.flush_usage()
        if self.writer is not None:
            await self.writer.close()
        if self.analytics is not None:
            await self.analytics.close()
        await self.quotas.close()
        if self.embeddings is not None:
            await self.embeddings.close()
        await self.store.close()

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
        # Counted in this process (the usual single server): admitted with no await.
        return self.quotas.admit_now(tenant_id, plan) or await self.quotas.admit(tenant_id, plan)

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
