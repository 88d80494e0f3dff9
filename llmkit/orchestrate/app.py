"""`llmkit orchestrate`: submit jobs, read their status, long-poll results, stream over WebSocket."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from aiohttp import web

from llmkit import __version__
from llmkit.core.auth import CHAT, PUBLIC, Guard
from llmkit.core.http import (
    METRICS_KEY,
    OPENAPI_SCHEMAS_KEY,
    SERVICE_KEY,
    ApiError,
    add_route,
    create_base_app,
    identity_of,
    json_response,
    openapi,
    read_json,
)
from llmkit.core.serve import on_stop
from llmkit.errors import BackendError, ConfigError
from llmkit.orchestrate.jobs import JobStore, MemoryJobStore, wait_terminal
from llmkit.orchestrate.openapi import (
    CANCEL_DOC,
    INFER_DOC,
    PREFLIGHT_DOC,
    RESULT_DOC,
    SCHEMAS,
    STATUS_DOC,
    result_parameters,
)
from llmkit.orchestrate.service import Orchestrator
from llmkit.orchestrate.state import ORCHESTRATE_KEY, ORCHESTRATOR_KEY
from llmkit.orchestrate.submissions import parse_submission
from llmkit.orchestrate.workers import Drain
from llmkit.orchestrate.ws import stream
from llmkit.settings import OrchestrateSettings, Settings, mask_url

if TYPE_CHECKING:
    from llmkit.platform.keys import KeyVerifier

log = logging.getLogger("llmkit.orchestrate")
DEFAULT_RESULT_WAIT_S = 30.0
ADMIN_SETTING = "orchestrate.admin_key (env LLMKIT_ORCHESTRATE_ADMIN_KEY)"
# How often the last-used times of API keys go to the platform store (as the gateway does).
USAGE_FLUSH_S = 5.0


@openapi(**INFER_DOC)
async def infer(request: web.Request) -> web.Response:
    """Submit a job: {prompt, session_id?, metadata?: {priority}, parameters?, stream?}; its request_id.

    Invalid parameters are 400 naming the field (parameters.max_tokens, ...). Rate limited per session (per
    API key when one is sent) and per client address (orchestrate.rate_limit_by; 429 with Retry-After),
    answered from the result cache when it can, joined to an identical running job, else queued by
    priority (429 when the queue is full); 503 while the server shuts down (Retry-After) or cannot reach
    its queue. An Idempotency-Key header returns the first job's request_id for a repeated submit by the
    same tenant. The job belongs to the caller's tenant: other tenants' status, result and cancel get 404.
    """
    sub = parse_submission(await read_json(request), request.headers.get("Idempotency-Key"))
    orchestrator = request.app[ORCHESTRATOR_KEY]
    job = await orchestrator.submit(sub, request.remote or "-", identity=identity_of(request))
    return json_response(job.public())


async def _job_or_404(request: web.Request) -> Any:
    orchestrator = request.app[ORCHESTRATOR_KEY]
    return await orchestrator.job_for(request.match_info["id"], identity_of(request))


@openapi(**STATUS_DOC)
async def status(request: web.Request) -> web.Response:
    """A job's state now: pending, processing, completed, failed, timeout or cancelled."""
    return json_response((await _job_or_404(request)).public())


@openapi(**RESULT_DOC, parameters=lambda app: result_parameters(app[ORCHESTRATE_KEY].long_poll_max_s))
async def result(request: web.Request) -> web.Response:
    """Wait until the job is terminal or `?timeout=` seconds pass (then 408 with its current state)."""
    job = await _job_or_404(request)
    orchestrator = request.app[ORCHESTRATOR_KEY]
    limit = orchestrator.settings.long_poll_max_s
    text = request.query.get("timeout")
    try:
        timeout = DEFAULT_RESULT_WAIT_S if text is None else float(text)
        if not 0 <= timeout <= limit:
            raise ValueError
    except ValueError:
        raise ApiError(
            400, "invalid_timeout", f"timeout must be seconds between 0 and {limit:g} (long_poll_max_s)"
        ) from None
    job = await wait_terminal(orchestrator.store, job.id, min(timeout, limit)) or job
    return json_response(job.public(), status=200 if job.terminal else 408)


@openapi(**CANCEL_DOC)
async def cancel(request: web.Request) -> web.Response:
    """Cancel a pending job (409 once it runs or has finished)."""
    job = await request.app[ORCHESTRATOR_KEY].cancel(request.match_info["id"], identity_of(request))
    return json_response(job.public())


