"""Ollama's model and embedding routes of `llmkit simulate` (/api/show, /api/pull, /api/delete, /api/embed,
/api/embeddings), checked with the official ollama client and raw bytes."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import ollama
import pytest

from llmkit.core.tokenizer import count_tokens, tokenize
from llmkit.simulate import ollama_models
from llmkit.simulate.ollama_embed import TOO_LONG
from tests.integration.test_simulate_app import make_settings, real_server
from tests.integration.test_simulate_ollama import ndjson

QUESTION = "Why is the sky blue?"


@pytest.fixture
async def client(base_url: str) -> AsyncIterator[ollama.AsyncClient]:
    made = ollama.AsyncClient(host=base_url)
    yield made
    await made._client.aclose()


def _norm(vector: Any) -> float:
    return math.sqrt(math.fsum(x * x for x in vector))


async def _post(base_url: str, path: str, body: Any, method: str = "POST") -> tuple[int, bytes]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, f"{base_url}{path}", json=body) as r,
    ):
        return r.status, await r.read()


async def _names(client: ollama.AsyncClient) -> list[str | None]:
    return [m.model for m in (await client.list()).models]


async def test_show_a_chat_model(client: ollama.AsyncClient) -> None:
    shown = await client.show("gpt-4o-mini")
    assert (
        shown.modelfile is not None
        and "FROM " in shown.modelfile
        and "# FROM gpt-4o-mini:latest" in shown.modelfile
    )
    assert (
        shown.parameters is not None
        and shown.parameters.startswith("num_ctx")
        and '"<|eot_id|>"' in shown.parameters
    )
    assert shown.template is not None and "{{ .Prompt }}" in shown.template
    assert shown.details is not None
    assert (shown.details.format, shown.details.family) == ("gguf", "llmkit")
    assert (shown.details.parameter_size, shown.details.quantization_level) == ("7.6B", "Q4_K_M")
    assert shown.modelinfo is not None and shown.modelinfo["general.architecture"] == "llmkit"
    assert shown.modelinfo["llmkit.context_length"] == 8192
    assert shown.capabilities == ["completion", "tools"] and shown.modified_at is not None
    # The tag is optional, as in Ollama.
    assert (await client.show("gpt-4o-mini:latest")).modelfile == shown.modelfile


async def test_show_errors(client: ollama.AsyncClient, base_url: str) -> None:
    with pytest.raises(ollama.ResponseError) as missing:
        await client.show("llama-nope")
    assert missing.value.status_code == 404 and missing.value.error == "model 'llama-nope' not found"
    status, raw = await _post(base_url, "/api/show", {"model": "llama-nope:7b"})
    assert status == 404 and raw == b'{"error":"model \'llama-nope:7b\' not found"}'
    status, raw = await _post(base_url, "/api/show", {})
    assert status == 400 and b"model is required" in raw
    status, raw = await _post(base_url, "/api/show", {"model": "gpt-4o-mini", "verbose": "yes"})
    assert status == 400 and b"verbose must be true or false" in raw
    # Older clients send name for model.
    assert (await _post(base_url, "/api/show", {"name": "gpt-4o-mini"}))[0] == 200


async def test_pull_streams_progress_then_the_model_is_local(client: ollama.AsyncClient) -> None:
    assert "nomic-embed-text:latest" not in await _names(client)
    parts = [p async for p in await client.pull("nomic-embed-text", stream=True)]
    assert parts[0].status == "pulling manifest" and parts[-1].status == "success"
    downloads = [p for p in parts if p.digest]
    assert downloads and all(
        p.total and p.completed is not None and p.completed <= p.total for p in downloads
    )
    assert any(p.completed == p.total for p in downloads)
    assert all(p.status and p.digest and p.status == f"pulling {p.digest[7:19]}" for p in downloads)
    names = await _names(client)
    assert names[-1] == "nomic-embed-text:latest" and "gpt-4o-mini:latest" in names
    assert "nomic-embed-text:latest" in [m.model for m in (await client.ps()).models]
    shown = await client.show("nomic-embed-text")
    assert (
        shown.capabilities == ["embedding"] and shown.details is not None and shown.details.family == "bert"
    )
    assert shown.modelinfo is not None and shown.modelinfo["bert.embedding_length"] == 768


async def test_pull_without_stream_and_its_errors(client: ollama.AsyncClient, base_url: str) -> None:
    done = await client.pull("llama3.2:1b")
    assert done.status == "success" and "llama3.2:1b" in await _names(client)
    status, raw = await _post(base_url, "/api/pull", {"model": "qwen3", "stream": False})
    assert status == 200 and raw == b'{"status":"success"}'
    status, raw = await _post(base_url, "/api/pull", {"model": "qwen3"})
    assert status == 200 and [line["status"] for line in ndjson(raw)][-1] == "success"
    # Pulling again keeps one entry.
    assert (await _names(client)).count("qwen3:latest") == 1
    for body, words in [
        ({"model": "no spaces please"}, b"invalid model name"),
        ({"model": ""}, b"model is required"),
        ({"model": "qwen3", "stream": "no"}, b"stream must be true or false"),
        ({"model": "qwen3", "insecure": 1}, b"insecure must be true or false"),
    ]:
        status, raw = await _post(base_url, "/api/pull", body)
        assert status == 400 and words in raw, (body, raw)


async def test_pulls_past_the_model_limit_are_409(
    client: ollama.AsyncClient, base_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ollama_models, "MAX_LOCAL_MODELS", len(await _names(client)) + 1)
    assert (await client.pull("qwen3")).status == "success"
    status, raw = await _post(base_url, "/api/pull", {"model": "llama3.2:1b"})
    assert status == 409 and b"at most" in raw and b"DELETE /api/delete" in raw
    # A model already there is no new one.
    assert (await client.pull("qwen3")).status == "success"
    await client.delete("qwen3")
    assert (await client.pull("llama3.2:1b")).status == "success"


async def test_delete_removes_a_model(client: ollama.AsyncClient, base_url: str) -> None:
    await client.pull("llama3.2:1b")
    assert (await client.delete("llama3.2:1b")).status == "success"
    assert "llama3.2:1b" not in await _names(client)
    status, raw = await _post(base_url, "/api/delete", {"model": "gpt-4o-mini"}, "DELETE")
    assert status == 200 and raw == b""
    assert "gpt-4o-mini:latest" not in await _names(client)
    assert "gpt-4o-mini:latest" not in [m.model for m in (await client.ps()).models]
    with pytest.raises(ollama.ResponseError) as gone:
        await client.show("gpt-4o-mini")
    assert gone.value.status_code == 404
    with pytest.raises(ollama.ResponseError) as again:
        await client.delete("gpt-4o-mini")
    assert again.value.status_code == 404 and again.value.error == "model 'gpt-4o-mini' not found"
    status, raw = await _post(base_url, "/api/delete", {}, "DELETE")
    assert status == 400 and b"model is required" in raw


async def test_each_app_has_its_own_models(client: ollama.AsyncClient) -> None:
    await client.pull("qwen3")
    async with real_server(make_settings()) as other_url:
        other = ollama.AsyncClient(host=other_url)
        try:
            assert "qwen3:latest" in await _names(client) and "qwen3:latest" not in await _names(other)
        finally:
            await other._client.aclose()


@pytest.mark.parametrize(
    ("model", "width"),
    [("nomic-embed-text", 768), ("mxbai-embed-large:latest", 1024), ("all-minilm", 384), ("llama3.2", 1536)],
)
async def test_embed_is_as_wide_as_the_model(client: ollama.AsyncClient, model: str, width: int) -> None:
    answer = await client.embed(model=model, input=[QUESTION, "Why is the grass green?"])
    assert answer.model == model and len(answer.embeddings) == 2
    assert all(len(v) == width and math.isclose(_norm(v), 1.0, rel_tol=1e-6) for v in answer.embeddings)
    assert answer.embeddings[0] != answer.embeddings[1]
    assert answer.prompt_eval_count == count_tokens(QUESTION) + count_tokens("Why is the grass green?")
    assert answer.total_duration is not None and answer.load_duration is not None
    assert answer.total_duration >= answer.load_duration >= 0
    single = await client.embed(model=model, input=QUESTION)
    assert single.embeddings == [answer.embeddings[0]]


async def test_embed_dimensions(client: ollama.AsyncClient) -> None:
    full = (await client.embed(model="nomic-embed-text", input=QUESTION)).embeddings[0]
    short = (await client.embed(model="nomic-embed-text", input=QUESTION, dimensions=64)).embeddings[0]
    # Ollama cuts the vector and normalises it again.
    head = _norm(full[:64])
    assert len(short) == 64 and all(
        math.isclose(a / head, b, abs_tol=1e-9) for a, b in zip(full, short, strict=False)
    )
    # More than the model has, or 0: the full width, as Ollama answers.
    for dimensions in (0, 5000):
        wide = await client.embed(model="nomic-embed-text", input=QUESTION, dimensions=dimensions)
        assert len(wide.embeddings[0]) == 768


async def test_embed_truncate(client: ollama.AsyncClient, base_url: str) -> None:
    long = "sky " * 600  # all-minilm takes 512 tokens
    cut = await client.embed(model="all-minilm", input=long)
    assert cut.prompt_eval_count == 512
    head = "".join(tokenize(long)[:512])
    assert cut.embeddings == (await client.embed(model="all-minilm", input=head)).embeddings
    with pytest.raises(ollama.ResponseError) as refused:
        await client.embed(model="all-minilm", input=["short", long], truncate=False)
    assert refused.value.status_code == 400 and refused.value.error.startswith(TOO_LONG)
    assert f"({count_tokens(long)} tokens; the model takes 512)" in refused.value.error


async def test_embed_errors_and_empty_input(client: ollama.AsyncClient, base_url: str) -> None:
    empty = await client.embed(model="nomic-embed-text", input="")
    assert empty.embeddings == []
    status, raw = await _post(base_url, "/api/embed", {"model": "nomic-embed-text"})
    assert status == 200 and raw == b'{"model":"nomic-embed-text","embeddings":[]}'
    for body, words in [
        ({"input": "x"}, b"model is required"),
        ({"model": "m", "input": ["ok", 3]}, b"invalid input type: input[1] must be a string"),
        ({"model": "m", "input": {"text": "x"}}, b"input must be a string or an array"),
        ({"model": "m", "input": "x", "truncate": "yes"}, b"truncate must be true or false"),
        ({"model": "m", "input": "x", "dimensions": -1}, b"dimensions must be an integer >= 0"),
        ({"model": "m", "input": "x", "dimensions": 1.5}, b"dimensions must be an integer >= 0"),
    ]:
        status, raw = await _post(base_url, "/api/embed", body)
        assert status == 400 and words in raw, (body, raw)


async def test_legacy_embeddings(client: ollama.AsyncClient, base_url: str) -> None:
    legacy = await client.embeddings(model="nomic-embed-text", prompt=QUESTION)
    assert len(legacy.embedding) == 768
    batch = await client.embed(model="nomic-embed-text", input=QUESTION)
    assert list(legacy.embedding) == list(batch.embeddings[0])
    assert len((await client.embeddings(model="text-embedding-3-large", prompt="x")).embedding) == 3072
    assert list((await client.embeddings(model="nomic-embed-text", prompt="")).embedding) == []
    status, raw = await _post(base_url, "/api/embeddings", {"model": "nomic-embed-text"})
    assert status == 200 and raw == b'{"embedding":[]}'
    status, raw = await _post(base_url, "/api/embeddings", {"model": "m", "prompt": ["x"]})
    assert status == 400 and b"prompt must be a string" in raw
    status, raw = await _post(base_url, "/api/embeddings", {"model": "all-minilm", "prompt": "sky " * 600})
    assert status == 400 and TOO_LONG.encode() in raw


async def test_stats_count_embedding_tokens(client: ollama.AsyncClient, base_url: str) -> None:
    await client.embed(model="nomic-embed-text", input=[QUESTION, QUESTION])
    await client.embeddings(model="nomic-embed-text", prompt=QUESTION)
    async with aiohttp.ClientSession() as session, session.get(f"{base_url}/stats") as response:
        stats = await response.json()
    assert stats["requests"] == 2 and stats["prompt_tokens"] == 3 * count_tokens(QUESTION)


async def test_openapi_documents_the_routes(base_url: str) -> None:
    async with aiohttp.ClientSession() as session, session.get(f"{base_url}/openapi.json") as response:
        doc = await response.json()
    paths = doc["paths"]
    for path, method in [
        ("/api/show", "post"),
        ("/api/pull", "post"),
        ("/api/delete", "delete"),
        ("/api/embed", "post"),
        ("/api/embeddings", "post"),
        ("/api/tags", "get"),
    ]:
        operation = paths[path][method]
        assert operation["tags"] == ["ollama"] and operation["summary"], path
    assert paths["/api/show"]["post"]["responses"]["404"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/OllamaError"
    }
    assert "application/x-ndjson" in paths["/api/pull"]["post"]["responses"]["200"]["content"]
    assert "OllamaEmbedRequest" in doc["components"]["schemas"]
