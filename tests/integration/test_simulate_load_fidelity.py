"""What load testers send (vLLM's ignore_eos / min_tokens, seed, answer modes, length distributions) and
the model-server scheduler (max_num_seqs, max_waiting, time_factor_under_load), against a real server."""

from __future__ import annotations

import asyncio
import re
import statistics
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import openai
import orjson
import pytest

from llmkit.core.serve import running
from llmkit.core.tokenizer import tokenize
from llmkit.simulate.app import create_app
from llmkit.simulate.lengths import LOREM
from tests.integration.test_simulate_app import ANSWER, chat_body, make_settings, real_server

UNMATCHED = "zxqv plorb wibble"
ANSWER_TOKENS = len(tokenize(ANSWER))


def count(text: str) -> int:
    return len(tokenize(text))


@asynccontextmanager
async def file_server(**simulate: Any) -> AsyncIterator[str]:
    """A simulator answering from the shipped markdown files."""
    async with running(create_app(make_settings(**simulate))) as (host, port):
        yield f"http://{host}:{port}"


@asynccontextmanager
async def openai_client(url: str) -> AsyncIterator[openai.AsyncOpenAI]:
    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def client() -> AsyncIterator[openai.AsyncOpenAI]:
    async with real_server(make_settings()) as url, openai_client(url) as made:
        yield made


MESSAGES: Any = [{"role": "user", "content": "Halo, apa kabar?"}]


@pytest.mark.parametrize("n", [1, 5, ANSWER_TOKENS, ANSWER_TOKENS + 1, 777])
async def test_ignore_eos_gives_exactly_max_tokens(client: openai.AsyncOpenAI, n: int) -> None:
    done = await client.chat.completions.create(
        model="m", messages=MESSAGES, max_tokens=n, extra_body={"ignore_eos": True}
    )
    text = done.choices[0].message.content or ""
    assert count(text) == n == done.usage.completion_tokens  # type: ignore[union-attr]
    assert done.choices[0].finish_reason == "length"
    if n > ANSWER_TOKENS:
        assert text.startswith(ANSWER + "\n\n")


async def test_ignore_eos_streams_exactly_max_completion_tokens(client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model="m",
        messages=MESSAGES,
        max_completion_tokens=500,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},
    )
    parts, usage, reasons = [], None, []
    async for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            parts.append(choice.delta.content or "")
            if choice.finish_reason:
                reasons.append(choice.finish_reason)
    assert count("".join(parts)) == 500
    assert usage is not None and usage.completion_tokens == 500
    assert reasons == ["length"]


async def test_min_tokens_gives_at_least_that_many(client: openai.AsyncOpenAI) -> None:
    done = await client.chat.completions.create(model="m", messages=MESSAGES, extra_body={"min_tokens": 300})
    text = done.choices[0].message.content or ""
    assert count(text) == 300 == done.usage.completion_tokens  # type: ignore[union-attr]
    assert done.choices[0].finish_reason == "stop"
    # An answer already longer than min_tokens is left as it is.
    done = await client.chat.completions.create(model="m", messages=MESSAGES, extra_body={"min_tokens": 3})
    assert done.choices[0].message.content == ANSWER
    # max_tokens caps what min_tokens asks past the answer.
    done = await client.chat.completions.create(
        model="m", messages=MESSAGES, max_tokens=250, extra_body={"min_tokens": 200}
    )
    assert count(done.choices[0].message.content or "") == 200


async def test_completions_ignore_eos_and_min_tokens(client: openai.AsyncOpenAI) -> None:
    done = await client.completions.create(
        model="m", prompt="Say something", max_tokens=400, extra_body={"ignore_eos": True}
    )
    assert count(done.choices[0].text) == 400 == done.usage.completion_tokens  # type: ignore[union-attr]
    assert done.choices[0].finish_reason == "length"
    # Without max_tokens the endpoint's default of 16 is what ignore_eos fills.
    done = await client.completions.create(model="m", prompt="Say something", extra_body={"ignore_eos": True})
    assert count(done.choices[0].text) == 16
    # ... and min_tokens above that default raises it.
    done = await client.completions.create(model="m", prompt="Say something", extra_body={"min_tokens": 40})
    assert count(done.choices[0].text) == 40
    stream = await client.completions.create(
        model="m",
        prompt=["one", "two"],
        max_tokens=300,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"min_tokens": 250},
    )
    texts: dict[int, str] = {}
    usage = None
    async for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + choice.text
    assert [count(texts[i]) for i in (0, 1)] == [250, 250]
    assert usage is not None and usage.completion_tokens == 500


