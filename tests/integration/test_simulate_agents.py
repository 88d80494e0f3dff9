"""Agent tool loops and structured output against a real simulator, with the official clients."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import httpx
import ollama
import openai
import pytest
from pydantic import BaseModel

from tests.integration.test_simulate_app import make_settings, real_server
from tests.unit.test_simulate_jsonschema import WEATHER, validate

FLIGHT: dict[str, Any] = {
    "type": "object",
    "properties": {
        "destination": {"type": "string"},
        "date": {"type": "string", "format": "date"},
        "seats": {"type": "integer", "minimum": 1, "maximum": 9},
    },
    "required": ["destination", "date", "seats"],
    "additionalProperties": False,
}
FUNCTIONS = [
    ("get_weather", "Get the current weather forecast for a city", WEATHER),
    ("book_flight", "Book a flight ticket to a destination", FLIGHT),
]
SCHEMAS = {name: schema for name, _, schema in FUNCTIONS}
OPENAI_TOOLS: Any = [
    {"type": "function", "function": {"name": n, "description": d, "parameters": p}} for n, d, p in FUNCTIONS
]
RESPONSES_TOOLS: Any = [
    {"type": "function", "name": n, "description": d, "parameters": p} for n, d, p in FUNCTIONS
]
ANTHROPIC_TOOLS: Any = [{"name": n, "description": d, "input_schema": p} for n, d, p in FUNCTIONS]
WEATHER_QUESTION = "What is the weather like in Jakarta right now?"
BOTH_QUESTION = "Check the weather in Bali and book a flight there"
IRRELEVANT = "Halo, apa kabar?"
TOOL_OUTPUT = '{"temperature": 31, "sky": "humid, light rain"}'


class Weather(BaseModel):
    city: str
    temperature: float
    rainy: bool
    tags: list[str]


@pytest.fixture
async def url() -> AsyncIterator[str]:
    async with real_server(make_settings()) as base:
        yield base


@pytest.fixture
async def oa(url: str) -> AsyncIterator[openai.AsyncOpenAI]:
    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
    yield client
    await client.close()


@pytest.fixture
async def claude(url: str) -> AsyncIterator[anthropic.AsyncAnthropic]:
    client = anthropic.AsyncAnthropic(base_url=url, api_key="x", max_retries=0)
    yield client
    await client.close()


def user(text: str) -> Any:
    return [{"role": "user", "content": text}]


async def test_openai_chat_agent_loop(oa: openai.AsyncOpenAI) -> None:
    messages: Any = user(WEATHER_QUESTION)
    first = await oa.chat.completions.create(model="m", messages=messages, tools=OPENAI_TOOLS)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    calls = choice.message.tool_calls or []
    assert [c.function.name for c in calls] == ["get_weather"]  # type: ignore[union-attr]
    validate(json.loads(calls[0].function.arguments), WEATHER)  # type: ignore[union-attr]
    messages += [
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": calls[0].id, "content": TOOL_OUTPUT},
    ]
    second = await oa.chat.completions.create(model="m", messages=messages, tools=OPENAI_TOOLS)
    assert second.choices[0].finish_reason == "stop" and second.choices[0].message.tool_calls is None
    assert (second.choices[0].message.content or "").startswith(f"According to get_weather: {TOOL_OUTPUT}")


async def test_openai_chat_stream_helper_parallel_and_not(oa: openai.AsyncOpenAI) -> None:
    async with oa.chat.completions.stream(
        model="m", messages=user(BOTH_QUESTION), tools=OPENAI_TOOLS
    ) as stream:
        final = await stream.get_final_completion()
    calls = final.choices[0].message.tool_calls or []
    assert final.choices[0].finish_reason == "tool_calls"
    assert sorted(c.function.name for c in calls) == ["book_flight", "get_weather"]
    assert len({c.id for c in calls}) == 2
    for call in calls:
        validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])
    one = await oa.chat.completions.create(
        model="m", messages=user(BOTH_QUESTION), tools=OPENAI_TOOLS, parallel_tool_calls=False, stream=True
    )
    chunks = [c async for c in one]
    indexes = {t.index for c in chunks for t in (c.choices[0].delta.tool_calls or []) if c.choices}
    assert indexes == {0} and chunks[-1].choices[0].finish_reason == "tool_calls"


async def test_openai_tool_choice_modes_rate_and_seed(oa: openai.AsyncOpenAI) -> None:
    async def call(question: str, **extra: Any) -> list[str]:
        done = await oa.chat.completions.create(
            model="m", messages=user(question), tools=OPENAI_TOOLS, **extra
        )
        return [c.function.name for c in done.choices[0].message.tool_calls or []]  # type: ignore[union-attr]

    assert await call(IRRELEVANT) == []
    assert await call(WEATHER_QUESTION, tool_choice="none") == []
    assert await call(IRRELEVANT, tool_choice="required") == ["get_weather"]
    named = {"type": "function", "function": {"name": "book_flight"}}
    assert await call(WEATHER_QUESTION, tool_choice=named) == ["book_flight"]
    assert await call(WEATHER_QUESTION, extra_headers={"x-llmkit-tool-call-rate": "0"}) == []
    assert await call(WEATHER_QUESTION, extra_headers={"x-llmkit-tool-call-rate": "1"}) == ["get_weather"]
    # A seeded request at rate 0.5 decides, and draws its arguments, the same way every time.
    seeded = [
        await oa.chat.completions.create(
            model="m",
            messages=user(WEATHER_QUESTION),
            tools=OPENAI_TOOLS,
            seed=seed,
            extra_headers={"x-llmkit-tool-call-rate": "0.5"},
        )
        for seed in (1, 1, 2, 3, 4, 5, 6, 7)
    ]
    made = [bool(s.choices[0].message.tool_calls) for s in seeded]
    assert made[0] == made[1] and True in made and False in made
    if made[0]:
        arguments = [s.choices[0].message.tool_calls[0].function.arguments for s in seeded[:2]]  # type: ignore[index,union-attr]
        assert arguments[0] == arguments[1]
    with pytest.raises(openai.BadRequestError) as bad_rate:
        await call(WEATHER_QUESTION, extra_headers={"x-llmkit-tool-call-rate": "2"})
    assert bad_rate.value.param == "x-llmkit-tool-call-rate"


@pytest.mark.parametrize(
    ("tool", "field"),
    [
        ("get_weather", "tools[0]"),
        ({"type": "function", "function": {"description": "no name"}}, "tools[0].function.name"),
        (
            {"type": "function", "function": {"name": "f", "parameters": {"type": "strng"}}},
            "tools[0].function.parameters.type",
        ),
        (
            {
                "type": "function",
                "function": {"name": "f", "parameters": {"type": "object", "properties": {"a": {"type": 5}}}},
            },
            "tools[0].function.parameters.properties.a.type",
        ),
    ],
)
async def test_openai_bad_tools_are_400s_naming_the_field(
    oa: openai.AsyncOpenAI, tool: Any, field: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await oa.chat.completions.create(model="m", messages=user(WEATHER_QUESTION), tools=[tool])
    assert caught.value.param == "tools" and field in caught.value.message


async def test_openai_responses_agent_loop_and_events(oa: openai.AsyncOpenAI) -> None:
    first = await oa.responses.create(model="m", input=WEATHER_QUESTION, tools=RESPONSES_TOOLS)
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather" and calls[0].call_id.startswith("call_")
    validate(json.loads(calls[0].arguments), WEATHER)
    follow: Any = [
        {"role": "user", "content": WEATHER_QUESTION},
        calls[0].model_dump(exclude_none=True),
        {"type": "function_call_output", "call_id": calls[0].call_id, "output": TOOL_OUTPUT},
    ]
    second = await oa.responses.create(model="m", input=follow, tools=RESPONSES_TOOLS)
    assert second.status == "completed" and second.output_text.startswith("According to get_weather")

    stream = await oa.responses.create(model="m", input=BOTH_QUESTION, tools=RESPONSES_TOOLS, stream=True)
    events = [e async for e in stream]
    kinds = [e.type for e in events]
    assert kinds[:3] == ["response.created", "response.in_progress", "response.output_item.added"]
    assert kinds.count("response.function_call_arguments.done") == 2 and kinds[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    done = [e for e in events if e.type == "response.function_call_arguments.done"]
    for event in done:
        deltas = "".join(
            e.delta
            for e in events
            if e.type == "response.function_call_arguments.delta" and e.item_id == event.item_id
        )
        assert deltas == event.arguments
    final = events[-1].response  # type: ignore[union-attr]
    assert sorted(i.name for i in final.output if i.type == "function_call") == ["book_flight", "get_weather"]
    async with oa.responses.stream(model="m", input=WEATHER_QUESTION, tools=RESPONSES_TOOLS) as helper:
        streamed = await helper.get_final_response()
    assert [i.type for i in streamed.output] == ["function_call"]


async def test_anthropic_agent_loop(claude: anthropic.AsyncAnthropic) -> None:
    messages: Any = user(WEATHER_QUESTION)
    first = await claude.messages.create(model="c", max_tokens=512, messages=messages, tools=ANTHROPIC_TOOLS)
    assert first.stop_reason == "tool_use"
    uses = [b for b in first.content if b.type == "tool_use"]
    assert len(uses) == 1 and uses[0].name == "get_weather" and uses[0].id.startswith("toolu_")
    validate(uses[0].input, WEATHER)
    messages += [
        {"role": "assistant", "content": [b.model_dump() for b in first.content]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": uses[0].id, "content": TOOL_OUTPUT}],
        },
    ]
    second = await claude.messages.create(model="c", max_tokens=512, messages=messages, tools=ANTHROPIC_TOOLS)
    assert second.stop_reason == "end_turn" and second.content[0].type == "text"
    assert second.content[0].text.startswith("According to get_weather")
    plain = await claude.messages.create(
        model="c", max_tokens=512, messages=user(IRRELEVANT), tools=ANTHROPIC_TOOLS
    )
    assert plain.stop_reason == "end_turn"
    single = await claude.messages.create(
        model="c",
        max_tokens=512,
        messages=user(BOTH_QUESTION),
        tools=ANTHROPIC_TOOLS,
        tool_choice={"type": "auto", "disable_parallel_tool_use": True},
    )
    assert len(single.content) == 1 and single.stop_reason == "tool_use"
    none = await claude.messages.create(
        model="c",
        max_tokens=512,
        messages=user(WEATHER_QUESTION),
        tools=ANTHROPIC_TOOLS,
        tool_choice={"type": "none"},
    )
    assert none.stop_reason == "end_turn"


async def test_anthropic_stream_tool_use(claude: anthropic.AsyncAnthropic) -> None:
    async with claude.messages.stream(
        model="c", max_tokens=512, messages=user(BOTH_QUESTION), tools=ANTHROPIC_TOOLS
    ) as stream:
        kinds = [event.type async for event in stream]
        final = await stream.get_final_message()
    assert (
        final.stop_reason == "tool_use" and "input_json" in kinds and kinds.count("content_block_start") == 2
    )
    assert sorted(b.name for b in final.content if b.type == "tool_use") == ["book_flight", "get_weather"]
    for block in final.content:
        assert block.type == "tool_use"
        validate(block.input, SCHEMAS[block.name])


@pytest.mark.parametrize(
    ("tool", "field"),
    [
        ("get_weather", "tools.0"),
        ({"description": "no name", "input_schema": {"type": "object"}}, "tools.0.name"),
        ({"name": "f"}, "tools.0.input_schema"),
        (
            {"name": "f", "input_schema": {"type": "object", "properties": []}},
            "tools.0.input_schema.properties",
        ),
    ],
)
async def test_anthropic_bad_tools_are_400s_naming_the_field(
    claude: anthropic.AsyncAnthropic, tool: Any, field: str
) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        await claude.messages.create(model="c", max_tokens=64, messages=user("hi"), tools=[tool])
    assert caught.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert field in caught.value.message


@pytest.fixture
async def llama(url: str) -> AsyncIterator[ollama.AsyncClient]:
    client = ollama.AsyncClient(host=url)
    yield client
    close = getattr(client, "close", None)
    if close is not None:
        await close()


async def test_ollama_agent_loop_and_format(llama: ollama.AsyncClient) -> None:
    client = llama
    tools: Any = OPENAI_TOOLS
    messages: Any = user(WEATHER_QUESTION)
    first = await client.chat(model="llama3.2", messages=messages, tools=tools)
    calls = first.message.tool_calls or []
    assert [c.function.name for c in calls] == ["get_weather"] and first.done_reason == "stop"
    # The ollama client sends each tool through its Tool model, which keeps types but drops bounds.
    sent = ollama.Tool.model_validate(tools[0]).model_dump(exclude_none=True)["function"]["parameters"]
    validate(dict(calls[0].function.arguments), sent)
    messages += [first.message, {"role": "tool", "content": TOOL_OUTPUT, "tool_name": "get_weather"}]
    second = await client.chat(model="llama3.2", messages=messages, tools=tools)
    assert not second.message.tool_calls and (second.message.content or "").startswith(
        "According to get_weather"
    )
    parts = [
        p
        async for p in await client.chat(
            model="llama3.2", messages=user(BOTH_QUESTION), tools=tools, stream=True
        )
    ]
    streamed = [c.function.name for p in parts for c in p.message.tool_calls or []]
    assert sorted(streamed) == ["book_flight", "get_weather"] and parts[-1].done
    schema = await client.chat(
        model="llama3.2", messages=user(WEATHER_QUESTION), format=Weather.model_json_schema()
    )
    Weather.model_validate_json(schema.message.content or "")
    fitted = await client.chat(
        model="llama3.2", messages=user('Reply in JSON with the keys "city" and "temperature"'), format="json"
    )
    assert set(json.loads(fitted.message.content or "")) == {"city", "temperature"}
    with pytest.raises(ollama.ResponseError) as bad:
        await client.chat(model="llama3.2", messages=user("hi"), tools=[{"type": "function", "function": {}}])
    assert bad.value.status_code == 400 and "tools[0].function.name" in bad.value.error


async def test_structured_output_with_the_clients_parsers(
    oa: openai.AsyncOpenAI, claude: anthropic.AsyncAnthropic
) -> None:
    parsed = await oa.chat.completions.parse(
        model="m", messages=user(WEATHER_QUESTION), response_format=Weather
    )
    assert isinstance(parsed.choices[0].message.parsed, Weather)
    response = await oa.responses.parse(model="m", input=WEATHER_QUESTION, text_format=Weather)
    assert isinstance(response.output_parsed, Weather)
    forced = await claude.messages.create(
        model="c",
        max_tokens=512,
        messages=user(IRRELEVANT),
        tools=[
            {
                "name": "record_weather",
                "description": "Record it",
                "input_schema": Weather.model_json_schema(),
            }
        ],
        tool_choice={"type": "tool", "name": "record_weather"},
    )
    assert forced.stop_reason == "tool_use" and forced.content[0].type == "tool_use"
    Weather.model_validate(forced.content[0].input)
    # json_object: the keys the prompt names, value types from the names (a list for a plural).
    fitted = await oa.chat.completions.create(
        model="m",
        messages=[
            {
                "role": "system",
                "content": "Answer with a JSON object with the fields `city`, `is_rainy` and `tags`.",
            },
            {"role": "user", "content": "Describe Jakarta"},
        ],
        response_format={"type": "json_object"},
    )
    value = json.loads(fitted.choices[0].message.content or "")
    assert set(value) == {"city", "is_rainy", "tags"}
    assert isinstance(value["is_rainy"], bool) and isinstance(value["tags"], list)
    with pytest.raises(openai.BadRequestError) as bad:
        await oa.responses.create(
            model="m",
            input="x",
            text={"format": {"type": "json_schema", "name": "w", "schema": {"type": "obj"}}},
        )
    assert bad.value.param == "text.format"


async def test_langchain_json_mode_and_tools(url: str) -> None:
    import langchain_openai as chat_models  # a dev dependency: `make install` installs it

    class Joke(BaseModel):
        setup: str
        punchline: str
        rating: int

    # Its own HTTP client, closed here: LangChain's default one outlives the test's event loop.
    http = httpx.AsyncClient()
    model = chat_models.ChatOpenAI(
        model="m", base_url=f"{url}/v1", api_key="x", max_retries=0, http_async_client=http
    )
    structured = model.with_structured_output(Joke, method="json_mode")
    joke = await structured.ainvoke("Tell me a joke about cats as JSON with keys setup, punchline and rating")
    assert isinstance(joke, Joke)
    bound = model.bind_tools(OPENAI_TOOLS)
    reply = await bound.ainvoke(WEATHER_QUESTION)
    assert [c["name"] for c in reply.tool_calls] == ["get_weather"]
    validate(reply.tool_calls[0]["args"], WEATHER)
    await http.aclose()