async def _stats(app: web.Application) -> dict[str, Any]:
    orchestrator = app[ORCHESTRATOR_KEY]
    queue = await orchestrator.queue.stats()
    counters = orchestrator.counters
    data: dict[str, Any] = {
        "submitted": counters.submitted,
        "cache_hits": counters.cache_hits,
        "coalesced": counters.coalesced,
        "rate_limited": counters.rate_limited,
        "rejected_queue_full": counters.rejected_full,
        "idempotent_repeats": counters.idempotent_repeats,
        "finished": dict(counters.finished),
        "running": orchestrator.busy,
        "queue": {"total": queue.total, "capacity": queue.capacity, "levels": queue.levels},
        "backend": orchestrator.settings.backend,
        "concurrency": orchestrator.settings.concurrency,
    }
    breaker = getattr(orchestrator.backend, "stats", None)
    if callable(breaker):
        data["breaker"] = breaker()
    store = orchestrator.store
    if isinstance(store, MemoryJobStore):
        data["jobs"] = store.counts()
    return data


def _cors(app: web.Application) -> None:
    """Permissive CORS (the seed's development default); orchestrate.cors: false turns it off."""

    async def allow(request: web.Request, response: web.StreamResponse) -> None:
        response.headers["Access-Control-Allow-Origin"] = "*"
        response.headers["Access-Control-Expose-Headers"] = "X-Request-ID, Retry-After"

    @openapi(**PREFLIGHT_DOC)
    async def preflight(request: web.Request) -> web.Response:
        """CORS preflight: any origin, the API's methods and headers."""
        return web.Response(
            status=204,
            headers={
                "Access-Control-Allow-Methods": "GET, POST, DELETE, OPTIONS",
                "Access-Control-Allow-Headers": "Content-Type, Idempotency-Key, X-Request-ID, Authorization",
                "Access-Control-Max-Age": "600",
            },
        )

    app.on_response_prepare.append(allow)
    # A browser sends the preflight without credentials: it must pass whatever keys the API requires.
    add_route(app, "OPTIONS", "/api/v1/{path:[\\s\\S]*}", preflight, scope=PUBLIC)


def _stop(app: web.Application) -> None:
    orchestrator = app.get(ORCHESTRATOR_KEY)
    if orchestrator is not None:
        orchestrator.stop()


async def _live_health(app: web.Application, queue_url: str) -> dict[str, Any]:
    """503 while stopping, or while this process cannot reach its queue or job store."""
    orchestrator = app.get(ORCHESTRATOR_KEY)
    if orchestrator is None:
        return {"ok": True}
    if orchestrator.stopping:
        return {"ok": False, "status": "draining", "message": "shutting down: takes no new jobs"}
    missing = await orchestrator.unreachable()
    if not missing:
        return {"ok": True}
    message = f"cannot reach its {' and '.join(missing)} at {queue_url}; workers retry until it is back"
    return {"ok": False, "unreachable": missing, "message": message}


def job_store(settings: Settings) -> JobStore:
    """Jobs where the queue is: in this process for memory://, else in Redis (same server and prefix)."""
    url = settings.queue.url
    ttl = settings.orchestrate.result_ttl_s
    if url.startswith("memory"):
        return MemoryJobStore(ttl)
    from llmkit.core.backends import make_redis, parse_backend_url, replicas_of
    from llmkit.orchestrate.redis_jobs import RedisJobStore

    parsed = parse_backend_url(url, "queue", ("redis", "redis+sentinel"))
    # Job writes are acknowledged as the queue's puts are: once `replicas=` replicas hold them.
    replicas, timeout = replicas_of(parsed), parsed.get("timeout", float, 2.0)
    return RedisJobStore(
        make_redis(parsed, timeout=timeout),
        ttl,
        prefix=parsed.get("prefix", str, "llmkit"),
        replicas=replicas,
        replica_wait=timeout / 2,
    )


def guard_of(config: OrchestrateSettings) -> tuple[Guard, KeyVerifier | None]:
    """The credential rules, and the verifier of the platform store's keys they accept (none without
    orchestrate.platform_url: then only the admin key is a credential)."""
    verifier = None
    if config.platform_url:
        from llmkit.platform.keys import KeyVerifier
        from llmkit.platform.store import platform_store_from_url

        store = platform_store_from_url(config.platform_url, setting="orchestrate.platform_url")
        verifier = KeyVerifier(store, pepper=config.key_pepper)
    elif config.require_api_key and not config.admin_key:
        raise ConfigError(
            "orchestrate.require_api_key needs keys to accept: set orchestrate.platform_url to the "
            "gateway's platform store (or orchestrate.admin_key)"
        )
    guard = Guard(
        admin_key=config.admin_key,
        admin_setting=ADMIN_SETTING,
        verifier=verifier,
        require_key=config.require_api_key,
        require_setting="orchestrate.require_api_key",
    )
    return guard, verifier


