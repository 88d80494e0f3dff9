"""Anthropic's Messages API of `llmkit simulate`, checked with the official anthropic client and raw SSE."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import anthropic
import orjson
import pytest

from llmkit.core.tokenizer import count_tokens
from tests.integration.test_simulate_app import ANSWER

MESSAGES: Any = [{"role": "user", "content": "Halo, apa kabar? 😀"}]


@pytest.fixture
async def client(base_url: str) -> AsyncIterator[anthropic.AsyncAnthropic]:
    made = anthropic.AsyncAnthropic(base_url=base_url, api_key="x", max_retries=0)
    yield made
    await made.close()


def named_events(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    """Split an SSE body into (event name, data), checking `event:` + `data:` framing exactly."""
    parts = raw.split(b"\n\n")
    assert parts[-1] == b""
    events = []
    for part in parts[:-1]:
        name, data = part.split(b"\n")
        assert name.startswith(b"event: ") and data.startswith(b"data: "), part
        payload = orjson.loads(data[len(b"data: ") :])
        assert payload["type"] == name[len(b"event: ") :].decode()
        events.append((payload["type"], payload))
    return events


async def test_non_stream(client: anthropic.AsyncAnthropic) -> None:
    message = await client.messages.create(model="claude-test", max_tokens=1024, messages=MESSAGES)
    assert message.id.startswith("msg_") and message.type == "message" and message.role == "assistant"
    assert message.model == "claude-test"
    assert len(message.content) == 1 and message.content[0].type == "text"
    assert message.content[0].text == ANSWER
    assert message.stop_reason == "end_turn" and message.stop_sequence is None
    assert message.usage.output_tokens == count_tokens(ANSWER) and message.usage.input_tokens > 0


async def test_system_blocks_and_content_blocks(client: anthropic.AsyncAnthropic) -> None:
    plain = await client.messages.create(model="m", max_tokens=1024, messages=MESSAGES)
    blocks = await client.messages.create(
        model="m",
        max_tokens=1024,
        system=[{"type": "text", "text": "Jawab dalam Bahasa Indonesia."}],
        messages=[{"role": "user", "content": [{"type": "text", "text": "Halo, apa kabar? 😀"}]}],
    )
    assert blocks.content[0].type == "text" and blocks.content[0].text == ANSWER
    assert blocks.usage.input_tokens > plain.usage.input_tokens
    counted = await client.messages.count_tokens(model="m", messages=MESSAGES)
    assert counted.input_tokens == plain.usage.input_tokens


async def test_max_tokens_and_stop_sequences(client: anthropic.AsyncAnthropic) -> None:
    short = await client.messages.create(model="m", max_tokens=5, messages=MESSAGES)
    assert short.stop_reason == "max_tokens" and short.usage.output_tokens == 5
    assert short.content[0].type == "text" and ANSWER.startswith(short.content[0].text)
    stopped = await client.messages.create(
        model="m", max_tokens=1024, messages=MESSAGES, stop_sequences=["nothing-like-it", "STOP-HERE"]
    )
    assert stopped.stop_reason == "stop_sequence" and stopped.stop_sequence == "STOP-HERE"
    assert stopped.content[0].type == "text"
    assert stopped.content[0].text == ANSWER[: ANSWER.index("STOP-HERE")]


async def test_stream_events(client: anthropic.AsyncAnthropic) -> None:
    stream = await client.messages.create(model="m", max_tokens=1024, messages=MESSAGES, stream=True)
    events = [event async for event in stream]
    kinds = [e.type for e in events]
    # The client drops ping events (the raw framing test below sees it).
    assert kinds[:2] == ["message_start", "content_block_start"]
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(kinds[2:-3]) == {"content_block_delta"}
    text = "".join(
        e.delta.text for e in events if e.type == "content_block_delta" and e.delta.type == "text_delta"
    )
    assert text == ANSWER
    delta = events[-2]
    assert delta.type == "message_delta" and delta.delta.stop_reason == "end_turn"
    assert delta.usage.output_tokens == count_tokens(ANSWER)


async def test_stream_helper_final_message(client: anthropic.AsyncAnthropic) -> None:
    async with client.messages.stream(model="m", max_tokens=1024, messages=MESSAGES) as stream:
        streamed = "".join([text async for text in stream.text_stream])
        final = await stream.get_final_message()
    assert streamed == ANSWER
    assert final.content[0].type == "text" and final.content[0].text == ANSWER
    assert final.stop_reason == "end_turn" and final.usage.output_tokens == count_tokens(ANSWER)
    async with client.messages.stream(model="m", max_tokens=3, messages=MESSAGES) as stream:
        cut = await stream.get_final_message()
    assert cut.stop_reason == "max_tokens" and cut.usage.output_tokens == 3


async def test_missing_max_tokens_and_other_errors(client: anthropic.AsyncAnthropic, base_url: str) -> None:
    with pytest.raises(anthropic.BadRequestError) as missing:
        # An explicit timeout: without one the client computes it from max_tokens before sending.
        await client.messages.create(model="m", messages=MESSAGES, max_tokens=None, timeout=30)  # type: ignore[call-overload]
    assert "max_tokens" in missing.value.message
    body = missing.value.body
    assert isinstance(body, dict) and body["type"] == "error"
    assert body["error"]["type"] == "invalid_request_error"
    with pytest.raises(anthropic.BadRequestError):
        await client.messages.create(model="m", max_tokens=10, messages=[])
    with pytest.raises(anthropic.BadRequestError):
        await client.messages.create(
            model="m",
            max_tokens=10,
            messages=[{"role": "system", "content": "x"}],
        )
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{base_url}/v1/messages", data=b"{nope", headers={"Content-Type": "application/json"}
        ) as bad,
    ):
        assert bad.status == 400
        assert (await bad.json())["error"]["type"] == "invalid_request_error"


async def test_stream_bytes_are_framed_as_anthropic_sse(base_url: str) -> None:
    body = {"model": "m", "max_tokens": 1024, "messages": MESSAGES, "stream": True}
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{base_url}/v1/messages", json=body, headers={"x-llmkit-itl-ms": "1"}) as response,
    ):
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        raw = await response.read()
    events = named_events(raw)
    start = events[0][1]
    assert start["message"]["content"] == [] and start["message"]["stop_reason"] is None
    assert start["message"]["usage"]["input_tokens"] > 0
    assert events[1][1] == {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "text", "text": ""},
    }
    deltas = [data for name, data in events if name == "content_block_delta"]
    # One token per event when tokens arrive one by one.
    assert len(deltas) == count_tokens(ANSWER)
    assert all(d["index"] == 0 and d["delta"]["type"] == "text_delta" for d in deltas)
    assert "".join(d["delta"]["text"] for d in deltas) == ANSWER
    assert events[-2][1]["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert events[-1] == ("message_stop", {"type": "message_stop"})


async def test_openai_routes_keep_openai_errors(base_url: str) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{base_url}/v1/chat/completions", json={"model": "m"}) as response,
    ):
        assert response.status == 400
        assert set((await response.json())["error"]) == {"message", "type", "param", "code"}


async def test_disconnect_mid_stream_frees_the_slot(base_url: str) -> None:
    # Imported here: that module imports this one for named_events.
    from tests.integration.test_simulate_responses import disconnect_mid_stream

    body = {"model": "m", "max_tokens": 1024, "messages": MESSAGES, "stream": True}
    stats = await disconnect_mid_stream(base_url, "/v1/messages", body, b"content_block_delta")
    assert stats["in_flight"] == 0 and stats["active_streams"] == 0 and stats["disconnects"] == 1
    assert stats["limit"]["in_use"] == 0
