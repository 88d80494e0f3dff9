"""The orchestrator's jobs belong to tenants: the gateway's API keys, 404 across tenants, per-key limits."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import WSMsgType, WSServerHandshakeError, web
from aiohttp.test_utils import TestClient

from llmkit.orchestrate.app import create_app
from llmkit.orchestrate.backends.base import JobSpec, OnDelta
from llmkit.platform.keys import issue_key
from llmkit.platform.quota_types import Quotas
from llmkit.platform.store import platform_store_from_url
from llmkit.platform.store.base import Tenant
from llmkit.settings import OrchestrateSettings, QueueSettings, ServerSettings, Settings
from tests.servers import RedisServer

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[..., Awaitable[Client]]
ADMIN = "orchestrate-admin-key-for-tests-0123456789"
PEPPER = "pepper-shared-with-the-gateway"


class GatedBackend:
    """Answers `echo: PROMPT` once `gate` is set; counts its calls."""

    name = "gated"

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def run(self, job: JobSpec, on_delta: OnDelta | None = None) -> str:
        self.calls.append(job.prompt)
        await self.gate.wait()
        return f"echo: {job.prompt}"

    async def close(self) -> None:
        pass


@dataclass
class Keys:
    """The platform store's URL and the keys made in it (full `llk_` texts)."""

    url: str
    a: str
    a2: str
    b: str
    revoked: str
    platform_admin: str
    search_only: str


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
async def keys(tmp_path: Path) -> Keys:
    """Two tenants with keys, a revoked key, an admin key of no tenant, made directly in the store."""
    url = f"sqlite:///{tmp_path}/platform.db"
    store = platform_store_from_url(url)
    await store.open()
    try:
        now = time.time()
        for tenant_id in ("tenant-a", "tenant-b"):
            await store.add_tenant(Tenant(tenant_id, tenant_id, Quotas(), now, now))
        made: dict[str, str] = {}
        for name, tenant_id, scopes in (
            ("a", "tenant-a", ("chat",)),
            ("a2", "tenant-a", ("chat",)),
            ("b", "tenant-b", ("chat",)),
            ("revoked", "tenant-a", ("chat",)),
            ("platform_admin", None, ("chat", "admin")),
            ("search_only", "tenant-b", ("search",)),
        ):
            key, text = issue_key(name=name, tenant_id=tenant_id, scopes=scopes, pepper=PEPPER)
            await store.add_key(key)
            made[name] = text
            if name == "revoked":
                await store.revoke_key(key.id, now)
    finally:
        await store.close()
    return Keys(url=url, **made)


def settings_for(keys: Keys, queue_url: str = "memory://", **orchestrate: Any) -> Settings:
    orchestrate.setdefault("require_api_key", True)
    return Settings(
        server=ServerSettings(access_log=False),
        queue=QueueSettings(url=queue_url),
        orchestrate=OrchestrateSettings(
            platform_url=keys.url, key_pepper=PEPPER, admin_key=ADMIN, **orchestrate
        ),
    )


async def start(aiohttp_client: MakeClient, keys: Keys, backend: GatedBackend, **orchestrate: Any) -> Client:
    return await aiohttp_client(create_app(settings_for(keys, **orchestrate), backend))


async def submit(client: Client, key: str, body: dict[str, Any], **headers: str) -> dict[str, Any]:
    response = await client.post("/api/v1/infer", json=body, headers={**bearer(key), **headers})
    assert response.status == 200, await response.text()
    data: dict[str, Any] = await response.json()
    return data


async def status_of(client: Client, key: str, job_id: str) -> tuple[int, dict[str, Any]]:
    response = await client.get(f"/api/v1/status/{job_id}", headers=bearer(key))
    return response.status, await response.json()


async def test_keys_are_required_and_a_revoked_key_is_refused(aiohttp_client: MakeClient, keys: Keys) -> None:
    client = await start(aiohttp_client, keys, GatedBackend())
    missing = await client.post("/api/v1/infer", json={"prompt": "hi"})
    assert missing.status == 401
    assert (await missing.json())["error"]["code"] == "missing_api_key"
    assert (await client.get("/api/v1/status/x")).status == 401
    revoked = await client.post("/api/v1/infer", json={"prompt": "hi"}, headers=bearer(keys.revoked))
    assert revoked.status == 403
    assert (await revoked.json())["error"]["code"] == "key_revoked"
    scope = await client.post("/api/v1/infer", json={"prompt": "hi"}, headers=bearer(keys.search_only))
    assert scope.status == 403 and (await scope.json())["error"]["code"] == "insufficient_scope"
    unknown = await client.post("/api/v1/infer", json={"prompt": "hi"}, headers=bearer("llk_abc_nope"))
    assert unknown.status == 401
    job = await submit(client, keys.a, {"prompt": "hi"})
    assert job["tenant_id"] == "tenant-a"
    assert "key_id" not in job
    # /health and the CORS preflight need no key; the preflight still allows Authorization.
    assert (await client.get("/health")).status == 200
    preflight = await client.options(
        "/api/v1/infer", headers={"Origin": "http://app.example", "Access-Control-Request-Method": "POST"}
    )
    assert preflight.status == 204
    assert "Authorization" in preflight.headers["Access-Control-Allow-Headers"]


