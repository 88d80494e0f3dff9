"""Answers grounded in documents: the gateway in front of a real `llmkit simulate` (chat and embeddings)
retrieves the tenant's chunks, sends them to the upstream and names them as sources; with the official
openai client and the seed's route."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from llmkit.core.tokenizer import count_prompt_tokens
from llmkit.errors import ConfigError
from llmkit.gateway.app import create_app
from llmkit.gateway.rag import CONTEXT_HEADER, RagSpec, rag_default
from tests.integration.test_gateway_documents import ADMIN, add, bearer, error_of, indexed, tenant_key
from tests.integration.test_gateway_search import simulator  # noqa: F401  (the module's simulator)
from tests.unit.gateway_fakes import gateway_settings

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[..., Awaitable[Client]]
QUESTION = "Why do cats chase mice?"


async def start(aiohttp_client: MakeClient, tmp_path: Path, sim: str, **gw: Any) -> Client:
    gw.setdefault("embeddings_url", sim)
    settings = gateway_settings(
        admin_key=ADMIN,
        platform_url=f"sqlite:///{tmp_path}/platform.db",
        upstream_kind="openai",
        upstreams=f"{sim}/v1",
        embeddings_dimensions=128,
        analytics_enabled=False,
        **gw,
    )
    return await aiohttp_client(create_app(settings))


async def corpus(client: Client, headers: dict[str, str] | None = None) -> None:
    await add(client, headers, id="cats", title="Cats", content="Cats chase mice because they are hunters.")
    await add(client, headers, id="bread", title="Bread", content="Bake the bread in a hot oven.")


def context_of(hits: list[tuple[str, str, str]]) -> str:
    """The system message the gateway builds for these (id, title, text) chunks."""
    parts = [CONTEXT_HEADER]
    for n, (doc_id, title, text) in enumerate(hits, start=1):
        parts.append(f"\n[{n}] {title} (document {doc_id})\n{text}\n")
    return "".join(parts)


async def test_the_openai_client_gets_an_answer_grounded_in_the_chunks_with_its_sources(
    aiohttp_client: MakeClient,
    tmp_path: Path,
    simulator: str,  # noqa: F811
) -> None:
    client = await start(aiohttp_client, tmp_path, simulator)
    await corpus(client)
    sdk = openai.AsyncOpenAI(base_url=str(client.make_url("/v1")), api_key="unused", max_retries=0)
    question = [{"role": "user", "content": QUESTION}]
    plain = await sdk.chat.completions.create(model="m", messages=question)  # type: ignore[arg-type]
    assert plain.model_extra is None or "sources" not in plain.model_extra
    grounded = await sdk.chat.completions.create(
        model="m",
        messages=question,  # type: ignore[arg-type]
        extra_body={"rag": {"top_k": 1, "type": "keyword"}},
    )
    assert grounded.model_extra is not None
    sources = grounded.model_extra["sources"]
    assert [(s["id"], s["title"], s["chunk"]) for s in sources] == [("cats", "Cats", 0)]
    assert sources[0]["score"] > 0
    # What the upstream received, read back from its token count: the chunk in a system message first.
    context = context_of([("cats", "Cats", "Cats chase mice because they are hunters.")])
    sent = [{"role": "system", "content": context}, *question]
    assert grounded.usage is not None and plain.usage is not None
    assert grounded.usage.prompt_tokens == count_prompt_tokens(sent)
    assert grounded.usage.prompt_tokens > plain.usage.prompt_tokens
    # Streaming: the sources ride on the last chunk.
    stream = await sdk.chat.completions.create(
        model="m",
        messages=question,  # type: ignore[arg-type]
        stream=True,
        extra_body={"rag": {"top_k": 2, "type": "hybrid"}},
    )
    extras = [chunk.model_extra for chunk in [c async for c in stream] if chunk.model_extra]
    assert [s["id"] for s in extras[-1]["sources"]][0] == "cats"
    await sdk.close()


async def test_the_seed_route_names_its_sources_and_the_cache_key_follows_the_chunks(
    aiohttp_client: MakeClient,
    tmp_path: Path,
    simulator: str,  # noqa: F811
) -> None:
    client = await start(aiohttp_client, tmp_path, simulator)
    await corpus(client)
    body = {"messages": [{"role": "user", "content": QUESTION}], "rag": {"top_k": 2, "type": "semantic"}}
    first = await client.post("/api/chat-optimized", json=body)
    answer = await first.json()
    assert first.headers["X-Gateway-Cache"] == "miss" and answer["cached"] is False
    assert [s["id"] for s in answer["sources"]] == ["cats", "bread"]
    again = await client.post("/api/chat-optimized", json=body)
    assert again.headers["X-Gateway-Cache"] == "hit" and (await again.json())["sources"] == answer["sources"]
    # New content in the chunk: another prompt for the upstream, so not the cached answer.
    put = await client.put(
        "/api/documents/cats", json={"title": "Cats", "content": "Cats chase mice at dusk."}
    )
    assert put.status == 202
    await indexed(client, "cats")
    changed = await client.post("/api/chat-optimized", json=body)
    assert changed.headers["X-Gateway-Cache"] == "miss"
    # The seed's stream ends with the sources.
    streamed = await client.post("/api/chat-optimized", json={**body, "stream": True})
    events = [
        orjson.loads(line[6:]) for line in (await streamed.read()).split(b"\n") if line.startswith(b"data: ")
    ]
    assert events[-1]["done"] is True and [s["id"] for s in events[-1]["sources"]][0] == "cats"


async def test_a_conversation_remembers_the_question_not_the_retrieved_context(
    aiohttp_client: MakeClient,
    tmp_path: Path,
    simulator: str,  # noqa: F811
) -> None:
    client = await start(aiohttp_client, tmp_path, simulator, rag_default="keyword:1")
    await corpus(client)
    ask = [{"role": "user", "content": QUESTION}]
    got = await client.post("/v1/chat/completions", json={"messages": ask, "conversation_id": "c1"})
    first = await got.json()
    assert [s["id"] for s in first["sources"]] == ["cats"]  # gateway.rag_default applies
    follow = [{"role": "user", "content": "and bread?"}]
    got = await client.post("/v1/chat/completions", json={"messages": follow, "conversation_id": "c1"})
    second = await got.json()
    assert [s["id"] for s in second["sources"]] == ["bread"]
    # The upstream got this turn's context, then the history without the first turn's context.
    reply = first["choices"][0]["message"]["content"]
    sent = [
        {"role": "system", "content": context_of([("bread", "Bread", "Bake the bread in a hot oven.")])},
        *ask,
        {"role": "assistant", "content": reply},
        *follow,
    ]
    assert second["usage"]["prompt_tokens"] == count_prompt_tokens(sent)
    off = await client.post("/v1/chat/completions", json={"messages": follow, "rag": False})
    assert "sources" not in await off.json()


async def test_rag_is_the_tenants_own_and_bad_rag_fields_are_named(
    aiohttp_client: MakeClient,
    tmp_path: Path,
    simulator: str,  # noqa: F811
) -> None:
    client = await start(aiohttp_client, tmp_path, simulator)
    a = bearer(await tenant_key(client, "A", ["chat", "search"]))
    b = bearer(await tenant_key(client, "B", ["chat"]))
    await corpus(client, a)
    body = {"messages": [{"role": "user", "content": QUESTION}], "rag": {"type": "hybrid"}}
    mine = await (await client.post("/api/chat-optimized", json=body, headers=a)).json()
    assert mine["sources"][0]["id"] == "cats"
    theirs = await (await client.post("/api/chat-optimized", json=body, headers=b)).json()
    assert "sources" not in theirs
    for rag, param in (
        ({"top_k": 0}, "rag.top_k"),
        ({"top_k": "4"}, "rag.top_k"),
        ({"type": "fuzzy"}, "rag.type"),
        ({"k": 1}, "rag.k"),
        ("yes", "rag"),
    ):
        for path in ("/api/chat-optimized", "/v1/chat/completions"):
            got = await client.post(path, json={**body, "rag": rag}, headers=a)
            assert (await error_of(got, 400))["param"] == param, (path, rag)


async def test_semantic_rag_without_embeddings_says_what_to_set(
    aiohttp_client: MakeClient,
    tmp_path: Path,
    simulator: str,  # noqa: F811
) -> None:
    client = await start(aiohttp_client, tmp_path, simulator, embeddings_url="")
    await corpus(client)
    body = {"messages": [{"role": "user", "content": QUESTION}], "rag": {"type": "hybrid"}}
    error = await error_of(await client.post("/api/chat-optimized", json=body), 400)
    assert error["param"] == "rag.type" and "gateway.embeddings_url" in error["message"]
    keyword = {**body, "rag": {"type": "keyword"}}
    assert (await (await client.post("/api/chat-optimized", json=keyword)).json())["sources"][0][
        "id"
    ] == "cats"


def test_the_rag_default_setting_is_checked() -> None:
    assert rag_default("") is None
    assert rag_default("hybrid:4") == RagSpec(4, "hybrid")
    assert rag_default("keyword") == RagSpec(4, "keyword")
    for bad in ("fuzzy", "hybrid:0", "hybrid:x", "semantic:21"):
        with pytest.raises(ConfigError, match="gateway.rag_default"):
            rag_default(bad)
