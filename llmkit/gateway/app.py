"""`llmkit gateway`: the seed's /api/chat-optimized, /api/chat-queue, /api/cache-stats, /health, and /v1."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

from llmkit.core.auth import CHAT
from llmkit.core.http import (
    METRICS_KEY,
    OPENAPI_SCHEMAS_KEY,
    ApiError,
    add_route,
    create_base_app,
    identity_of,
    json_response,
    openapi,
    read_json,
)
from llmkit.errors import BackendError, UpstreamError
from llmkit.gateway import openai_face, queued
from llmkit.gateway.answers import (
    answer,
    chat_request,
    conversation_id,
    pieces_of,
    prepare_sse,
    upstream_failure,
)
from llmkit.gateway.calls import Outcome
from llmkit.gateway.chat import ChatRequest
from llmkit.gateway.conversations import Conversation
from llmkit.gateway.flights import Ticket
from llmkit.gateway.metrics import SeedHttpSeries
from llmkit.gateway.openapi import CACHE_ACTION_DOC, CACHE_STATS_DOC, CHAT_OPTIMIZED_DOC, SCHEMAS
from llmkit.gateway.pool import pool_from_settings
from llmkit.gateway.rag import rag_default
from llmkit.gateway.service import Gateway
from llmkit.gateway.state import GATEWAY_KEY
from llmkit.platform.admin import routes as admin_routes
from llmkit.platform.admin.docs import SCHEMAS as ADMIN_SCHEMAS
from llmkit.platform.admin.routes import AdminHooks
from llmkit.platform.documents import routes as document_routes
from llmkit.platform.documents.docs import SCHEMAS as DOCUMENT_SCHEMAS
from llmkit.platform.service import PLATFORM_KEY, Platform, PlatformConfig
from llmkit.settings import Settings

log = logging.getLogger("llmkit.gateway")
_MB = 1024 * 1024

# The seed's chat route, as analytics name it.
SEED_CHAT_ROUTE = "/api/chat-optimized"


def _seed_event(data: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(data) + b"\n\n"


def _seed_chunks(batch: Iterable[str], cached: bool) -> bytes:
    return b"".join(_seed_event({"content": p, "done": False, "cached": cached}) for p in batch)


@openapi(**CHAT_OPTIMIZED_DOC)
async def chat_optimized(request: web.Request) -> web.StreamResponse:
    """The seed's chat: {messages, stream, use_cache, priority, model?, conversation_id?}.

    Not streaming: {"message": {"role", "content"}, "cached", "conversation_id"}. Streaming: SSE
    `data: {"content", "done": false, "cached"}` events, then `data: {"done": true, "cached"}`.
    """
    gateway = request.app[GATEWAY_KEY]
    body = await read_json(request, lenient=True)
    tenant_id, platform = identity_of(request).tenant_id, request.app[PLATFORM_KEY]
    req, conversation = await chat_request(gateway, body, tenant_id=tenant_id, platform=platform)
    return await answer(request, gateway, req, conversation, _seed_stream, _seed_body, SEED_CHAT_ROUTE)


def _seed_body(outcome: Outcome, ticket: Ticket, conversation: Conversation | None) -> dict[str, Any]:
    return {
        "message": {"role": "assistant", "content": outcome.content},
        "cached": ticket.hit,
        "conversation_id": conversation_id(conversation),
    }


async def _seed_stream(
    request: web.Request,
    gateway: Gateway,
    req: ChatRequest,
    ticket: Ticket,
    conversation: Conversation | None,
) -> web.StreamResponse:
    response: web.StreamResponse | None = None
    cached = ticket.hit
    try:
        async for batch in pieces_of(ticket):
            if response is None:
                # Prepared on the first piece: an upstream failure before it is a plain 502/503/504.
                response = await prepare_sse(request, ticket)
            await response.write(_seed_chunks(batch, cached))
        outcome = await ticket.result()
    except UpstreamError as exc:
        if response is None:
            raise
        await response.write(_seed_event({"error": upstream_failure(exc), "done": True, "cached": cached}))
        return response
    if response is None:
        response = await prepare_sse(request, ticket)
    await gateway.remember(conversation, req.remembered, outcome.content)
    done: dict[str, Any] = {"done": True, "cached": cached, "conversation_id": conversation_id(conversation)}
    if req.sources:
        done["sources"] = list(req.sources)
    await response.write(_seed_event(done))
    await response.write_eof()
    return response


def _cache_figures(stats: dict[str, Any], budget_mb: float | None) -> dict[str, Any]:
    size = stats.get("bytes", 0) or 0
    limit = stats.get("max_bytes") or (budget_mb * _MB if budget_mb else 0)
    return {
        "total_entries": stats.get("entries", 0),
        "total_size_mb": round(size / _MB, 3),
        "hit_rate": stats.get("hit_rate", 0.0),
        "miss_rate": round(1 - stats["hit_rate"], 4)
        if stats.get("hits", 0) + stats.get("misses", 0)
        else 0.0,
        "memory_usage_percent": round(100 * size / limit, 2) if limit else 0.0,
    }


async def cache_report(gateway: Gateway) -> dict[str, Any]:
    """The seed's GET /api/cache-stats body, from the live counters."""
    c = gateway.counters
    response = {"enabled": False}
    if gateway.cache is not None:
        response = {
            **_cache_figures(await gateway.cache.stats(), gateway.config.cache_max_size_mb),
            "enabled": True,
        }
    conversation: dict[str, Any] = {"enabled": False}
    if gateway.conversations is not None:
        conv = await gateway.conversations.stats()
        figures = _cache_figures(conv["cache"], gateway.config.conversation_max_size_mb)
        conversation = {**figures, "hit_rate": conv["hit_rate"], "enabled": True}
        conversation.pop("miss_rate", None)
    served_upstream = c.requests - c.cache_hits - c.rejected_full
    return {
        "timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "response_cache": response,
        "conversation_cache": conversation,
        "batch_processor": {
            "total_requests": c.requests,
            "cached_responses": c.cache_hits,
            "cache_hit_rate": round(100 * c.cache_hits / c.requests, 1) if c.requests else 0,
            "coalesced_requests": c.coalesced,
            "upstream_calls": c.upstream_calls,
            "average_batch_size": round(served_upstream / c.upstream_calls, 2) if c.upstream_calls else 0,
        },
        "queue_length": gateway.slots.waiting,
        "is_processing": gateway.processing > 0,
    }