async def test_another_tenants_job_is_404_everywhere_and_the_admin_sees_it(
    aiohttp_client: MakeClient, keys: Keys
) -> None:
    backend = GatedBackend()
    backend.gate.clear()
    client = await start(aiohttp_client, keys, backend, concurrency=1)
    await submit(client, keys.a, {"prompt": "runs first"})  # holds the one worker
    job = await submit(client, keys.a, {"prompt": "stays pending"})
    job_id = job["request_id"]
    missing_id = str(uuid.uuid4())
    unknown_status, unknown = await status_of(client, keys.b, missing_id)
    other_status, other = await status_of(client, keys.b, job_id)
    assert unknown_status == other_status == 404
    # Word for word what an unknown job gets, but for the id: nothing says the job exists.
    assert other["error"] == {
        **unknown["error"],
        "message": unknown["error"]["message"].replace(missing_id, job_id),
    }
    result = await client.get(f"/api/v1/result/{job_id}?timeout=0", headers=bearer(keys.b))
    assert result.status == 404
    cancel = await client.delete(f"/api/v1/jobs/{job_id}", headers=bearer(keys.b))
    assert cancel.status == 404
    # ... and the 404 cancelled nothing.
    own_status, own = await status_of(client, keys.a, job_id)
    assert own_status == 200 and own["status"] == "pending"
    # Another key of the same tenant sees it.
    assert (await status_of(client, keys.a2, job_id))[0] == 200
    for admin in (ADMIN, keys.platform_admin):
        admin_status, seen = await status_of(client, admin, job_id)
        assert admin_status == 200 and seen["tenant_id"] == "tenant-a"
    cancelled = await client.delete(f"/api/v1/jobs/{job_id}", headers=bearer(keys.a))
    assert cancelled.status == 200 and (await cancelled.json())["status"] == "cancelled"
    backend.gate.set()


async def test_anonymous_callers_are_the_default_tenant(aiohttp_client: MakeClient, keys: Keys) -> None:
    client = await start(aiohttp_client, keys, GatedBackend(), require_api_key=False)
    anonymous = await client.post("/api/v1/infer", json={"prompt": "hi"})
    assert anonymous.status == 200
    job = await anonymous.json()
    assert job["tenant_id"] == "default"
    assert (await client.get(f"/api/v1/status/{job['request_id']}")).status == 200
    assert (await status_of(client, keys.a, job["request_id"]))[0] == 404
    mine = await submit(client, keys.a, {"prompt": "mine"})
    assert (await client.get(f"/api/v1/status/{mine['request_id']}")).status == 404


async def test_idempotency_keys_and_the_result_cache_stay_within_a_tenant(
    aiohttp_client: MakeClient, keys: Keys
) -> None:
    backend = GatedBackend()
    client = await start(aiohttp_client, keys, backend)
    first = await submit(client, keys.a, {"prompt": "same"}, **{"Idempotency-Key": "k-1"})
    again = await submit(client, keys.a2, {"prompt": "same"}, **{"Idempotency-Key": "k-1"})
    assert again["request_id"] == first["request_id"], "one tenant's repeat answers its first job"
    other = await submit(client, keys.b, {"prompt": "same"}, **{"Idempotency-Key": "k-1"})
    assert other["request_id"] != first["request_id"]
    assert other["tenant_id"] == "tenant-b"
    for key, job in ((keys.a, first), (keys.b, other)):
        done = await client.get(f"/api/v1/result/{job['request_id']}?timeout=5", headers=bearer(key))
        assert (await done.json())["status"] == "completed"
    crossed = await client.get(f"/api/v1/result/{other['request_id']}?timeout=0", headers=bearer(keys.a))
    assert crossed.status == 404
    # The result cache: A's answer was cached, B computed its own, and A's next submit is a hit.
    assert backend.calls == ["same", "same"]
    hit = await submit(client, keys.a, {"prompt": "same"})
    assert hit["cached"] is True and backend.calls == ["same", "same"]


async def test_coalescing_does_not_join_another_tenants_job(aiohttp_client: MakeClient, keys: Keys) -> None:
    backend = GatedBackend()
    backend.gate.clear()
    client = await start(aiohttp_client, keys, backend, concurrency=4)
    a = await submit(client, keys.a, {"prompt": "shared words"})
    a2 = await submit(client, keys.a2, {"prompt": "shared words"})
    b = await submit(client, keys.b, {"prompt": "shared words"})
    for _ in range(100):
        if len(backend.calls) == 2:
            break
        await asyncio.sleep(0.01)
    backend.gate.set()
    for key, job in ((keys.a, a), (keys.a2, a2), (keys.b, b)):
        done = await client.get(f"/api/v1/result/{job['request_id']}?timeout=5", headers=bearer(key))
        assert (await done.json())["status"] == "completed"
    assert backend.calls == ["shared words", "shared words"], "A's two joined; B ran its own"


