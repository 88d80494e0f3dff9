"""The webhook statements both stores run, and rows to Webhook / Delivery dataclasses.

Events wait in an outbox (`webhook_outbox`, one row per event and webhook) written by whoever emits them,
so a crash or a restart loses none. A delivery worker leases a batch of due rows (one UPDATE; PostgreSQL's
skips rows another replica's claim locked, so two replicas never send one row), sends each, and records
the attempt in `webhook_attempts` (the delivery log) and the row's new state in one transaction, only while
its lease holds. A worker that dies leaves its rows pending with a lease that runs out: they are due again.
Parameters are written `$1, $2, ...` as in `migrations.py`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from llmkit.platform.store.base import Delivery, DeliveryAttempt, Webhook

DELIVERY_STATES = ("pending", "delivered", "failed")

MIGRATION = (
    """CREATE TABLE webhooks (
        id TEXT PRIMARY KEY,
        tenant_id TEXT,
        url TEXT NOT NULL,
        description TEXT NOT NULL,
        events TEXT NOT NULL,
        secret TEXT NOT NULL,
        previous_secret TEXT,
        previous_until DOUBLE PRECISION,
        disabled_at DOUBLE PRECISION,
        disabled_reason TEXT,
        created_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL
    )""",
    "CREATE INDEX webhooks_tenant ON webhooks (tenant_id, created_at)",
    """CREATE TABLE webhook_outbox (
        id TEXT PRIMARY KEY,
        webhook_id TEXT NOT NULL,
        event_id TEXT NOT NULL,
        event_type TEXT NOT NULL,
        payload TEXT NOT NULL,
        tenant_id TEXT,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        next_at DOUBLE PRECISION NOT NULL,
        lease_until DOUBLE PRECISION,
        worker TEXT,
        last_status INTEGER,
        last_error TEXT,
        created_at DOUBLE PRECISION NOT NULL,
        finished_at DOUBLE PRECISION
    )""",
    "CREATE INDEX webhook_outbox_due ON webhook_outbox (state, next_at)",
    "CREATE INDEX webhook_outbox_webhook ON webhook_outbox (webhook_id, created_at)",
    """CREATE TABLE webhook_attempts (
        delivery_id TEXT NOT NULL,
        webhook_id TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        attempted_at DOUBLE PRECISION NOT NULL,
        status INTEGER,
        duration_ms DOUBLE PRECISION NOT NULL,
        error TEXT,
        PRIMARY KEY (delivery_id, attempt)
    )""",
    "CREATE INDEX webhook_attempts_webhook ON webhook_attempts (webhook_id, attempted_at)",
)

_HOOK_COLUMNS = (
    "id, tenant_id, url, description, events, secret, previous_secret, previous_until, disabled_at, "
    "disabled_reason, created_at, updated_at"
)
INSERT_WEBHOOK = f"""INSERT INTO webhooks ({_HOOK_COLUMNS})
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"""
SELECT_WEBHOOK = f"SELECT {_HOOK_COLUMNS} FROM webhooks WHERE id = $1"
SELECT_TENANT_WEBHOOK = f"SELECT {_HOOK_COLUMNS} FROM webhooks WHERE id = $1 AND tenant_id = $2"
SELECT_WEBHOOKS = f"SELECT {_HOOK_COLUMNS} FROM webhooks ORDER BY created_at, id"
SELECT_TENANT_WEBHOOKS = f"SELECT {_HOOK_COLUMNS} FROM webhooks WHERE tenant_id = $1 ORDER BY created_at, id"
DELETE_WEBHOOK = "DELETE FROM webhooks WHERE id = $1"
DELETE_TENANT_WEBHOOK = "DELETE FROM webhooks WHERE id = $1 AND tenant_id = $2"
DELETE_WEBHOOK_OUTBOX = "DELETE FROM webhook_outbox WHERE webhook_id = $1"
DELETE_WEBHOOK_ATTEMPTS = "DELETE FROM webhook_attempts WHERE webhook_id = $1"
ROTATE_WEBHOOK = """UPDATE webhooks SET previous_secret = secret, previous_until = $3, secret = $2,
    updated_at = $4 WHERE id = $1"""
ROTATE_TENANT_WEBHOOK = """UPDATE webhooks SET previous_secret = secret, previous_until = $3, secret = $2,
    updated_at = $4 WHERE id = $1 AND tenant_id = $5"""
DISABLE_WEBHOOK = """UPDATE webhooks SET disabled_at = coalesce(disabled_at, $3),
    disabled_reason = coalesce(disabled_reason, $2), updated_at = $3 WHERE id = $1"""
# A deleted tenant's webhooks go with it (the ones of every tenant stay).
DELETE_TENANT_OUTBOX = """DELETE FROM webhook_outbox
    WHERE webhook_id IN (SELECT id FROM webhooks WHERE tenant_id = $1)"""
DELETE_TENANT_ATTEMPTS = """DELETE FROM webhook_attempts
    WHERE webhook_id IN (SELECT id FROM webhooks WHERE tenant_id = $1)"""
DELETE_TENANT_WEBHOOKS = "DELETE FROM webhooks WHERE tenant_id = $1"

_COLUMNS = (
    "id, webhook_id, event_id, event_type, payload, tenant_id, state, attempts, next_at, lease_until, "
    "worker, last_status, last_error, created_at, finished_at"
)
# A message already queued (the same stable id: an event emitted again by a rerun) stays as it is.
INSERT_DELIVERY = f"""INSERT INTO webhook_outbox ({_COLUMNS})
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
    ON CONFLICT (id) DO NOTHING"""
_DUE = "state = 'pending' AND next_at <= $1 AND (lease_until IS NULL OR lease_until < $1)"
# A read first, so an idle worker's polls never take the write lock.
ANY_DELIVERY_DUE = f"SELECT 1 FROM webhook_outbox WHERE {_DUE} LIMIT 1"
_CLAIM = f"""UPDATE webhook_outbox SET lease_until = $2, worker = $3
    WHERE id IN (
        SELECT id FROM webhook_outbox WHERE {_DUE} ORDER BY next_at, created_at, id LIMIT $4{{lock}}
    )
    RETURNING {_COLUMNS}"""
CLAIM_DELIVERIES_SQLITE = _CLAIM.format(lock="")
CLAIM_DELIVERIES_POSTGRES = _CLAIM.format(lock=" FOR UPDATE SKIP LOCKED")
# The holder's record only: a worker whose lease ran out and was taken over changes nothing.
RECORD_DELIVERY = """UPDATE webhook_outbox SET state = $3, attempts = attempts + 1, next_at = $4,
        lease_until = NULL, worker = NULL, last_status = $5, last_error = $6, finished_at = $7
    WHERE id = $1 AND worker = $2 AND state = 'pending'"""
_ATTEMPT_COLUMNS = "delivery_id, webhook_id, attempt, attempted_at, status, duration_ms, error"
INSERT_ATTEMPT = f"INSERT INTO webhook_attempts ({_ATTEMPT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"
SELECT_DELIVERIES = f"""SELECT {_COLUMNS} FROM webhook_outbox WHERE webhook_id = $1
    ORDER BY created_at DESC, id DESC LIMIT $2 OFFSET $3"""


def attempts_statement(deliveries: int) -> str:
    """The attempts of `deliveries` deliveries ($1...), oldest first."""
    marks = ", ".join(f"${n}" for n in range(1, deliveries + 1))
    return f"""SELECT {_ATTEMPT_COLUMNS} FROM webhook_attempts
    WHERE delivery_id IN ({marks}) ORDER BY attempted_at, delivery_id, attempt"""


def webhook_row(hook: Webhook) -> tuple[Any, ...]:
    """A webhook as INSERT_WEBHOOK's parameters (events as a JSON list)."""
    return (
        hook.id,
        hook.tenant_id,
        hook.url,
        hook.description,
        json.dumps(list(hook.events)),
        hook.secret,
        hook.previous_secret,
        hook.previous_until,
        hook.disabled_at,
        hook.disabled_reason,
        hook.created_at,
        hook.updated_at,
    )


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def webhook_of(row: Sequence[Any]) -> Webhook:
    """A row of _HOOK_COLUMNS as a Webhook."""
    return Webhook(
        id=row[0],
        tenant_id=row[1],
        url=row[2],
        description=row[3],
        events=tuple(json.loads(row[4])),
        secret=row[5],
        previous_secret=row[6],
        previous_until=_float(row[7]),
        disabled_at=_float(row[8]),
        disabled_reason=row[9],
        created_at=float(row[10]),
        updated_at=float(row[11]),
    )


