"""The webhook admin routes' bodies and query strings, checked field by field, and their answers' shapes
(never a secret, but the one answer that creates or rotates it). No aiohttp here."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from llmkit.platform.admin.bodies import MAX_DESCRIPTION, invalid, iso
from llmkit.platform.store.base import Delivery, DeliveryAttempt, Webhook
from llmkit.platform.webhooks.events import ALL_EVENTS, EVENT_TYPES
from llmkit.platform.webhooks.signing import secret_key
from llmkit.platform.webhooks.targets import UnsafeTarget, check_url

FIELDS = ("url", "secret", "events", "tenant_id", "description")


def _known(body: Mapping[str, Any], fields: Sequence[str]) -> None:
    unknown = sorted(set(body) - set(fields))
    if unknown:
        raise invalid(unknown[0], f"unknown field; this body takes {', '.join(fields)}")


def url_of(value: Any, allow_private: bool) -> str:
    """`url`: an http(s) URL deliveries may reach (its host's addresses are checked by the route)."""
    if not isinstance(value, str) or not value.strip():
        raise invalid("url", "required; give the receiver's http:// or https:// URL")
    try:
        check_url(value.strip(), allow_private)
    except UnsafeTarget as exc:
        raise invalid("url", str(exc)) from None
    return value.strip()


def events_of(value: Any) -> tuple[str, ...]:
    """`events`: a non-empty list of known event types, or ["*"] for all of them."""
    if not isinstance(value, list) or not value:
        raise invalid(
            "events",
            f'required; a list such as ["key.created"], or ["*"] for all of: {", ".join(EVENT_TYPES)}',
        )
    seen: list[str] = []
    for item in value:
        if not isinstance(item, str):
            raise invalid("events", "each event is a string")
        if item != ALL_EVENTS and item not in EVENT_TYPES:
            raise invalid("events", f"unknown event {item[:80]!r}; known: {', '.join(EVENT_TYPES)} (or *)")
        if item not in seen:
            seen.append(item)
    return (ALL_EVENTS,) if ALL_EVENTS in seen else tuple(seen)


def secret_of(value: Any) -> str | None:
    """`secret`: whsec_<base64> or 8..256 characters of text; None (absent) to have one generated."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise invalid("secret", "must be a string (whsec_<base64>); leave it out to have one generated")
    try:
        secret_key(value)
    except ValueError as exc:
        raise invalid("secret", str(exc)) from None
    return value


def webhook_request(body: Mapping[str, Any], allow_private: bool) -> dict[str, Any]:
    """POST /api/admin/webhooks: {url, events, secret?, tenant_id?, description?} checked."""
    _known(body, FIELDS)
    tenant_id = body.get("tenant_id")
    if tenant_id is not None and not isinstance(tenant_id, str):
        raise invalid("tenant_id", "must be a tenant's id (a string), or null for every tenant's events")
    description = body.get("description")
    if description is not None and not isinstance(description, str):
        raise invalid("description", "must be a string")
    if description is not None and len(description) > MAX_DESCRIPTION:
        raise invalid("description", f"at most {MAX_DESCRIPTION} characters; got {len(description)}")
    return {
        "url": url_of(body.get("url"), allow_private),
        "events": events_of(body.get("events")),
        "secret": secret_of(body.get("secret")),
        "tenant_id": tenant_id,
        "description": description or "",
    }


def rotate_request(body: Mapping[str, Any]) -> str | None:
    """POST /api/admin/webhooks/{id}/rotate: {secret?} (none: a new one is generated)."""
    _known(body, ("secret",))
    return secret_of(body.get("secret"))


def webhook_view(hook: Webhook, now: float, secret: str | None = None) -> dict[str, Any]:
    """A webhook as the admin API shows it; `secret` only in the answer that creates or rotates it."""
    rotating = hook.previous_until is not None and hook.previous_until > now
    view = {
        "id": hook.id,
        "url": hook.url,
        "events": list(hook.events),
        "tenant_id": hook.tenant_id,
        "description": hook.description,
        "status": "disabled" if hook.disabled_at is not None else "active",
        "disabled_at": iso(hook.disabled_at),
        "disabled_reason": hook.disabled_reason,
        "previous_secret_expires_at": iso(hook.previous_until) if rotating else None,
        "created_at": iso(hook.created_at),
        "updated_at": iso(hook.updated_at),
    }
    if secret is not None:
        view["secret"] = secret
    return view


def attempt_view(a: DeliveryAttempt) -> dict[str, Any]:
    """One attempt of the delivery log."""
    return {
        "attempt": a.attempt,
        "at": iso(a.at),
        "status": a.status,
        "duration_ms": a.duration_ms,
        "error": a.error,
    }


def delivery_view(d: Delivery, attempts: Sequence[DeliveryAttempt]) -> dict[str, Any]:
    """A delivery with its attempts (its id is the webhook-id header the receiver saw)."""
    return {
        "id": d.id,
        "event_id": d.event_id,
        "type": d.event_type,
        "state": d.state,
        "attempts": d.attempts,
        "last_status": d.last_status,
        "last_error": d.last_error,
        "created_at": iso(d.created_at),
        "next_at": iso(d.next_at) if d.state == "pending" else None,
        "finished_at": iso(d.finished_at),
        "log": [attempt_view(a) for a in attempts if a.delivery_id == d.id],
    }


def page_query(query: Mapping[str, str]) -> tuple[int, int]:
    """`limit` (1..200, default 50) and `offset` of GET .../deliveries; 400 naming a bad one."""
    out = []
    for name, default, low, most in (("limit", 50, 1, 200), ("offset", 0, 0, None)):
        raw = query.get(name)
        if raw is None:
            out.append(default)
            continue
        try:
            value = int(raw)
        except ValueError:
            raise invalid(name, f"{name} must be an integer; got {raw[:40]!r}", 400) from None
        if value < low or (most is not None and value > most):
            bound = f"between {low} and {most}" if most is not None else f"at least {low}"
            raise invalid(name, f"{name} must be {bound}; got {value}", 400)
        out.append(value)
    return out[0], out[1]
