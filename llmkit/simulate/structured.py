"""Tools, tool_choice and response_format of chat completions: validation and the answers they shape.

What the simulator calls: tool_choice "required" calls the tool the last user message names (else the first
tool); a named tool_choice calls that tool; "auto" calls a tool only when the last message is the user's and
names one of the tools (so an agent loop that sent back a tool result gets a text answer), else it answers
text; "none" answers text. Arguments and json_schema outputs are fakes valid against the schema.
"""

from __future__ import annotations

import random
import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from llmkit.core.http import ApiError
from llmkit.core.sampling import NAME_RE, response_format_problem
from llmkit.core.tokenizer import content_text
from llmkit.simulate.schema_sample import SchemaError, sample_instance

MAX_TOOLS = 128
TOOL_CHOICES = ("none", "auto", "required")
_WORD_RE = re.compile(r"[^\W\d_]{3,}")
_EMPTY_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}}
_CALL_ID_CHARS = string.ascii_letters + string.digits


@dataclass(frozen=True, slots=True)
class Tool:
    """A function the model may call: its name and its parameters' JSON schema."""

    name: str
    parameters: dict[str, Any] = field(default_factory=lambda: dict(_EMPTY_PARAMETERS))


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One call the answer makes: id, function name and arguments as a JSON string."""

    id: str
    name: str
    arguments: str

    def as_dict(self) -> dict[str, Any]:
        """The call as it appears in a message's tool_calls."""
        function = {"name": self.name, "arguments": self.arguments}
        return {"id": self.id, "type": "function", "function": function}


@dataclass(frozen=True, slots=True)
class ResponseFormat:
    """The requested shape of the content: text, any JSON object, or JSON valid against `schema`."""

    type: str = "text"
    schema: Any = None


TEXT_FORMAT = ResponseFormat()


def _bad(param: str, message: str) -> ApiError:
    return ApiError(400, "invalid_value", message, param=param)


def _parse_tool(index: int, raw: Any) -> Tool:
    where = f"tools[{index}]"
    example = '{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}'
    if not (
        isinstance(raw, dict) and raw.get("type") == "function" and isinstance(raw.get("function"), dict)
    ):
        got = orjson.dumps(raw).decode()[:80]
        raise _bad("tools", f"{where} must be an object like {example}; got {got}")
    function = raw["function"]
    name = function.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise _bad("tools", f"{where}.function.name must be 1-64 letters, digits, '_' or '-'; got {name!r}")
    parameters = function.get("parameters")
    if parameters is None:
        return Tool(name)
    if not isinstance(parameters, dict):
        raise _bad(
            "tools", f"{where}.function.parameters must be a JSON schema object; got {parameters!r:.60}"
        )
    return Tool(name, parameters)


def parse_tools(data: Mapping[str, Any]) -> tuple[Tool, ...]:
    """The request's tools; 400 naming `tools` when their shape is wrong."""
    raw = data.get("tools")
    if raw is None:
        return ()
    if not isinstance(raw, list) or len(raw) > MAX_TOOLS:
        raise _bad("tools", f"tools must be an array of up to {MAX_TOOLS} function tools; got {raw!r:.80}")
    tools = tuple(_parse_tool(i, t) for i, t in enumerate(raw))
    names = [t.name for t in tools]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise _bad("tools", f"tool names must be unique; repeated: {', '.join(duplicates)}")
    return tools


def parse_tool_choice(data: Mapping[str, Any], tools: tuple[Tool, ...]) -> tuple[str, str | None]:
    """(mode, function name): mode is none, auto, required or function (a named tool that exists)."""
    raw = data.get("tool_choice")
    if raw is None:
        return "auto", None
    if not tools:
        raise _bad("tool_choice", "tool_choice is only allowed when tools are specified")
    if isinstance(raw, str) and raw in TOOL_CHOICES:
        return raw, None
    function = raw.get("function") if isinstance(raw, dict) and raw.get("type") == "function" else None
    name = function.get("name") if isinstance(function, dict) else None
    if not isinstance(name, str):
        raise _bad(
            "tool_choice",
            'tool_choice must be "none", "auto", "required" or '
            '{"type": "function", "function": {"name": ...}}; '
            f"got {orjson.dumps(raw).decode()[:80]}",
        )
    if name not in {t.name for t in tools}:
        known = ", ".join(t.name for t in tools)
        raise _bad("tool_choice", f"tool_choice names the function {name!r}, which is not in tools ({known})")
    return "function", name


def parse_response_format(data: Mapping[str, Any]) -> ResponseFormat:
    """The request's response_format; 400 naming `response_format` when it is malformed."""
    raw = data.get("response_format")
    if raw is None:
        return TEXT_FORMAT
    problem = response_format_problem(raw)
    if problem is not None:
        raise _bad("response_format", problem)
    if raw["type"] != "json_schema":
        return ResponseFormat(str(raw["type"]))
    return ResponseFormat("json_schema", raw["json_schema"].get("schema", {"type": "object"}))


def _names_tool(text: str, tool: Tool) -> bool:
    lowered = text.lower()
    name = tool.name.lower()
    return name in lowered or name.replace("_", " ").replace("-", " ") in lowered


def choose_tool(
    tools: Sequence[Tool], mode: str, name: str | None, messages: Sequence[Mapping[str, Any]]
) -> Tool | None:
    """The tool the answer calls, or None for a content answer (see the module docstring)."""
    if not tools or mode == "none":
        return None
    if mode == "function":
        return next(t for t in tools if t.name == name)
    last = messages[-1] if messages else {}
    said = content_text(last.get("content")) if last.get("role") == "user" else ""
    named = next((t for t in tools if said and _names_tool(said, t)), None)
    if mode == "required":
        return named or tools[0]
    return named


def answer_words(text: str) -> list[str]:
    """Words of the source's answer, to fill fake strings with something on topic."""
    return _WORD_RE.findall(text)[:64]


def new_call_id(rng: random.Random) -> str:
    """A `call_...` id like OpenAI's."""
    return "call_" + "".join(rng.choices(_CALL_ID_CHARS, k=24))


def make_tool_call(tool: Tool, text: str, rng: random.Random) -> ToolCall:
    """A call of `tool` with arguments valid against its parameters schema."""
    try:
        arguments = sample_instance(tool.parameters, rng, answer_words(text))
    except SchemaError as exc:
        raise _bad("tools", f"cannot make arguments for the function {tool.name!r}: {exc}") from None
    return ToolCall(new_call_id(rng), tool.name, orjson.dumps(arguments).decode())


def format_content(fmt: ResponseFormat, text: str, rng: random.Random) -> str:
    """The content in the requested format: the text, {"answer": text}, or JSON valid against the schema."""
    if fmt.type == "json_object":
        return orjson.dumps({"answer": text}).decode()
    if fmt.type == "json_schema":
        try:
            value = sample_instance(fmt.schema, rng, answer_words(text))
        except SchemaError as exc:
            raise _bad("response_format", f"cannot make JSON for the json_schema: {exc}") from None
        return orjson.dumps(value).decode()
    return text
