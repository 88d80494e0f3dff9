"""The official openai client (async and sync) against a real `llmkit simulate` app on port 0."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest

from llmkit.core.tokenizer import count_tokens
from tests.integration.test_simulate_app import ANSWER, chat_body, make_settings, real_server

MESSAGES: Any = [{"role": "user", "content": "Halo, apa kabar? 😀"}]


@pytest.fixture
async def client(base_url: str) -> AsyncIterator[openai.AsyncOpenAI]:
    made = openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="x", max_retries=0)
    yield made
    await made.close()


async def test_non_stream(client: openai.AsyncOpenAI) -> None:
    answer = await client.chat.completions.create(model="gpt-test", messages=MESSAGES)
    assert answer.model == "gpt-test" and answer.id.startswith("chatcmpl-")
    assert answer.choices[0].message.content == ANSWER
    assert answer.choices[0].message.role == "assistant"
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage is not None and answer.usage.completion_tokens == count_tokens(ANSWER)


async def test_stream_with_and_without_usage(client: openai.AsyncOpenAI) -> None:
    plain = await client.chat.completions.create(model="gpt-test", messages=MESSAGES)
    stream = await client.chat.completions.create(
        model="gpt-test", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == ANSWER
    assert chunks[-1].choices == [] and chunks[-1].usage == plain.usage
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"

    bare = await client.chat.completions.create(model="gpt-test", messages=MESSAGES, stream=True)
    bare_chunks = [chunk async for chunk in bare]
    assert all(c.usage is None for c in bare_chunks)
    assert "".join(c.choices[0].delta.content or "" for c in bare_chunks) == ANSWER


async def test_usage_chunk_always() -> None:
    async with real_server(make_settings(usage_chunk="always")) as url:
        client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
        try:
            stream = await client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
            chunks = [chunk async for chunk in stream]
        finally:
            await client.close()
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == count_tokens(ANSWER)


async def test_n_max_tokens_and_stop(client: openai.AsyncOpenAI) -> None:
    three = await client.chat.completions.create(model="m", messages=MESSAGES, n=3)
    assert [c.index for c in three.choices] == [0, 1, 2]
    assert all(c.message.content == ANSWER for c in three.choices)

    short = await client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=5)
    assert short.choices[0].finish_reason == "length"
    assert short.usage is not None and short.usage.completion_tokens == 5
    assert ANSWER.startswith(short.choices[0].message.content or "-")

    stopped = await client.chat.completions.create(model="m", messages=MESSAGES, stop="```")
    assert stopped.choices[0].message.content == ANSWER[: ANSWER.index("```")]
    assert stopped.choices[0].finish_reason == "stop"


async def test_models_list_and_retrieve(client: openai.AsyncOpenAI) -> None:
    ids = [m.id async for m in client.models.list()]
    assert "gpt-4o-2024-08-06" in ids
    model = await client.models.retrieve("gpt-4o-mini")
    assert model.id == "gpt-4o-mini"
    with pytest.raises(openai.NotFoundError):
        await client.models.retrieve("no-such-model")


async def test_errors_raise_the_right_exceptions(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as bad_model:
        await client.chat.completions.create(model="", messages=MESSAGES)
    assert bad_model.value.param == "model"
    with pytest.raises(openai.BadRequestError) as bad_messages:
        await client.chat.completions.create(model="m", messages=[])
    assert bad_messages.value.param == "messages"
    with pytest.raises(openai.BadRequestError) as bad_header:
        await client.chat.completions.create(
            model="m", messages=MESSAGES, extra_headers={"x-llmkit-ttft-ms": "soon"}
        )
    assert bad_header.value.param == "x-llmkit-ttft-ms"


async def test_rate_limit_error_when_the_slot_is_busy() -> None:
    settings = make_settings(semaphore_limit=1, queue_timeout_ms=50)
    async with real_server(settings) as url, aiohttp.ClientSession() as session:
        client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
        try:
            slow = {"x-llmkit-itl-ms": "50"}
            async with session.post(
                f"{url}/v1/chat/completions", json=chat_body(stream=True), headers=slow
            ) as first:
                await first.content.readuntil(b"\n\n")
                with pytest.raises(openai.RateLimitError) as limited:
                    await client.chat.completions.create(model="m", messages=MESSAGES)
        finally:
            await client.close()
    assert limited.value.code == "rate_limit_exceeded"
    assert limited.value.response.headers["retry-after"] == "1"


def _sync_calls(base_url: str) -> tuple[str, str, list[str]]:
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="x", max_retries=0)
    try:
        answer = client.chat.completions.create(model="m", messages=MESSAGES)
        stream = client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
        streamed = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        ids = [m.id for m in client.models.list()]
        return answer.choices[0].message.content or "", streamed, ids
    finally:
        client.close()


async def test_sync_client(base_url: str) -> None:
    # The sync client blocks, so it runs in a thread while this loop serves it.
    content, streamed, ids = await asyncio.to_thread(_sync_calls, base_url)
    assert content == ANSWER and streamed == ANSWER
    assert "gpt-4o-mini" in ids
