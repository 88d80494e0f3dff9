"""The gateway as a shared service: admin API, API keys, scopes, tenant quotas, isolation and analytics."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import openai
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from llmkit.gateway.app import create_app
from llmkit.platform.service import PLATFORM_KEY
from llmkit.settings import LimiterSettings
from tests.servers import ClickHouseServer, RedisServer
from tests.unit.gateway_fakes import HeldPool, gateway_settings

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[..., Awaitable[Client]]
ADMIN = "bootstrap-admin-key-for-tests-0123456789"
AS_ADMIN = {"X-API-Key": ADMIN}


def chat(text: str, **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}], **extra}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def start(
    aiohttp_client: MakeClient,
    tmp_path: Path,
    pool: HeldPool | None = None,
    limiter_url: str = "memory://",
    **gw: Any,
) -> Client:
    gw.setdefault("platform_url", f"sqlite:///{tmp_path}/platform.db")
    settings = replace(gateway_settings(admin_key=ADMIN, **gw), limiter=LimiterSettings(url=limiter_url))
    return await aiohttp_client(create_app(settings, pool=pool or HeldPool(hold=False)))


async def tenant(client: Client, name: str, **quotas: int) -> str:
    made = await client.post("/api/admin/tenants", json={"name": name, "quotas": quotas}, headers=AS_ADMIN)
    assert made.status == 201, await made.text()
    body = await made.json()
    assert set(body) >= {"id", "name", "quotas", "created_at"} and body["quotas"]["rpm"] == quotas.get("rpm")
    return str(body["id"])


async def key(client: Client, tenant_id: str | None = None, scopes: list[str] | None = None) -> str:
    body: dict[str, Any] = {"name": "k", "tenant_id": tenant_id}
    if scopes is not None:
        body["scopes"] = scopes
    made = await client.post("/api/admin/api-keys", json=body, headers=AS_ADMIN)
    assert made.status == 201, await made.text()
    return str((await made.json())["key"])


async def flush(client: Client) -> None:
    """Wait until the analytics writer has written everything recorded so far."""
    writer = client.app[PLATFORM_KEY].writer
    assert writer is not None
    for _ in range(200):
        stats = writer.stats()
        if stats["buffered"] == 0 and stats["in_flight"] == 0:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"analytics not flushed: {writer.stats()}")


async def test_the_seed_key_body_works_and_the_secret_is_shown_once(
    aiohttp_client: MakeClient, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client = await start(aiohttp_client, tmp_path, require_api_key=True)
    seed_body = {"name": "Production API Key", "description": "Main production key"}
    made = await client.post("/api/admin/api-keys", json=seed_body, headers=AS_ADMIN)
    assert made.status == 201
    body = await made.json()
    assert set(body) >= {"id", "key", "prefix", "name", "tenant_id", "scopes", "created_at"}
    text = body["key"]
    assert text.startswith(body["prefix"]) and body["prefix"] == f"llk_{body['id']}_"
    assert body["scopes"] == ["chat"] and body["tenant_id"] is None
    assert (await client.get("/v1/models", headers=bearer(text))).status == 200
    secret = text.removeprefix(body["prefix"])
    answers = [
        await (await client.get(path, headers=AS_ADMIN)).text()
        for path in ("/api/admin/api-keys", "/api/admin/stats", "/api/admin/health", "/stats")
    ]
    for seen in [*answers, caplog.text, (tmp_path / "platform.db").read_bytes().decode("latin-1")]:
        assert secret not in seen and text not in seen
    listed = (await (await client.get("/api/admin/api-keys", headers=AS_ADMIN)).json())["keys"]
    assert [k["id"] for k in listed] == [body["id"]] and "key" not in listed[0]
    assert listed[0]["status"] == "active"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": "x", "scopes": ["root"]}, "scopes"),
        ({"name": "x", "scopes": "chat"}, "scopes"),
        ({"name": "x", "expires_at": "yesterday"}, "expires_at"),
        ({"name": "x", "expires_at": 1.0}, "expires_at"),
        ({"name": "x", "tenant_id": "nope"}, "tenant_id"),
        ({"name": "x", "colour": "red"}, "colour"),
    ],
)
async def test_bad_key_bodies_name_the_field(
    aiohttp_client: MakeClient, tmp_path: Path, body: dict[str, Any], field: str
) -> None:
    client = await start(aiohttp_client, tmp_path)
    got = await client.post("/api/admin/api-keys", json=body, headers=AS_ADMIN)
    assert got.status == 422
    error = (await got.json())["error"]
    assert error["param"] == field and field in error["message"]


ADMIN_ROUTES = [
    ("GET", "/api/admin/api-keys"),
    ("POST", "/api/admin/api-keys"),
    ("DELETE", "/api/admin/api-keys/abc"),
    ("GET", "/api/admin/tenants"),
    ("POST", "/api/admin/tenants"),
    ("GET", "/api/admin/tenants/t1"),
    ("PATCH", "/api/admin/tenants/t1"),
    ("DELETE", "/api/admin/tenants/t1"),
    ("GET", "/api/admin/analytics/popular"),
    ("GET", "/api/admin/analytics/trending"),
    ("GET", "/api/admin/analytics/stats"),
    ("GET", "/api/admin/analytics/timeseries"),
    ("GET", "/api/admin/stats"),
    ("GET", "/api/admin/health"),
]


async def test_every_admin_route_refuses_a_non_admin_key(aiohttp_client: MakeClient, tmp_path: Path) -> None:
    client = await start(aiohttp_client, tmp_path)
    chat_key = await key(client, scopes=["chat", "search"])
    for method, path in ADMIN_ROUTES:
        none = await client.request(method, path, json={})
        assert none.status == 401, (method, path)
        wrong = await client.request(method, path, json={}, headers={"X-API-Key": ADMIN + "x"})
        assert wrong.status == 401, (method, path)
        scoped = await client.request(method, path, json={}, headers=bearer(chat_key))
        assert scoped.status == 403, (method, path)
        assert "admin scope" in (await scoped.json())["error"]["message"]


async def test_without_an_admin_key_admin_routes_say_which_setting_to_set(
    aiohttp_client: MakeClient, tmp_path: Path
) -> None:
    settings = gateway_settings(platform_url=f"sqlite:///{tmp_path}/p.db")
    client = await aiohttp_client(create_app(settings, pool=HeldPool(hold=False)))
    for method, path in ADMIN_ROUTES:
        got = await client.request(method, path, json={})
        assert got.status == 403 and "gateway.admin_key" in (await got.json())["error"]["message"]


async def test_required_keys_401_403_in_each_routes_shape(aiohttp_client: MakeClient, tmp_path: Path) -> None:
    client = await start(aiohttp_client, tmp_path, require_api_key=True)
    search_only = await key(client, scopes=["search"])
    chat_key = await key(client)
    missing = await client.post("/v1/chat/completions", json=chat("hi", model="m"))
    assert missing.status == 401
    error = (await missing.json())["error"]
    assert error["code"] == "missing_api_key" and error["type"] == "invalid_request_error"
    out_of_scope = await client.post("/api/chat-optimized", json=chat("hi"), headers=bearer(search_only))
    assert out_of_scope.status == 403 and (await out_of_scope.json())["error"]["code"] == "insufficient_scope"
    assert (await client.post("/api/chat-optimized", json=chat("hi"), headers=bearer(chat_key))).status == 200
    assert (await client.get("/health")).status == 200
    assert (await client.get("/api/cache-stats")).status == 401
    # The official client: a wrong key is an AuthenticationError, the right one works.
    base = str(client.make_url("/v1"))
    async with openai.AsyncOpenAI(base_url=base, api_key="sk-wrong", max_retries=0) as wrong:
        with pytest.raises(openai.AuthenticationError):
            await wrong.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    async with openai.AsyncOpenAI(base_url=base, api_key=chat_key, max_retries=0) as right:
        done = await right.chat.completions.create(model="m", messages=[{"role": "user", "content": "x y"}])
        assert done.choices[0].message.content == "x y "


async def test_a_revoked_or_expired_key_is_403_and_an_unknown_one_401(
    aiohttp_client: MakeClient, tmp_path: Path
) -> None:
    client = await start(aiohttp_client, tmp_path, require_api_key=True)
    text = await key(client)
    key_id = text.split("_")[1]
    revoked = await client.delete(f"/api/admin/api-keys/{key_id}", headers=AS_ADMIN)
    assert revoked.status == 200 and (await revoked.json())["status"] == "revoked"
    got = await client.get("/v1/models", headers=bearer(text))
    assert got.status == 403 and (await got.json())["error"]["code"] == "key_revoked"
    assert (await client.get("/v1/models", headers=bearer(text[:-2] + "zz"))).status == 401
    assert (await client.get("/v1/models", headers=bearer("llk_000000000000_nope"))).status == 401
    assert (await client.delete("/api/admin/api-keys/nope", headers=AS_ADMIN)).status == 404


async def test_tenants_crud_and_deleting_one_revokes_its_keys(
    aiohttp_client: MakeClient, tmp_path: Path
) -> None:
    client = await start(aiohttp_client, tmp_path, require_api_key=True)
    tid = await tenant(client, "Acme", rpm=60)
    text = await key(client, tid)
    patched = await client.patch(
        f"/api/admin/tenants/{tid}", json={"quotas": {"tpm": 1000}}, headers=AS_ADMIN
    )
    assert (await patched.json())["quotas"] == {
        "rpm": 60,
        "tpm": 1000,
        "max_concurrent": None,
        "daily_tokens": None,
        "monthly_tokens": None,
    }
    cleared = await client.patch(
        f"/api/admin/tenants/{tid}", json={"quotas": {"rpm": None}}, headers=AS_ADMIN
    )
    assert (await cleared.json())["quotas"]["rpm"] is None
    bad = await client.patch(f"/api/admin/tenants/{tid}", json={"quotas": {"rpm": 0}}, headers=AS_ADMIN)
    assert bad.status == 422 and (await bad.json())["error"]["param"] == "quotas"
    dup = await client.post("/api/admin/tenants", json={"name": "Acme"}, headers=AS_ADMIN)
    assert dup.status == 409
    assert [
        t["id"] for t in (await (await client.get("/api/admin/tenants", headers=AS_ADMIN)).json())["tenants"]
    ] == [tid]
    gone = await client.delete(f"/api/admin/tenants/{tid}", headers=AS_ADMIN)
    assert await gone.json() == {"id": tid, "deleted": True, "revoked_keys": 1}
    assert (await client.get("/v1/models", headers=bearer(text))).status == 403
    assert (await client.get(f"/api/admin/tenants/{tid}", headers=AS_ADMIN)).status == 404


async def test_a_tenant_is_held_to_its_rpm_with_headers_saying_so(
    aiohttp_client: MakeClient, tmp_path: Path
) -> None:
    client = await start(aiohttp_client, tmp_path)
    tid = await tenant(client, "Small", rpm=3)
    text = await key(client, tid)
    statuses = []
    for i in range(5):
        got = await client.post("/api/chat-optimized", json=chat(f"q {i}"), headers=bearer(text))
        statuses.append(got.status)
        if got.status == 200:
            assert got.headers["x-ratelimit-limit-requests"] == "3"
            assert got.headers["x-ratelimit-remaining-requests"] == str(2 - i)
        else:
            refused = got
    assert statuses == [200, 200, 200, 429, 429]
    error = (await refused.json())["error"]
    assert error["code"] == "rate_limit_exceeded" and error["quota"] == "rpm" and "rpm" in error["message"]
    assert int(refused.headers["Retry-After"]) >= 1
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert refused.headers["x-ratelimit-reset-requests"].endswith("s")
    # Anonymous requests (the default tenant) are not this tenant's.
    assert (await client.post("/api/chat-optimized", json=chat("anon"))).status == 200
    base = str(client.make_url("/v1"))
    async with openai.AsyncOpenAI(base_url=base, api_key=text, max_retries=0) as sdk:
        with pytest.raises(openai.RateLimitError):
            await sdk.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    queued = await client.post("/api/chat-queue", json=chat("later"), headers=bearer(text))
    assert queued.status == 429
    # The refusals are in the tenant's analytics: 7 requests, 4 of them refused.
    await flush(client)
    stats = await (await client.get(f"/api/admin/analytics/stats?tenant_id={tid}", headers=AS_ADMIN)).json()
    assert stats["requests"] == 7 and stats["errors"] == 4


async def test_token_quotas_count_the_upstreams_usage(aiohttp_client: MakeClient, tmp_path: Path) -> None:
    client = await start(aiohttp_client, tmp_path)
    tid = await tenant(client, "Tokens", tpm=10)
    text = await key(client, tid)
    # HeldPool reports 1 prompt token + one per word of the answer (the question echoed back).
    first = await client.post("/api/chat-optimized", json=chat("one two three four"), headers=bearer(text))
    assert first.status == 200 and first.headers["x-ratelimit-remaining-tokens"] == "5"
    second = await client.post("/api/chat-optimized", json=chat("five six seven eight"), headers=bearer(text))
    assert second.status == 200 and second.headers["x-ratelimit-remaining-tokens"] == "0"
    third = await client.post("/api/chat-optimized", json=chat("nine"), headers=bearer(text))
    assert third.status == 429 and (await third.json())["error"]["quota"] == "tpm"
    # A cached answer costs no upstream tokens: it counts as a request, not against the token quota.
    cached_tid = await tenant(client, "Cached", tpm=6)
    cached_key = await key(client, cached_tid)
    miss = await client.post("/api/chat-optimized", json=chat("one two"), headers=bearer(cached_key))
    assert miss.headers["x-ratelimit-remaining-tokens"] == "3"
    for _ in range(3):
        hit = await client.post("/api/chat-optimized", json=chat("one two"), headers=bearer(cached_key))
        assert hit.headers["X-Gateway-Cache"] == "hit"
        assert hit.headers["x-ratelimit-remaining-tokens"] == "3"
    # Streams count too: the upstream's usage arrives after the last piece.
    tid2 = await tenant(client, "Streams", tpm=5)
    text2 = await key(client, tid2)
    streamed = await client.post(
        "/api/chat-optimized", json=chat("a b c d", stream=True), headers=bearer(text2)
    )
    assert streamed.status == 200 and streamed.headers["x-ratelimit-limit-tokens"] == "5"
    await streamed.read()
    after = await client.post("/api/chat-optimized", json=chat("e"), headers=bearer(text2))
    assert after.status == 429


async def test_max_concurrent_refuses_the_extra_request_at_once(
    aiohttp_client: MakeClient, tmp_path: Path
) -> None:
    pool = HeldPool()
    client = await start(aiohttp_client, tmp_path, pool)
    tid = await tenant(client, "One at a time", max_concurrent=1)
    text = await key(client, tid)
    first = asyncio.create_task(client.post("/api/chat-optimized", json=chat("slow"), headers=bearer(text)))
    await pool.started.wait()
    second = await client.post("/api/chat-optimized", json=chat("other"), headers=bearer(text))
    assert second.status == 429 and (await second.json())["error"]["quota"] == "max_concurrent"
    pool.release()
    assert (await first).status == 200
    assert (await client.post("/api/chat-optimized", json=chat("now"), headers=bearer(text))).status == 200


async def test_tenants_never_see_each_others_cache_conversation_or_queue(
    aiohttp_client: MakeClient, tmp_path: Path
) -> None:
    pool = HeldPool(hold=False)
    client = await start(aiohttp_client, tmp_path, pool)
    a = await key(client, await tenant(client, "A"))
    b = await key(client, await tenant(client, "B"))
    first = await client.post("/api/chat-optimized", json=chat("same question"), headers=bearer(a))
    assert first.headers["X-Gateway-Cache"] == "miss"
    again = await client.post("/api/chat-optimized", json=chat("same question"), headers=bearer(a))
    assert again.headers["X-Gateway-Cache"] == "hit"
    other = await client.post("/api/chat-optimized", json=chat("same question"), headers=bearer(b))
    assert other.headers["X-Gateway-Cache"] == "miss" and len(pool.calls) == 2

    conversation = (await first.json())["conversation_id"]
    follow = chat("and then", conversation_id=conversation)
    await client.post("/api/chat-optimized", json=follow, headers=bearer(b))
    assert [m["content"] for m in pool.calls[-1].messages] == ["and then"]  # B got none of A's history
    await client.post("/api/chat-optimized", json=follow, headers=bearer(a))
    assert [m["content"] for m in pool.calls[-1].messages][0] == "same question"

    queued = await client.post("/api/chat-queue", json=chat("queued for A"), headers=bearer(a))
    rid = (await queued.json())["request_id"]
    assert (await client.get(f"/api/chat-queue?requestId={rid}", headers=bearer(b))).status == 404
    assert (await client.delete(f"/api/chat-queue?requestId={rid}", headers=bearer(b))).status == 404
    mine = await client.get(f"/api/chat-queue?requestId={rid}", headers=bearer(a))
    assert mine.status == 200


async def test_analytics_equal_what_was_sent_and_stay_in_their_tenant(
    aiohttp_client: MakeClient, tmp_path: Path
) -> None:
    client = await start(aiohttp_client, tmp_path)
    ta, tb = await tenant(client, "A"), await tenant(client, "B")
    a, b = await key(client, ta), await key(client, tb)
    admin_of_b = await key(client, tb, scopes=["admin"])
    for text, who, times in (
        ("Rust  async", a, 3),
        ("rust async", a, 1),
        ("tokio", a, 2),
        ("secret plans", b, 4),
    ):
        for _ in range(times):
            assert (
                await client.post("/api/chat-optimized", json=chat(text), headers=bearer(who))
            ).status == 200
    await flush(client)
    popular = await (
        await client.get(f"/api/admin/analytics/popular?tenant_id={ta}", headers=AS_ADMIN)
    ).json()
    assert [(i["query"], i["count"]) for i in popular["items"]] == [("rust async", 4), ("tokio", 2)]
    stats = await (await client.get(f"/api/admin/analytics/stats?tenant_id={ta}", headers=AS_ADMIN)).json()
    # "rust async" is a new prompt to the cache (its text differs) but the same query to analytics.
    assert stats["requests"] == 6 and stats["unique_queries"] == 2 and stats["cache_hits"] == 3
    everything = await (await client.get("/api/admin/analytics/stats", headers=AS_ADMIN)).json()
    assert everything["requests"] == 10 and everything["tenants"] == 2
    # B's own admin key sees B's analytics only, whatever it asks for.
    own = await (await client.get("/api/admin/analytics/popular", headers=bearer(admin_of_b))).json()
    assert [i["query"] for i in own["items"]] == ["secret plans"]
    other = await client.get(f"/api/admin/analytics/popular?tenant_id={ta}", headers=bearer(admin_of_b))
    assert other.status == 403
    listed = (await (await client.get("/api/admin/api-keys", headers=bearer(admin_of_b))).json())["keys"]
    assert {k["tenant_id"] for k in listed} == {tb}
    assert (
        await client.post("/api/admin/tenants", json={"name": "C"}, headers=bearer(admin_of_b))
    ).status == 403


async def test_analytics_off_records_nothing(aiohttp_client: MakeClient, tmp_path: Path) -> None:
    client = await start(aiohttp_client, tmp_path, analytics_enabled=False)
    assert (await client.post("/api/chat-optimized", json=chat("x"))).status == 200
    assert client.app[PLATFORM_KEY].writer is None
    got = await client.get("/api/admin/analytics/stats", headers=AS_ADMIN)
    assert got.status == 503 and "analytics" in (await got.json())["error"]["message"]


async def test_admin_health_and_stats_report_the_platform(aiohttp_client: MakeClient, tmp_path: Path) -> None:
    client = await start(aiohttp_client, tmp_path)
    await key(client)
    health = await (await client.get("/api/admin/health", headers=AS_ADMIN)).json()
    assert health["status"] == "healthy" and health["components"]["store"]["ok"] is True
    assert set(health["components"]) >= {"store", "upstreams", "cache", "quotas", "analytics"}
    stats = await (await client.get("/api/admin/stats", headers=AS_ADMIN)).json()
    assert stats["platform"]["api_keys"] == {"active": 1, "revoked": 0, "expired": 0}
    seed = await (await client.get("/api/stats")).json()
    assert "cache" in seed and "hit_rate" in seed["cache"]


@pytest.mark.clickhouse
async def test_analytics_go_to_clickhouse_when_analytics_url_names_it(
    aiohttp_client: MakeClient, tmp_path: Path, clickhouse_server: ClickHouseServer
) -> None:
    database = f"gw_{uuid.uuid4().hex[:10]}"
    url = f"clickhouse://127.0.0.1:{clickhouse_server.tcp_port}/{database}"
    client = await start(aiohttp_client, tmp_path, analytics_url=url)
    assert client.app[PLATFORM_KEY].analytics is not None
    assert client.app[PLATFORM_KEY].analytics.kind == "clickhouse"
    for text in ("alpha", "alpha", "beta"):
        assert (await client.post("/api/chat-optimized", json=chat(text))).status == 200
    await flush(client)
    popular = await (await client.get("/api/admin/analytics/popular", headers=AS_ADMIN)).json()
    assert [(i["query"], i["count"]) for i in popular["items"]] == [("alpha", 2), ("beta", 1)]


@pytest.mark.redis
async def test_admin_health_says_when_the_quota_redis_is_down(
    aiohttp_client: MakeClient, tmp_path: Path, redis_factory: Callable[[], RedisServer]
) -> None:
    redis = redis_factory()
    client = await start(aiohttp_client, tmp_path, limiter_url=f"{redis.url}?timeout=0.5")
    tid = await tenant(client, "R", rpm=100)
    text = await key(client, tid)
    assert (await client.post("/api/chat-optimized", json=chat("up"), headers=bearer(text))).status == 200
    healthy = await (await client.get("/api/admin/health", headers=AS_ADMIN)).json()
    assert healthy["components"]["quotas"]["ok"] is True
    redis.stop()
    down = await client.get("/api/admin/health", headers=AS_ADMIN)
    body = await down.json()
    assert body["status"] == "degraded" and "quotas" in body["down"]
    # A tenant whose quotas cannot be counted is refused with a 503 that says why, not a hang or a 500.
    refused = await client.post("/api/chat-optimized", json=chat("down"), headers=bearer(text))
    assert refused.status == 503 and "redis" in (await refused.json())["error"]["message"].lower()


async def test_quotas_counted_per_worker_in_memory_are_flagged(
    aiohttp_client: MakeClient, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="llmkit.platform")
    settings = gateway_settings(admin_key=ADMIN, platform_url=f"sqlite:///{tmp_path}/p.db")
    settings = replace(settings, server=replace(settings.server, workers=3))
    client = await aiohttp_client(create_app(settings, pool=HeldPool(hold=False)))
    assert "up to 3 times its quota" in caplog.text and "redis://" in caplog.text
    health = await (await client.get("/api/admin/health", headers=AS_ADMIN)).json()
    assert health["components"]["quotas"]["exact"] is False


async def test_the_pepper_keys_the_stored_hash(aiohttp_client: MakeClient, tmp_path: Path) -> None:
    client = await start(aiohttp_client, tmp_path, key_pepper="pepper-one", require_api_key=True)
    text = await key(client)
    key_id, secret = text.split("_")[1], text.split("_", 2)[2]
    stored = await client.app[PLATFORM_KEY].store.key(key_id)
    assert stored is not None
    assert stored.secret_hash == hmac.new(b"pepper-one", secret.encode(), hashlib.sha256).hexdigest()
    assert stored.secret_hash != hashlib.sha256(secret.encode()).hexdigest()
    assert (await client.get("/v1/models", headers=bearer(text))).status == 200
    await client.close()
    # The same store read with another pepper: the key no longer matches its hash.
    other = await start(aiohttp_client, tmp_path, key_pepper="pepper-two", require_api_key=True)
    assert (await other.get("/v1/models", headers=bearer(text))).status == 401


async def test_trending_and_timeseries_through_the_admin_api(
    aiohttp_client: MakeClient, tmp_path: Path
) -> None:
    client = await start(aiohttp_client, tmp_path, analytics_retention_days=7)
    platform = client.app[PLATFORM_KEY]
    assert platform.writer is not None and platform.writer.retention_days == 7
    for text, times in (("rising", 3), ("steady", 1)):
        for _ in range(times):
            assert (await client.post("/api/chat-optimized", json=chat(text))).status == 200
    await flush(client)
    trending = await (await client.get("/api/admin/analytics/trending?limit=5", headers=AS_ADMIN)).json()
    assert [(i["query"], i["count"], i["new"]) for i in trending["items"]] == [
        ("rising", 3, True),
        ("steady", 1, True),
    ]
    series = await (
        await client.get("/api/admin/analytics/timeseries?interval_hours=1", headers=AS_ADMIN)
    ).json()
    assert sum(b["requests"] for b in series["buckets"]) == 4 and series["interval_hours"] == 1
    bad = await client.get("/api/admin/analytics/timeseries?interval_hours=0", headers=AS_ADMIN)
    assert bad.status == 400 and (await bad.json())["error"]["param"] == "interval_hours"
