"""The admin API's request bodies, checked field by field, and its answers' shapes (no aiohttp here)."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from llmkit.core.http import ApiError
from llmkit.platform.keys import KEY_PREFIX, check_scopes
from llmkit.platform.quota_types import Quotas
from llmkit.platform.store.base import ApiKey, Job, Tenant
from llmkit.platform.store.jobs_sql import JOB_STATES

TENANT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
MAX_NAME = 200
MAX_DESCRIPTION = 2000


def iso(ts: float | None) -> str | None:
    """Epoch seconds as ISO 8601 UTC (`2026-12-01T10:00:00.123Z`), None kept."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def invalid(field: str, message: str, status: int = 422) -> ApiError:
    """A body field the client must change: 422 naming it (`param`)."""
    return ApiError(status, "invalid_field", f"{field}: {message}", param=field)


def _text(body: Mapping[str, Any], name: str, limit: int, *, required: bool = False) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise invalid(name, "required; give a non-empty string")
        return None
    if not isinstance(value, str) or (required and not value.strip()):
        raise invalid(name, "must be a non-empty string" if required else "must be a string")
    if len(value) > limit:
        raise invalid(name, f"at most {limit} characters; got {len(value)}")
    return value


def _known(body: Mapping[str, Any], fields: tuple[str, ...]) -> None:
    unknown = sorted(set(body) - set(fields))
    if unknown:
        raise invalid(unknown[0], f"unknown field; this body takes {', '.join(fields)}")


def expiry(value: Any, now: float) -> float | None:
    """`expires_at` as epoch seconds: ISO 8601 (`2027-01-01T00:00:00Z`) or a number; it must be ahead."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise invalid("expires_at", "an ISO 8601 time such as 2027-01-01T00:00:00Z, or epoch seconds")
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise invalid("expires_at", f"not an ISO 8601 time: {value[:40]!r}") from None
        ts = (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()
    else:
        ts = float(value)
    if not ts > now:
        raise invalid("expires_at", "must be in the future")
    return ts


def key_request(body: Mapping[str, Any]) -> dict[str, Any]:
    """POST /api/admin/api-keys: {name, description?, tenant_id?, scopes?, expires_at?} checked."""
    _known(body, ("name", "description", "tenant_id", "scopes", "expires_at"))
    scopes = body.get("scopes", ["chat"])
    if not isinstance(scopes, list):
        raise invalid("scopes", 'must be a list such as ["chat", "search"]')
    try:
        checked = check_scopes(scopes)
    except ValueError as exc:
        raise invalid("scopes", str(exc)) from None
    tenant_id = body.get("tenant_id")
    if tenant_id is not None and not isinstance(tenant_id, str):
        raise invalid("tenant_id", "must be a tenant's id (a string) or null for none")
    return {
        "name": _text(body, "name", MAX_NAME, required=True),
        "description": _text(body, "description", MAX_DESCRIPTION) or "",
        "tenant_id": tenant_id,
        "scopes": checked,
        "expires_at": expiry(body.get("expires_at"), time.time()),
    }


def quotas_of(value: Any, base: Quotas | None = None) -> Quotas:
    """`quotas` of a body: every quota optional; with `base`, the ones given replace its (null: no limit)."""
    if value is None:
        return base or Quotas()
    if not isinstance(value, dict):
        raise invalid("quotas", 'must be an object such as {"rpm": 60, "tpm": 100000}')
    merged = {**(base.to_dict() if base is not None else {}), **value}
    try:
        return Quotas.from_dict(merged)
    except ValueError as exc:
        raise invalid("quotas", str(exc)) from None


def tenant_request(body: Mapping[str, Any]) -> dict[str, Any]:
    """POST /api/admin/tenants: {name, quotas?, id?} checked."""
    _known(body, ("id", "name", "quotas"))
    tenant_id = body.get("id")
    if tenant_id is not None and (not isinstance(tenant_id, str) or not TENANT_ID.fullmatch(tenant_id)):
        raise invalid("id", "1 to 64 letters, digits, '_', '.' or '-', starting with a letter or digit")
    if tenant_id == "default":
        raise invalid("id", "'default' is the tenant of keys with none; choose another id")
    return {
        "id": tenant_id,
        "name": _text(body, "name", MAX_NAME, required=True),
        "quotas": quotas_of(body.get("quotas")),
    }


def tenant_patch(body: Mapping[str, Any], tenant: Tenant) -> dict[str, Any]:
    """PATCH /api/admin/tenants/{id}: {name?, quotas?} merged over the tenant."""
    _known(body, ("name", "quotas"))
    if not body:
        raise invalid("name", "give name and/or quotas to change", status=400)
    name = _text(body, "name", MAX_NAME, required=True) if "name" in body else tenant.name
    return {"name": name, "quotas": quotas_of(body.get("quotas"), tenant.quotas)}


def tenant_view(tenant: Tenant) -> dict[str, Any]:
    """A tenant as the admin API shows it."""
    return {
        "id": tenant.id,
        "name": tenant.name,
        "quotas": tenant.quotas.to_dict(),
        "created_at": iso(tenant.created_at),
        "updated_at": iso(tenant.updated_at),
    }


def key_state(key: ApiKey, now: float) -> str:
    """active, revoked or expired."""
    if key.revoked_at is not None:
        return "revoked"
    if key.expires_at is not None and key.expires_at <= now:
        return "expired"
    return "active"


def key_view(key: ApiKey, now: float) -> dict[str, Any]:
    """A stored key as the admin API shows it: never its secret or hash."""
    return {
        "id": key.id,
        "prefix": f"{KEY_PREFIX}{key.id}_",
        "name": key.name,
        "description": key.description,
        "tenant_id": key.tenant_id,
        "scopes": list(key.scopes),
        "status": key_state(key, now),
        "created_at": iso(key.created_at),
        "last_used_at": iso(key.last_used_at),
        "expires_at": iso(key.expires_at),
        "revoked_at": iso(key.revoked_at),
    }


def job_view(job: Job) -> dict[str, Any]:
    """A job as the admin API shows it (times in ISO 8601; the worker holding it while it runs)."""
    return {
        "id": job.id,
        "tenant_id": job.tenant_id,
        "kind": job.kind,
        "subject": job.subject,
        "state": job.state,
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "error": job.error,
        "worker": job.worker if job.state == "running" else None,
        "created_at": iso(job.created_at),
        "run_at": iso(job.run_at) if job.state == "queued" else None,
        "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at),
    }


def job_list_query(query: Mapping[str, str]) -> dict[str, Any]:
    """`state`, `limit` (1..500, default 50) and `offset` of GET /api/admin/jobs; 400 naming a bad one."""
    state = query.get("state")
    if state is not None and state not in JOB_STATES:
        raise invalid("state", f"state must be one of {', '.join(JOB_STATES)}; got {state!r}", 400)
    out: dict[str, Any] = {"state": state}
    for name, default, most in (("limit", 50, 500), ("offset", 0, None)):
        raw = query.get(name)
        if raw is None:
            out[name] = default
            continue
        try:
            value = int(raw)
        except ValueError:
            raise invalid(name, f"{name} must be an integer; got {raw!r}", 400) from None
        low = 1 if name == "limit" else 0
        if value < low or (most is not None and value > most):
            bound = f"between {low} and {most}" if most is not None else f"at least {low}"
            raise invalid(name, f"{name} must be {bound}; got {value}", 400)
        out[name] = value
    return out