@pytest.mark.parametrize(
    ("path", "extra", "param"),
    [
        ("/v1/chat/completions", {"ignore_eos": "yes"}, "ignore_eos"),
        ("/v1/chat/completions", {"min_tokens": -1}, "min_tokens"),
        ("/v1/chat/completions", {"min_tokens": 1.5}, "min_tokens"),
        ("/v1/chat/completions", {"min_tokens": 20, "max_tokens": 10}, "min_tokens"),
        ("/v1/chat/completions", {"seed": "x"}, "seed"),
        ("/v1/chat/completions", {"min_tokens": 2**40}, "min_tokens"),
        ("/v1/chat/completions", {"ignore_eos": True, "max_tokens": 2**40}, "max_tokens"),
        ("/v1/completions", {"ignore_eos": 1}, "ignore_eos"),
        ("/v1/completions", {"min_tokens": 17, "max_tokens": 16}, "min_tokens"),
        ("/v1/completions", {"seed": 1.5}, "seed"),
    ],
)
async def test_bad_length_fields_are_400s(
    base_url: str, path: str, extra: dict[str, Any], param: str
) -> None:
    body = chat_body(**extra) if "chat" in path else {"model": "m", "prompt": "hi", **extra}
    async with aiohttp.ClientSession() as session, session.post(base_url + path, json=body) as resp:
        assert resp.status == 400
        error = (await resp.json())["error"]
    assert error["param"] == param and param in error["message"]


async def _chat_text(session: aiohttp.ClientSession, url: str, prompt: str, **extra: Any) -> str:
    headers = extra.pop("headers", {})
    async with session.post(
        f"{url}/v1/chat/completions", json=chat_body(prompt, **extra), headers=headers
    ) as r:
        assert r.status == 200, await r.text()
        return str((await r.json())["choices"][0]["message"]["content"])


async def test_the_same_prompt_gets_the_same_answer_by_default() -> None:
    async with file_server() as url, aiohttp.ClientSession() as session:
        texts = {await _chat_text(session, url, UNMATCHED) for _ in range(12)}
        assert len(texts) == 1
        # ... in another server (another process, another run) as well.
    async with file_server() as url, aiohttp.ClientSession() as session:
        assert {await _chat_text(session, url, UNMATCHED)} == texts


async def test_random_mode_varies_and_a_seed_repeats() -> None:
    async with file_server(answer_mode="random") as url, aiohttp.ClientSession() as session:
        assert len({await _chat_text(session, url, UNMATCHED) for _ in range(20)}) > 1
        for seed in (1, 2, 3):
            assert len({await _chat_text(session, url, UNMATCHED, seed=seed) for _ in range(4)}) == 1
        by_seed = {await _chat_text(session, url, UNMATCHED, seed=seed) for seed in range(12)}
        assert len(by_seed) > 1


async def test_a_seed_repeats_lorem_and_json_mode() -> None:
    async with file_server(answer_mode="lorem") as url, aiohttp.ClientSession() as session:
        lorem = {await _chat_text(session, url, "hi", seed=9, max_tokens=40) for _ in range(4)}
        assert len(lorem) == 1 and count(lorem.pop()) == 40
        assert len({await _chat_text(session, url, "hi", seed=s, max_tokens=40) for s in range(8)}) > 1
    async with file_server() as url, aiohttp.ClientSession() as session:
        fmt = {"type": "json_object"}
        texts = {await _chat_text(session, url, "a user", seed=5, response_format=fmt) for _ in range(3)}
        assert len(texts) == 1


