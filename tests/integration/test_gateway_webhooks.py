"""/api/admin/webhooks through the gateway, delivering to a real receiver on 127.0.0.1 that verifies
every signature: the seed's body, field errors, test events, key / job / quota events, tenant scoping,
rotation, the delivery log."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from llmkit.platform.service import PLATFORM_KEY
from llmkit.platform.store.base import Job
from tests.integration.test_gateway_platform import (
    AS_ADMIN,
    Client,
    MakeClient,
    bearer,
    chat,
    key,
    start,
    tenant,
)
from tests.integration.webhook_receiver import Receiver, receiver


async def create(client: Client, headers: dict[str, str] | None = None, **body: Any) -> dict[str, Any]:
    made = await client.post("/api/admin/webhooks", json=body, headers=headers or AS_ADMIN)
    assert made.status == 201, await made.text()
    answer: dict[str, Any] = await made.json()
    return answer


async def delivered(client: Client, webhook_id: str, count: int) -> list[dict[str, Any]]:
    """The webhook's deliveries once `count` of them are done (delivered or failed)."""
    while True:
        got = await client.get(f"/api/admin/webhooks/{webhook_id}/deliveries", headers=AS_ADMIN)
        assert got.status == 200, await got.text()
        rows: list[dict[str, Any]] = (await got.json())["deliveries"]
        if len([d for d in rows if d["state"] != "pending"]) >= count:
            return rows
        await asyncio.sleep(0.02)


def events(got: Receiver) -> list[str]:
    return [r.event["type"] for r in got.received]


async def test_the_seed_body_a_test_event_and_the_delivery_log(
    aiohttp_client: MakeClient, tmp_path: Path
) -> None:
    client = await start(aiohttp_client, tmp_path)
    async with receiver() as got:
        made = await create(
            client, url=got.url, secret="webhook_secret", events=["document.indexed", "search.performed"]
        )
        got.secrets = ["webhook_secret"]
        assert made["secret"] == "webhook_secret" and made["status"] == "active" and made["tenant_id"] is None
        assert made["events"] == ["document.indexed", "search.performed"] and made["id"].startswith("wh_")
        listed = await (await client.get("/api/admin/webhooks", headers=AS_ADMIN)).json()
        assert [h["id"] for h in listed["webhooks"]] == [made["id"]]
        assert "secret" not in listed["webhooks"][0] and "webhook_secret" not in str(listed)

        test = await client.post(f"/api/admin/webhooks/{made['id']}/test", headers=AS_ADMIN)
        assert test.status == 202, await test.text()
        queued = await test.json()
        (row,) = await delivered(client, made["id"], 1)
        (only,) = await got.wait_for(1)
    assert only.verified and only.event["type"] == "webhook.test"
    assert only.headers["webhook-id"] == queued["delivery_id"] == row["id"]
    assert only.event["id"] == queued["event_id"] and only.event["data"]["webhook_id"] == made["id"]
    assert (row["state"], row["attempts"], row["last_status"]) == ("delivered", 1, 200)
    assert [(a["attempt"], a["status"], a["error"]) for a in row["log"]] == [(1, 200, None)]
    assert row["log"][0]["at"].endswith("Z") and row["log"][0]["duration_ms"] >= 0


async def test_a_generated_secret_signs_and_is_shown_once(aiohttp_client: MakeClient, tmp_path: Path) -> None:
    client = await start(aiohttp_client, tmp_path)
    async with receiver() as got:
        made = await create(client, url=got.url, events=["*"])
        assert made["secret"].startswith("whsec_")
        got.secrets = [made["secret"]]
        await client.post(f"/api/admin/webhooks/{made['id']}/test", headers=AS_ADMIN)
        (only,) = await got.wait_for(1)
    assert only.verified
    text = await (await client.get("/api/admin/webhooks", headers=AS_ADMIN)).text()
    assert made["secret"] not in text


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"events": ["*"]}, "url", "required"),
        ({"url": "ftp://example.com/", "events": ["*"]}, "url", "http"),
        ({"url": "http://169.254.169.254/latest", "events": ["*"]}, "url", "metadata"),
        ({"url": "http://10.1.2.3/hook", "events": ["*"]}, "url", "gateway.webhooks_allow_private"),
        ({"url": "http://no-such-host.invalid/", "events": ["*"]}, "url", "does not resolve"),
        ({"url": "http://127.0.0.1:1/"}, "events", "required"),
        ({"url": "http://127.0.0.1:1/", "events": "key.created"}, "events", "list"),
        ({"url": "http://127.0.0.1:1/", "events": ["key.created", "foo.bar"]}, "events", "'foo.bar'"),
        ({"url": "http://127.0.0.1:1/", "events": ["*"], "secret": "short"}, "secret", "8 to 256"),
        ({"url": "http://127.0.0.1:1/", "events": ["*"], "secret": "whsec_!!"}, "secret", "base64"),
        ({"url": "http://127.0.0.1:1/", "events": ["*"], "secret": 12}, "secret", "string"),
        ({"url": "http://127.0.0.1:1/", "events": ["*"], "tenant_id": "nope"}, "tenant_id", "no tenant"),
        ({"url": "http://127.0.0.1:1/", "events": ["*"], "colour": "red"}, "colour", "unknown field"),
        ({"url": "http://127.0.0.1:1/", "events": ["*"], "description": 5}, "description", "string"),
    ],
)
async def test_bad_bodies_name_the_field(
    aiohttp_client: MakeClient, tmp_path: Path, body: dict[str, Any], field: str, words: str
) -> None:
    client = await start(aiohttp_client, tmp_path)
    got = await client.post("/api/admin/webhooks", json=body, headers=AS_ADMIN)
    assert got.status == 422, await got.text()
    error = (await got.json())["error"]
    assert error["message"].startswith(f"{field}:") and words in error["message"], error


