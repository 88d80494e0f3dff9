"""/api/admin/*: API keys, tenants (and their quota use), background jobs, webhooks, analytics, stats and
health, for admin keys only; and /admin, the dashboard page that calls them.

An admin key of no tenant (and the bootstrap admin key) administers every tenant; an admin key of a
tenant sees and changes only its own tenant's keys, tenant and analytics.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from llmkit.core.auth import ADMIN, Identity
from llmkit.core.http import ApiError, add_route, identity_of, json_response, openapi, read_json
from llmkit.platform.admin import docs, page
from llmkit.platform.admin.bodies import iso, job_list_query, job_view, key_view
from llmkit.platform.admin.operations import StoreAdmin, tenant_not_found
from llmkit.platform.analytics import queries
from llmkit.platform.quotas import RPM, TOKEN_KINDS
from llmkit.platform.service import PLATFORM_KEY, Platform
from llmkit.platform.webhooks import routes as webhook_routes

Report = Callable[[], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class AdminHooks:
    """What the server mounting the admin API reports about itself (its stats and its dependencies)."""

    stats: Report
    health: Report


HOOKS_KEY = web.AppKey("llmkit_admin_hooks", AdminHooks)


def _platform(request: web.Request) -> tuple[Platform, Identity]:
    return request.app[PLATFORM_KEY], identity_of(request)


def _own_tenant(identity: Identity, tenant_id: str | None) -> str | None:
    """The tenant an admin may act on: any for a platform admin, else only its own (403 otherwise)."""
    if identity.platform_admin:
        return tenant_id
    if tenant_id is not None and tenant_id != identity.tenant_id:
        raise ApiError(403, "forbidden_tenant", "this admin key administers only its own tenant")
    return identity.tenant_id


def _platform_admin(identity: Identity) -> None:
    if not identity.platform_admin:
        raise ApiError(
            403, "platform_admin_only", "only the admin key or an admin key of no tenant may do this"
        )


def _admin(platform: Platform) -> StoreAdmin:
    return StoreAdmin(platform.store, pepper=platform.config.key_pepper, events=platform.event_deliveries)


# -- API keys ----------------------------------------------------------------------------------------


@openapi(**docs.LIST_KEYS)
async def list_keys(request: web.Request) -> web.Response:
    """Every key (a tenant's admin: its tenant's), never a secret."""
    platform, identity = _platform(request)
    tenant_id = _own_tenant(identity, request.query.get("tenant_id"))
    return json_response(await _admin(platform).list_keys(tenant_id))


@openapi(**docs.CREATE_KEY)
async def create_key(request: web.Request) -> web.Response:
    """Issue a key; its secret is in this answer only."""
    platform, identity = _platform(request)
    body = await read_json(request)
    if not identity.platform_admin:
        tenant_id = _own_tenant(
            identity, body.get("tenant_id") if isinstance(body.get("tenant_id"), str) else None
        )
        body = {**body, "tenant_id": tenant_id}
    # Its key.created event (the key's view, never its text) is queued with the key.
    made = await _admin(platform).create_key(body)
    platform.wake_deliveries()
    return json_response(made, status=201)


@openapi(**docs.REVOKE_KEY)
async def revoke_key(request: web.Request) -> web.Response:
    """Revoke a key: within a second no replica accepts it."""
    platform, identity = _platform(request)
    key_id = request.match_info["key_id"]
    own = None if identity.platform_admin else identity.tenant_id
    view = await _admin(platform).revoke_key(key_id, own)
    platform.verifier.forget_key(key_id)
    platform.wake_deliveries()  # its key.revoked event was queued with the revoke
    return json_response(view)


# -- tenants -----------------------------------------------------------------------------------------


@openapi(**docs.LIST_TENANTS)
async def list_tenants(request: web.Request) -> web.Response:
    """Every tenant (a tenant's admin: its own)."""
    platform, identity = _platform(request)
    own = None if identity.platform_admin else identity.tenant_id
    return json_response(await _admin(platform).list_tenants(own))


@openapi(**docs.CREATE_TENANT)
async def create_tenant(request: web.Request) -> web.Response:
    """Create a tenant with its quotas."""
    platform, identity = _platform(request)
    _platform_admin(identity)
    return json_response(await _admin(platform).create_tenant(await read_json(request)), status=201)


@openapi(**docs.GET_TENANT)
async def get_tenant(request: web.Request) -> web.Response:
    """One tenant."""
    platform, identity = _platform(request)
    tenant_id = _own_tenant(identity, request.match_info["tenant_id"])
    assert tenant_id is not None
    return json_response(await _admin(platform).tenant(tenant_id))


@openapi(**docs.TENANT_USAGE)
async def tenant_usage(request: web.Request) -> web.Response:
    """A tenant's quotas with what it has used of each now (read, never counted)."""
    platform, identity = _platform(request)
    tenant_id = _own_tenant(identity, request.match_info["tenant_id"])
    assert tenant_id is not None
    tenant = await platform.store.tenant(tenant_id)
    if tenant is None:
        raise tenant_not_found(tenant_id)
    quotas, enforcer = tenant.quotas, platform.quotas
    plan = enforcer.plan(quotas)
    # The plan's windows come as rpm, then tokens per minute, day and month: the quotas that are set.
    names = [k.quota for k in (RPM, *TOKEN_KINDS) if getattr(quotas, k.quota) is not None]
    rows = [
        {
            "quota": name,
            "limit": st.limit,
            "used": st.used,
            "remaining": st.remaining,
            "resets_at": iso(st.reset_at),
        }
        for name, st in zip(names, await enforcer.counter.usage(tenant_id, plan.windows), strict=True)
    ]
    if quotas.max_concurrent is not None:
        used = await enforcer.slots.in_use(tenant_id)
        limit = quotas.max_concurrent
        rows.append(
            {
                "quota": "max_concurrent",
                "limit": limit,
                "used": used,
                "remaining": max(0, limit - used),
                "resets_at": None,
            }
        )
    return json_response({"tenant_id": tenant_id, "quotas": rows})


@openapi(**docs.PATCH_TENANT)
async def patch_tenant(request: web.Request) -> web.Response:
    """Rename a tenant or change some of its quotas (null: no limit)."""
    platform, identity = _platform(request)
    _platform_admin(identity)
    tenant_id = request.match_info["tenant_id"]
    view = await _admin(platform).update_tenant(tenant_id, await read_json(request))
    platform.verifier.tenants.forget(tenant_id)
    return json_response(view)


@openapi(**docs.DELETE_TENANT)
async def delete_tenant(request: web.Request) -> web.Response:
    """Delete a tenant and revoke its keys."""
    platform, identity = _platform(request)
    _platform_admin(identity)
    tenant_id = request.match_info["tenant_id"]
    view = await _admin(platform).delete_tenant(tenant_id)
    platform.verifier.tenants.forget(tenant_id)
    return json_response(view)


# -- background jobs ----------------------------------------------------------------------------------


def _job(request: web.Request) -> tuple[Platform, str | None, str]:
    """The platform, the tenant the caller may see jobs of (None: any) and the job id of the path."""
    platform, identity = _platform(request)
    return platform, None if identity.platform_admin else identity.tenant_id, request.match_info["job_id"]


def _no_job(job_id: str) -> ApiError:
    # Another tenant's job is "not found" too: its id tells nothing.
    return ApiError(404, "job_not_found", f"no job {job_id!r}")


@openapi(**docs.LIST_JOBS)
async def list_jobs(request: web.Request) -> web.Response:
    """Background jobs (indexing), newest first; filter by state (a tenant's admin: its tenant's only)."""
    platform, identity = _platform(request)
    params = job_list_query(request.query)
    tenant_id = _own_tenant(identity, request.query.get("tenant_id"))
    jobs = await platform.store.jobs(params["state"], tenant_id, params["limit"], params["offset"])
    return json_response(
        {"jobs": [job_view(j) for j in jobs], "limit": params["limit"], "offset": params["offset"]}
    )


@openapi(**docs.GET_JOB)
async def get_job(request: web.Request) -> web.Response:
    """One job: its state, attempts, last error and times."""
    platform, own, job_id = _job(request)
    job = await platform.store.job(job_id, own)
    if job is None:
        raise _no_job(job_id)
    return json_response(job_view(job))


@openapi(**docs.RETRY_JOB)
async def retry_job(request: web.Request) -> web.Response:
    """Queue a failed job again with fresh attempts (409 for a job that has not failed)."""
    platform, own, job_id = _job(request)
    if not await platform.store.requeue_job(job_id, time.time(), own):
        job = await platform.store.job(job_id, own)
        if job is None:
            raise _no_job(job_id)
        raise ApiError(
            409, "job_not_failed", f"job {job_id!r} is {job.state}; only a failed job can be retried"
        )
    if platform.jobs is not None:
        platform.jobs.wake()
    job = await platform.store.job(job_id, own)
    assert job is not None
    return json_response(job_view(job))


# -- analytics, stats, health ----------------------------------------------------------------------------


def _analytics_route(method: str, parse: Callable[[Any], dict[str, Any]]) -> Any:
    async def handler(request: web.Request) -> web.Response:
        platform, identity = _platform(request)
        params = parse(request.query)
        params["tenant_id"] = _own_tenant(identity, params.get("tenant_id"))
        if platform.analytics is None:
            raise ApiError(
                503,
                "analytics_disabled",
                "analytics are off; set gateway.analytics_enabled (ANALYTICS_ENABLED)",
            )
        return json_response(await getattr(platform.analytics, method)(**params, now=time.time()))

    handler.__name__ = f"analytics_{method}"
    handler.__doc__ = f"Query analytics: {method}."
    return openapi(**queries.DOCS[f"/api/admin/analytics/{method}"])(handler)


@openapi(**docs.ADMIN_STATS)
async def admin_stats(request: web.Request) -> web.Response:
    """The server's stats, with the platform's: tenants, keys, the analytics writer."""
    platform, identity = _platform(request)
    _platform_admin(identity)
    keys = await platform.store.keys()
    now = time.time()
    states = [key_view(k, now)["status"] for k in keys]
    body = await request.app[HOOKS_KEY].stats()
    body["platform"] = {
        "store": platform.store.kind,
        "tenants": len(await platform.store.tenants()),
        "api_keys": {s: states.count(s) for s in ("active", "revoked", "expired")},
        "analytics": platform.writer.stats() if platform.writer is not None else None,
    }
    return json_response(body)


@openapi(**docs.ADMIN_HEALTH)
async def admin_health(request: web.Request) -> web.Response:
    """Every dependency with its state: the store, Redis, the upstreams; 503 when one is down."""
    platform, _ = _platform(request)
    components = {**(await platform.health()), **(await request.app[HOOKS_KEY].health())}
    down = [
        name for name, state in components.items() if isinstance(state, dict) and state.get("ok") is False
    ]
    body = {"status": "degraded" if down else "healthy", "down": down, "components": components}
    return json_response(body, status=503 if "store" in down else 200)


def add_routes(app: web.Application, hooks: AdminHooks) -> None:
    """Mount the admin API on a server whose app holds a Platform under PLATFORM_KEY."""
    app[HOOKS_KEY] = hooks
    add = add_route
    add(app, "GET", "/api/admin/api-keys", list_keys, scope=ADMIN)
    add(app, "POST", "/api/admin/api-keys", create_key, scope=ADMIN)
    add(app, "DELETE", "/api/admin/api-keys/{key_id}", revoke_key, scope=ADMIN)
    add(app, "GET", "/api/admin/tenants", list_tenants, scope=ADMIN)
    add(app, "POST", "/api/admin/tenants", create_tenant, scope=ADMIN)
    add(app, "GET", "/api/admin/tenants/{tenant_id}", get_tenant, scope=ADMIN)
    add(app, "GET", "/api/admin/tenants/{tenant_id}/usage", tenant_usage, scope=ADMIN)
    add(app, "PATCH", "/api/admin/tenants/{tenant_id}", patch_tenant, scope=ADMIN)
    add(app, "DELETE", "/api/admin/tenants/{tenant_id}", delete_tenant, scope=ADMIN)
    add(app, "GET", "/api/admin/jobs", list_jobs, scope=ADMIN)
    add(app, "GET", "/api/admin/jobs/{job_id}", get_job, scope=ADMIN)
    add(app, "POST", "/api/admin/jobs/{job_id}/retry", retry_job, scope=ADMIN)
    webhook_routes.add_routes(app)
    for method, parse in (
        ("popular", queries.parse_popular),
        ("trending", queries.parse_trending),
        ("stats", queries.parse_stats),
        ("timeseries", queries.parse_timeseries),
    ):
        add(app, "GET", f"/api/admin/analytics/{method}", _analytics_route(method, parse), scope=ADMIN)
    add(app, "GET", "/api/admin/stats", admin_stats, scope=ADMIN)
    add(app, "GET", "/api/admin/health", admin_health, scope=ADMIN)
    page.add_routes(app)