async def test_the_websocket_follows_only_its_own_tenants_jobs(
    aiohttp_client: MakeClient, keys: Keys
) -> None:
    backend = GatedBackend()
    backend.gate.clear()
    client = await start(aiohttp_client, keys, backend)
    with pytest.raises(WSServerHandshakeError) as refused:
        await client.ws_connect("/api/v1/stream")
    assert refused.value.status == 401
    a_job = await submit(client, keys.a, {"prompt": "watch me"})
    async with client.ws_connect("/api/v1/stream", headers=bearer(keys.b)) as ws:
        # The identical prompt from B: its own job, not a view of A's.
        await ws.send_json({"prompt": "watch me"})
        first = await ws.receive_json(timeout=5)
        assert first["request_id"] != a_job["request_id"]
        # A message naming A's job is just a submission; the socket takes no job id to follow.
        await ws.send_json({"prompt": "other", "request_id": a_job["request_id"]})
        second = await ws.receive_json(timeout=5)
        assert second["request_id"] != a_job["request_id"]
        backend.gate.set()
        finals = {}
        while len(finals) < 2:
            message = await ws.receive(timeout=5)
            assert message.type == WSMsgType.TEXT
            data = message.json()
            if "status" in data and data["status"] != "processing":
                finals[data["request_id"]] = data
        assert set(finals) == {first["request_id"], second["request_id"]}
    assert (await status_of(client, keys.b, first["request_id"]))[1]["tenant_id"] == "tenant-b"
    assert (await status_of(client, keys.a, first["request_id"]))[0] == 404


async def test_the_rate_limit_counts_per_key(aiohttp_client: MakeClient, keys: Keys) -> None:
    client = await start(
        aiohttp_client,
        keys,
        GatedBackend(),
        rate_limit_requests=2,
        rate_limit_window=3600,
        rate_limit_by="session",
        cache_results=False,
    )
    # One key across two session ids shares one bucket: inventing session ids does not help.
    await submit(client, keys.a, {"prompt": "1", "session_id": "s1"})
    await submit(client, keys.a, {"prompt": "2", "session_id": "s2"})
    limited = await client.post(
        "/api/v1/infer", json={"prompt": "3", "session_id": "s3"}, headers=bearer(keys.a)
    )
    assert limited.status == 429
    assert "API key" in (await limited.json())["error"]["message"]
    # Another key of the same tenant has its own bucket.
    await submit(client, keys.a2, {"prompt": "4", "session_id": "s1"})
    await submit(client, keys.a2, {"prompt": "5"})
    refused = await client.post("/api/v1/infer", json={"prompt": "6"}, headers=bearer(keys.a2))
    assert refused.status == 429


async def test_jobs_in_redis_keep_their_tenant(
    aiohttp_client: MakeClient, keys: Keys, redis_server: RedisServer
) -> None:
    queue_url = f"{redis_server.url}?prefix=tenants-{uuid.uuid4().hex[:8]}"
    # The API role: jobs wait in Redis for workers elsewhere, read back from Redis by every request.
    settings = settings_for(keys, queue_url=queue_url, role="api")
    client = await aiohttp_client(create_app(settings, GatedBackend()))
    job = await submit(client, keys.a, {"prompt": "in redis"})
    job_id = job["request_id"]
    assert (await status_of(client, keys.b, job_id))[0] == 404
    response = await client.get(f"/api/v1/result/{job_id}?timeout=0", headers=bearer(keys.b))
    assert response.status == 404
    assert (await client.delete(f"/api/v1/jobs/{job_id}", headers=bearer(keys.b))).status == 404
    own_status, own = await status_of(client, keys.a, job_id)
    assert own_status == 200 and own["status"] == "pending" and own["tenant_id"] == "tenant-a"
    assert (await status_of(client, ADMIN, job_id))[0] == 200
    # Idempotency keys in Redis are per tenant too.
    first = await submit(client, keys.a, {"prompt": "idem"}, **{"Idempotency-Key": "r-1"})
    again = await submit(client, keys.a2, {"prompt": "idem"}, **{"Idempotency-Key": "r-1"})
    other = await submit(client, keys.b, {"prompt": "idem"}, **{"Idempotency-Key": "r-1"})
    assert again["request_id"] == first["request_id"] != other["request_id"]
    cancelled = await client.delete(f"/api/v1/jobs/{job_id}", headers=bearer(keys.a))
    assert cancelled.status == 200 and (await cancelled.json())["status"] == "cancelled"