@openapi(**CACHE_STATS_DOC)
async def get_cache_stats(request: web.Request) -> web.Response:
    """The seed's statistics: response_cache, conversation_cache, batch_processor, queue_length."""
    return json_response(await cache_report(request.app[GATEWAY_KEY]))


ACTIONS = ("clear", "clear_response_cache", "clear_conversation_cache", "warm_model")


@openapi(**CACHE_ACTION_DOC)
async def post_cache_stats(request: web.Request) -> web.Response:
    """Cache operations: {"action": clear | clear_response_cache | clear_conversation_cache | warm_model}."""
    gateway = request.app[GATEWAY_KEY]
    body = await read_json(request, lenient=True)
    identity = identity_of(request)
    if not identity.anonymous and not identity.platform_admin:
        # The caches are shared by every tenant: one tenant's key must not empty them for the others.
        raise ApiError(403, "admin_only", "cache actions need an admin key (or no key when none is required)")
    action = body.get("action")
    if action == "warm_model":
        data = body.get("data") or {}
        model = data.get("model") if isinstance(data, dict) else None
        if model is not None and not isinstance(model, str):
            raise ApiError(400, "invalid_request", "data.model must be a string")
        warmed = await gateway.pool.warm(model or gateway.config.model)
        return json_response({"success": True, "action": action, **warmed})
    if action not in ACTIONS:
        raise ApiError(400, "invalid_action", f"action must be one of {', '.join(ACTIONS)}; got {action!r}")
    removed = await gateway.clear(
        response=action != "clear_conversation_cache", conversation=action != "clear_response_cache"
    )
    return json_response({"success": True, "action": action, "removed": removed})


async def component_state(cache: Any) -> dict[str, Any]:
    """A cache's state for /api/admin/health: ok when its stats can be read."""
    if cache is None:
        return {"ok": True, "enabled": False}
    try:
        figures = await cache.stats()
    except BackendError as exc:
        return {"ok": False, "error": str(exc)}
    return {"ok": True, "enabled": True, "backend": figures.get("backend", "")}


async def deep_health(gateway: Gateway) -> dict[str, Any]:
    """Every upstream's reachability; ok when at least one answers."""
    start = time.monotonic()
    upstreams = await gateway.pool.check()
    ok = any(row.get("ok") for row in upstreams)
    return {"ok": ok, "upstreams": upstreams, "elapsed_ms": round((time.monotonic() - start) * 1000, 1)}


