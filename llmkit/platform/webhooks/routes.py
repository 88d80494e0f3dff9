"""/api/admin/webhooks: create, list, delete, test, rotate a webhook and read its delivery log (scope admin).

A platform admin (the bootstrap key, an admin key of no tenant) sees every webhook and may create one for
every tenant's events (no tenant_id); a tenant's admin sees and creates only its tenant's, and another
tenant's webhook is a 404 to it like an unknown one.
"""

from __future__ import annotations

import secrets
import time

from aiohttp import web

from llmkit.core.auth import ADMIN, Identity
from llmkit.core.http import ApiError, add_route, identity_of, json_response, openapi, read_json
from llmkit.platform.admin.bodies import invalid
from llmkit.platform.service import PLATFORM_KEY, Platform
from llmkit.platform.store.base import Webhook
from llmkit.platform.webhooks import docs
from llmkit.platform.webhooks.bodies import (
    delivery_view,
    page_query,
    rotate_request,
    webhook_request,
    webhook_view,
)
from llmkit.platform.webhooks.events import TEST_EVENT, deliveries_of
from llmkit.platform.webhooks.signing import new_secret
from llmkit.platform.webhooks.targets import UnsafeTarget, check_target


def _scope(request: web.Request) -> tuple[Platform, Identity, str | None]:
    """The platform, the caller and the tenant whose webhooks it may see (None: every one)."""
    identity = identity_of(request)
    return request.app[PLATFORM_KEY], identity, None if identity.platform_admin else identity.tenant_id


async def _webhook(request: web.Request) -> tuple[Platform, str | None, Webhook]:
    platform, _, own = _scope(request)
    webhook_id = request.match_info["webhook_id"]
    hook = await platform.store.webhook(webhook_id, own)
    if hook is None:
        # Another tenant's webhook is "not found" too: its id tells nothing.
        raise ApiError(
            404, "webhook_not_found", f"no webhook {webhook_id!r}; GET /api/admin/webhooks lists them"
        )
    return platform, own, hook


@openapi(**docs.LIST_WEBHOOKS)
async def list_webhooks(request: web.Request) -> web.Response:
    """Every webhook (a tenant's admin: its tenant's), never a secret."""
    platform, _, own = _scope(request)
    now = time.time()
    return json_response({"webhooks": [webhook_view(h, now) for h in await platform.store.webhooks(own)]})


@openapi(**docs.CREATE_WEBHOOK)
async def create_webhook(request: web.Request) -> web.Response:
    """Register a receiver for some events; its signing secret is in this answer only."""
    platform, identity, own = _scope(request)
    allow_private = platform.config.webhooks_allow_private
    fields = webhook_request(await read_json(request), allow_private)
    tenant_id = fields["tenant_id"]
    if own is not None:
        if tenant_id not in (None, own):
            raise ApiError(403, "forbidden_tenant", "this admin key administers only its own tenant")
        tenant_id = own
    elif tenant_id is not None and await platform.store.tenant(tenant_id) is None:
        raise invalid("tenant_id", f"no tenant {tenant_id!r}; leave it out for every tenant's events")
    try:
        await check_target(fields["url"], allow_private)
    except UnsafeTarget as exc:
        raise invalid("url", str(exc)) from None
    now = time.time()
    secret = fields["secret"] or new_secret()
    hook = Webhook(
        id=f"wh_{secrets.token_hex(8)}",
        url=fields["url"],
        events=fields["events"],
        secret=secret,
        tenant_id=tenant_id,
        description=fields["description"],
        created_at=now,
        updated_at=now,
    )
    await platform.store.add_webhook(hook)
    platform.webhook_directory.forget()
    return json_response(webhook_view(hook, now, secret=secret), status=201)


@openapi(**docs.DELETE_WEBHOOK)
async def delete_webhook(request: web.Request) -> web.Response:
    """Delete a webhook with its pending deliveries and log."""
    platform, own, hook = await _webhook(request)
    if not await platform.store.delete_webhook(hook.id, own):
        raise ApiError(404, "webhook_not_found", f"no webhook {hook.id!r}")
    platform.webhook_directory.forget()
    return json_response({"id": hook.id, "deleted": True})


@openapi(**docs.TEST_WEBHOOK)
async def send_test_event(request: web.Request) -> web.Response:
    """Queue a webhook.test event for this webhook alone (whatever events it takes)."""
    platform, _, hook = await _webhook(request)
    if hook.disabled_at is not None:
        raise ApiError(409, "webhook_disabled", f"webhook {hook.id!r} is disabled: {hook.disabled_reason}")
    data = {"webhook_id": hook.id, "message": "a test event from POST /api/admin/webhooks/{id}/test"}
    (delivery,) = deliveries_of([hook], TEST_EVENT, data, hook.tenant_id, time.time())
    await platform.store.add_deliveries([delivery])
    if platform.deliveries is not None:
        platform.deliveries.wake()
    body = {"delivery_id": delivery.id, "event_id": delivery.event_id, "type": TEST_EVENT}
    return json_response(body, status=202)


@openapi(**docs.LIST_DELIVERIES)
async def list_deliveries(request: web.Request) -> web.Response:
    """The webhook's deliveries, newest first, each with its attempts (status, time taken, error)."""
    limit, offset = page_query(request.query)
    platform, _, hook = await _webhook(request)
    rows = await platform.store.deliveries(hook.id, limit, offset)
    attempts = await platform.store.delivery_attempts([d.id for d in rows])
    return json_response(
        {"deliveries": [delivery_view(d, attempts) for d in rows], "limit": limit, "offset": offset}
    )


@openapi(**docs.ROTATE_WEBHOOK)
async def rotate_webhook(request: web.Request) -> web.Response:
    """A new signing secret (shown this once); the previous one signs too for the grace period."""
    platform, own, hook = await _webhook(request)
    body = await read_json(request) if request.can_read_body else {}
    secret = rotate_request(body) or new_secret()
    now = time.time()
    until = now + platform.config.webhooks_rotation_grace_s
    rotated = await platform.store.rotate_webhook_secret(hook.id, secret, until, now, own)
    if rotated is None:
        raise ApiError(404, "webhook_not_found", f"no webhook {hook.id!r}")
    platform.webhook_directory.forget()
    return json_response(webhook_view(rotated, now, secret=secret))


def add_routes(app: web.Application) -> None:
    """Mount the webhook admin routes on a server whose app holds a Platform under PLATFORM_KEY."""
    add_route(app, "GET", "/api/admin/webhooks", list_webhooks, scope=ADMIN)
    add_route(app, "POST", "/api/admin/webhooks", create_webhook, scope=ADMIN)
    add_route(app, "DELETE", "/api/admin/webhooks/{webhook_id}", delete_webhook, scope=ADMIN)
    add_route(app, "POST", "/api/admin/webhooks/{webhook_id}/test", send_test_event, scope=ADMIN)
    add_route(app, "GET", "/api/admin/webhooks/{webhook_id}/deliveries", list_deliveries, scope=ADMIN)
    add_route(app, "POST", "/api/admin/webhooks/{webhook_id}/rotate", rotate_webhook, scope=ADMIN)
