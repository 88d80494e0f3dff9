"""The gateway's own events reach a real receiver, signed: document.indexed and document.failed from the index
jobs (once, even when a job runs again), search.performed from /api/search, upstream.circuit_open and
upstream.recovered from the breaker in front of a real simulator."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from llmkit.platform.service import PLATFORM_KEY
from tests.integration.test_gateway_platform import AS_ADMIN, MakeClient, start
from tests.integration.test_gateway_simulate import chat, gateway, set_faults
from tests.integration.test_gateway_webhooks import create, delivered
from tests.integration.webhook_receiver import Received, receiver
from tests.serve_process import ServerProcess
from tests.simulate_admin import SIMULATE_ADMIN_ENV

GUIDE = {
    "id": "guide",
    "title": "Guide",
    "content": "# Install\n\nRun pip install llmkit.\n\nThen install it.",
}


def kinds(received: list[Received]) -> list[str]:
    return [r.event["type"] for r in received]


async def test_an_indexed_document_and_a_search_are_events(
    aiohttp_client: MakeClient, tmp_path: Path
) -> None:
    client = await start(aiohttp_client, tmp_path)
    async with receiver() as got:
        made = await create(client, url=got.url, events=["document.indexed", "search.performed"])
        got.secrets = [made["secret"]]
        added = await client.post("/api/documents", json=GUIDE)
        assert added.status == 202, await added.text()
        (indexed,) = await got.wait_for(1)
        searched = await client.post("/api/search", json={"query": "install", "type": "keyword"})
        assert searched.status == 200, await searched.text()
        again = await client.post("/api/search", json={"query": "install", "type": "keyword"})
        assert (await again.json())["cached"] is True
        received = await got.wait_for(3)
    assert kinds(received) == ["document.indexed", "search.performed", "search.performed"]
    assert all(r.verified for r in received)
    data = indexed.event["data"]
    assert (data["id"], data["title"], data["chunks"], data["embedding_model"]) == ("guide", "Guide", 1, None)
    assert data["job_id"] == (await added.json())["index"]["job_id"]
    assert indexed.event["tenant_id"] == "default"
    first, second = (r.event["data"] for r in received[1:])
    assert (first["type"], first["query"], first["hits"], first["cached"]) == ("keyword", "install", 1, False)
    assert (second["cached"], second["hits"]) == (True, 1)


async def test_a_job_run_again_after_a_crash_queues_its_event_once(
    aiohttp_client: MakeClient, tmp_path: Path
) -> None:
    # A process killed after storing the chunks but before marking the job done runs the job again: the
    # event it emits again has the same ids, so the outbox holds it (and the receiver gets it) once.
    client = await start(aiohttp_client, tmp_path)
    platform = client.app[PLATFORM_KEY]
    async with receiver() as got:
        made = await create(client, url=got.url, events=["document.indexed"])
        got.secrets = [made["secret"]]
        added = await (await client.post("/api/documents", json=GUIDE)).json()
        (first,) = await got.wait_for(1)
        job = await platform.store.job(added["index"]["job_id"])
        assert job is not None
        await platform._index(job)
        rows = await delivered(client, made["id"], 1)
        await client.post(f"/api/admin/webhooks/{made['id']}/test", headers=AS_ADMIN)
        received = await got.wait_for(2)
    assert len(rows) == 1 and kinds(received) == ["document.indexed", "webhook.test"]
    assert first.headers["webhook-id"] == rows[0]["id"]


async def test_a_document_that_cannot_be_embedded_is_a_failed_event(
    aiohttp_client: MakeClient, tmp_path: Path
) -> None:
    client = await start(
        aiohttp_client, tmp_path, embeddings_url="http://127.0.0.1:1/v1", jobs_backoff_s=0.01
    )
    async with receiver() as got:
        made = await create(client, url=got.url, events=["document.failed", "document.indexed"])
        got.secrets = [made["secret"]]
        added = await (await client.post("/api/documents", json=GUIDE)).json()
        (failed,) = await got.wait_for(1)
    data = failed.event["data"]
    assert failed.verified and failed.event["type"] == "document.failed"
    assert (data["id"], data["job_id"], data["attempts"]) == ("guide", added["index"]["job_id"], 5)
    assert "127.0.0.1:1" in data["error"]


async def wait_until(got: Any, count: int) -> list[Received]:
    return list(await asyncio.wait_for(got.wait_for(count), 10))


async def test_an_upstream_circuit_that_opens_and_recovers_is_two_events(
    aiohttp_client: MakeClient, tmp_path: Path
) -> None:
    with ServerProcess(tmp_path, "--port", "0", command="simulate", env=SIMULATE_ADMIN_ENV) as sim:
        url = sim.wait_listening()
        client = await gateway(
            aiohttp_client,
            url,
            "ollama",
            retries=0,
            breaker_threshold=2,
            breaker_reset_s=0.3,
            cache_enabled=False,
            admin_key=AS_ADMIN["X-API-Key"],
            platform_url=f"sqlite:///{tmp_path}/platform.db",
        )
        async with receiver() as got:
            made = await create(client, url=got.url, events=["upstream.circuit_open", "upstream.recovered"])
            got.secrets = [made["secret"]]
            await set_faults(url, [{"fault": "500", "count": 3}])
            for n in range(2):
                assert (await client.post("/api/chat-optimized", json=chat(f"trip {n}"))).status == 502
            (opened,) = await wait_until(got, 1)
            assert (await client.post("/api/chat-optimized", json=chat("refused"))).status == 503
            await asyncio.sleep(0.35)
            # The half-open trial meets the third fault: the circuit opens again, which is not news.
            assert (await client.post("/api/chat-optimized", json=chat("trial 1"))).status == 502
            await asyncio.sleep(0.35)
            assert (await client.post("/api/chat-optimized", json=chat("trial 2"))).status == 200
            received = await wait_until(got, 2)
    assert kinds(received) == ["upstream.circuit_open", "upstream.recovered"]
    assert all(r.verified and r.event["tenant_id"] is None for r in received)
    assert opened.event["data"] == {"upstream": url, "state": "open"}
    assert received[1].event["data"] == {"upstream": url, "state": "closed"}


async def test_a_failing_step_of_shutdown_still_closes_the_rest(tmp_path: Path) -> None:
    # The CI failure this guards: one step of close() raised, and the store and the embeddings session
    # after it were never closed (an unclosed aiohttp session, an open database).
    from llmkit.platform.service import Platform, PlatformConfig
    from tests.unit.gateway_fakes import gateway_settings

    settings = gateway_settings(
        platform_url=f"sqlite:///{tmp_path}/p.db",
        embeddings_url="http://127.0.0.1:1/v1",
        analytics_enabled=False,
    )
    platform = Platform(PlatformConfig.from_settings(settings))
    await platform.open()
    assert platform.embeddings is not None
    store, embeddings = platform.store, platform.embeddings
    session = embeddings._http()  # opened on first use, as the first index job would

    async def broken() -> None:
        raise RuntimeError("a quota counter that cannot stop")

    platform.quotas.close = broken  # type: ignore[method-assign]
    try:
        await platform.close()
    except RuntimeError as exc:
        assert "cannot stop" in str(exc)
    else:
        raise AssertionError("the failure was swallowed")
    assert store._db is None  # type: ignore[attr-defined]
    assert session.closed