def delivery_row(d: Delivery) -> tuple[Any, ...]:
    """A delivery as INSERT_DELIVERY's parameters (the payload as UTF-8 text)."""
    return (
        d.id,
        d.webhook_id,
        d.event_id,
        d.event_type,
        d.payload.decode("utf-8"),
        d.tenant_id,
        d.state,
        d.attempts,
        d.next_at,
        d.lease_until,
        d.worker,
        d.last_status,
        d.last_error,
        d.created_at,
        d.finished_at,
    )


def delivery_of(row: Sequence[Any]) -> Delivery:
    """A row of _COLUMNS as a Delivery."""
    return Delivery(
        id=row[0],
        webhook_id=row[1],
        event_id=row[2],
        event_type=row[3],
        payload=row[4].encode("utf-8"),
        tenant_id=row[5],
        state=row[6],
        attempts=int(row[7]),
        next_at=float(row[8]),
        lease_until=_float(row[9]),
        worker=row[10],
        last_status=None if row[11] is None else int(row[11]),
        last_error=row[12],
        created_at=float(row[13]),
        finished_at=_float(row[14]),
    )


def claimed(rows: Sequence[Sequence[Any]]) -> list[Delivery]:
    """A claim's rows, oldest due first (RETURNING keeps no order)."""
    return sorted((delivery_of(r) for r in rows), key=lambda d: (d.next_at, d.created_at, d.id))


def attempt_row(a: DeliveryAttempt) -> tuple[Any, ...]:
    """An attempt as INSERT_ATTEMPT's parameters."""
    return (a.delivery_id, a.webhook_id, a.attempt, a.at, a.status, a.duration_ms, a.error)


def attempt_of(row: Sequence[Any]) -> DeliveryAttempt:
    """A row of attempts_statement as a DeliveryAttempt."""
    return DeliveryAttempt(
        delivery_id=row[0],
        webhook_id=row[1],
        attempt=int(row[2]),
        at=float(row[3]),
        status=None if row[4] is None else int(row[4]),
        duration_ms=float(row[5]),
        error=row[6],
    )
