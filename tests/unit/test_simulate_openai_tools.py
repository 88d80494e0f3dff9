"""Tools, tool_choice and response_format: validation, the answer they shape, and tool-call SSE events."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest

from llmkit.core.http import ApiError
from llmkit.simulate.openai import (
    ChunkWriter,
    completion_body,
    parse_chat_request,
    shape_answer,
    tool_call_pieces,
)
from llmkit.simulate.structured import ToolCall
from tests.unit.test_simulate_jsonschema import WEATHER, validate

USER = [{"role": "user", "content": "hi"}]
TOOLS: list[dict[str, Any]] = [
    {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}},
    {"type": "function", "function": {"name": "search-web"}},
]
ANSWER = "Jakarta is hot and humid today, with some afternoon rain."


def _chat(**extra: Any) -> dict[str, Any]:
    return {"model": "m", "messages": extra.pop("messages", USER), **extra}


def _answer(**extra: Any) -> Any:
    return shape_answer(parse_chat_request(_chat(**extra)), ANSWER, random.Random(1))


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (_chat(tools="get_weather"), "tools"),
        (_chat(tools=[{"type": "function"}]), "tools"),
        (_chat(tools=[{"type": "retrieval", "function": {"name": "x"}}]), "tools"),
        (_chat(tools=[{"type": "function", "function": {"name": "has space"}}]), "tools"),
        (_chat(tools=[{"type": "function", "function": {"name": "f", "parameters": []}}]), "tools"),
        (_chat(tools=[TOOLS[0], TOOLS[0]]), "tools"),
        (_chat(tool_choice="required"), "tool_choice"),
        (_chat(tools=TOOLS, tool_choice="always"), "tool_choice"),
        (_chat(tools=TOOLS, tool_choice={"type": "function", "function": {"name": "nope"}}), "tool_choice"),
        (_chat(tools=TOOLS, tool_choice={"type": "function"}), "tool_choice"),
        (_chat(response_format="json"), "response_format"),
        (_chat(response_format={"type": "xml"}), "response_format"),
        (_chat(response_format={"type": "json_schema"}), "response_format"),
        (_chat(response_format={"type": "json_schema", "json_schema": {"schema": {}}}), "response_format"),
        (
            _chat(response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": 1}}),
            "response_format",
        ),
        (
            _chat(response_format={"type": "json_schema", "json_schema": {"name": "a", "strict": "yes"}}),
            "response_format",
        ),
    ],
)
def test_bad_tools_and_formats_name_their_parameter(body: dict[str, Any], param: str) -> None:
    with pytest.raises(ApiError) as caught:
        parse_chat_request(body)
    assert caught.value.status == 400 and caught.value.extra["param"] == param


def test_required_calls_a_tool_with_valid_arguments() -> None:
    answer = _answer(tools=TOOLS, tool_choice="required")
    assert answer.finish_reason == "tool_calls" and answer.tool_calls
    assert answer.tool_calls[0].name == "get_weather" and answer.tool_calls[0].id.startswith("call_")
    assert "".join(answer.tokens) == answer.tool_calls[0].arguments
    validate(orjson.loads(answer.tool_calls[0].arguments), WEATHER)


def test_named_tool_choice_and_a_tool_without_parameters() -> None:
    choice = {"type": "function", "function": {"name": "search-web"}}
    answer = _answer(tools=TOOLS, tool_choice=choice)
    assert answer.tool_calls and answer.tool_calls[0].name == "search-web"
    assert orjson.loads(answer.tool_calls[0].arguments) == {}


def test_auto_calls_only_a_tool_the_last_user_message_names() -> None:
    assert _answer(tools=TOOLS).tool_calls == ()
    assert "".join(_answer(tools=TOOLS).tokens) == ANSWER
    asked = [{"role": "user", "content": "please use get weather for Jakarta"}]
    called = _answer(tools=TOOLS, messages=asked)
    assert called.tool_calls and called.tool_calls[0].name == "get_weather"
    # After the tool's result comes back, auto answers text: an agent loop ends.
    result = [
        *asked,
        {"role": "assistant", "content": None, "tool_calls": [called.tool_calls[0].as_dict()]},
        {"role": "tool", "tool_call_id": called.tool_calls[0].id, "content": "31C"},
    ]
    assert _answer(tools=TOOLS, messages=result).tool_calls == ()
    assert _answer(tools=TOOLS, messages=asked, tool_choice="none").tool_calls == ()


def test_required_prefers_the_named_tool_and_max_tokens_cuts_arguments() -> None:
    asked = [{"role": "user", "content": "Search-Web for news"}]
    assert _answer(tools=TOOLS, messages=asked, tool_choice="required").tool_calls[0].name == "search-web"
    short = _answer(tools=TOOLS, tool_choice="required", max_tokens=2)
    assert short.finish_reason == "length" and len(short.tokens) == 2


def test_response_formats() -> None:
    assert orjson.loads("".join(_answer(response_format={"type": "json_object"}).tokens)) == {
        "answer": ANSWER
    }
    assert "".join(_answer(response_format={"type": "text"}).tokens) == ANSWER
    spec = {"name": "weather", "schema": WEATHER, "strict": True}
    content = "".join(_answer(response_format={"type": "json_schema", "json_schema": spec}).tokens)
    validate(orjson.loads(content), WEATHER)
    # Stop sequences cut text, never the generated JSON.
    stopped = _answer(response_format={"type": "json_object"}, stop=["hot"])
    assert orjson.loads("".join(stopped.tokens)) == {"answer": ANSWER}


def test_unresolvable_schemas_are_400s_at_answer_time() -> None:
    bad = {"type": "function", "function": {"name": "f", "parameters": {"$ref": "#/$defs/X"}}}
    with pytest.raises(ApiError) as tool:
        _answer(tools=[bad], tool_choice="required")
    assert tool.value.extra["param"] == "tools"
    spec = {"name": "x", "schema": {"$ref": "other.json"}}
    with pytest.raises(ApiError) as fmt:
        _answer(response_format={"type": "json_schema", "json_schema": spec})
    assert fmt.value.extra["param"] == "response_format"


def test_tool_call_body_and_events() -> None:
    call = ToolCall("call_abc", "get_weather", '{"location":"Jakarta"}')
    body = completion_body("m", call.arguments, "tool_calls", 2, 10, 5, (call,))
    message = body["choices"][1]["message"]
    assert message["content"] is None and message["tool_calls"] == [call.as_dict()]
    assert body["choices"][1]["finish_reason"] == "tool_calls"

    writer = ChunkWriter("m", 1, (call,))
    first = orjson.loads(writer.role(0)[len(b"data: ") :])
    delta = first["choices"][0]["delta"]
    assert delta == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "index": 0,
                "id": "call_abc",
                "type": "function",
                "function": {"name": "get_weather", "arguments": ""},
            }
        ],
    }
    pieces, counts = tool_call_pieces((call,), ['{"loc', 'ation":"', "Jakarta", '"}'], (4,), 1)
    assert counts == [1, 1, 1, 1]
    piece = orjson.loads(writer.content(0, pieces[0])[len(b"data: ") :])
    assert piece["choices"][0]["delta"] == {"tool_calls": [{"index": 0, "function": {"arguments": '{"loc'}}]}
    assert piece["choices"][0]["finish_reason"] is None
