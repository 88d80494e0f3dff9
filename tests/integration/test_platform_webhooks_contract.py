"""One contract for webhooks and their outbox on every platform store: CRUD, rotation, batch claims with a
lease, the delivery log, tenant scoping."""

from __future__ import annotations

import asyncio

import pytest

from llmkit.platform.quota_types import Quotas
from llmkit.platform.store import platform_store_from_url
from llmkit.platform.store.base import (
    ApiKey,
    Delivery,
    DeliveryAttempt,
    PlatformStore,
    StoreConflict,
    Tenant,
    Webhook,
)
from llmkit.platform.store.migrations import LATEST


def hook(hid: str = "wh1", tenant_id: str | None = "t1", created: float = 100.0, **kw: object) -> Webhook:
    fields: dict[str, object] = {"url": "https://example.com/hook", "events": ("key.created",)}
    fields.update(kw)
    return Webhook(
        id=hid, secret=f"whsec_{hid}", tenant_id=tenant_id, created_at=created, updated_at=created, **fields
    )  # type: ignore[arg-type]


def delivery(did: str, webhook_id: str = "wh1", created: float = 100.0, **kw: object) -> Delivery:
    fields: dict[str, object] = {"next_at": created, "payload": '{"type": "key.created", "é": 1}'.encode()}
    fields.update(kw)
    return Delivery(
        id=did,
        webhook_id=webhook_id,
        event_id=f"evt_{did}",
        event_type="key.created",
        created_at=created,
        **fields,
    )  # type: ignore[arg-type]


def attempt(
    did: str, n: int, at: float, status: int | None = 200, error: str | None = None
) -> DeliveryAttempt:
    return DeliveryAttempt(did, "wh1", n, at, status, 12.5, error)


async def test_the_schema_is_at_the_latest_version(store: PlatformStore) -> None:
    assert await store.schema_version() == LATEST


async def test_webhooks_round_trip_and_stay_in_their_tenant(store: PlatformStore) -> None:
    await store.add_webhook(hook("wh1", "t1", 100.0, events=("*",), description="all of t1"))
    await store.add_webhook(hook("wh2", None, 101.0))
    await store.add_webhook(hook("wh3", "t2", 102.0))
    with pytest.raises(StoreConflict):
        await store.add_webhook(hook("wh1"))
    got = await store.webhook("wh1")
    assert got == hook("wh1", "t1", 100.0, events=("*",), description="all of t1")
    assert got is not None and got.secret == "whsec_wh1" and "whsec" not in repr(got)
    assert [h.id for h in await store.webhooks()] == ["wh1", "wh2", "wh3"]
    assert [h.id for h in await store.webhooks("t1")] == ["wh1"]  # not the every-tenant one
    assert await store.webhook("wh1", "t2") is None and await store.webhook("wh2", "t1") is None
    assert not await store.delete_webhook("wh1", tenant_id="t2")
    assert await store.delete_webhook("wh1", tenant_id="t1")
    assert not await store.delete_webhook("wh1")
    assert await store.delete_webhook("wh2")
    assert [h.id for h in await store.webhooks()] == ["wh3"]


async def test_rotation_keeps_the_previous_secret_until_its_time(store: PlatformStore) -> None:
    await store.add_webhook(hook())
    assert await store.rotate_webhook_secret("wh1", "whsec_new", 500.0, 200.0, tenant_id="t2") is None
    rotated = await store.rotate_webhook_secret("wh1", "whsec_new", 500.0, 200.0, tenant_id="t1")
    assert rotated is not None
    assert (rotated.secret, rotated.previous_secret, rotated.previous_until) == (
        "whsec_new",
        "whsec_wh1",
        500.0,
    )
    assert rotated.secrets(499.0) == ("whsec_new", "whsec_wh1") and rotated.secrets(500.0) == ("whsec_new",)
    assert await store.rotate_webhook_secret("missing", "whsec_x", 500.0, 200.0) is None


async def test_disabling_keeps_the_first_reason(store: PlatformStore) -> None:
    await store.add_webhook(hook())
    assert await store.disable_webhook("wh1", "410 Gone", 300.0)
    assert await store.disable_webhook("wh1", "later", 400.0)
    got = await store.webhook("wh1")
    assert got is not None and (got.disabled_at, got.disabled_reason) == (300.0, "410 Gone")
    assert not got.wants("key.created", "t1")
    assert not await store.disable_webhook("missing", "x", 1.0)


async def test_claims_lease_batches_of_due_deliveries_oldest_first(store: PlatformStore) -> None:
    await store.add_webhook(hook())
    await store.add_deliveries([delivery(f"d{i}", created=100.0 + i) for i in range(5)])
    await store.add_deliveries([delivery("late", created=90.0, next_at=1000.0)])
    first = await store.claim_deliveries("w1", now=200.0, lease=30.0, limit=3)
    assert [d.id for d in first] == ["d0", "d1", "d2"]
    assert all((d.worker, d.lease_until, d.state, d.attempts) == ("w1", 230.0, "pending", 0) for d in first)
    assert first[0].payload == '{"type": "key.created", "é": 1}'.encode()
    second = await store.claim_deliveries("w2", now=200.0, lease=30.0, limit=10)
    assert [d.id for d in second] == ["d3", "d4"]  # never a leased one, nor one not due
    assert await store.claim_deliveries("w3", now=229.0, lease=30.0, limit=10) == []
    # w1 died: its leases run out and the rows are due again.
    again = await store.claim_deliveries("w3", now=231.0, lease=30.0, limit=10)
    assert [d.id for d in again] == ["d0", "d1", "d2", "d3", "d4"]
    assert await store.claim_deliveries("w3", now=2000.0, lease=30.0, limit=0) == []


