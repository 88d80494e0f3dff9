"""The question-answer set before the markdown files, through the openai client against a real simulator."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import openai

from llmkit.core.serve import running
from llmkit.simulate.app import create_app
from llmkit.simulate.sources.file import shipped_responses_dir
from tests.integration.test_simulate_app import make_settings

PARIS = "The capital of France is Paris."
MARKDOWN = shipped_responses_dir()
assert MARKDOWN is not None
MARKDOWN_ANSWERS = {p.read_text(encoding="utf-8") for p in MARKDOWN.glob("*.md")}


@asynccontextmanager
async def simulator(**simulate: Any) -> AsyncIterator[tuple[str, openai.AsyncOpenAI]]:
    """A real simulator on port 0 with the shipped answers (and `simulate` settings), and a client for it."""
    async with running(create_app(make_settings(**simulate))) as (host, port):
        url = f"http://{host}:{port}"
        client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
        try:
            yield url, client
        finally:
            await client.close()


async def ask(client: openai.AsyncOpenAI, prompt: str) -> str:
    answer = await client.chat.completions.create(model="m", messages=[{"role": "user", "content": prompt}])
    return answer.choices[0].message.content or ""


async def stats_of(url: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.get(f"{url}/stats") as resp:
        body: dict[str, Any] = await resp.json()
    return body


async def test_the_capital_of_france_gets_the_paris_answer() -> None:
    async with simulator() as (url, client):
        assert await ask(client, "What is the capital of France?") == PARIS
        assert await ask(client, "Which city is France's capital?") == PARIS
        stream = await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "capital of France?"}], stream=True
        )
        assert "".join([c.choices[0].delta.content or "" async for c in stream if c.choices]) == PARIS
        # Every shape answers from the same source: here Ollama's.
        body = {"model": "m", "messages": [{"role": "user", "content": "What is the capital of France?"}]}
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{url}/api/chat", json={**body, "stream": False}) as resp:
                assert (await resp.json())["message"]["content"] == PARIS
        stats = (await stats_of(url))["source"]
    assert stats["name"] == "file" and stats["answers"] == 0
    assert stats["qa"]["answers"] == 4 and stats["qa"]["questions"] >= 400


async def test_an_indonesian_question_gets_its_indonesian_answer() -> None:
    async with simulator() as (_, client):
        assert await ask(client, "Apa ibu kota Prancis?") == "Ibu kota Prancis adalah Paris."
        assert await ask(client, "Gunung paling tinggi di Indonesia apa?") == (
            "Puncak Jaya (Carstensz Pyramid) di Papua, sekitar 4.884 meter di atas permukaan laut."
        )
        # "DNS" is in an English and an Indonesian question: the prompt's language decides.
        assert (await ask(client, "Apa itu DNS?")).startswith("DNS (Domain Name System) menerjemahkan")
        assert (await ask(client, "What is DNS?")).startswith("DNS (Domain Name System) translates")


async def test_an_off_topic_prompt_falls_back_to_the_markdown_files() -> None:
    async with simulator() as (url, client):
        australia = await ask(client, "What is the capital of Australia?")
        assert australia.startswith("# What Is the Capital of Australia?") and "Canberra" in australia
        assert (await ask(client, "How do I undo my last git commit?")).startswith("# How to Undo")
        assert await ask(client, "Write a haiku about autumn leaves") in MARKDOWN_ANSWERS
        stats = (await stats_of(url))["source"]
    assert stats["qa"]["answers"] == 0 and stats["answers"] == 3


async def test_the_off_switch_leaves_the_markdown_files_alone() -> None:
    async with simulator(qa_enabled=False) as (url, client):
        assert await ask(client, "What is the capital of France?") in MARKDOWN_ANSWERS
        assert "qa" not in (await stats_of(url))["source"]


async def test_the_threshold_decides_how_close_a_prompt_must_be() -> None:
    paraphrase = "Which city is the capital of France?"
    async with simulator(qa_threshold=1.0) as (_, client):
        # "city" is in no question, so the question covers less than all of the prompt.
        assert await ask(client, paraphrase) in MARKDOWN_ANSWERS
        assert await ask(client, "capital of France") == PARIS
    # One shared word among four no question has: too little at the default threshold, enough at 0.
    faint = "France wine regions zzqx qqzx"
    async with simulator() as (_, client):
        assert await ask(client, faint) in MARKDOWN_ANSWERS
    async with simulator(qa_threshold=0.0) as (_, client):
        assert await ask(client, faint) == PARIS


async def test_your_own_questions_replace_the_shipped_ones(tmp_path: Path) -> None:
    own = tmp_path / "own.jsonl"
    own.write_text(
        '{"pertanyaan": "What is the llmkit test password?", "jawaban": "It is swordfish."}\n',
        encoding="utf-8",
    )
    async with simulator(qa_path=str(own)) as (url, client):
        assert await ask(client, "what's the llmkit test password") == "It is swordfish."
        assert await ask(client, "What is the capital of France?") in MARKDOWN_ANSWERS
        assert (await stats_of(url))["source"]["qa"]["path"] == str(own)
