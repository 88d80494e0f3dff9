"""The official openai client against a real simulator: completions, embeddings, tools, response_format."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest
from pydantic import BaseModel

from llmkit.core.tokenizer import count_tokens, tokenize
from tests.integration.test_simulate_app import ANSWER, make_settings, real_server
from tests.unit.test_simulate_jsonschema import WEATHER, validate

MESSAGES: Any = [{"role": "user", "content": "Halo, apa kabar?"}]
TOOLS: Any = [
    {
        "type": "function",
        "function": {"name": "get_weather", "description": "Weather", "parameters": WEATHER},
    },
    {
        "type": "function",
        "function": {
            "name": "book_flight",
            "parameters": {
                "type": "object",
                "properties": {
                    "date": {"type": "string", "format": "date"},
                    "seats": {"type": "integer", "minimum": 1, "maximum": 9},
                    "passengers": {
                        "type": "array",
                        "minItems": 1,
                        "items": {"$ref": "#/$defs/Passenger"},
                    },
                },
                "required": ["date", "seats", "passengers"],
                "additionalProperties": False,
                "$defs": {
                    "Passenger": {
                        "type": "object",
                        "properties": {
                            "name": {"type": "string"},
                            "email": {"type": "string", "format": "email"},
                        },
                        "required": ["name", "email"],
                        "additionalProperties": False,
                    }
                },
            },
        },
    },
]
SCHEMA_FORMAT: Any = {
    "type": "json_schema",
    "json_schema": {"name": "weather", "schema": WEATHER, "strict": True},
}


@pytest.fixture
async def client() -> AsyncIterator[openai.AsyncOpenAI]:
    async with real_server(make_settings()) as url:
        made = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
        try:
            yield made
        finally:
            await made.close()


def _norm(vector: list[float]) -> float:
    return math.sqrt(math.fsum(x * x for x in vector))


async def test_completion_defaults_to_16_tokens(client: openai.AsyncOpenAI) -> None:
    done = await client.completions.create(model="m", prompt="Say something")
    assert done.object == "text_completion" and done.id.startswith("cmpl-")
    assert done.choices[0].text == "".join(tokenize(ANSWER)[:16])
    assert done.choices[0].finish_reason == "length"
    assert done.usage is not None and done.usage.completion_tokens == 16
    assert done.usage.prompt_tokens == count_tokens("Say something")


async def test_completion_n_prompts_echo_and_stop(client: openai.AsyncOpenAI) -> None:
    full = await client.completions.create(model="m", prompt=["one", "two"], n=2, max_tokens=1000)
    assert [c.index for c in full.choices] == [0, 1, 2, 3]
    assert all(c.text == ANSWER and c.finish_reason == "stop" for c in full.choices)
    assert full.usage is not None and full.usage.completion_tokens == 4 * count_tokens(ANSWER)
    echoed = await client.completions.create(model="m", prompt="Q: ", echo=True, max_tokens=3)
    assert echoed.choices[0].text == "Q: " + "".join(tokenize(ANSWER)[:3])
    stopped = await client.completions.create(model="m", prompt="x", stop="```", max_tokens=1000)
    assert stopped.choices[0].text == ANSWER[: ANSWER.index("```")]


async def test_completion_stream_with_usage(client: openai.AsyncOpenAI) -> None:
    stream = await client.completions.create(
        model="m",
        prompt=["a", "b"],
        max_tokens=1000,
        echo=True,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    texts = {0: "", 1: ""}
    reasons = {}
    for chunk in chunks:
        for choice in chunk.choices:
            texts[choice.index] += choice.text
            if choice.finish_reason:
                reasons[choice.index] = choice.finish_reason
    assert texts == {0: "a" + ANSWER, 1: "b" + ANSWER} and reasons == {0: "stop", 1: "stop"}
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 2 * count_tokens(ANSWER)

    short = await client.completions.create(model="m", prompt="x", max_tokens=5, stream=True)
    pieces = [chunk async for chunk in short]
    assert "".join(c.choices[0].text for c in pieces) == "".join(tokenize(ANSWER)[:5])
    assert pieces[-1].choices[0].finish_reason == "length" and pieces[-1].usage is None


async def test_completion_errors(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as tokens:
        await client.completions.create(model="m", prompt=[1, 2, 3])
    assert tokens.value.param == "prompt" and "token" in tokens.value.message
    with pytest.raises(openai.BadRequestError) as bad_n:
        await client.completions.create(model="m", prompt="x", n=0)
    assert bad_n.value.param == "n"


async def test_embeddings_default_base64_and_float(client: openai.AsyncOpenAI) -> None:
    # The client asks for base64 and decodes it itself.
    one = await client.embeddings.create(model="text-embedding-3-small", input="Halo")
    vector = one.data[0].embedding
    assert len(vector) == 1536 and math.isclose(_norm(vector), 1.0, rel_tol=1e-5)
    assert one.model == "text-embedding-3-small" and one.usage.prompt_tokens == count_tokens("Halo")
    floats = await client.embeddings.create(model="e", input="Halo", encoding_format="float")
    assert all(
        math.isclose(a, b, abs_tol=1e-6) for a, b in zip(floats.data[0].embedding, vector, strict=True)
    )


async def test_embeddings_batch_dimensions_and_tokens(client: openai.AsyncOpenAI) -> None:
    batch = await client.embeddings.create(model="e", input=["a cat", "a dog", "a cat"], dimensions=256)
    assert [d.index for d in batch.data] == [0, 1, 2]
    assert all(len(d.embedding) == 256 for d in batch.data)
    assert batch.data[0].embedding == batch.data[2].embedding != batch.data[1].embedding
    arrays = await client.embeddings.create(model="e", input=[[1, 2, 3], [4]])
    assert arrays.usage.prompt_tokens == 4 and len(arrays.data) == 2
    with pytest.raises(openai.BadRequestError) as too_big:
        await client.embeddings.create(model="e", input="x", dimensions=4000)
    assert too_big.value.param == "dimensions"
    with pytest.raises(openai.BadRequestError) as empty:
        await client.embeddings.create(model="e", input=[])
    assert empty.value.param == "input"


async def test_embeddings_are_as_wide_as_the_model(client: openai.AsyncOpenAI) -> None:
    large = await client.embeddings.create(model="text-embedding-3-large", input="Halo")
    assert len(large.data[0].embedding) == 3072 and math.isclose(
        _norm(large.data[0].embedding), 1.0, rel_tol=1e-5
    )
    ada = await client.embeddings.create(
        model="text-embedding-ada-002", input="Halo", encoding_format="float"
    )
    assert len(ada.data[0].embedding) == 1536
    short = await client.embeddings.create(model="text-embedding-3-large", input="Halo", dimensions=1024)
    assert len(short.data[0].embedding) == 1024
    with pytest.raises(openai.BadRequestError) as refused:
        await client.embeddings.create(model="text-embedding-ada-002", input="Halo", dimensions=512)
    assert refused.value.status_code == 400 and refused.value.param == "dimensions"
    assert "- This model does not support specifying dimensions. (" in refused.value.message


async def test_tool_choice_required_and_named(client: openai.AsyncOpenAI) -> None:
    required = await client.chat.completions.create(
        model="m", messages=MESSAGES, tools=TOOLS, tool_choice="required"
    )
    choice = required.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    call = choice.message.tool_calls[0]  # type: ignore[index]
    assert call.id.startswith("call_") and call.type == "function"
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    validate(json.loads(call.function.arguments), WEATHER)  # type: ignore[union-attr]

    named = await client.chat.completions.create(
        model="m",
        messages=MESSAGES,
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "book_flight"}},
    )
    flight = named.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert flight.function.name == "book_flight"  # type: ignore[union-attr]
    parameters = TOOLS[1]["function"]["parameters"]
    validate(json.loads(flight.function.arguments), parameters)  # type: ignore[union-attr]


async def test_tool_choice_auto(client: openai.AsyncOpenAI) -> None:
    plain = await client.chat.completions.create(model="m", messages=MESSAGES, tools=TOOLS)
    assert plain.choices[0].message.content == ANSWER and plain.choices[0].message.tool_calls is None
    asked: Any = [{"role": "user", "content": "Call book_flight for me and Ana"}]
    called = await client.chat.completions.create(model="m", messages=asked, tools=TOOLS, tool_choice="auto")
    assert called.choices[0].finish_reason == "tool_calls"
    assert called.choices[0].message.tool_calls[0].function.name == "book_flight"  # type: ignore[index,union-attr]


async def test_streamed_tool_call_accumulates_to_valid_json(client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model="m", messages=MESSAGES, tools=TOOLS, tool_choice="required", stream=True
    )
    chunks = [chunk async for chunk in stream]
    first = chunks[0].choices[0].delta
    assert first.role == "assistant" and first.tool_calls is not None
    head = first.tool_calls[0]
    assert head.index == 0 and head.id and head.function is not None and head.function.name == "get_weather"
    arguments = ""
    for chunk in chunks[1:]:
        for part in chunk.choices[0].delta.tool_calls or []:
            assert part.index == 0 and part.id is None
            arguments += part.function.arguments or ""  # type: ignore[union-attr]
    assert len(chunks) > 3
    validate(json.loads(arguments), WEATHER)
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


async def test_stream_helper_accumulates_tool_calls(client: openai.AsyncOpenAI) -> None:
    async with client.chat.completions.stream(
        model="m", messages=MESSAGES, tools=TOOLS, tool_choice="required"
    ) as stream:
        async for _event in stream:
            pass
        final = await stream.get_final_completion()
    call = final.choices[0].message.tool_calls[0]  # type: ignore[index]
    validate(json.loads(call.function.arguments), WEATHER)


async def test_response_format_json_object_and_schema(client: openai.AsyncOpenAI) -> None:
    obj = await client.chat.completions.create(
        model="m", messages=MESSAGES, response_format={"type": "json_object"}
    )
    # JSON mode fits the prompt: with no key named, its content words are the keys.
    fitted = json.loads(obj.choices[0].message.content or "")
    assert set(fitted) == {"halo", "kabar"} and all(isinstance(v, str) for v in fitted.values())
    schema = await client.chat.completions.create(model="m", messages=MESSAGES, response_format=SCHEMA_FORMAT)
    validate(json.loads(schema.choices[0].message.content or ""), WEATHER)
    stream = await client.chat.completions.create(
        model="m", messages=MESSAGES, response_format=SCHEMA_FORMAT, stream=True
    )
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    validate(json.loads(text), WEATHER)


class Review(BaseModel):
    title: str
    stars: int
    tags: list[str]
    verdict: str | None


async def test_parse_helper_with_a_pydantic_model(client: openai.AsyncOpenAI) -> None:
    parsed = await client.chat.completions.parse(model="m", messages=MESSAGES, response_format=Review)
    review = parsed.choices[0].message.parsed
    assert isinstance(review, Review)


async def test_tool_and_format_errors_name_their_parameter(client: openai.AsyncOpenAI) -> None:
    bad: list[tuple[dict[str, Any], str]] = [
        ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
        ({"tools": [{"type": "function", "function": {"name": "bad name"}}]}, "tools"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"response_format": {"type": "yaml"}}, "response_format"),
        ({"response_format": {"type": "json_schema", "json_schema": {"schema": {}}}}, "response_format"),
    ]
    for extra, param in bad:
        with pytest.raises(openai.BadRequestError) as caught:
            await client.chat.completions.create(model="m", messages=MESSAGES, **extra)
        assert caught.value.param == param, extra


def _sync_calls(base_url: str) -> tuple[int, str]:
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="x", max_retries=0)
    try:
        vectors = client.embeddings.create(model="e", input=["x", "y"], dimensions=8)
        text = client.completions.create(model="m", prompt="p", max_tokens=2).choices[0].text
        return sum(len(d.embedding) for d in vectors.data), text
    finally:
        client.close()


async def test_sync_client() -> None:
    async with real_server(make_settings()) as url:
        size, text = await asyncio.to_thread(_sync_calls, url)
    assert size == 16 and text == "".join(tokenize(ANSWER)[:2])


async def test_token_by_token_streams(client: openai.AsyncOpenAI) -> None:
    # With an inter-token delay every event carries one token: the unbatched path of the sender.
    slow = {"x-llmkit-itl-ms": "1"}
    stream = await client.completions.create(
        model="m", prompt=["a", "b"], max_tokens=6, stream=True, extra_headers=slow
    )
    chunks = [chunk async for chunk in stream]
    assert len([c for c in chunks if c.choices[0].text]) == 12
    assert {c.choices[0].index for c in chunks} == {0, 1}
    calls = await client.chat.completions.create(
        model="m", messages=MESSAGES, tools=TOOLS, tool_choice="required", stream=True, extra_headers=slow
    )
    parts = [
        c.choices[0].delta.tool_calls async for c in calls if c.choices and c.choices[0].delta.tool_calls
    ]
    arguments = "".join(p[0].function.arguments or "" for p in parts[1:])  # type: ignore[union-attr]
    assert len(parts) - 1 == count_tokens(arguments)
    validate(json.loads(arguments), WEATHER)
