"""Tools, tool_choice and response_format of chat completions: validation and the answers they shape.

Which tools an answer calls is tool_calls.py's choice; arguments and json_schema outputs are fakes valid
against the schema; json_object outputs fit the prompt (json_mode.py).
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
from llmkit.simulate.json_mode import prompt_object
from llmkit.simulate.schema_sample import SchemaError, sample_instance, schema_problem

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
    description: str = ""


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


def tool_problem(name: Any, description: Any, parameters: Any, where: str, schema_key: str) -> str | None:
    """What is wrong with one tool definition (its name, description or parameters schema), or None."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        return f"{where}.name must be 1-64 letters, digits, '_' or '-'; got {name!r:.60}"
    if description is not None and not isinstance(description, str):
        return f"{where}.description must be a string; got {description!r:.60}"
    if parameters is None:
        return None
    if not isinstance(parameters, dict):
        return f"{where}.{schema_key} must be a JSON schema object; got {parameters!r:.60}"
    if parameters.get("type", "object") != "object":
        return f'{where}.{schema_key}.type must be "object"; got {parameters.get("type")!r:.60}'
    return schema_problem(parameters, f"{where}.{schema_key}")


def _parse_tool(index: int, raw: Any) -> Tool:
    where = f"tools[{index}]"
    example = '{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}'
    if not (
        isinstance(raw, dict) and raw.get("type") == "function" and isinstance(raw.get("function"), dict)
    ):
        got = orjson.dumps(raw).decode()[:80]
        raise _bad("tools", f"{where} must be an object like {example}; got {got}")
    function = raw["function"]
    name, description, parameters = (
        function.get("name"),
        function.get("description"),
        function.get("parameters"),
    )
    problem = tool_problem(name, description, parameters, f"{where}.function", "parameters")
    if problem is not None:
        raise _bad("tools", problem)
    return Tool(name, parameters if parameters is not None else dict(_EMPTY_PARAMETERS), description or "")


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


def answer_words(text: str) -> list[str]:
    """Words of the source's answer, to fill fake strings with something on topic."""
    return _WORD_RE.findall(text)[:64]


def new_call_id(rng: random.Random) -> str:
    """A `call_...` id like OpenAI's."""
    return "call_" + "".join(rng.choices(_CALL_ID_CHARS, k=24))


def tool_arguments(tool: Tool, text: str, rng: random.Random) -> Any:
    """Arguments for `tool`, valid against its parameters schema; SchemaError when it cannot be satisfied."""
    return sample_instance(tool.parameters, rng, answer_words(text))


def make_tool_call(
    tool: Tool, text: str, rng: random.Random, id_rng: random.Random | None = None, param: str = "tools"
) -> ToolCall:
    """A call of `tool` with arguments valid against its parameters schema (its id drawn from `id_rng`)."""
    try:
        arguments = tool_arguments(tool, text, rng)
    except SchemaError as exc:
        raise _bad(param, f"cannot make arguments for the function {tool.name!r}: {exc}") from None
    return ToolCall(new_call_id(id_rng or rng), tool.name, orjson.dumps(arguments).decode())


def format_content(
    fmt: ResponseFormat,
    text: str,
    rng: random.Random,
    prompts: Sequence[str] = (),
    param: str = "response_format",
) -> str:
    """The content in the requested format: the text, a JSON object fitting `prompts` (the conversation's
    texts, the question first), or JSON valid against the schema."""
    if fmt.type == "json_object":
        return orjson.dumps(prompt_object(prompts, text, rng)).decode()
    if fmt.type == "json_schema":
        try:
            value = sample_instance(fmt.schema, rng, answer_words(text))
        except SchemaError as exc:
            raise _bad(param, f"cannot make JSON for the json_schema: {exc}") from None
        return orjson.dumps(value).decode()
    return text