async def _platform(verifier: KeyVerifier) -> AsyncIterator[None]:
    """The platform store open while the app runs; when keys were last used goes to it in the background."""
    store = verifier.store
    await store.open()
    log.info("api keys from the platform store %s (%s)", store.where, store.kind)

    async def flush() -> None:
        while True:
            await asyncio.sleep(USAGE_FLUSH_S)
            await verifier.flush_usage()

    flusher = asyncio.create_task(flush(), name="llmkit-orchestrate-key-usage")
    try:
        yield
    finally:
        flusher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await flusher
        with contextlib.suppress(BackendError):
            await verifier.flush_usage()
        await store.close()


def create_app(settings: Settings, backend: Any = None) -> web.Application:
    """The orchestrator: API routes and the worker pool; `backend` replaces the configured one."""
    from llmkit.core.cache import cache_from_url
    from llmkit.core.limiter import limiter_from_url
    from llmkit.core.queue import queue_from_url
    from llmkit.orchestrate.backends import backend_from_settings

    config = settings.orchestrate
    shared = not settings.queue.url.startswith("memory")
    if not shared and settings.server.workers > 1:
        # Jobs live in this process's memory: a status read landing on another worker would answer 404.
        raise ConfigError(
            "with queue.url memory:// jobs live in one process's memory, so server.workers must be 1 (a "
            f"status read could reach a worker that never saw the job); got {settings.server.workers}; "
            "use a redis:// queue.url to share jobs between processes"
        )
    if not shared and config.role != "all":
        raise ConfigError(
            f"orchestrate.role {config.role} needs a queue.url shared between processes "
            "(redis://HOST:6379/0): with memory:// no other process sees the jobs"
        )

    async def stats() -> dict[str, Any]:
        return await _stats(app)

    health = {"status": "healthy", "version": __version__}
    guard, verifier = guard_of(config)
    app = create_base_app("orchestrate", settings.server, stats, health=health, guard=guard)
    app[SERVICE_KEY].live_health = lambda: _live_health(app, mask_url(settings.queue.url))
    on_stop(app, lambda: _stop(app))
    app[ORCHESTRATE_KEY] = config
    app[OPENAPI_SCHEMAS_KEY].update(SCHEMAS)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        queue = queue_from_url(settings.queue.url, "orchestrate", settings.queue.capacity)
        limiter = limiter_from_url(settings.limiter.url)
        bucket = None
        if config.rate_limit_requests:
            rate = config.rate_limit_requests / config.rate_limit_window
            bucket = limiter.token_bucket("orchestrate-rate", rate, config.rate_limit_requests)
        cache = None
        if config.cache_results:
            cache = cache_from_url(settings.cache.url, default_ttl=settings.cache.ttl)
        chosen = backend or backend_from_settings(
            config.backend,
            base_url=config.backend_url,
            api_key=config.api_key,
            model=config.model,
            delay_s=config.echo_delay_ms / 1000,
            timeout=config.job_timeout_s,
            retries=config.retries,
        )
        store = job_store(settings)
        await store.open()
        # A job cut off by a stop goes back to a shared queue (another process runs it); in memory it fails.
        drain = Drain(settings.server.drain_timeout, release=shared)
        orchestrator = Orchestrator(config, store, queue, chosen, bucket, cache, settings.cache.ttl, drain)
        app[ORCHESTRATOR_KEY] = orchestrator
        app[METRICS_KEY].registry.register(orchestrator)
        if config.role != "api":
            orchestrator.start_workers()
        try:
            yield
        finally:
            await orchestrator.close()
            await store.close()
            await chosen.close()
            await queue.close()
            await limiter.close()
            if cache is not None:
                await cache.close()

    if verifier is not None:
        # Before the jobs' lifecycle, so the store is open before the first request and closes last.
        app.cleanup_ctx.append(lambda app: _platform(verifier))
    app.cleanup_ctx.append(lifecycle)
    # Jobs are chat work: a key needs the chat scope (or is the admin key); /stats and /metrics take any.
    add_route(app, "POST", "/api/v1/infer", infer, scope=CHAT)
    add_route(app, "GET", "/api/v1/status/{id}", status, scope=CHAT)
    add_route(app, "GET", "/api/v1/result/{id}", result, scope=CHAT)
    add_route(app, "DELETE", "/api/v1/jobs/{id}", cancel, scope=CHAT)
    add_route(app, "GET", "/api/v1/stream", stream, scope=CHAT)
    if config.cors:
        _cors(app)
    return app
