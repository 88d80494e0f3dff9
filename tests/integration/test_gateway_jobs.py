"""/api/admin/jobs through the gateway: list, filter, read, retry; admin only, a tenant's admin its own."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from llmkit.platform.documents.index_job import INDEX_DOCUMENT, index_job
from llmkit.platform.service import PLATFORM_KEY
from llmkit.platform.store.base import Document, Job
from tests.integration.test_gateway_platform import AS_ADMIN, Client, MakeClient, bearer, key, start, tenant


async def add(client: Client, job: Job) -> None:
    await client.app[PLATFORM_KEY].store.add_job(job)


async def test_admins_list_filter_and_read_jobs(aiohttp_client: MakeClient, tmp_path: Path) -> None:
    client = await start(aiohttp_client, tmp_path)
    later = time.time() + 3600  # not due, so the gateway's runner leaves them queued
    for i in range(3):
        await add(client, index_job("acme", f"d{i}", now=later + i))
    listed = await client.get("/api/admin/jobs", headers=AS_ADMIN)
    assert listed.status == 200
    body = await listed.json()
    assert [j["subject"] for j in body["jobs"]] == ["d2", "d1", "d0"]  # newest first
    assert (body["limit"], body["offset"]) == (50, 0)
    first = body["jobs"][0]
    assert first["state"] == "queued" and first["kind"] == INDEX_DOCUMENT and first["attempts"] == 0
    assert first["tenant_id"] == "acme" and first["run_at"].endswith("Z") and first["worker"] is None
    page = await (await client.get("/api/admin/jobs?limit=1&offset=1", headers=AS_ADMIN)).json()
    assert [j["subject"] for j in page["jobs"]] == ["d1"]
    assert (await (await client.get("/api/admin/jobs?state=failed", headers=AS_ADMIN)).json())["jobs"] == []
    one = await client.get(f"/api/admin/jobs/{first['id']}", headers=AS_ADMIN)
    assert one.status == 200 and (await one.json()) == first
    missing = await client.get("/api/admin/jobs/job_nope", headers=AS_ADMIN)
    assert missing.status == 404 and (await missing.json())["error"]["code"] == "job_not_found"


async def test_bad_list_parameters_name_what_to_change(aiohttp_client: MakeClient, tmp_path: Path) -> None:
    client = await start(aiohttp_client, tmp_path)
    for query, field in (
        ("state=done", "state"),
        ("limit=0", "limit"),
        ("limit=x", "limit"),
        ("offset=-1", "offset"),
    ):
        got = await client.get(f"/api/admin/jobs?{query}", headers=AS_ADMIN)
        assert got.status == 400, query
        assert field in (await got.json())["error"]["message"], query


async def test_a_failed_job_is_retried_and_runs_again(aiohttp_client: MakeClient, tmp_path: Path) -> None:
    client = await start(aiohttp_client, tmp_path)
    store = client.app[PLATFORM_KEY].store
    now = time.time()
    await store.add_document(Document("doc1", "acme", "Title", "words to index", {}, now, now), [])
    job = index_job("acme", "doc1", now=now + 3600)
    await store.add_job(job)
    claimed = await store.claim_job("test-worker", now + 3601, 60.0)
    assert claimed is not None and claimed.id == job.id
    await store.fail_job(job.id, "test-worker", now, "boom")
    failed = await (await client.get(f"/api/admin/jobs/{job.id}", headers=AS_ADMIN)).json()
    assert failed["state"] == "failed" and failed["error"] == "boom" and failed["finished_at"]

    retried = await client.post(f"/api/admin/jobs/{job.id}/retry", headers=AS_ADMIN)
    assert retried.status == 200, await retried.text()
    assert (await retried.json())["attempts"] == 0
    # The gateway's own runner takes it now and indexes the document.
    for _ in range(200):
        state = (await (await client.get(f"/api/admin/jobs/{job.id}", headers=AS_ADMIN)).json())["state"]
        if state == "completed":
            break
        await asyncio.sleep(0.05)
    assert state == "completed"
    assert [c.text for c in await store.document_chunks("acme", "doc1")] == ["words to index"]
    assert len(await store.keyword_search("acme", "index")) == 1

    again = await client.post(f"/api/admin/jobs/{job.id}/retry", headers=AS_ADMIN)
    assert again.status == 409 and "completed" in (await again.json())["error"]["message"]
    assert (await client.post("/api/admin/jobs/job_nope/retry", headers=AS_ADMIN)).status == 404


async def test_only_admins_see_jobs_and_a_tenants_admin_only_its_own(
    aiohttp_client: MakeClient, tmp_path: Path
) -> None:
    client = await start(aiohttp_client, tmp_path)
    acme, other = await tenant(client, "Acme"), await tenant(client, "Other")
    later = time.time() + 3600
    mine, theirs = index_job(acme, "a", now=later), index_job(other, "b", now=later)
    await add(client, mine)
    await add(client, theirs)
    chat_key = await key(client, acme)
    acme_admin = await key(client, acme, scopes=["admin"])
    for method, path in (
        ("GET", "/api/admin/jobs"),
        ("GET", f"/api/admin/jobs/{mine.id}"),
        ("POST", f"/api/admin/jobs/{mine.id}/retry"),
    ):
        assert (await client.request(method, path)).status == 401, path
        assert (await client.request(method, path, headers=bearer(chat_key))).status == 403, path
    seen = await (await client.get("/api/admin/jobs", headers=bearer(acme_admin))).json()
    assert [j["id"] for j in seen["jobs"]] == [mine.id]
    asked = await client.get(f"/api/admin/jobs?tenant_id={other}", headers=bearer(acme_admin))
    assert asked.status == 403
    for method, path in (
        ("GET", f"/api/admin/jobs/{theirs.id}"),
        ("POST", f"/api/admin/jobs/{theirs.id}/retry"),
    ):
        got = await client.request(method, path, headers=bearer(acme_admin))
        assert got.status == 404, path  # another tenant's job does not exist for this admin
    everyone = await (await client.get("/api/admin/jobs", headers=AS_ADMIN)).json()
    assert {j["id"] for j in everyone["jobs"]} == {mine.id, theirs.id}
    only_other = await (await client.get(f"/api/admin/jobs?tenant_id={other}", headers=AS_ADMIN)).json()
    assert [j["id"] for j in only_other["jobs"]] == [theirs.id]


async def test_admin_health_and_stats_show_the_job_runner(aiohttp_client: MakeClient, tmp_path: Path) -> None:
    client = await start(aiohttp_client, tmp_path)
    health = await (await client.get("/api/admin/health", headers=AS_ADMIN)).json()
    jobs = health["components"]["jobs"]
    assert jobs["store_ok"] is True and jobs["running"] == 0 and jobs["worker"].startswith("worker-")
