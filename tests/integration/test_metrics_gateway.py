"""The gateway's tenant-aware series: summed over tenants by default, one series per tenant only with
telemetry.tenant_labels; quota refusals by quota, tokens from the upstream's usage, the seed's names."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from llmkit.gateway.app import create_app
from llmkit.gateway.state import GATEWAY_KEY
from llmkit.settings import LimiterSettings
from tests.unit.gateway_fakes import HeldPool, gateway_settings

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[..., Awaitable[Client]]
ADMIN = "bootstrap-admin-key-for-tests-0123456789"
AS_ADMIN = {"X-API-Key": ADMIN}


async def start(aiohttp_client: MakeClient, tmp_path: Path, tenant_labels: bool) -> Client:
    settings = gateway_settings(admin_key=ADMIN, platform_url=f"sqlite:///{tmp_path}/platform.db")
    settings = replace(
        settings,
        limiter=LimiterSettings(url="memory://"),
        telemetry=replace(settings.telemetry, tenant_labels=tenant_labels),
    )
    return await aiohttp_client(create_app(settings, pool=HeldPool(hold=False)))


async def tenant_key(client: Client, name: str) -> tuple[str, str]:
    """A new tenant allowed one request a minute, and a key of it."""
    made = await client.post(
        "/api/admin/tenants", json={"name": name, "quotas": {"rpm": 1}}, headers=AS_ADMIN
    )
    assert made.status == 201, await made.text()
    tid = str((await made.json())["id"])
    made = await client.post("/api/admin/api-keys", json={"name": "k", "tenant_id": tid}, headers=AS_ADMIN)
    assert made.status == 201, await made.text()
    return tid, str((await made.json())["key"])


async def two_tenants_twice(client: Client) -> list[str]:
    """Two tenants each send two chats: the first answered, the second refused by the rpm quota."""
    tenants = []
    for name in ("Acme", "Globex"):
        tid, key = await tenant_key(client, name)
        tenants.append(tid)
        for status in (200, 429):
            body = {"messages": [{"role": "user", "content": f"three words {name}"}]}
            answer = await client.post("/v1/chat/completions", json=body, headers={"X-API-Key": key})
            assert answer.status == status, await answer.text()
    return tenants


async def scrape(client: Client) -> dict[str, list[Any]]:
    answer = await client.get("/metrics", headers=AS_ADMIN)
    assert answer.status == 200
    found: dict[str, list[Any]] = {}
    for family in text_string_to_metric_families(await answer.text()):
        for sample in family.samples:
            found.setdefault(sample.name, []).append(sample)
    return found


@pytest.mark.parametrize("tenant_labels", [False, True])
async def test_tenant_labels_only_when_asked(
    aiohttp_client: MakeClient, tmp_path: Path, tenant_labels: bool
) -> None:
    client = await start(aiohttp_client, tmp_path, tenant_labels)
    tenants = await two_tenants_twice(client)
    series = await scrape(client)
    refused = series["llmkit_gateway_quota_rejected_total"]
    chats = [s for s in series["llmkit_gateway_chat_requests_total"] if s.labels["answered_by"] == "upstream"]
    completion = [s for s in series["llmkit_gateway_tokens_total"] if s.labels["kind"] == "completion"]
    # HeldPool answers with the question echoed word by word: three words of completion each.
    if tenant_labels:
        assert {s.labels["tenant"]: s.value for s in refused} == dict.fromkeys(tenants, 1)
        assert {s.labels["tenant"]: s.value for s in chats} == dict.fromkeys(tenants, 1)
        assert {s.labels["tenant"]: s.value for s in completion} == dict.fromkeys(tenants, 3)
    else:
        assert [(s.labels, s.value) for s in refused] == [({"quota": "rpm"}, 2)]
        assert [s.value for s in chats] == [2] and [s.value for s in completion] == [6]
        assert not any("tenant" in s.labels for samples in series.values() for s in samples)
    # The seed's names count the same answers as llmkit_http_requests_total.
    for name in ("http_requests_total", "llmkit_http_requests_total"):
        by_status = {
            s.labels["status"]: s.value for s in series[name] if s.labels["route"] == "/v1/chat/completions"
        }
        assert by_status == {"200": 2, "429": 2}, (name, series[name])


async def test_a_full_queue_counts_as_queue_full_not_upstream(aiohttp_client: MakeClient) -> None:
    pool = HeldPool()
    settings = gateway_settings(max_concurrent=1, max_queue_size=1)
    client = await aiohttp_client(create_app(settings, pool=pool))

    def ask(text: str) -> Any:
        return client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": text}]})

    running = asyncio.ensure_future(ask("one"))
    await pool.started.wait()
    waiting = asyncio.ensure_future(ask("two"))
    while client.app[GATEWAY_KEY].slots.waiting < 1:
        await asyncio.sleep(0.01)
    refused = await ask("three")
    assert refused.status == 429
    pool.release()
    assert (await running).status == 200 and (await waiting).status == 200
    series = await scrape(client)
    answered = {s.labels["answered_by"]: s.value for s in series["llmkit_gateway_chat_requests_total"]}
    assert answered == {"cache": 0, "coalesced": 0, "upstream": 2, "queue_full": 1}
