"""What every platform store provides: tenants and API keys (later webhooks, documents, jobs)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

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
        """Delete the tenant and revoke its keys in one transaction: the keys revoked, None when missing."""
        ...

    async def add_key(self, key: ApiKey) -> None:
        """Store a new key; StoreConflict when its id is taken."""
        ...

    async def key(self, key_id: str) -> ApiKey | None: ...

    async def keys(self, tenant_id: str | None = None) -> list[ApiKey]:
        """Every key (or a tenant's), oldest first."""
        ...

    async def revoke_key(self, key_id: str, at: float) -> ApiKey | None:
        """Mark the key revoked at `at` (a second revoke keeps the first time); None when missing."""
        ...

    async def touch_keys(self, used: Mapping[str, float]) -> None:
        """Record when keys were last used, many at once (written off the request path)."""
        ...
