"""logprobs through the official openai client: chat (whole and streamed) and legacy completions carry
plausible logprobs of the answer's own tokens, fixed by the seed."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import aiohttp
import openai
import pytest

from llmkit.core.tokenizer import tokenize
from tests.integration.test_simulate_app import ANSWER, make_settings, real_server, sse_events
from tests.integration.test_simulate_openai_extras import TOOLS

MESSAGES: Any = [{"role": "user", "content": "Halo, apa kabar?"}]
ONE_BY_ONE = {"x-llmkit-itl-ms": "1"}


@pytest.fixture
async def url() -> AsyncIterator[str]:
    async with real_server(make_settings()) as made:
        yield made


@pytest.fixture
async def client(url: str) -> AsyncIterator[openai.AsyncOpenAI]:
    made = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
    try:
        yield made
    finally:
        await made.close()


def _check_entries(entries: Sequence[Any], top: int) -> None:
    """Each entry: logprob <= 0, its bytes, `top` alternatives best first with itself leading."""
    for entry in entries:
        assert entry.logprob <= 0 and entry.bytes == list(entry.token.encode())
        alternatives = entry.top_logprobs
        assert len(alternatives) == top
        logprobs = [alt.logprob for alt in alternatives]
        assert logprobs == sorted(logprobs, reverse=True) and all(lp <= entry.logprob for lp in logprobs)
        if top:
            assert (alternatives[0].token, alternatives[0].logprob) == (entry.token, entry.logprob)
            assert len({alt.token for alt in alternatives}) == top
        assert all(alt.bytes == list(alt.token.encode()) for alt in alternatives)


def _numbers(entries: Sequence[Any]) -> list[Any]:
    return [(e.token, e.logprob, [(a.token, a.logprob) for a in e.top_logprobs]) for e in entries]


async def test_chat_logprobs_are_the_answers_tokens(client: openai.AsyncOpenAI) -> None:
    done = await client.chat.completions.create(model="m", messages=MESSAGES, logprobs=True, top_logprobs=3)
    choice = done.choices[0]
    assert choice.message.content == ANSWER and choice.logprobs is not None and choice.logprobs.content
    entries = choice.logprobs.content
    assert [e.token for e in entries] == tokenize(ANSWER) and done.usage is not None
    assert len(entries) == done.usage.completion_tokens
    _check_entries(entries, 3)
    # Not every token is certain: some carry real doubt.
    assert any(e.logprob < -0.1 for e in entries) and all(e.logprob > -50 for e in entries)


async def test_chat_logprobs_without_top_and_n(client: openai.AsyncOpenAI) -> None:
    done = await client.chat.completions.create(model="m", messages=MESSAGES, logprobs=True, n=2, seed=1)
    assert len(done.choices) == 2
    for choice in done.choices:
        assert choice.logprobs is not None and choice.logprobs.content is not None
        _check_entries(choice.logprobs.content, 0)
    plain = await client.chat.completions.create(model="m", messages=MESSAGES)
    assert plain.choices[0].logprobs is None
    off = await client.chat.completions.create(model="m", messages=MESSAGES, logprobs=False)
    assert off.choices[0].logprobs is None


async def test_chat_logprobs_follow_the_seed(client: openai.AsyncOpenAI) -> None:
    async def numbers(seed: int) -> list[Any]:
        done = await client.chat.completions.create(
            model="m", messages=MESSAGES, logprobs=True, top_logprobs=5, seed=seed
        )
        assert done.choices[0].logprobs is not None and done.choices[0].logprobs.content is not None
        return _numbers(done.choices[0].logprobs.content)

    assert await numbers(11) == await numbers(11)
    assert await numbers(11) != await numbers(12)


@pytest.mark.parametrize("headers", [ONE_BY_ONE, {}], ids=["token-by-token", "batched"])
async def test_streamed_chunks_carry_their_own_logprobs(
    client: openai.AsyncOpenAI, headers: dict[str, str]
) -> None:
    stream = await client.chat.completions.create(
        model="m",
        messages=MESSAGES,
        logprobs=True,
        top_logprobs=2,
        stream=True,
        seed=4,
        extra_headers=headers,
    )
    streamed: list[Any] = []
    async for chunk in stream:
        delta, logprobs = chunk.choices[0].delta, chunk.choices[0].logprobs
        if delta.content:
            assert logprobs is not None and logprobs.content
            assert "".join(e.token for e in logprobs.content) == delta.content
            if headers:
                assert len(logprobs.content) == 1
            streamed.extend(logprobs.content)
    assert [e.token for e in streamed] == tokenize(ANSWER)
    _check_entries(streamed, 2)
    whole = await client.chat.completions.create(
        model="m", messages=MESSAGES, logprobs=True, top_logprobs=2, seed=4
    )
    assert whole.choices[0].logprobs is not None and whole.choices[0].logprobs.content is not None
    assert _numbers(streamed) == _numbers(whole.choices[0].logprobs.content)


async def test_streams_without_logprobs_keep_null(url: str) -> None:
    body = {"model": "m", "messages": MESSAGES, "stream": True}
    async with aiohttp.ClientSession() as session, session.post(f"{url}/v1/chat/completions", json=body) as r:
        events = sse_events(await r.read())
    assert all(b'"logprobs":null' in event for event in events[:-1])


async def test_tool_calls_have_no_content_logprobs(client: openai.AsyncOpenAI) -> None:
    done = await client.chat.completions.create(
        model="m", messages=MESSAGES, tools=TOOLS, tool_choice="required", logprobs=True
    )
    assert done.choices[0].finish_reason == "tool_calls" and done.choices[0].logprobs is None


async def test_completion_logprobs_legacy_shape(client: openai.AsyncOpenAI) -> None:
    done = await client.completions.create(model="m", prompt="Say hi", logprobs=3, max_tokens=12)
    choice = done.choices[0]
    logprobs = choice.logprobs
    assert logprobs is not None and logprobs.tokens == tokenize(ANSWER)[:12]
    assert "".join(logprobs.tokens) == choice.text
    assert logprobs.text_offset == [len("".join(logprobs.tokens[:i])) for i in range(12)]
    assert logprobs.token_logprobs is not None and logprobs.top_logprobs is not None
    for token, logprob, top in zip(
        logprobs.tokens, logprobs.token_logprobs, logprobs.top_logprobs, strict=True
    ):
        assert logprob is not None and logprob <= 0 and len(top) == 3
        assert top[token] == logprob == max(top.values())
    none = await client.completions.create(model="m", prompt="Say hi", logprobs=0, max_tokens=3)
    assert none.choices[0].logprobs is not None and none.choices[0].logprobs.top_logprobs == [{}, {}, {}]
    plain = await client.completions.create(model="m", prompt="Say hi", max_tokens=3)
    assert plain.choices[0].logprobs is None


async def test_completion_logprobs_with_echo_and_several_prompts(client: openai.AsyncOpenAI) -> None:
    done = await client.completions.create(
        model="m", prompt=["Say hi", "Say bye"], logprobs=1, max_tokens=4, echo=True, n=2
    )
    assert len(done.choices) == 4
    for choice in done.choices:
        logprobs = choice.logprobs
        assert logprobs is not None and logprobs.tokens is not None and logprobs.token_logprobs is not None
        assert "".join(logprobs.tokens) == choice.text and logprobs.token_logprobs[0] is None
        assert logprobs.top_logprobs is not None and logprobs.top_logprobs[0] is None
        assert all(lp is not None and lp <= 0 for lp in logprobs.token_logprobs[1:])


@pytest.mark.parametrize("echo", [False, True])
async def test_streamed_completion_logprobs(client: openai.AsyncOpenAI, echo: bool) -> None:
    asked: Any = {"model": "m", "prompt": "Say hi", "logprobs": 2, "max_tokens": 9, "echo": echo, "seed": 3}
    stream = await client.completions.create(**asked, stream=True, extra_headers=ONE_BY_ONE)
    tokens: list[str] = []
    numbers: list[Any] = []
    offsets: list[int] = []
    async for chunk in stream:
        if not chunk.choices or not chunk.choices[0].text:
            continue
        logprobs = chunk.choices[0].logprobs
        assert logprobs is not None and logprobs.tokens is not None and logprobs.text_offset is not None
        assert "".join(logprobs.tokens) == chunk.choices[0].text
        tokens += logprobs.tokens
        numbers += logprobs.token_logprobs or []
        offsets += logprobs.text_offset
    whole = (await client.completions.create(**asked)).choices[0].logprobs
    assert whole is not None
    assert tokens == whole.tokens and numbers == whole.token_logprobs and offsets == whole.text_offset
