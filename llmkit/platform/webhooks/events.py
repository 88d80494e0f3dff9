"""Events and the webhooks that want them: the types there are, the body every delivery carries, and a
directory of webhooks read from the store at most once a second (so emitting with no webhook costs no
query)."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

from llmkit.core.ids import fresh_hex
from llmkit.platform.store.base import Delivery, PlatformStore, Webhook

EVENT_TYPES = (
    "document.indexed",
    "document.failed",
    "search.performed",
    "job.failed",
    "quota.exceeded",
    "upstream.circuit_open",
    "upstream.recovered",
    "key.created",
    "key.revoked",
)
ALL_EVENTS = "*"
# What POST /api/admin/webhooks/{id}/test sends, to that webhook only (no subscription needed).
TEST_EVENT = "webhook.test"
DIRECTORY_TTL_S = 1.0


def event_body(
    event_id: str, event_type: str, data: Mapping[str, Any], tenant_id: str | None, at: float
) -> bytes:
    """The JSON every delivery of an event carries (Standard Webhooks' `type`, `timestamp`, `data`)."""
    stamp = datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return orjson.dumps(
        {"id": event_id, "type": event_type, "timestamp": stamp, "tenant_id": tenant_id, "data": dict(data)}
    )


def stable_hex(*parts: str) -> str:
    """32 hex digits that are the same for the same parts (an id a rerun derives again)."""
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


def deliveries_of(
    hooks: list[Webhook],
    event_type: str,
    data: Mapping[str, Any],
    tenant_id: str | None,
    now: float,
    event_key: str | None = None,
) -> list[Delivery]:
    """One outbox row per webhook for an event (the same body for each). With an `event_key` (what makes
    the event itself, e.g. the job it reports) the event and message ids derive from it, so an event a
    rerun emits again (a job run again after a crash) is the same outbox row, stored once."""
    if event_key is None:
        event_id = f"evt_{fresh_hex()}"
        message_ids = [f"msg_{fresh_hex()}" for _ in hooks]
    else:
        event_id = f"evt_{stable_hex(event_type, event_key)}"
        message_ids = [f"msg_{stable_hex(event_id, hook.id)}" for hook in hooks]
    body = event_body(event_id, event_type, data, tenant_id, now)
    return [
        Delivery(
            id=message_id,
            webhook_id=hook.id,
            event_id=event_id,
            event_type=event_type,
            payload=body,
            tenant_id=tenant_id,
            next_at=now,
            created_at=now,
        )
        for hook, message_id in zip(hooks, message_ids, strict=True)
    ]


class WebhookDirectory:
    """Every webhook, as the store had them at most `ttl` seconds ago (concurrent misses share one read);
    `forget()` after a change made here, other replicas see it within `ttl`."""

    def __init__(
        self, store: PlatformStore, ttl: float = DIRECTORY_TTL_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.store = store
        self.ttl = ttl
        self.clock = clock
        self._hooks: dict[str, Webhook] = {}
        self._read_at: float | None = None
        self._reading: asyncio.Future[dict[str, Webhook]] | None = None

    def fresh(self) -> dict[str, Webhook] | None:
        """The webhooks by id, if read within `ttl` (no await needed)."""
        if self._read_at is not None and self.clock() - self._read_at < self.ttl:
            return self._hooks
        return None

    async def by_id(self) -> dict[str, Webhook]:
        """The webhooks by id (one store read when the last is older than `ttl`)."""
        hooks = self.fresh()
        if hooks is not None:
            return hooks
        if self._reading is None:
            self._reading = asyncio.ensure_future(self._read())
            self._reading.add_done_callback(self._read_done)
        return await asyncio.shield(self._reading)

    def _read_done(self, future: asyncio.Future[dict[str, Webhook]]) -> None:
        self._reading = None
        if not future.cancelled():
            future.exception()  # retrieved: a failed read is raised to its waiters, never logged as lost

    async def _read(self) -> dict[str, Webhook]:
        started = self.clock()
        hooks = {h.id: h for h in await self.store.webhooks()}
        self._hooks, self._read_at = hooks, started
        return hooks

    async def wanting(self, event_type: str, tenant_id: str | None) -> list[Webhook]:
        """The enabled webhooks that take this event."""
        return [h for h in (await self.by_id()).values() if h.wants(event_type, tenant_id)]

    def forget(self) -> None:
        """Read again on the next use (a webhook changed)."""
        self._read_at = None
