"""The admin API's key and tenant operations on a store, without HTTP: same checks, same answers, same errors.

`llmkit gateway keys|tenants` runs these against the store directly; they act as the platform admin (every
tenant), as the bootstrap admin key does through /api/admin/*.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from llmkit.core.http import ApiError
from llmkit.platform.admin.bodies import (
    invalid,
    key_request,
    key_view,
    tenant_patch,
    tenant_request,
    tenant_view,
)
from llmkit.platform.keys import issue_key
from llmkit.platform.store.base import Delivery, PlatformStore, StoreConflict, Tenant

# The outbox rows of an event (type, data, tenant id): Platform.event_deliveries.
EventDeliveries = Callable[[str, Mapping[str, Any], str | None], Awaitable[Sequence[Delivery]]]


def tenant_not_found(tenant_id: str) -> ApiError:
    """The API's 404 for a tenant id."""
    return ApiError(404, "tenant_not_found", f"no tenant {tenant_id!r}; GET /api/admin/tenants lists them")


class StoreAdmin:
    """What /api/admin/api-keys and /api/admin/tenants do (as the platform admin), on a store."""

    def __init__(
        self, store: PlatformStore, *, pepper: str = "", events: EventDeliveries | None = None
    ) -> None:
        self.store = store
        self._pepper = pepper
        # key.created and key.revoked are queued in the key's own transaction: a crash loses neither.
        self._events = events

    async def _deliveries(
        self, event_type: str, view: Mapping[str, Any], tenant_id: str | None
    ) -> Sequence[Delivery]:
        return await self._events(event_type, view, tenant_id) if self._events is not None else ()

    async def create_key(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """The 201 body of POST /api/admin/api-keys: the key's view and, this once, its full text."""
        fields = key_request(body)
        tenant_id = fields["tenant_id"]
        if tenant_id is not None and await self.store.tenant(tenant_id) is None:
            raise invalid("tenant_id", f"no tenant {tenant_id!r}; create it with POST /api/admin/tenants")
        key, text = issue_key(**fields, pepper=self._pepper)
        view = key_view(key, key.created_at)
        await self.store.add_key(key, await self._deliveries("key.created", view, key.tenant_id))
        return {**view, "key": text}

    async def list_keys(self, tenant_id: str | None = None) -> dict[str, Any]:
        """GET /api/admin/api-keys: every key (or a tenant's), never a secret."""
        now = time.time()
        return {"keys": [key_view(k, now) for k in await self.store.keys(tenant_id)]}

    async def revoke_key(self, key_id: str, tenant_id: str | None = None) -> dict[str, Any]:
        """DELETE /api/admin/api-keys/{id}: the revoked key's view; 404 when unknown (or, with
        `tenant_id`, another tenant's: as good as unknown to that tenant's admin)."""
        key = await self.store.key(key_id)
        if key is not None and tenant_id is not None and key.tenant_id != tenant_id:
            key = None
        revoked = None
        at = time.time()
        if key is not None:
            # The event tells of the key as the revoke leaves it (a second revoke keeps the first time).
            view = key_view(replace(key, revoked_at=key.revoked_at or at), at)
            deliveries = await self._deliveries("key.revoked", view, key.tenant_id)
            revoked = await self.store.revoke_key(key_id, at, deliveries)
        if revoked is None:
            raise ApiError(404, "key_not_found", f"no API key {key_id!r}; GET /api/admin/api-keys lists them")
        return key_view(revoked, at)

    async def list_tenants(self, tenant_id: str | None = None) -> dict[str, Any]:
        """GET /api/admin/tenants (with `tenant_id`: only that one)."""
        tenants = await self.store.tenants()
        return {"tenants": [tenant_view(t) for t in tenants if tenant_id in (None, t.id)]}

    async def tenant(self, tenant_id: str) -> dict[str, Any]:
        """GET /api/admin/tenants/{id}; 404 when unknown."""
        tenant = await self.store.tenant(tenant_id)
        if tenant is None:
            raise tenant_not_found(tenant_id)
        return tenant_view(tenant)

    async def delete_tenant(self, tenant_id: str) -> dict[str, Any]:
        """DELETE /api/admin/tenants/{id}: gone, with its keys revoked; 404 when unknown."""
        revoked = await self.store.delete_tenant(tenant_id, time.time())
        if revoked is None:
            raise tenant_not_found(tenant_id)
        return {"id": tenant_id, "deleted": True, "revoked_keys": revoked}

    async def create_tenant(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """The 201 body of POST /api/admin/tenants; 409 when the id or name is taken."""
        fields = tenant_request(body)
        now = time.time()
        tenant = Tenant(
            fields["id"] or f"t_{secrets.token_hex(6)}", fields["name"], fields["quotas"], now, now
        )
        try:
            await self.store.add_tenant(tenant)
        except StoreConflict as exc:
            raise ApiError(409, "tenant_exists", str(exc)) from None
        return tenant_view(tenant)

    async def update_tenant(self, tenant_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """PATCH /api/admin/tenants/{id}: only the name and quotas given change (null: no limit)."""
        tenant = await self.store.tenant(tenant_id)
        if tenant is None:
            raise tenant_not_found(tenant_id)
        fields = tenant_patch(body, tenant)
        changed = Tenant(tenant.id, fields["name"], fields["quotas"], tenant.created_at, time.time())
        try:
            found = await self.store.update_tenant(changed)
        except StoreConflict as exc:
            raise ApiError(409, "tenant_exists", str(exc)) from None
        if not found:
            raise tenant_not_found(tenant_id)
        return tenant_view(changed)