async def test_each_answer_mode_and_the_header() -> None:
    prompt = "What is the capital of Australia?"
    async with file_server() as url, aiohttp.ClientSession() as session:
        matched = await _chat_text(session, url, prompt)
        assert "Canberra" in matched
        echo = {"x-llmkit-answer-mode": "echo"}
        assert await _chat_text(session, url, prompt, headers=echo) == prompt
        lorem = await _chat_text(
            session, url, prompt, max_tokens=64, headers={"x-llmkit-answer-mode": "lorem"}
        )
        assert count(lorem) == 64
        words, known = re.findall("[a-z]+", lorem.lower()), set(re.findall("[a-z]+", LOREM.lower()))
        # The 64th token may end inside a word ("reprehende|rit"), as a max_tokens cut does.
        assert set(words[:-1]) <= known
        assert any(word.startswith(words[-1]) for word in known)
        random_mode = {"x-llmkit-answer-mode": "random"}
        # random still answers a matching prompt with its match (the behaviour before answer modes).
        assert await _chat_text(session, url, prompt, headers=random_mode) == matched
        bad = {"x-llmkit-answer-mode": "psychic"}
        async with session.post(f"{url}/v1/chat/completions", json=chat_body(prompt), headers=bad) as resp:
            assert resp.status == 400
            error = (await resp.json())["error"]
        assert error["param"] == "x-llmkit-answer-mode" and "match, echo, random, lorem" in error["message"]
        # Every shape follows the header: here Ollama's.
        body = {"model": "m", "messages": [{"role": "user", "content": prompt}], "stream": False}
        async with session.post(f"{url}/api/chat", json=body, headers=echo) as resp:
            assert (await resp.json())["message"]["content"] == prompt
    async with file_server(answer_mode="echo") as url, aiohttp.ClientSession() as session:
        assert await _chat_text(session, url, "echo me, please") == "echo me, please"
        completions = {"model": "m", "prompt": "echo me", "max_tokens": 50}
        async with session.post(f"{url}/v1/completions", json=completions) as resp:
            assert (await resp.json())["choices"][0]["text"] == "echo me"


async def test_output_tokens_distribution_has_its_mean_and_stdev() -> None:
    async with real_server(make_settings(output_tokens="120,30")) as url, aiohttp.ClientSession() as session:

        async def one(seed: int) -> int:
            async with session.post(f"{url}/v1/chat/completions", json=chat_body(seed=seed)) as resp:
                body = await resp.json()
            text = body["choices"][0]["message"]["content"]
            assert count(text) == body["usage"]["completion_tokens"]
            return int(body["usage"]["completion_tokens"])

        lengths = [await one(seed) for seed in range(300)]
        again = [await one(seed) for seed in range(20)]
        assert again == lengths[:20]
        # 300 draws: the mean's standard error is 30 / sqrt(300) ~ 1.7, so 8 is a wide margin.
        assert abs(statistics.fmean(lengths) - 120) < 8
        assert abs(statistics.stdev(lengths) - 30) < 6
        assert min(lengths) >= 1
        # A request with max_tokens keeps it: the distribution is for requests that set none.
        async with session.post(f"{url}/v1/chat/completions", json=chat_body(max_tokens=7)) as resp:
            assert (await resp.json())["usage"]["completion_tokens"] == 7
        body = {"model": "m", "prompt": "hi", "seed": 3}
        async with session.post(f"{url}/v1/completions", json=body) as resp:
            assert (await resp.json())["usage"]["completion_tokens"] > 16


