"""Semantic and hybrid search with embeddings from a real `llmkit simulate` process: indexing jobs embed
chunks, searches are cached per tenant until its documents change, an embeddings outage fails the job and
the retry endpoint indexes it once the upstream is back; on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from llmkit.gateway.app import create_app
from llmkit.platform.documents.embeddings import EmbeddingsClient, EmbeddingsConfig, endpoint
from llmkit.platform.service import PLATFORM_KEY
from llmkit.settings import LimiterSettings
from llmkit.simulate.embeddings import embed
from tests.integration.test_gateway_documents import (
    ADMIN,
    AS_ADMIN,
    add,
    bearer,
    error_of,
    indexed,
    search,
    tenant_key,
)
from tests.serve_process import ServerProcess
from tests.unit.gateway_fakes import HeldPool, gateway_settings

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[..., Awaitable[Client]]
DIMENSIONS = 256


@pytest.fixture(scope="module")
def simulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real simulator: its /v1/embeddings answers hashed word vectors."""
    env = {"LLMKIT_SERVER_ACCESS_LOG": "false"}
    with ServerProcess(tmp_path_factory.mktemp("sim"), "--port", "0", command="simulate", env=env) as sim:
        yield sim.wait_listening()


class Switch:
    """An embeddings upstream that fails (HTTP 503) while `down`, else forwards to the simulator."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.down = False
        self.calls = 0
        self.authorization: set[str | None] = set()

    async def handle(self, request: web.Request) -> web.Response:
        self.calls += 1
        self.authorization.add(request.headers.get("Authorization"))
        if self.down:
            return web.json_response({"error": {"message": "embedding model is loading"}}, status=503)
        async with aiohttp.ClientSession() as session:
            body, headers = await request.read(), {"Content-Type": request.content_type}
            async with session.post(f"{self.target}/v1/embeddings", data=body, headers=headers) as got:
                return web.Response(body=await got.read(), status=got.status, content_type="application/json")


@pytest.fixture
async def switch(simulator: str) -> AsyncIterator[tuple[Switch, str]]:
    proxy = Switch(simulator)
    app = web.Application()
    app.router.add_post("/v1/embeddings", proxy.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield proxy, str(server.make_url("/v1")).rstrip("/")
    finally:
        await server.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def platform_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/platform.db"
    return str(request.getfixturevalue("postgres_url"))


async def start(aiohttp_client: MakeClient, platform_url: str, embeddings_url: str, **gw: Any) -> Client:
    gw.setdefault("analytics_enabled", False)
    settings = gateway_settings(
        admin_key=ADMIN,
        platform_url=platform_url,
        embeddings_url=embeddings_url,
        embeddings_dimensions=DIMENSIONS,
        jobs_backoff_s=0.02,
        **gw,
    )
    settings = replace(settings, limiter=LimiterSettings(url="memory://"))
    return await aiohttp_client(create_app(settings, pool=HeldPool(hold=False)))


@pytest.fixture
async def client(aiohttp_client: MakeClient, platform_url: str, simulator: str) -> Client:
    return await start(aiohttp_client, platform_url, simulator)


CORPUS = {
    "cats": ("Cats", "Cats purr and chase mice around the barn at night."),
    "rust": ("Rust", "The borrow checker in Rust keeps memory safe without a garbage collector."),
    "bread": ("Bread", "Knead the dough, let it rise, then bake the bread in a hot oven."),
}


async def add_corpus(client: Client, headers: dict[str, str] | None = None) -> None:
    for doc_id, (title, content) in CORPUS.items():
        await add(client, headers, id=doc_id, title=title, content=content, metadata={"topic": doc_id})


async def test_semantic_search_ranks_by_cosine_over_the_embedded_chunks(client: Client) -> None:
    await add_corpus(client)
    got = await search(client, "how do cats chase mice", type="semantic", limit=3)
    hits = got["hits"]
    assert got["type"] == "semantic" and got["cached"] is False
    assert [h["document_id"] for h in hits][0] == "cats" and len(hits) == 3
    assert hits[0]["title"] == "Cats" and "purr" in hits[0]["text"] and hits[0]["chunk"] == 0
    scores = [h["score"] for h in hits]
    assert scores == sorted(scores, reverse=True) and -1.0 <= scores[-1] < scores[0] <= 1.0
    # The scores are the cosine of the simulator's vectors (the job embeds title, headings and text).
    query = embed("how do cats chase mice", DIMENSIONS)
    chunk = embed("Cats\n\nCats purr and chase mice around the barn at night.", DIMENSIONS)
    assert hits[0]["score"] == pytest.approx(sum(a * b for a, b in zip(query, chunk, strict=True)), abs=1e-4)
    assert [h["document_id"] for h in (await search(client, "bake bread dough", type="semantic"))["hits"]][
        0
    ] == "bread"
    only = await search(client, "cats chase mice", type="semantic", filters={"topic": "rust"})
    assert [h["document_id"] for h in only["hits"]] == ["rust"]


async def test_hybrid_fuses_keyword_and_semantic_ranks(client: Client) -> None:
    await add_corpus(client)
    got = await search(client, "borrow checker memory", type="hybrid", limit=3)
    hits = got["hits"]
    assert hits[0]["document_id"] == "rust" and hits[0]["highlights"]
    # In both lists at rank 1: 2 / (60 + 1).
    assert hits[0]["score"] == pytest.approx(2 / 61)
    assert all(h["score"] <= 2 / 61 for h in hits)
    keyword = await search(client, "oven", type="keyword")
    assert [h["document_id"] for h in keyword["hits"]] == ["bread"]


async def test_a_second_identical_search_is_cached_until_the_tenants_documents_change(client: Client) -> None:
    await add_corpus(client)
    for kind in ("keyword", "semantic", "hybrid"):
        first = await search(client, "cats mice", type=kind)
        again = await search(client, "cats mice", type=kind)
        assert (first["cached"], again["cached"]) == (False, True), kind
        assert again["hits"] == first["hits"]
    # Another limit or filter is another search.
    assert (await search(client, "cats mice", limit=1))["cached"] is False
    # A replaced document: the next search is answered afresh, with the new content once it is indexed.
    put = await client.put("/api/documents/cats", json={"title": "Dogs", "content": "Dogs bark at mice."})
    assert put.status == 202
    await indexed(client, "cats")
    fresh = await search(client, "cats mice", type="keyword")
    assert fresh["cached"] is False and fresh["hits"][0]["title"] == "Dogs"
    assert (await search(client, "cats mice", type="keyword"))["cached"] is True
    # The vector index follows: the new vectors replace the old ones.
    dogs = (await search(client, "dogs bark", type="semantic"))["hits"]
    assert dogs[0]["document_id"] == "cats" and dogs[0]["text"] == "Dogs bark at mice."
    assert (await client.delete("/api/documents/cats")).status == 204
    gone = await search(client, "cats mice", type="keyword")
    assert gone["cached"] is False and gone["hits"] == []
    semantic = await search(client, "dogs bark", type="semantic")
    assert "cats" not in [h["document_id"] for h in semantic["hits"]] and len(semantic["hits"]) == 2


async def test_a_tenant_never_finds_another_tenants_documents_by_meaning(client: Client) -> None:
    a, b = bearer(await tenant_key(client, "A")), bearer(await tenant_key(client, "B"))
    await add_corpus(client, a)
    for kind in ("semantic", "hybrid"):
        assert (await search(client, "cats chase mice", b, type=kind))["hits"] == []
        assert (await search(client, "cats chase mice", None, type=kind))["hits"] == []
        assert (await search(client, "cats chase mice", a, type=kind))["hits"][0]["document_id"] == "cats"
    # B's identical search is not A's cached answer either.
    assert (await search(client, "cats chase mice", b, type="semantic"))["hits"] == []


async def test_a_failing_embeddings_upstream_fails_the_job_and_the_retry_indexes_it(
    aiohttp_client: MakeClient, platform_url: str, switch: tuple[Switch, str]
) -> None:
    proxy, url = switch
    secret = "sk-embeddings-secret-0123456789"
    client = await start(aiohttp_client, platform_url, url, embeddings_api_key=secret)
    proxy.down = True
    made = await client.post("/api/documents", json={"id": "d", "title": "Cats", "content": "cats purr"})
    assert made.status == 202
    failed = await indexed(client, "d")
    index = failed["index"]
    assert index["state"] == "failed" and index["attempts"] == 5
    assert "503" in index["error"] and "embedding model is loading" in index["error"]
    assert failed["chunks"] == []
    # The query cannot be embedded either: 503 saying so; keyword search still answers.
    error = await error_of(await client.post("/api/search", json={"query": "cats", "type": "semantic"}), 503)
    assert "embeddings upstream" in error["message"]
    assert (await search(client, "cats"))["hits"] == []
    health = await (await client.get("/api/admin/health", headers=AS_ADMIN)).json()
    assert "503" in str(health)
    # gateway.embeddings_api_key goes to the upstream as a Bearer token, and nowhere else.
    assert proxy.authorization == {f"Bearer {secret}"}
    assert secret not in str(health) and secret not in str(failed) and secret not in error["message"]
    proxy.down = False
    retried = await client.post(f"/api/admin/jobs/{index['job_id']}/retry", headers=AS_ADMIN)
    assert retried.status == 200, await retried.text()
    done = await indexed(client, "d")
    assert done["index"]["state"] == "completed" and len(done["chunks"]) == 1
    assert (await search(client, "cats purr", type="semantic"))["hits"][0]["document_id"] == "d"


async def test_searches_are_in_the_histogram_and_the_analytics(
    aiohttp_client: MakeClient, tmp_path: Path, simulator: str
) -> None:
    client = await start(aiohttp_client, f"sqlite:///{tmp_path}/p.db", simulator, analytics_enabled=True)
    await add_corpus(client)
    await search(client, "cats", type="semantic")
    await search(client, "cats", type="semantic")
    await search(client, "bread", type="keyword")
    metrics = await (await client.get("/metrics")).text()
    assert 'search_duration_seconds_count{cached="false",type="semantic"} 1.0' in metrics
    assert 'search_duration_seconds_count{cached="true",type="semantic"} 1.0' in metrics
    assert 'search_duration_seconds_bucket{cached="false",le="+Inf",type="keyword"} 1.0' in metrics
    writer = client.app[PLATFORM_KEY].writer
    assert writer is not None
    for _ in range(200):
        if writer.stats()["buffered"] == 0 and writer.stats()["in_flight"] == 0:
            break
        await asyncio.sleep(0.02)
    popular = await (await client.get("/api/admin/analytics/popular", headers=AS_ADMIN)).json()
    assert {(i["query"], i["count"]) for i in popular["items"]} == {("cats", 2), ("bread", 1)}
    stats = await (await client.get("/api/admin/analytics/stats", headers=AS_ADMIN)).json()
    assert stats["requests"] == 3 and stats["cache_hits"] == 1


async def test_the_client_reads_base64_and_float_vectors_alike(simulator: str) -> None:
    client = EmbeddingsClient(EmbeddingsConfig(endpoint(simulator), dimensions=64, batch=2))
    try:
        rows = await client.embed(["alpha beta", "gamma", "delta epsilon", "zeta"])
        assert rows.shape == (4, 64) and client.counts["calls"] == 2
        for row, text in zip(rows, ["alpha beta", "gamma", "delta epsilon", "zeta"], strict=True):
            assert row.tolist() == pytest.approx(embed(text, 64), abs=1e-6)
    finally:
        await client.close()
    assert endpoint("http://h:1") == "http://h:1/v1/embeddings"
    assert endpoint("http://h:1/v1/") == "http://h:1/v1/embeddings"
    assert endpoint("https://h/x/v1/embeddings") == "https://h/x/v1/embeddings"
