"""OpenAI's Responses API of `llmkit simulate`, checked with the official openai client and raw SSE."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import orjson
import pytest

from llmkit.core.tokenizer import count_tokens
from tests.integration.test_simulate_anthropic import named_events
from tests.integration.test_simulate_app import ANSWER

EVENTS_BEFORE = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
]
EVENTS_AFTER = [
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]


@pytest.fixture
async def client(base_url: str) -> AsyncIterator[openai.AsyncOpenAI]:
    made = openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="x", max_retries=0)
    yield made
    await made.close()


async def test_non_stream(client: openai.AsyncOpenAI) -> None:
    response = await client.responses.create(model="gpt-test", input="Halo, apa kabar?")
    assert response.id.startswith("resp_") and response.object == "response"
    assert response.status == "completed" and response.incomplete_details is None
    assert response.model == "gpt-test" and response.output_text == ANSWER
    item = response.output[0]
    assert item.type == "message" and item.id.startswith("msg_") and item.status == "completed"
    assert response.usage is not None and response.usage.output_tokens == count_tokens(ANSWER)
    usage = response.usage
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert usage.input_tokens_details.cached_tokens == 0 and usage.output_tokens_details.reasoning_tokens == 0
    assert response.tools == [] and response.parallel_tool_calls is True


async def test_input_items_and_instructions(client: openai.AsyncOpenAI) -> None:
    plain = await client.responses.create(model="m", input="Halo")
    items = await client.responses.create(
        model="m",
        instructions="Jawab dalam Bahasa Indonesia.",
        input=[
            {"role": "user", "content": "Pertanyaan pertama"},
            {"role": "assistant", "content": "Jawaban"},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Halo"}]},
        ],
    )
    assert items.output_text == ANSWER and items.instructions == "Jawab dalam Bahasa Indonesia."
    assert plain.usage is not None and items.usage is not None
    assert items.usage.input_tokens > plain.usage.input_tokens


async def test_max_output_tokens_is_incomplete(client: openai.AsyncOpenAI) -> None:
    response = await client.responses.create(model="m", input="Halo", max_output_tokens=16)
    assert response.status == "incomplete"
    assert (
        response.incomplete_details is not None and response.incomplete_details.reason == "max_output_tokens"
    )
    assert response.usage is not None and response.usage.output_tokens == 16
    assert ANSWER.startswith(response.output_text) and response.output_text != ANSWER


async def test_json_text_format(client: openai.AsyncOpenAI) -> None:
    response = await client.responses.create(
        model="m", input="Halo", text={"format": {"type": "json_object"}}
    )
    # JSON mode fits the prompt: with no key named, its content words are the keys.
    assert set(orjson.loads(response.output_text)) == {"halo"}


async def test_stream_events(client: openai.AsyncOpenAI) -> None:
    stream = await client.responses.create(model="m", input="Halo", stream=True)
    events = [event async for event in stream]
    kinds = [e.type for e in events]
    assert kinds[:4] == EVENTS_BEFORE and kinds[-4:] == EVENTS_AFTER
    assert set(kinds[4:-4]) == {"response.output_text.delta"}
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == ANSWER
    first, last = events[0], events[-1]
    assert first.type == "response.created" and last.type == "response.completed"
    assert last.response.output_text == ANSWER and last.response.id == first.response.id


async def test_stream_helper_final_response(client: openai.AsyncOpenAI) -> None:
    async with client.responses.stream(model="m", input="Halo") as stream:
        texts = [event.delta async for event in stream if event.type == "response.output_text.delta"]
        final = await stream.get_final_response()
    assert "".join(texts) == ANSWER and final.output_text == ANSWER and final.status == "completed"


async def test_stream_cut_by_max_output_tokens_ends_incomplete(client: openai.AsyncOpenAI) -> None:
    stream = await client.responses.create(model="m", input="Halo", stream=True, max_output_tokens=16)
    events = [event async for event in stream]
    # As the real API: a response cut short ends with response.incomplete, not response.completed.
    last = events[-1]
    assert last.type == "response.incomplete" and last.response.status == "incomplete"
    assert last.response.usage is not None and last.response.usage.output_tokens == 16


async def test_errors_name_the_param(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as no_input:
        await client.responses.create(model="m", input=[])
    assert no_input.value.param == "input"
    with pytest.raises(openai.BadRequestError) as bad_limit:
        await client.responses.create(model="m", input="x", max_output_tokens=0)
    assert bad_limit.value.param == "max_output_tokens"
    with pytest.raises(openai.BadRequestError) as bad_model:
        await client.responses.create(model="", input="x")
    assert bad_model.value.param == "model"


async def test_stream_bytes_are_framed_as_named_sse(base_url: str) -> None:
    body: dict[str, Any] = {"model": "m", "input": "Halo", "stream": True}
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{base_url}/v1/responses", json=body, headers={"x-llmkit-itl-ms": "1"}) as response,
    ):
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        raw = await response.read()
    events = named_events(raw)
    assert [data["sequence_number"] for _, data in events] == list(range(len(events)))
    deltas = [data for name, data in events if name == "response.output_text.delta"]
    # One token per event when tokens arrive one by one.
    assert len(deltas) == count_tokens(ANSWER)
    item_id = events[2][1]["item"]["id"]
    assert all(d["item_id"] == item_id and d["output_index"] == 0 and d["content_index"] == 0 for d in deltas)
    assert events[-1][1]["response"]["output"][0]["content"][0]["text"] == ANSWER


async def disconnect_mid_stream(
    base_url: str, path: str, body: dict[str, Any], marker: bytes
) -> dict[str, Any]:
    """Drop a slow stream once `marker` arrived; the server's stats once it let go of the request."""
    async with aiohttp.ClientSession() as session:
        first = await session.post(f"{base_url}{path}", json=body, headers={"x-llmkit-itl-ms": "200"})
        await first.content.readuntil(marker)
        first.close()
        for _ in range(100):
            async with session.get(f"{base_url}/stats") as response:
                stats: dict[str, Any] = await response.json()
            if stats["in_flight"] == 0:
                break
            await asyncio.sleep(0.02)
    return stats


async def test_disconnect_mid_stream_frees_the_slot(base_url: str) -> None:
    body = {"model": "m", "input": "Halo", "stream": True}
    stats = await disconnect_mid_stream(base_url, "/v1/responses", body, b"response.output_text.delta")
    assert stats["in_flight"] == 0 and stats["active_streams"] == 0 and stats["disconnects"] == 1
    assert stats["limit"]["in_use"] == 0 and stats["tokens_sent"] < count_tokens(ANSWER)
