"""Chat requests from both faces (the seed's /api/chat-* and OpenAI's), validated and normalised."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import orjson

from llmkit.core.auth import DEFAULT_TENANT
from llmkit.core.http import ApiError
from llmkit.core.queue.base import Priority
from llmkit.core.sampling import (
    INT64_MAX,
    MAX_STOP,
    SAMPLING_RANGES,
    is_int,
    is_stop,
    response_format_problem,
)
from llmkit.core.tokenizer import content_text
from llmkit.gateway.calls import ChatCall

ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})
# Sampling parameters passed upstream and part of the cache key, by their OpenAI names.
SAMPLING = frozenset(
    {
        "temperature",
        "top_p",
        "top_k",
        "max_tokens",
        "stop",
        "seed",
        "presence_penalty",
        "frequency_penalty",
        "repeat_penalty",
        "response_format",
    }
)
ALIASES = {"max_completion_tokens": "max_tokens", "num_predict": "max_tokens"}
# Refused here, so a client gets a 400 naming the field rather than the upstream's 400 relayed as a 502.
RANGES = SAMPLING_RANGES
# OpenAI fields the gateway cannot honour: it relays one text answer.
UNSUPPORTED = ("tools", "functions", "tool_choice", "function_call", "logprobs", "top_logprobs", "audio")
PRIORITY_NAMES = ", ".join(level.name.lower() for level in Priority)


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """A validated chat request: the upstream call, its cache key and how the client wants it served."""

    call: ChatCall
    key: str
    stream: bool
    use_cache: bool
    priority: Priority
    conversation_id: str | None = None
    # OpenAI's stream_options.include_usage: a last chunk with the token counts.
    include_usage: bool = False
    # Whose request it is: part of the cache key, so no tenant is served another tenant's answer.
    tenant_id: str = DEFAULT_TENANT
    # A request grounded in documents (gateway/rag.py): the messages without the retrieved context (what
    # the conversation remembers), and the chunks it was given.
    history: tuple[Mapping[str, Any], ...] | None = None
    sources: tuple[dict[str, Any], ...] = ()

    @property
    def remembered(self) -> tuple[Mapping[str, Any], ...]:
        """The messages a conversation keeps of this request (never the retrieved context)."""
        return self.call.messages if self.history is None else self.history


def bad(message: str, param: str | None = None) -> ApiError:
    """A 400 naming the field to change (OpenAI clients read `param`)."""
    return ApiError(400, "invalid_request", message, param=param)


def parse_priority(value: Any) -> Priority:
    """The seed's integer priority (higher first: 0 normal, 1 high, 2+ critical, < 0 low) or a level name."""
    if value is None:
        return Priority.NORMAL
    if isinstance(value, bool):
        raise bad(f"priority must be an integer or one of {PRIORITY_NAMES}; got {value!r}", "priority")
    if isinstance(value, (int, float)):
        number = int(value)
        if number >= 2:
            return Priority.CRITICAL
        return {1: Priority.HIGH, 0: Priority.NORMAL}.get(number, Priority.LOW)
    if isinstance(value, str):
        text = value.strip()
        if text.lstrip("-").isdigit():
            return parse_priority(int(text))
        found = Priority.__members__.get(text.upper())
        if found is not None:
            return found
    raise bad(f"priority must be an integer or one of {PRIORITY_NAMES}; got {value!r}", "priority")


def _content(value: Any, where: str) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, list):
        texts = []
        for i, part in enumerate(value):
            if (
                not isinstance(part, dict)
                or part.get("type") != "text"
                or not isinstance(part.get("text"), str)
            ):
                raise bad(f"{where}[{i}] must be a text part {{'type': 'text', 'text': '...'}}", where)
            texts.append(part["text"])
        return "".join(texts)
    raise bad(f"{where} must be a string or a list of text parts", where)


def parse_messages(value: Any) -> tuple[dict[str, Any], ...]:
    """`messages` as a tuple of {role, content[, name]}; 400 naming the first bad message."""
    if not isinstance(value, list) or not value:
        raise bad('messages must be a non-empty list like [{"role": "user", "content": "Hello"}]', "messages")
    messages = []
    for i, message in enumerate(value):
        if not isinstance(message, dict):
            raise bad(f"messages[{i}] must be an object with role and content", f"messages[{i}]")
        role = message.get("role")
        if not isinstance(role, str) or role not in ROLES:
            raise bad(
                f"messages[{i}].role must be one of {', '.join(sorted(ROLES))}; got {role!r}",
                f"messages[{i}].role",
            )
        clean = {"role": role, "content": _content(message.get("content"), f"messages[{i}].content")}
        name = message.get("name")
        if name is not None and not isinstance(name, str):
            raise bad(f"messages[{i}].name must be a string; got {name!r:.60}", f"messages[{i}].name")
        if name:
            clean["name"] = name
        messages.append(clean)
    return tuple(messages)