async def seed_stats(request: web.Request) -> web.Response:
    """The seed's GET /api/stats: the server's stats with its `cache` section (the cache-stats report)."""
    gateway = request.app[GATEWAY_KEY]
    report = await cache_report(gateway)
    c = gateway.counters
    return json_response(
        {
            "cache": report["response_cache"],
            "conversation_cache": report["conversation_cache"],
            "requests": {k: getattr(c, k) for k in c.__slots__},
            "queue_length": report["queue_length"],
            "timestamp": report["timestamp"],
        }
    )


def create_app(settings: Settings, pool: Any = None) -> web.Application:
    """The gateway: the seed's routes, OpenAI's /v1/chat/completions and /v1/models, /health /stats,
    and the platform (keys, tenants, quotas, analytics, /api/admin/*, documents and search)."""
    gateway_box: dict[str, Gateway] = {}
    rag_default(settings.gateway.rag_default)  # ConfigError (exit 2) for a bad setting, before serving
    platform = Platform(PlatformConfig.from_settings(settings))

    async def stats() -> dict[str, Any]:
        gateway = gateway_box["gateway"]
        c = gateway.counters
        return {
            "requests": {**{k: getattr(c, k) for k in c.__slots__}},
            "cache_stats": await cache_report(gateway),
            "queue": {
                "waiting": gateway.slots.waiting,
                "busy": gateway.processing,
                "max_concurrent": gateway.config.max_concurrent,
                "max_queue_size": gateway.config.max_queue_size,
                "average_call_ms": round(gateway.slots.timer.average_ms, 1),
                "calls_measured": gateway.slots.timer.count,
                "flights": len(gateway.flights),
            },
            "upstreams": gateway.pool.stats(),
            "analytics": platform.writer.stats() if platform.writer is not None else None,
            "config": gateway.public_config(),
        }

    async def deep() -> dict[str, Any]:
        return await deep_health(gateway_box["gateway"])

    async def dependencies() -> dict[str, Any]:
        """/api/admin/health's view of the gateway's own dependencies: upstreams, caches, quotas."""
        gateway = gateway_box["gateway"]
        upstreams = await gateway.pool.check()
        return {
            "upstreams": {"ok": any(row.get("ok") for row in upstreams), "each": upstreams},
            "cache": await component_state(gateway.cache),
            "quotas": await platform.quotas_health(),
        }

    app = create_base_app(
        "gateway",
        settings.server,
        stats=stats,
        health={"status": "healthy"},
        deep_health=deep,
        cancel_on_disconnect=True,
        guard=platform.guard,
    )

    app[OPENAPI_SCHEMAS_KEY].update(SCHEMAS)
    app[OPENAPI_SCHEMAS_KEY].update(ADMIN_SCHEMAS)
    app[OPENAPI_SCHEMAS_KEY].update(DOCUMENT_SCHEMAS)
    app[PLATFORM_KEY] = platform
    app[METRICS_KEY].registry.register(platform.search_metrics)
    app[METRICS_KEY].registry.register(SeedHttpSeries(app[METRICS_KEY]))

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await platform.open()
        try:
            gateway = Gateway(settings, pool if pool is not None else pool_from_settings(settings.gateway))
            gateway_box["gateway"] = gateway
            app[GATEWAY_KEY] = gateway
            app[METRICS_KEY].registry.register(gateway)
            app[METRICS_KEY].registry.register(gateway.tenants)
            platform.search_cache = gateway.search_cache
            gateway.pool.watch_circuits(platform.upstream_circuit)
            book = queued.install(app, gateway)
            try:
                yield
            finally:
                await book.close()
                await gateway.close()
        finally:
            await platform.close()

    app.cleanup_ctx.append(lifecycle)
    add_route(app, "POST", SEED_CHAT_ROUTE, chat_optimized, scope=CHAT)
    add_route(app, "GET", "/api/cache-stats", get_cache_stats)
    add_route(app, "POST", "/api/cache-stats", post_cache_stats)
    add_route(app, "GET", "/api/stats", seed_stats)
    queued.add_routes(app)
    openai_face.add_routes(app)
    admin_routes.add_routes(app, AdminHooks(stats=stats, health=dependencies))
    document_routes.add_routes(app)
    return app