async def test_private_targets_pass_when_allowed(aiohttp_client: MakeClient, tmp_path: Path) -> None:
    client = await start(aiohttp_client, tmp_path, webhooks_allow_private=True)
    await create(client, url="http://10.1.2.3/hook", events=["*"])
    refused = await client.post(
        "/api/admin/webhooks", json={"url": "http://169.254.169.254/", "events": ["*"]}, headers=AS_ADMIN
    )
    assert refused.status == 422


async def test_key_events_reach_the_webhooks_of_their_tenant(
    aiohttp_client: MakeClient, tmp_path: Path
) -> None:
    client = await start(aiohttp_client, tmp_path)
    acme, other = await tenant(client, "Acme"), await tenant(client, "Other")
    async with receiver() as every, receiver() as own:
        all_hook = await create(client, url=every.url, events=["key.created", "key.revoked"])
        acme_hook = await create(client, url=own.url, events=["*"], tenant_id=acme)
        every.secrets, own.secrets = [all_hook["secret"]], [acme_hook["secret"]]
        await key(client, acme)
        await key(client, other)
        listed = await (await client.get("/api/admin/api-keys", headers=AS_ADMIN)).json()
        acme_key = next(k for k in listed["keys"] if k["tenant_id"] == acme)
        revoked = await client.delete(f"/api/admin/api-keys/{acme_key['id']}", headers=AS_ADMIN)
        assert revoked.status == 200
        await every.wait_for(3)
        await own.wait_for(2)
        await delivered(client, all_hook["id"], 3)
    assert sorted(events(every)) == ["key.created", "key.created", "key.revoked"]
    assert events(own) == ["key.created", "key.revoked"] or sorted(events(own)) == [
        "key.created",
        "key.revoked",
    ]
    assert all(r.verified for r in every.received + own.received)
    assert {r.event["tenant_id"] for r in own.received} == {acme}
    created = next(r.event for r in own.received if r.event["type"] == "key.created")
    assert created["data"]["id"] == acme_key["id"] and "key" not in created["data"]
    assert "llk_" + acme_key["id"] + "_" == created["data"]["prefix"]


async def test_a_tenants_admin_sees_and_changes_only_its_webhooks(
    aiohttp_client: MakeClient, tmp_path: Path
) -> None:
    client = await start(aiohttp_client, tmp_path)
    acme, other = await tenant(client, "Acme"), await tenant(client, "Other")
    acme_admin = bearer(await key(client, acme, scopes=["admin"]))
    theirs = await create(client, url="http://127.0.0.1:1/", events=["*"], tenant_id=other)
    platform_wide = await create(client, url="http://127.0.0.1:1/", events=["*"])
    mine = await create(client, acme_admin, url="http://127.0.0.1:1/", events=["job.failed"])
    assert mine["tenant_id"] == acme
    listed = await (await client.get("/api/admin/webhooks", headers=acme_admin)).json()
    assert [h["id"] for h in listed["webhooks"]] == [mine["id"]]
    for hook in (theirs, platform_wide):
        for method, path in (
            ("DELETE", ""),
            ("POST", "/test"),
            ("GET", "/deliveries"),
            ("POST", "/rotate"),
        ):
            got = await client.request(method, f"/api/admin/webhooks/{hook['id']}{path}", headers=acme_admin)
            assert got.status == 404, (method, path)
    forbidden = await client.post(
        "/api/admin/webhooks",
        json={"url": "http://127.0.0.1:1/", "events": ["*"], "tenant_id": other},
        headers=acme_admin,
    )
    assert forbidden.status == 403
    gone = await client.delete(f"/api/admin/webhooks/{mine['id']}", headers=acme_admin)
    assert gone.status == 200 and (await gone.json()) == {"id": mine["id"], "deleted": True}
    assert (await client.delete(f"/api/admin/webhooks/{mine['id']}", headers=AS_ADMIN)).status == 404
    non_admin = bearer(await key(client, acme))
    assert (await client.get("/api/admin/webhooks", headers=non_admin)).status == 403