async def _stats(session: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with session.get(f"{url}/stats") as resp:
        return dict((await resp.json())["scheduler"])


async def _stream_tokens(session: aiohttp.ClientSession, url: str, **headers: str) -> tuple[float, int]:
    """(seconds to the first content token, the completion tokens received) of one streamed request."""
    body = chat_body(stream=True, max_tokens=10, ignore_eos=True, stream_options={"include_usage": True})
    start = time.monotonic()
    first = 0.0
    text = ""
    async with session.post(f"{url}/v1/chat/completions", json=body, headers=headers) as resp:
        assert resp.status == 200, await resp.text()
        async for line in resp.content:
            if not line.startswith(b"data: {"):
                continue
            event = orjson.loads(line[6:])
            for choice in event["choices"]:
                piece = choice["delta"].get("content")
                if piece and not first:
                    first = time.monotonic() - start
                text += piece or ""
    return first, count(text)


async def test_max_num_seqs_runs_some_and_queues_the_rest() -> None:
    settings = make_settings(max_num_seqs=2, itl_ms=100, model="sim-model")
    async with real_server(settings) as url, aiohttp.ClientSession() as session:
        assert (await _stats(session, url))["running"] == 0
        tasks = [asyncio.create_task(_stream_tokens(session, url)) for _ in range(6)]
        seen: dict[str, Any] = {}
        for _ in range(100):
            seen = await _stats(session, url)
            if seen["running"] + seen["waiting"] == 6:
                break
            await asyncio.sleep(0.01)
        assert (seen["running"], seen["waiting"], seen["max_num_seqs"]) == (2, 4, 2)
        async with session.get(f"{url}/metrics") as resp:
            metrics = await resp.text()
        assert 'vllm:num_requests_running{model_name="sim-model"} 2.0' in metrics
        assert 'vllm:num_requests_waiting{model_name="sim-model"} 4.0' in metrics
        assert [tokens for _, tokens in await asyncio.gather(*tasks)] == [10] * 6
        final = await _stats(session, url)
        assert (final["running"], final["waiting"]) == (0, 0)


async def test_without_a_scheduler_metrics_show_requests_in_flight(base_url: str) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base_url}/metrics") as resp:
            metrics = await resp.text()
        assert 'vllm:num_requests_running{model_name="gpt-4o-2024-08-06"} 0.0' in metrics
        assert 'vllm:num_requests_waiting{model_name="gpt-4o-2024-08-06"} 0.0' in metrics
        assert (await _stats(session, base_url))["max_num_seqs"] == 0


async def test_past_max_waiting_requests_get_429_with_retry_after() -> None:
    settings = make_settings(max_num_seqs=1, max_waiting=1, itl_ms=100)
    async with real_server(settings) as url, aiohttp.ClientSession() as session:
        tasks = [asyncio.create_task(_stream_tokens(session, url)) for _ in range(2)]
        for _ in range(100):
            seen = await _stats(session, url)
            if (seen["running"], seen["waiting"]) == (1, 1):
                break
            await asyncio.sleep(0.01)
        async with session.post(f"{url}/v1/chat/completions", json=chat_body()) as resp:
            assert resp.status == 429 and resp.headers["Retry-After"] == "1"
            error = (await resp.json())["error"]
        assert error["type"] == "rate_limit_exceeded" and "simulate.max_waiting 1" in error["message"]
        # Anthropic's shape gets its own error body.
        body = {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
        async with session.post(f"{url}/v1/messages", json=body) as resp:
            assert resp.status == 429
            assert (await resp.json())["type"] == "error"
        assert [tokens for _, tokens in await asyncio.gather(*tasks)] == [10, 10]
        assert (await _stats(session, url))["rejected"] == 2


async def test_ttft_grows_with_the_requests_running() -> None:
    # TTFT 200 ms alone; with 7 others running, 1 + (3 - 1) * 7 / 7 = 3 times that.
    settings = make_settings(max_num_seqs=8, time_factor_under_load=3.0, ttft_ms=200)
    async with real_server(settings) as url, aiohttp.ClientSession() as session:
        alone = [(await _stream_tokens(session, url))[0] for _ in range(2)]
        background = {"x-llmkit-ttft-ms": "0", "x-llmkit-itl-ms": "300"}
        others = [asyncio.create_task(_stream_tokens(session, url, **background)) for _ in range(7)]
        for _ in range(100):
            if (await _stats(session, url))["running"] == 7:
                break
            await asyncio.sleep(0.01)
        loaded = [(await _stream_tokens(session, url))[0]]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)
    assert statistics.fmean(loaded) > 1.8 * statistics.fmean(alone)
