"""The delivery worker against a real receiver: signed once per secret, retried on 5xx / 429 / timeouts /
refused connections with Retry-After honoured, failed at once on other 4xx, a 410 disables the webhook."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from llmkit.platform.store import platform_store_from_url
from llmkit.platform.store.base import Delivery, PlatformStore, Webhook
from llmkit.platform.webhooks.delivery import DeliveryWorker, backoff, outcome_of, retry_after
from llmkit.platform.webhooks.events import WebhookDirectory, deliveries_of
from llmkit.platform.webhooks.signing import new_secret
from tests.integration.webhook_receiver import receiver


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[PlatformStore]:
    store = platform_store_from_url(f"sqlite:///{tmp_path}/platform.db")
    await store.open()
    yield store
    await store.close()


def worker(store: PlatformStore, **kw: object) -> DeliveryWorker:
    settings: dict[str, object] = {"backoff_base": 0.01, "backoff_max": 0.05, "poll_interval": 0.02}
    settings.update(kw)
    return DeliveryWorker(store, WebhookDirectory(store, ttl=0.0), **settings)  # type: ignore[arg-type]


async def queue(
    store: PlatformStore, hook: Webhook, event: str = "key.created", n: int = 1
) -> list[Delivery]:
    made = [d for i in range(n) for d in deliveries_of([hook], event, {"n": i}, hook.tenant_id, 1.0e9)]
    # Due now, whatever the clock said when they were made.
    await store.add_deliveries(made)
    return made


async def settled(store: PlatformStore, webhook_id: str, count: int) -> list[Delivery]:
    while True:
        rows = await store.deliveries(webhook_id, limit=500)
        if len(rows) >= count and all(d.state != "pending" for d in rows):
            return rows
        await asyncio.sleep(0.01)


async def add_hook(store: PlatformStore, url: str, **kw: object) -> Webhook:
    hook = Webhook(id="wh1", url=url, events=("*",), secret=new_secret(), tenant_id="t1", **kw)  # type: ignore[arg-type]
    await store.add_webhook(hook)
    return hook


async def test_a_burst_is_delivered_once_each_and_signed(sqlite_store: PlatformStore) -> None:
    async with receiver() as got:
        hook = await add_hook(sqlite_store, got.url)
        got.secrets = [hook.secret]
        made = await queue(sqlite_store, hook, n=150)
        w = worker(sqlite_store)
        w.start()
        try:
            rows = await settled(sqlite_store, "wh1", 150)
        finally:
            await w.close()
    assert {d.state for d in rows} == {"delivered"} and all(d.attempts == 1 for d in rows)
    assert all(r.verified for r in got.received)
    assert sorted(r.headers["webhook-id"] for r in got.received) == sorted(d.id for d in made)
    first = got.received[0]
    assert first.headers["Content-Type"] == "application/json"
    assert first.headers["User-Agent"].startswith("llmkit-webhooks/")
    assert first.event["type"] == "key.created" and first.event["tenant_id"] == "t1"
    log = await sqlite_store.delivery_attempts([d.id for d in rows])
    assert len(log) == 150 and {a.status for a in log} == {200} and all(a.duration_ms >= 0 for a in log)
    assert w.counts["delivered"] == 150


async def test_5xx_and_429_are_retried_with_the_same_id_honouring_retry_after(
    sqlite_store: PlatformStore,
) -> None:
    async with receiver(script=[(503, {}), (429, {"Retry-After": "0"}), (500, {})]) as got:
        hook = await add_hook(sqlite_store, got.url)
        got.secrets = [hook.secret]
        await queue(sqlite_store, hook)
        w = worker(sqlite_store)
        w.start()
        try:
            (row,) = await settled(sqlite_store, "wh1", 1)
        finally:
            await w.close()
    assert (row.state, row.attempts, row.last_status, row.last_error) == ("delivered", 4, 200, None)
    assert len({r.headers["webhook-id"] for r in got.received}) == 1 and all(r.verified for r in got.received)
    log = await sqlite_store.delivery_attempts([row.id])
    assert [(a.attempt, a.status, a.error) for a in log] == [
        (1, 503, "HTTP 503"),
        (2, 429, "HTTP 429"),
        (3, 500, "HTTP 500"),
        (4, 200, None),
    ]


async def test_a_long_retry_after_waits_that_long(sqlite_store: PlatformStore) -> None:
    async with receiver(script=[(429, {"Retry-After": "600"})]) as got:
        hook = await add_hook(sqlite_store, got.url)
        await queue(sqlite_store, hook)
        w = worker(sqlite_store)
        w.start()
        try:
            while not (rows := await sqlite_store.deliveries("wh1")) or rows[0].attempts == 0:
                await asyncio.sleep(0.01)
        finally:
            await w.close()
    (log,) = await sqlite_store.delivery_attempts([rows[0].id])
    assert rows[0].state == "pending" and rows[0].next_at >= log.at + 600


async def test_attempts_run_out_and_a_4xx_is_not_retried(sqlite_store: PlatformStore) -> None:
    async with receiver(script=[(502, {})] * 3 + [(400, {})]) as got:
        hook = await add_hook(sqlite_store, got.url)
        await queue(sqlite_store, hook)
        w = worker(sqlite_store, max_attempts=3)
        w.start()
        try:
            (row,) = await settled(sqlite_store, "wh1", 1)
            assert (row.state, row.attempts, row.last_status) == ("failed", 3, 502)
            await queue(sqlite_store, hook, "key.revoked")
            rows = await settled(sqlite_store, "wh1", 2)
        finally:
            await w.close()
    bad = next(d for d in rows if d.event_type == "key.revoked")
    assert (bad.state, bad.attempts, bad.last_status) == ("failed", 1, 400)
    assert bad.last_error is not None and "not retried" in bad.last_error
    assert len(got.received) == 4


async def test_a_410_disables_the_webhook(sqlite_store: PlatformStore) -> None:
    async with receiver(script=[(410, {})]) as got:
        hook = await add_hook(sqlite_store, got.url)
        await queue(sqlite_store, hook)
        w = worker(sqlite_store)
        w.start()
        try:
            (row,) = await settled(sqlite_store, "wh1", 1)
            assert (row.state, row.last_status) == ("failed", 410)
            disabled = await sqlite_store.webhook("wh1")
            assert disabled is not None and disabled.disabled_at is not None
            assert disabled.disabled_reason == "the receiver answered 410 Gone"
            # What was queued before it was disabled fails without a POST.
            await queue(sqlite_store, hook)
            rows = await settled(sqlite_store, "wh1", 2)
        finally:
            await w.close()
    assert len(got.received) == 1
    later = next(d for d in rows if d.id != row.id)
    assert later.state == "failed" and later.last_error is not None and "disabled" in later.last_error
    assert w.counts["disabled"] == 1


async def test_timeouts_and_refused_connections_are_retried(sqlite_store: PlatformStore) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    hook = await add_hook(sqlite_store, f"http://127.0.0.1:{closed_port}/hook")
    await queue(sqlite_store, hook)
    w = worker(sqlite_store, max_attempts=2)
    w.start()
    try:
        (row,) = await settled(sqlite_store, "wh1", 1)
    finally:
        await w.close()
    assert (row.state, row.attempts, row.last_status) == ("failed", 2, None)
    assert row.last_error is not None and row.last_error.startswith("connection failed")

    async with receiver(delay=5.0) as got:
        slow = Webhook(id="wh2", url=got.url, events=("*",), secret=new_secret())
        await sqlite_store.add_webhook(slow)
        await queue(sqlite_store, slow)
        w = worker(sqlite_store, max_attempts=2, timeout_s=0.1)
        w.start()
        try:
            (row,) = await settled(sqlite_store, "wh2", 1)
        finally:
            await w.close()
    assert (row.state, row.attempts) == ("failed", 2)
    assert row.last_error == "timed out after 0.1 s"


async def test_a_rotated_webhook_signs_with_both_secrets(sqlite_store: PlatformStore) -> None:
    async with receiver() as got:
        hook = await add_hook(sqlite_store, got.url)
        rotated = await sqlite_store.rotate_webhook_secret("wh1", new_secret(), 4.0e9, 1.0)
        assert rotated is not None
        got.secrets = [hook.secret, rotated.secret]  # each must verify it
        await queue(sqlite_store, rotated)
        w = worker(sqlite_store)
        w.start()
        try:
            await settled(sqlite_store, "wh1", 1)
        finally:
            await w.close()
    (only,) = got.received
    assert only.verified and len(only.headers["webhook-signature"].split(" ")) == 2


async def test_a_target_that_became_refused_is_not_contacted(sqlite_store: PlatformStore) -> None:
    await add_hook(sqlite_store, "http://169.254.169.254/latest")
    hook = await sqlite_store.webhook("wh1")
    assert hook is not None
    await queue(sqlite_store, hook)
    w = worker(sqlite_store)
    w.start()
    try:
        (row,) = await settled(sqlite_store, "wh1", 1)
    finally:
        await w.close()
    assert (row.state, row.attempts) == ("failed", 1)
    assert row.last_error is not None and "metadata" in row.last_error


def test_backoff_grows_with_jitter_and_retry_after_reads_both_forms() -> None:
    assert backoff(1, 2.0, 100.0, rng=lambda: 1.0) == 2.0
    assert backoff(3, 2.0, 100.0, rng=lambda: 0.0) == 4.0
    assert backoff(30, 2.0, 100.0, rng=lambda: 1.0) == 100.0
    assert retry_after("120", 0.0) == 120.0
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT", 1445412470.0) == 10.0
    assert retry_after("soon", 0.0) is None and retry_after(None, 0.0) is None
    assert outcome_of(204, None).retry is False and outcome_of(503, 5.0).wait == 5.0
    assert outcome_of(404, None).retry is False and outcome_of(429, None).retry is True