def parse_params(body: Mapping[str, Any]) -> dict[str, Any]:
    """The sampling parameters of a body (top level, and Ollama's `options`), under their OpenAI names."""
    params: dict[str, Any] = {}
    options = body.get("options")
    if options is not None and not isinstance(options, dict):
        raise bad(f"options must be an object of sampling parameters; got {options!r:.60}", "options")
    sources: list[Mapping[str, Any]] = [options] if options else []
    sources.append(body)
    for source in sources:
        for given, value in source.items():
            name = ALIASES.get(given, given)
            if name not in SAMPLING or value is None:
                continue
            # Each spelling is checked on its own: a later alias must not hide a bad earlier one.
            if name == "max_tokens" and not is_int(value, 1):
                raise bad(f"{given} must be a positive integer (at most {INT64_MAX}); got {value!r}", given)
            params[name] = value
    for name in ("temperature", "top_p", "presence_penalty", "frequency_penalty", "top_k", "repeat_penalty"):
        value = params.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise bad(f"{name} must be a number; got {value!r}", name)
        bounds = RANGES.get(name)
        if value is not None and bounds is not None and not bounds[0] <= value <= bounds[1]:
            raise bad(f"{name} must be a number from {bounds[0]} to {bounds[1]}; got {value!r}", name)
    seed = params.get("seed")
    if seed is not None and not is_int(seed):
        raise bad(f"seed must be a 64-bit integer; got {seed!r}", "seed")
    stop = params.get("stop")
    if stop is not None and not is_stop(stop):
        raise bad(f"stop must be a string or a list of up to {MAX_STOP} strings", "stop")
    if isinstance(stop, str):
        params["stop"] = [stop]
    if "response_format" in params and (problem := response_format_problem(params["response_format"])):
        raise bad(problem, "response_format")
    return params


def cache_key(
    model: str,
    messages: tuple[Mapping[str, Any], ...],
    params: Mapping[str, Any],
    tenant_id: str = DEFAULT_TENANT,
) -> str:
    """A hash of what decides the answer: model, messages and sampling parameters (in canonical JSON),
    under the tenant's prefix (none for the default tenant, whose keys stay as they were)."""
    material = orjson.dumps([model, messages, params], option=orjson.OPT_SORT_KEYS)
    digest = hashlib.sha256(material).hexdigest()
    return digest if tenant_id == DEFAULT_TENANT else f"t:{tenant_id}:{digest}"


def _flag(body: Mapping[str, Any], name: str, default: bool) -> bool:
    value = body.get(name, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise bad(f"{name} must be true or false; got {value!r}", name)
    return value


def _optional_text(body: Mapping[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise bad(f"{name} must be a string; got {value!r}", name)
    return value


def build_request(
    body: Mapping[str, Any],
    default_model: str,
    messages: tuple[dict[str, Any], ...] | None = None,
    *,
    priority: Any = None,
    use_cache: bool | None = None,
    tenant_id: str = DEFAULT_TENANT,
) -> ChatRequest:
    """A ChatRequest from a seed or OpenAI body; `messages` replaces the body's (a resolved conversation)."""
    for name in UNSUPPORTED:
        if body.get(name) not in (None, False, [], {}):
            raise bad(f"{name} is not supported: the gateway relays one text answer; drop {name}", name)
    n = body.get("n", 1)
    if n not in (1, None):
        raise bad(f"n must be 1: the gateway relays one answer; got {n!r}", "n")
    model = _optional_text(body, "model") or default_model
    if messages is None:
        messages = parse_messages(body.get("messages"))
    params = parse_params(body)
    stream = _flag(body, "stream", False)
    options = body.get("stream_options")
    include_usage = isinstance(options, dict) and options.get("include_usage") is True
    return ChatRequest(
        call=ChatCall(model=model, messages=messages, params=params, stream=stream),
        key=cache_key(model, messages, params, tenant_id),
        stream=stream,
        use_cache=_flag(body, "use_cache", True) if use_cache is None else use_cache,
        priority=parse_priority(body.get("priority") if priority is None else priority),
        conversation_id=_optional_text(body, "conversation_id"),
        include_usage=include_usage,
        tenant_id=tenant_id,
    )


def last_user_text(messages: Any) -> str:
    """The question a chat request asks: its last user message's text."""
    for message in reversed(messages):
        if message.get("role") == "user":
            return content_text(message.get("content"))
    return ""


def with_messages(req: ChatRequest, messages: tuple[Mapping[str, Any], ...]) -> ChatRequest:
    """The same request over a longer history (a conversation the gateway remembered)."""
    call = replace(req.call, messages=messages)
    return replace(req, call=call, key=cache_key(call.model, messages, call.params, req.tenant_id))
