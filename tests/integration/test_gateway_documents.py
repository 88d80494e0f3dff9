"""The gateway's /api/documents and /api/search: round trips, paging, filters, ranking, bad bodies, scopes and
tenant isolation, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from llmkit.gateway.app import create_app
from llmkit.platform.documents.bodies import MAX_BATCH, MAX_CONTENT
from llmkit.settings import LimiterSettings
from tests.unit.gateway_fakes import HeldPool, gateway_settings

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[..., Awaitable[Client]]
ADMIN = "bootstrap-admin-key-for-tests-0123456789"
AS_ADMIN = {"X-API-Key": ADMIN}
GUIDE = "# Install\n\nRun pip install llmkit.\n\n## Configure\n\nSet gateway.platform_url to a database."


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def platform_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/platform.db"
    return str(request.getfixturevalue("postgres_url"))


async def start(aiohttp_client: MakeClient, url: str, **gw: Any) -> Client:
    settings = gateway_settings(admin_key=ADMIN, platform_url=url, analytics_enabled=False, **gw)
    settings = replace(settings, limiter=LimiterSettings(url="memory://"))
    return await aiohttp_client(create_app(settings, pool=HeldPool(hold=False)))


@pytest.fixture
async def client(aiohttp_client: MakeClient, platform_url: str) -> Client:
    return await start(aiohttp_client, platform_url)


async def tenant_key(client: Client, name: str, scopes: list[str] | None = None) -> str:
    made = await client.post("/api/admin/tenants", json={"name": name}, headers=AS_ADMIN)
    assert made.status == 201, await made.text()
    body = {"name": "k", "tenant_id": (await made.json())["id"], "scopes": scopes or ["search"]}
    key = await client.post("/api/admin/api-keys", json=body, headers=AS_ADMIN)
    assert key.status == 201, await key.text()
    return str((await key.json())["key"])


async def indexed(client: Client, doc_id: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """The document once its latest index job has finished (completed or failed)."""
    for _ in range(400):
        got = await client.get(f"/api/documents/{doc_id}", headers=headers)
        assert got.status == 200, await got.text()
        body: dict[str, Any] = await got.json()
        if body["index"]["state"] in ("completed", "failed"):
            return body
        await asyncio.sleep(0.025)
    raise AssertionError(f"{doc_id} was not indexed within 10 s: {body['index']}")


async def add(client: Client, headers: dict[str, str] | None = None, **doc: Any) -> dict[str, Any]:
    """Add a document (202) and wait until it is indexed."""
    got = await client.post("/api/documents", json={"title": "T", "content": "text", **doc}, headers=headers)
    assert got.status == 202, await got.text()
    body: dict[str, Any] = await got.json()
    assert body["index"]["state"] == "queued" and body["index"]["job_id"]
    assert (await indexed(client, body["id"], headers))["index"]["state"] == "completed"
    return body


async def search(client: Client, query: str, headers: dict[str, str] | None = None, **extra: Any) -> Any:
    got = await client.post("/api/search", json={"query": query, **extra}, headers=headers)
    assert got.status == 200, await got.text()
    return await got.json()


async def error_of(response: Any, status: int) -> dict[str, Any]:
    assert response.status == status, await response.text()
    error: dict[str, Any] = (await response.json())["error"]
    return error


async def test_each_route_round_trips(client: Client) -> None:
    made = await add(client, title="Guide", content=GUIDE, metadata={"source": "docs"})
    assert set(made) == {"id", "title", "index", "created_at", "updated_at"}
    assert made["title"] == "Guide" and len(made["id"]) == 32
    doc_id = made["id"]
    got = await (await client.get(f"/api/documents/{doc_id}")).json()
    assert got["content"] == GUIDE and got["metadata"] == {"source": "docs"} and got["size"] == len(GUIDE)
    assert got["index"]["job_id"] == made["index"]["job_id"] and got["index"]["finished_at"]
    assert len(got["chunks"]) == 2
    assert got["chunks"][0]["headings"] == ["Install"] and "pip install" in got["chunks"][0]["text"]
    listed = await (await client.get("/api/documents")).json()
    assert [d["id"] for d in listed["documents"]] == [doc_id] and "content" not in listed["documents"][0]
    assert (listed["limit"], listed["offset"], listed["next_offset"]) == (20, 0, None)

    replaced = await client.put(
        f"/api/documents/{doc_id}", json={"title": "New", "content": "# Only\n\nzebra"}
    )
    assert replaced.status == 202
    body = await replaced.json()
    assert body["title"] == "New" and body["created_at"] == made["created_at"]
    assert body["index"]["state"] == "queued" and body["index"]["job_id"] != made["index"]["job_id"]
    assert len((await indexed(client, doc_id))["chunks"]) == 1
    assert (await search(client, "pip"))["hits"] == []
    assert [h["document_id"] for h in (await search(client, "zebra"))["hits"]] == [doc_id]

    assert (await client.delete(f"/api/documents/{doc_id}")).status == 204
    for method in ("GET", "DELETE"):
        assert (await error_of(await client.request(method, f"/api/documents/{doc_id}"), 404))[
            "code"
        ] == "document_not_found"
    put = await client.put(f"/api/documents/{doc_id}", json={"title": "x", "content": "y"})
    await error_of(put, 404)
    assert (await search(client, "zebra"))["hits"] == []


async def test_a_chosen_id_is_kept_and_a_second_one_is_409(client: Client) -> None:
    assert (await add(client, id="guide-1"))["id"] == "guide-1"
    again = await client.post("/api/documents", json={"id": "guide-1", "title": "T", "content": "x"})
    error = await error_of(again, 409)
    assert "guide-1" in error["message"] and error["param"] == "id"


async def test_a_batch_is_stored_whole_or_not_at_all(client: Client) -> None:
    docs = [{"title": f"D{i}", "content": f"batch word{i}", "id": f"b{i}"} for i in range(3)]
    got = await client.post("/api/documents", json={"documents": docs})
    assert got.status == 202
    made = (await got.json())["documents"]
    assert [d["id"] for d in made] == ["b0", "b1", "b2"] and len({d["index"]["job_id"] for d in made}) == 3
    for i in range(3):
        assert (await indexed(client, f"b{i}"))["chunks"][0]["text"] == f"batch word{i}"
    clash = [{"title": "new", "content": "x", "id": "n1"}, {"title": "old", "content": "y", "id": "b1"}]
    error = await error_of(await client.post("/api/documents", json={"documents": clash}), 409)
    assert error["param"] == "documents[1].id" and "b1" in error["message"]
    assert (await client.get("/api/documents/n1")).status == 404
    twice = [{"title": "a", "content": "x", "id": "z"}, {"title": "b", "content": "y", "id": "z"}]
    error = await error_of(await client.post("/api/documents", json={"documents": twice}), 422)
    assert error["param"] == "documents[1].id"
    many = [{"title": "t", "content": "c"}] * (MAX_BATCH + 1)
    error = await error_of(await client.post("/api/documents", json={"documents": many}), 422)
    assert error["param"] == "documents" and str(MAX_BATCH) in error["message"]


async def test_markdown_and_text_uploads_take_their_title_from_the_query_or_a_header(
    client: Client, aiohttp_client: MakeClient
) -> None:
    markdown = {"Content-Type": "text/markdown"}
    got = await client.post("/api/documents?title=Guide&id=md1", data=GUIDE.encode(), headers=markdown)
    assert got.status == 202 and (await got.json())["id"] == "md1"
    assert (await indexed(client, "md1"))["content"] == GUIDE
    headed = await client.post(
        "/api/documents", data=b"plain words", headers={**markdown, "X-Document-Title": "Header title"}
    )
    assert (await headed.json())["title"] == "Header title"
    untitled = await client.post("/api/documents", data=b"words", headers=markdown)
    assert (await error_of(untitled, 422))["param"] == "title"
    bad = await client.post("/api/documents?title=x", data=b"\xff\xfe", headers=markdown)
    assert "UTF-8" in (await error_of(bad, 400))["message"]
    # text/plain is what any web page may send cross-site: it needs a key.
    plain = {"Content-Type": "text/plain"}
    assert (await client.post("/api/documents?title=p", data=b"x", headers=plain)).status == 415
    keyed = await client.post("/api/documents?title=p", data=b"plain text", headers={**plain, **AS_ADMIN})
    assert keyed.status == 202
    put = await client.put("/api/documents/md1?title=Again", data=b"# New\n\nbody", headers=markdown)
    assert put.status == 202 and (await put.json())["title"] == "Again"
    kept = await client.put("/api/documents/md1", data=b"# Newer\n\nbody", headers=markdown)
    assert (await kept.json())["title"] == "Again"
    # ?title= and ?id= belong to text bodies: with JSON they are refused, not ignored.
    mixed = await client.post("/api/documents?id=q1", json={"title": "t", "content": "c"})
    assert (await error_of(mixed, 400))["param"] == "id"


async def test_paging_and_metadata_filters(client: Client) -> None:
    for i in range(5):
        meta = {"n": i, "even": i % 2 == 0, "tag": "x" if i < 3 else "y", "year": "2024"}
        await add(client, id=f"p{i}", metadata=meta)
    first = await (await client.get("/api/documents?limit=2")).json()
    assert [d["id"] for d in first["documents"]] == ["p0", "p1"] and first["next_offset"] == 2
    last = await (await client.get("/api/documents?limit=2&offset=4")).json()
    assert [d["id"] for d in last["documents"]] == ["p4"] and last["next_offset"] is None

    async def ids(query: str) -> list[str]:
        got = await client.get(f"/api/documents?{query}")
        assert got.status == 200, await got.text()
        return [d["id"] for d in (await got.json())["documents"]]

    assert await ids("metadata.tag=x") == ["p0", "p1", "p2"]
    assert await ids("metadata.even=true&metadata.tag=y") == ["p4"]
    assert await ids("metadata.n=3") == ["p3"]
    # Numbers compare as numbers: the string "2024" is not the number 2024 unless quoted.
    assert await ids("metadata.year=2024") == []
    assert await ids('metadata.year="2024"&limit=1') == ["p0"]
    assert await ids("metadata.missing=1") == []
    for query, param in (
        ("limit=0", "limit"),
        ("limit=x", "limit"),
        ("offset=-1", "offset"),
        ("sort=id", "sort"),
    ):
        error = await error_of(await client.get(f"/api/documents?{query}"), 400)
        assert error["param"] == param and param in error["message"]


async def test_search_ranks_the_document_that_mentions_the_term(client: Client) -> None:
    await add(client, id="noise", title="Noise", content="A long text about gardens. " * 30)
    await add(client, id="pg", title="Postgres", content="# Tuning\n\nPostgres settings tune postgres.")
    await add(client, id="other", title="Other", content="Postgres once. " + "Among many words. " * 8)
    answer = await search(client, "postgres")
    assert answer["query"] == "postgres" and answer["type"] == "keyword" and answer["took_ms"] >= 0
    hits = answer["hits"]
    assert [h["document_id"] for h in hits] == ["pg", "other"]
    best = hits[0]
    assert set(best) == {"document_id", "title", "chunk", "text", "score", "highlights"}
    assert best["title"] == "Postgres" and best["chunk"] == 0 and best["score"] > hits[1]["score"]
    assert "<mark>" in best["highlights"][0].lower()
    assert len((await search(client, "postgres", limit=1))["hits"]) == 1
    await add(client, id="tagged", content="postgres here too", metadata={"team": "db"})
    filtered = await search(client, "postgres", filters={"team": "db"})
    assert [h["document_id"] for h in filtered["hits"]] == ["tagged"]


@pytest.mark.parametrize(
    "query",
    [
        '"unbalanced',
        "NEAR(a b)",
        "* OR *",
        "a & | ! b :*",
        "'; DROP TABLE documents; --",
        "column:postgres",
        "\x00\u202e\U0001f600",
        "   ",
        "x" * 1000,
    ],
)
async def test_hostile_queries_answer_200_never_500(client: Client, query: str) -> None:
    await add(client, content="postgres column drop table")
    got = await client.post("/api/search", json={"query": query})
    assert got.status == 200, await got.text()
    assert isinstance((await got.json())["hits"], list)


BAD_BODIES = [
    ({}, "title"),
    ({"title": "", "content": "x"}, "title"),
    ({"title": "  ", "content": "x"}, "title"),
    ({"title": "t"}, "content"),
    ({"title": "t", "content": 5}, "content"),
    ({"title": "x" * 501, "content": "x"}, "title"),
    ({"title": "t", "content": "x", "metadata": [1]}, "metadata"),
    ({"title": "t", "content": "x", "metadata": {"k": "v" * 20000}}, "metadata"),
    ({"title": "t", "content": "x", "id": "a/b"}, "id"),
    ({"title": "t", "content": "x", "id": 7}, "id"),
    ({"title": "t", "content": "x", "colour": "red"}, "colour"),
    ({"documents": []}, "documents"),
    ({"documents": [{"title": "t"}]}, "documents[0].content"),
    ({"documents": ["x"]}, "documents[0]"),
]


@pytest.mark.parametrize(("body", "field"), BAD_BODIES)
async def test_bad_document_bodies_name_the_field(client: Client, body: dict[str, Any], field: str) -> None:
    error = await error_of(await client.post("/api/documents", json=body), 422)
    assert error["param"] == field and field in error["message"]


async def test_content_is_bounded_and_the_limit_is_said(client: Client) -> None:
    body = {"title": "big", "content": "a " * (MAX_CONTENT // 2 + 1)}
    error = await error_of(await client.post("/api/documents", json=body), 422)
    assert error["param"] == "content" and str(MAX_CONTENT) in error["message"]
    made = await add(client, content="word " * (MAX_CONTENT // 5))
    assert len((await indexed(client, made["id"]))["chunks"]) > 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "query"),
        ({"query": ""}, "query"),
        ({"query": 3}, "query"),
        ({"query": "x" * 1001}, "query"),
        ({"query": "x", "type": "fuzzy"}, "type"),
        ({"query": "x", "limit": 0}, "limit"),
        ({"query": "x", "limit": 101}, "limit"),
        ({"query": "x", "limit": "5"}, "limit"),
        ({"query": "x", "limit": True}, "limit"),
        ({"query": "x", "filters": [1]}, "filters"),
        ({"query": "x", "filters": {"a": {"b": 1}}}, "filters.a"),
        ({"query": "x", "top": 1}, "top"),
    ],
)
async def test_bad_search_bodies_name_the_field(client: Client, body: dict[str, Any], field: str) -> None:
    error = await error_of(await client.post("/api/search", json=body), 422)
    assert error["param"] == field and field in error["message"]


async def test_malformed_bodies_are_4xx_saying_what_to_send(client: Client) -> None:
    for path in ("/api/documents", "/api/search", "/api/documents/x"):
        method = "PUT" if path.endswith("/x") else "POST"
        assert (
            await client.request(method, path, data=b"{nope", headers={"Content-Type": "application/json"})
        ).status == 400
        assert (
            await client.request(method, path, data=b"[1]", headers={"Content-Type": "application/json"})
        ).status == 400
        empty = await client.request(method, path, data=b"", headers={"Content-Type": "application/json"})
        assert empty.status == 400
        # A form body with no key is what a web page could send cross-site.
        form = await client.request(method, path, data={"a": "b"})
        assert (await error_of(form, 415))["code"] == "unsupported_media_type"
    await add(client, id="x")
    assert (
        await error_of(
            await client.put("/api/documents/x", json={"title": "t", "content": "c", "id": "y"}), 422
        )
    )["param"] == "id"
    assert (await client.get("/api/documents/" + "x" * 300)).status == 404


async def test_semantic_and_hybrid_say_what_to_set_and_keyword_still_works(client: Client) -> None:
    await add(client, content="keyword search works")
    for kind in ("semantic", "hybrid"):
        got = await client.post("/api/search", json={"query": "works", "type": kind})
        error = await error_of(got, 400)
        assert "gateway.embeddings_url" in error["message"] and error["param"] == "type"
    assert len((await search(client, "works"))["hits"]) == 1


ROUTES = [
    ("POST", "/api/documents", {"title": "t", "content": "c"}),
    ("GET", "/api/documents", None),
    ("GET", "/api/documents/d1", None),
    ("PUT", "/api/documents/d1", {"title": "t", "content": "c"}),
    ("DELETE", "/api/documents/d1", None),
    ("POST", "/api/search", {"query": "q"}),
]


async def test_every_route_needs_the_search_scope(aiohttp_client: MakeClient, platform_url: str) -> None:
    client = await start(aiohttp_client, platform_url, require_api_key=True)
    chat_only = await tenant_key(client, "Chat", ["chat"])
    searcher = await tenant_key(client, "Search", ["search"])
    await add(client, bearer(searcher), id="d1")
    for method, path, body in ROUTES:
        missing = await client.request(method, path, json=body)
        assert (await error_of(missing, 401))["code"] == "missing_api_key", (method, path)
        refused = await client.request(method, path, json=body, headers=bearer(chat_only))
        error = await error_of(refused, 403)
        assert error["code"] == "insufficient_scope" and "search scope" in error["message"], (method, path)
        cross = await client.request(method, path, json=body, headers={"Origin": "https://evil.example"})
        assert cross.status in (401, 403), (method, path)
    ok = [202, 200, 200, 202, 204, 200]
    for (method, path, body), status in zip(ROUTES[1:], ok[1:], strict=True):
        got = await client.request(method, path, json=body, headers=bearer(searcher))
        assert got.status == status, (method, path, await got.text())


async def test_anonymous_callers_act_in_the_default_tenant(client: Client) -> None:
    await add(client, id="anon", content="shared default words")
    # The admin key (no tenant of its own) is in the default tenant too.
    got = await client.get("/api/documents/anon", headers=AS_ADMIN)
    assert got.status == 200
    cross = await client.post(
        "/api/documents", json={"title": "t", "content": "c"}, headers={"Origin": "https://evil.example"}
    )
    assert (await error_of(cross, 403))["code"] == "cross_site_request"


async def test_a_tenant_never_sees_finds_replaces_or_deletes_anothers_document(client: Client) -> None:
    a, b = bearer(await tenant_key(client, "A")), bearer(await tenant_key(client, "B"))
    await add(client, a, id="secret", title="A plan", content="confidential merger plans", metadata={"k": 1})
    assert (await client.get("/api/documents/secret", headers=b)).status == 404
    listed = await (await client.get("/api/documents?metadata.k=1", headers=b)).json()
    assert listed["documents"] == []
    assert (await search(client, "confidential merger", b))["hits"] == []
    assert (await search(client, "confidential", None))["hits"] == []  # nor the default tenant
    put = await client.put("/api/documents/secret", json={"title": "x", "content": "y"}, headers=b)
    assert (await error_of(put, 404))["code"] == "document_not_found"
    assert (await client.delete("/api/documents/secret", headers=b)).status == 404
    # The same id in B is B's own document; A's is untouched.
    await add(client, b, id="secret", title="B's", content="other words")
    mine = await (await client.get("/api/documents/secret", headers=a)).json()
    assert mine["title"] == "A plan" and mine["content"] == "confidential merger plans"
    assert [h["document_id"] for h in (await search(client, "merger", a))["hits"]] == ["secret"]
    assert (await client.delete("/api/documents/secret", headers=b)).status == 204
    assert (await client.get("/api/documents/secret", headers=a)).status == 200


async def test_the_routes_are_in_openapi(client: Client) -> None:
    spec = await (await client.get("/openapi.json")).json()
    paths = spec["paths"]
    assert set(paths["/api/documents"]) == {"get", "post"}
    assert set(paths["/api/documents/{document_id}"]) == {"get", "put", "delete"}
    assert "post" in paths["/api/search"]
    assert {"409", "422", "403"} <= set(paths["/api/documents"]["post"]["responses"])
    assert {"NewDocument", "StoredDocument", "Document", "SearchHit"} <= set(spec["components"]["schemas"])


async def test_nul_characters_are_refused_on_every_store_and_lone_surrogates_are_bad_json(
    client: Client,
) -> None:
    # PostgreSQL cannot store U+0000: no store is given one, so SQLite and PostgreSQL answer alike.
    for body, field in (
        ({"title": "a\x00b", "content": "c"}, "title"),
        ({"title": "t", "content": "a\x00b"}, "content"),
        ({"title": "t", "content": "c", "metadata": {"k": ["a\x00"]}}, "metadata"),
    ):
        error = await error_of(await client.post("/api/documents", json=body), 422)
        assert error["param"] == field and "NUL" in error["message"]
    error = await error_of(
        await client.post("/api/search", json={"query": "x", "filters": {"k": "\x00"}}), 422
    )
    assert error["param"] == "filters"
    assert (await error_of(await client.get("/api/documents?metadata.k=%00"), 400))["param"] == "metadata.k"
    assert (await client.post("/api/search", json={"query": "a\x00b"})).status == 200
    lone = '{"title": "t", "content": "lone \\ud800 surrogate"}'
    bad = await client.post("/api/documents", data=lone, headers={"Content-Type": "application/json"})
    assert (await error_of(bad, 400))["code"] == "invalid_json"