async def test_an_attempt_is_recorded_only_by_the_holder_with_the_log(store: PlatformStore) -> None:
    await store.add_webhook(hook())
    await store.add_deliveries([delivery("d1"), delivery("d2", created=101.0)])
    await store.claim_deliveries("w1", now=200.0, lease=100.0, limit=10)
    assert not await store.record_attempt(attempt("d1", 1, 201.0), "w2", "delivered")
    assert await store.record_attempt(attempt("d1", 1, 201.0, 503, "HTTP 503"), "w1", "pending", 260.0)
    retry = (await store.deliveries("wh1"))[1]
    assert (retry.id, retry.state, retry.attempts, retry.next_at, retry.worker) == (
        "d1",
        "pending",
        1,
        260.0,
        None,
    )
    assert (retry.last_status, retry.last_error, retry.finished_at) == (503, "HTTP 503", None)
    assert [d.id for d in await store.claim_deliveries("w2", now=250.0, lease=30.0, limit=10)] == []
    assert [d.id for d in await store.claim_deliveries("w2", now=260.0, lease=30.0, limit=10)] == ["d1"]
    assert not await store.record_attempt(attempt("d1", 2, 261.0), "w1", "delivered")  # w1 lost it
    assert await store.record_attempt(attempt("d1", 2, 261.0), "w2", "delivered")
    assert await store.record_attempt(attempt("d2", 1, 205.0, None, "timeout"), "w1", "failed")
    assert not await store.record_attempt(attempt("d1", 3, 262.0), "w2", "delivered")  # done once
    rows = {d.id: d for d in await store.deliveries("wh1")}
    assert (rows["d1"].state, rows["d1"].attempts, rows["d1"].finished_at) == ("delivered", 2, 261.0)
    assert (rows["d2"].state, rows["d2"].last_error) == ("failed", "timeout")
    assert [d.id for d in await store.deliveries("wh1", limit=1)] == ["d2"]  # newest first
    log = await store.delivery_attempts(["d1", "d2"])
    assert [(a.delivery_id, a.attempt, a.status) for a in log] == [
        ("d1", 1, 503),
        ("d2", 1, None),
        ("d1", 2, 200),
    ]
    assert log[0] == attempt("d1", 1, 201.0, 503, "HTTP 503")
    assert await store.delivery_attempts([]) == []
    assert await store.claim_deliveries("w3", now=10_000.0, lease=30.0, limit=10) == []


async def test_deleting_a_webhook_or_its_tenant_drops_its_outbox(store: PlatformStore) -> None:
    now = 100.0
    await store.add_tenant(Tenant("t1", "Acme", Quotas(), now, now))
    await store.add_webhook(hook("wh1", "t1"))
    await store.add_webhook(hook("wh2", None))
    await store.add_deliveries([delivery("d1", "wh1"), delivery("d2", "wh2")])
    await store.claim_deliveries("w1", now=200.0, lease=30.0, limit=10)
    await store.record_attempt(DeliveryAttempt("d2", "wh2", 1, 201.0, 500, 1.0), "w1", "pending", 201.0)
    assert await store.delete_tenant("t1", 300.0) == 0
    assert [h.id for h in await store.webhooks()] == ["wh2"]
    assert await store.deliveries("wh1") == []
    assert await store.delete_webhook("wh2")
    assert await store.deliveries("wh2") == [] and await store.delivery_attempts(["d2"]) == []


async def test_a_key_and_its_event_are_written_together_or_not_at_all(store: PlatformStore) -> None:
    now = 100.0
    await store.add_tenant(Tenant("t1", "Acme", Quotas(), now, now))
    await store.add_webhook(hook("wh1", "t1"))
    key = ApiKey(
        id="k1", secret_hash="ab" * 32, name="k", description="", tenant_id="t1", scopes=(), created_at=now
    )
    await store.add_key(key, [delivery("created")])
    assert [d.id for d in await store.deliveries("wh1")] == ["created"]
    with pytest.raises(StoreConflict):  # the key's id is taken: its event is not queued either
        await store.add_key(key, [delivery("again")])
    assert await store.revoke_key("nope", 200.0, [delivery("nothing")]) is None
    revoked = await store.revoke_key("k1", 200.0, [delivery("revoked")])
    assert revoked is not None and revoked.revoked_at == 200.0
    assert sorted(d.id for d in await store.deliveries("wh1")) == ["created", "revoked"]


async def test_concurrent_claims_from_two_stores_never_share_a_delivery(store_url: str) -> None:
    one, two = platform_store_from_url(store_url), platform_store_from_url(store_url)
    await one.open()
    await two.open()
    try:
        await one.add_webhook(hook())
        await one.add_deliveries([delivery(f"d{i:03}", created=100.0 + i) for i in range(60)])
        seen: list[str] = []

        async def drain(s: PlatformStore, worker: str) -> None:
            for _ in range(200):
                got = await s.claim_deliveries(worker, now=500.0, lease=60.0, limit=7)
                seen.extend(d.id for d in got)
                if len(set(seen)) == 60:
                    return
                await asyncio.sleep(0)

        await asyncio.gather(drain(one, "w1"), drain(two, "w2"), drain(one, "w3"))
        assert sorted(seen) == [f"d{i:03}" for i in range(60)]  # each once
    finally:
        await one.close()
        await two.close()