async def test_rotation_signs_with_both_secrets_for_the_grace_period(
    aiohttp_client: MakeClient, tmp_path: Path
) -> None:
    client = await start(aiohttp_client, tmp_path, webhooks_rotation_grace_s=3600)
    async with receiver() as got:
        made = await create(client, url=got.url, events=["*"])
        rotated = await client.post(f"/api/admin/webhooks/{made['id']}/rotate", headers=AS_ADMIN)
        assert rotated.status == 200, await rotated.text()
        body = await rotated.json()
        assert body["secret"].startswith("whsec_") and body["secret"] != made["secret"]
        assert body["previous_secret_expires_at"] is not None
        got.secrets = [made["secret"], body["secret"]]
        await client.post(f"/api/admin/webhooks/{made['id']}/test", headers=AS_ADMIN)
        (only,) = await got.wait_for(1)
        chosen = await client.post(
            f"/api/admin/webhooks/{made['id']}/rotate", json={"secret": "x"}, headers=AS_ADMIN
        )
        assert chosen.status == 422 and "secret" in (await chosen.json())["error"]["message"]
    assert only.verified and len(only.headers["webhook-signature"].split()) == 2


async def test_a_job_that_fails_for_good_is_an_event(aiohttp_client: MakeClient, tmp_path: Path) -> None:
    client = await start(aiohttp_client, tmp_path)
    acme = await tenant(client, "Acme")
    async with receiver() as got:
        made = await create(client, url=got.url, events=["job.failed"], tenant_id=acme)
        got.secrets = [made["secret"]]
        platform = client.app[PLATFORM_KEY]
        now = time.time()
        job = Job("job_x", acme, "no_such_kind", "doc1", {}, max_attempts=1, run_at=now, created_at=now)
        await platform.store.add_job(job)
        assert platform.jobs is not None
        platform.jobs.wake()
        (only,) = await got.wait_for(1)
    assert only.verified and only.event["type"] == "job.failed" and only.event["tenant_id"] == acme
    data = only.event["data"]
    assert (data["job_id"], data["kind"], data["attempts"]) == ("job_x", "no_such_kind", 1)
    assert "no handler" in data["error"]


async def test_a_tenant_over_its_quota_is_one_event(aiohttp_client: MakeClient, tmp_path: Path) -> None:
    client = await start(aiohttp_client, tmp_path)
    acme = await tenant(client, "Small", rpm=1)
    text = await key(client, acme)
    async with receiver() as got:
        made = await create(client, url=got.url, events=["quota.exceeded"])
        got.secrets = [made["secret"]]
        statuses = [
            (await client.post("/api/chat-optimized", json=chat(f"q {i}"), headers=bearer(text))).status
            for i in range(4)
        ]
        assert statuses == [200, 429, 429, 429]
        await got.wait_for(1)
        await delivered(client, made["id"], 1)
        await client.post(f"/api/admin/webhooks/{made['id']}/test", headers=AS_ADMIN)
        await got.wait_for(2)
    assert [r.event["type"] for r in got.received] == ["quota.exceeded", "webhook.test"]  # one, not three
    data = got.received[0].event["data"]
    assert data["quota"] == "rpm" and data["tenant_id"] == acme and got.received[0].verified


async def test_bad_paging_and_unknown_webhooks(aiohttp_client: MakeClient, tmp_path: Path) -> None:
    client = await start(aiohttp_client, tmp_path)
    made = await create(client, url="http://127.0.0.1:1/", events=["*"])
    for query, field in (("limit=0", "limit"), ("limit=x", "limit"), ("offset=-1", "offset")):
        got = await client.get(f"/api/admin/webhooks/{made['id']}/deliveries?{query}", headers=AS_ADMIN)
        assert got.status == 400 and field in (await got.json())["error"]["message"]
    missing = await client.post("/api/admin/webhooks/wh_nope/test", headers=AS_ADMIN)
    assert missing.status == 404 and (await missing.json())["error"]["code"] == "webhook_not_found"
