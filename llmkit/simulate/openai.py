"""OpenAI chat completions: request validation, answer shaping (stop, max tokens, tools), bodies, chunks."""

from __future__ import annotations

import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from llmkit.core.http import ApiError, parse_json
from llmkit.core.ids import fresh_hex
from llmkit.core.memo import Memo
from llmkit.core.sampling import INT64_MAX, MAX_STOP, is_int, is_stop
from llmkit.core.tokenizer import content_text, count_prompt_tokens
from llmkit.simulate.bounds import bounded_int, chat_logprobs, check_numbers
from llmkit.simulate.lengths import MAX_ANSWER_TOKENS, Want, cut_text, fit_text
from llmkit.simulate.structured import (
    TEXT_FORMAT,
    ResponseFormat,
    Tool,
    ToolCall,
    format_content,
    make_tool_call,
    parse_response_format,
    parse_tool_choice,
    parse_tools,
)
from llmkit.simulate.tool_calls import ToolPolicy, cite, decision_rng, pick_tools

ROLES = ("system", "user", "assistant", "tool", "developer")
MAX_N = 128
SYSTEM_FINGERPRINT = "fp_llmkit"
DONE_EVENT = b"data: [DONE]\n\n"

# The seed's connectivity answer, byte for byte the JSON of its README.
TEST_COMPLETION: dict[str, Any] = {
    "id": "chatcmpl-AjoahzpVUCsJmOQZRKZUze7qBjEjn",
    "object": "chat.completion",
    "created": 1735482595,
    "model": "gpt-4o-2024-08-06",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "============>>  Selamat! Aplikasi anda telah sukses terhubung ke "
                "OpenAI Simulator. <=============",
            },
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 57, "completion_tokens": 92, "total_tokens": 149},
}


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """A validated chat completion request: only the fields the simulator acts on."""

    model: str
    messages: list[dict[str, Any]]
    prompt: str
    n: int = 1
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    stream: bool = False
    include_usage: bool = False
    tools: tuple[Tool, ...] = ()
    # none, auto, required, or function (then tool_name says which).
    tool_choice: str = "auto"
    tool_name: str | None = None
    response_format: ResponseFormat = TEXT_FORMAT
    parallel_tool_calls: bool = True
    seed: int | None = None
    # The last message is a tool result: an agent loop is waiting for the answer that uses it.
    after_tool: bool = False
    # vLLM's extra fields: generate past the answer's end up to max_tokens; generate at least this many.
    ignore_eos: bool = False
    min_tokens: int | None = None
    # logprobs: true, and how many alternatives each token lists (top_logprobs).
    logprobs: bool = False
    top_logprobs: int = 0


@dataclass(slots=True)  # not frozen: a frozen dataclass pays object.__setattr__ per field, on every request
class Answer:
    """What one chat request answers: content or tool-call argument tokens, the finish reason, the calls."""

    tokens: list[str]
    finish_reason: str
    # The calls (each with its possibly cut arguments); tokens are their arguments' tokens, call by call.
    tool_calls: tuple[ToolCall, ...] = ()
    # The tokens joined (None: join them): what a non-streamed body carries.
    text: str | None = None
    # How many of `tokens` each call's arguments take (streams split the calls by it).
    call_tokens: tuple[int, ...] = ()

    @property
    def content(self) -> str:
        """The answer's text: its tokens joined."""
        return "".join(self.tokens) if self.text is None else self.text


def invalid(param: str, message: str, code: str = "invalid_value") -> ApiError:
    """A 400 in OpenAI's shape naming the offending parameter."""
    return ApiError(400, code, message, param=param)


def check_model(data: Mapping[str, Any]) -> str:
    model = data.get("model")
    if model is None:
        raise invalid(
            "model",
            'you must provide a model parameter, e.g. "model": "gpt-4o"',
            "missing_required_parameter",
        )
    if not isinstance(model, str) or not model.strip():
        raise invalid("model", f'model must be a non-empty string such as "gpt-4o"; got {model!r}')
    return model


def _check_message(index: int, message: Any) -> dict[str, Any]:
    where = f"messages[{index}]"
    if not isinstance(message, dict):
        raise invalid(
            "messages", f"{where} must be an object with role and content; got {type(message).__name__}"
        )
    role = message.get("role")
    if role not in ROLES:
        raise invalid("messages", f"{where}.role must be one of {', '.join(ROLES)}; got {role!r}")
    content = message.get("content")
    if content is not None and not isinstance(content, (str, list)):
        raise invalid(
            "messages",
            f"{where}.content must be a string, an array of content parts or null; "
            f"got {type(content).__name__}",
        )
    return message


def _check_messages(data: Mapping[str, Any]) -> list[dict[str, Any]]:
    messages = data.get("messages")
    if messages is None:
        raise invalid(
            "messages",
            'you must provide messages, e.g. "messages": [{"role": "user", "content": "Hello!"}]',
            "missing_required_parameter",
        )
    if not isinstance(messages, list) or not messages:
        raise invalid(
            "messages",
            'messages must be a non-empty array such as [{"role": "user", "content": "Hello!"}]; '
            f"got {orjson.dumps(messages).decode()[:80]}",
        )
    return [_check_message(i, m) for i, m in enumerate(messages)]


def int_param(data: Mapping[str, Any], name: str, low: int, high: int = INT64_MAX) -> int | None:
    value = data.get(name)
    if value is None:
        return None
    if not is_int(value, low, high):
        upper = f" and <= {high}" if high != INT64_MAX else f" (64-bit, at most {INT64_MAX})"
        raise invalid(name, f"{name} must be an integer >= {low}{upper}; got {value!r}")
    return value


def check_stop(data: Mapping[str, Any]) -> tuple[str, ...]:
    stop = data.get("stop")
    if stop is None:
        return ()
    if not is_stop(stop):
        raise invalid("stop", f"stop must be a string or an array of up to {MAX_STOP} strings; got {stop!r}")
    return tuple(s for s in ([stop] if isinstance(stop, str) else stop) if s)


def check_bool(data: Mapping[str, Any], name: str, param: str | None = None) -> bool:
    value = data.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        param = param or name
        raise invalid(param, f"{param} must be true or false; got {value!r}")
    return value


def last_user_text(messages: list[dict[str, Any]]) -> str:
    """The text of the last user message (the prompt the source matches), or "" if there is none."""
    for message in reversed(messages):
        if message.get("role") == "user":
            return content_text(message.get("content"))
    return ""


def _messages_fast(messages: Any) -> list[dict[str, Any]] | None:
    # The common, valid case in one loop; None sends anything unusual through _check_messages.
    if type(messages) is not list or not messages:
        return None
    for message in messages:
        if type(message) is not dict or message.get("role") not in ROLES:
            return None
        content = message.get("content")
        if content is not None and type(content) is not str and type(content) is not list:
            return None
    return list(messages)


# The fields of the plainest body (a load test's, most clients'): one with no others is checked by
# parse_chat_request without looking up the two dozen optional ones, each absent and hence its default.
_PLAIN_FIELDS = frozenset({"model", "messages", "stream"})


def parse_chat_request(data: Mapping[str, Any]) -> ChatRequest:
    """Validate a chat completion body; raise a 400 ApiError that names the parameter to fix."""
    # Checked in the same order as always, so a body with several faults names the same one; absent
    # optional fields skip their checker (each returns its default for None).
    get = data.get
    model = get("model")
    if type(model) is not str or not model or model.isspace():
        model = check_model(data)
    messages = _messages_fast(get("messages"))
    if messages is None:
        messages = _check_messages(data)
    if data.keys() <= _PLAIN_FIELDS:
        stream = get("stream")
        if stream is not True and stream is not False:
            stream = check_bool(data, "stream")
        prompt = last_user_text(messages)
        return ChatRequest(
            model, messages, prompt, stream=stream, after_tool=messages[-1].get("role") == "tool"
        )
    n = 1 if get("n") is None else (bounded_int(data, "n", 1, MAX_N) or 1)
    max_tokens = int_param(data, "max_completion_tokens", 1)
    if max_tokens is None:
        max_tokens = int_param(data, "max_tokens", 1)
    stream_options = get("stream_options")
    include_usage = False
    if stream_options is not None:
        if not isinstance(stream_options, dict):
            raise invalid("stream_options", f"stream_options must be an object; got {stream_options!r}")
        include_usage = check_bool(stream_options, "include_usage", "stream_options.include_usage")
    tools = () if get("tools") is None else parse_tools(data)
    tool_choice, tool_name = ("auto", None) if get("tool_choice") is None else parse_tool_choice(data, tools)
    prompt = last_user_text(messages)
    stop = () if get("stop") is None else check_stop(data)
    stream = get("stream")
    if stream is not True and stream is not False:
        stream = check_bool(data, "stream")
    response_format = TEXT_FORMAT if get("response_format") is None else parse_response_format(data)
    parallel = True if get("parallel_tool_calls") is None else check_bool(data, "parallel_tool_calls")
    seed = None if get("seed") is None else int_param(data, "seed", -INT64_MAX - 1)
    ignore_eos, min_tokens = length_fields(data, max_tokens)
    check_numbers(data)
    logprobs, top_logprobs = (
        (False, 0) if get("logprobs") is None and get("top_logprobs") is None else chat_logprobs(data)
    )
    return ChatRequest(
        model,
        messages,
        prompt,
        n,
        max_tokens,
        stop,
        stream,
        include_usage,
        tools,
        tool_choice,
        tool_name,
        response_format,
        parallel,
        seed,
        messages[-1].get("role") == "tool",
        ignore_eos,
        min_tokens,
        logprobs,
        top_logprobs,
    )


def length_fields(data: Mapping[str, Any], max_tokens: int | None) -> tuple[bool, int | None]:
    """vLLM's `ignore_eos` and `min_tokens` of a body (400 when invalid, or min_tokens > max_tokens)."""
    get = data.get
    if get("ignore_eos") is None and get("min_tokens") is None:
        return False, None
    ignore_eos = check_bool(data, "ignore_eos")
    min_tokens = int_param(data, "min_tokens", 0)
    if min_tokens is not None and min_tokens > MAX_ANSWER_TOKENS:
        raise invalid("min_tokens", f"min_tokens must be at most {MAX_ANSWER_TOKENS}; got {min_tokens}")
    if ignore_eos and max_tokens is not None and max_tokens > MAX_ANSWER_TOKENS:
        raise invalid(
            "max_tokens",
            f"with ignore_eos, max_tokens must be at most {MAX_ANSWER_TOKENS} (a model's context window); "
            f"got {max_tokens}",
        )
    if min_tokens is not None and max_tokens is not None and min_tokens > max_tokens:
        raise invalid(
            "min_tokens",
            f"min_tokens must be at most max_tokens; got min_tokens {min_tokens} > max_tokens {max_tokens}",
        )
    return ignore_eos, min_tokens


# Load generators send the same few bodies again and again, and parsing and validating one costs more than
# the rest of a request: remember parsed bodies (up to this many bytes of them). Nobody modifies a parsed
# request, so requests with equal bodies share one.
_PARSED: Memo[bytes, tuple[ChatRequest, int]] = Memo(max_weight=8_000_000)
_MAX_REMEMBERED_BODY = 64 * 1024


def chat_request_from_body(body: bytes) -> tuple[ChatRequest, int]:
    """The validated request of a raw JSON body and its prompt tokens; a 400 ApiError names what to fix."""
    known = _PARSED.get(body)
    if known is not None:
        return known
    chat = parse_chat_request(parse_json(body))
    parsed = (chat, count_prompt_tokens(chat.messages))
    if len(body) <= _MAX_REMEMBERED_BODY:
        _PARSED.put(body, parsed, len(body))
    return parsed


def cut_answer(text: str, stop: tuple[str, ...], max_tokens: int | None) -> tuple[list[str], str]:
    """The answer's tokens after `stop` (cut before the first one) and `max_tokens`, and the finish reason."""
    cut = cut_text(text, stop, max_tokens)
    return cut.tokens, cut.finish_reason


def tool_outputs(messages: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(function name, output) of the tool messages that end the conversation, in order."""
    names = {
        call.get("id"): (call.get("function") or {}).get("name", "")
        for message in messages
        if message.get("role") == "assistant" and isinstance(message.get("tool_calls"), list)
        for call in message["tool_calls"]
        if isinstance(call, dict)
    }
    outputs = []
    for message in reversed(messages):
        if message.get("role") != "tool":
            break
        outputs.append(
            (str(names.get(message.get("tool_call_id"), "")), content_text(message.get("content")))
        )
    return outputs[::-1]


def conversation_texts(messages: list[dict[str, Any]], question: str) -> list[str]:
    """The texts JSON mode reads: the question, then the system and developer messages, then the rest."""
    system = [content_text(m.get("content")) for m in messages if m.get("role") in ("system", "developer")]
    rest = [content_text(m.get("content")) for m in messages if m.get("role") not in ("system", "developer")]
    return [question, *system, *[t for t in rest if t != question]]


def cut_calls(calls: list[ToolCall], max_tokens: int | None) -> Answer:
    """An answer making `calls`, their arguments cut after `max_tokens` tokens in all (finish "length")."""
    tokens: list[str] = []
    made: list[ToolCall] = []
    counts: list[int] = []
    for call in calls:
        left = None if max_tokens is None else max_tokens - len(tokens)
        if left is not None and left <= 0:
            break
        cut = cut_text(call.arguments, (), left)
        tokens.extend(cut.tokens)
        counts.append(len(cut.tokens))
        made.append(ToolCall(call.id, call.name, cut.text))
        if cut.finish_reason == "length":
            return Answer(tokens, "length", tuple(made), None, tuple(counts))
    reason = "length" if len(made) < len(calls) else "tool_calls"
    return Answer(tokens, reason, tuple(made), None, tuple(counts))


def shape_answer(
    chat: ChatRequest, text: str, rng: random.Random, rate: float = 1.0, want: Want | None = None
) -> Answer:
    """The answer to `chat` from the source's `text`: tool calls, or content in the response format.
    `want` (ignore_eos, min_tokens, a drawn length) makes plain text answers longer or shorter."""
    if not chat.tools and chat.response_format is TEXT_FORMAT and not chat.after_tool:
        # The usual request: plain text, cut by stop and max_tokens.
        cut = cut_text(text, chat.stop, chat.max_tokens) if want is None else fit_text(text, chat.stop, want)
        return Answer(cut.tokens, cut.finish_reason, (), cut.text)
    if chat.tools:
        policy = ToolPolicy(chat.tool_choice, chat.tool_name, chat.parallel_tool_calls, rate)
        chosen = decision_rng(chat.seed, chat.prompt, rng)
        tools = pick_tools(chat.tools, policy, chat.prompt, chat.after_tool, chosen)
        if tools:
            return cut_calls([make_tool_call(t, text, chosen, rng) for t in tools], chat.max_tokens)
    if chat.after_tool:
        text = cite(tool_outputs(chat.messages), text)
    texts = conversation_texts(chat.messages, chat.prompt)
    content = format_content(chat.response_format, text, rng, texts)
    # Stop sequences cut plain text only: cutting generated JSON would only make it invalid.
    stop = chat.stop if chat.response_format.type == "text" else ()
    cut = cut_text(content, stop, chat.max_tokens)
    return Answer(cut.tokens, cut.finish_reason, (), cut.text)


def new_completion_id() -> str:
    """A fresh `chatcmpl-...` id, unique across processes."""
    return "chatcmpl-" + fresh_hex()


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    """OpenAI's usage object."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def completion_body(
    model: str,
    content: str,
    finish_reason: str,
    n: int,
    prompt_tokens: int,
    completion_tokens: int,
    tool_calls: tuple[ToolCall, ...] = (),
    logprobs: Any = None,
) -> dict[str, Any]:
    """A non-streamed `chat.completion` with `n` identical choices (content None when it makes calls);
    `logprobs` is each choice's logprobs object (None: null)."""
    message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
    if tool_calls:
        calls = [call.as_dict() for call in tool_calls]
        message = {"role": "assistant", "content": None, "refusal": None, "tool_calls": calls}
    choices = [
        {
            "index": i,
            "message": message,
            "logprobs": logprobs,
            "finish_reason": finish_reason,
        }
        for i in range(n)
    ]
    return {
        "id": new_completion_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "choices": choices,
        "usage": usage(prompt_tokens, n * completion_tokens),
    }


# A completion's JSON after its id and created time, per answer: the same answers come back again and
# again, and building and serializing the body would cost more than the rest of the request.
_BODIES: Memo[tuple[Any, ...], bytes] = Memo(max_weight=16_000_000)


def completion_json(
    model: str,
    content: str,
    finish_reason: str,
    n: int,
    prompt_tokens: int,
    completion_tokens: int,
    tool_calls: tuple[ToolCall, ...] = (),
    logprobs: Any = None,
) -> bytes:
    """`completion_body(...)` as JSON bytes: a fresh id and created time in front of the remembered rest
    (bodies with tool calls or logprobs are built afresh)."""
    key = (model, content, finish_reason, n, prompt_tokens, completion_tokens)
    fresh_body = bool(tool_calls) or logprobs is not None
    rest = None if fresh_body else _BODIES.get(key)
    if rest is None:
        body = completion_body(
            model, content, finish_reason, n, prompt_tokens, completion_tokens, tool_calls, logprobs
        )
        for fresh in ("id", "object", "created"):
            del body[fresh]
        rest = orjson.dumps(body)[1:]  # without its opening brace
        if not fresh_body:
            _BODIES.put(key, rest, len(rest))
    head = f'{{"id":"chatcmpl-{fresh_hex()}","object":"chat.completion","created":{int(time.time())},'
    return head.encode() + rest


def stream_head(model: str) -> bytes:
    """What every event of one chat stream starts with: `data: ` and its fixed fields (a fresh id and
    created time) without the closing brace."""
    header = {
        "id": new_completion_id(),
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": SYSTEM_FINGERPRINT,
    }
    return b"data: " + orjson.dumps(header)[:-1]


def _call_head(index: int, call: ToolCall) -> dict[str, Any]:
    return {
        "index": index,
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": ""},
    }


def tool_call_pieces(
    calls: tuple[ToolCall, ...], tokens: list[str], call_tokens: tuple[int, ...], per_chunk: int
) -> tuple[list[str], list[int]]:
    """The deltas of a tool-call stream after its first event (which names call 0), as JSON, and their
    token counts: each later call's head (0 tokens), then its argument pieces."""
    pieces: list[str] = []
    counts: list[int] = []
    start = 0
    for index, (call, count) in enumerate(zip(calls, call_tokens, strict=True)):
        if index:
            pieces.append(orjson.dumps({"tool_calls": [_call_head(index, call)]}).decode())
            counts.append(0)
        for at in range(start, start + count, per_chunk):
            text = "".join(tokens[at : min(at + per_chunk, start + count)])
            delta = {"tool_calls": [{"index": index, "function": {"arguments": text}}]}
            pieces.append(orjson.dumps(delta).decode())
            counts.append(min(per_chunk, start + count - at))
        start += count
    return pieces, counts


class ChunkWriter:
    """Builds the SSE events of one stream; every event shares the stream's id and created time."""

    __slots__ = ("_head", "_heads", "_raw", "_role", "_tail")

    def __init__(self, model: str | None, n: int, tool_calls: tuple[ToolCall, ...] = ()) -> None:
        # model None: a headless writer, whose events are what follows the head (see stream_head).
        self._head = b"" if model is None else stream_head(model)
        self._heads = [self._head + b',"choices":[{"index":%d,"delta":' % i for i in range(n)]
        self._tail = b',"logprobs":null,"finish_reason":null}]}\n\n'
        self._role = b'{"role":"assistant","content":""}'
        # Tool-call streams carry ready-made deltas (tool_call_pieces); text streams carry content.
        self._raw = bool(tool_calls)
        if tool_calls:
            # OpenAI's tool-call deltas: the first names the call, the next ones carry its arguments.
            role = {"role": "assistant", "content": None, "tool_calls": [_call_head(0, tool_calls[0])]}
            self._role = orjson.dumps(role)

    def role(self, index: int) -> bytes:
        """The first event of a choice: the assistant role and empty content (or the named tool call)."""
        return self._heads[index] + self._role + self._tail

    def content(self, index: int, text: str) -> bytes:
        """An event carrying a piece of a choice's content (or, in a tool-call stream, a delta's JSON)."""
        if self._raw:
            return self._heads[index] + text.encode() + self._tail
        return self._heads[index] + b'{"content":' + orjson.dumps(text) + b"}" + self._tail

    def content_logprobs(self, index: int, text: str, logprobs: bytes) -> bytes:
        """A content event that carries the JSON `logprobs` of its own tokens (a text stream's only)."""
        opening = self._heads[index] + b'{"content":' + orjson.dumps(text)
        return opening + b'},"logprobs":' + logprobs + b',"finish_reason":null}]}\n\n'

    def finish(self, index: int, reason: str) -> bytes:
        """The last event of a choice: an empty delta and its finish reason."""
        return self._heads[index] + b'{},"logprobs":null,"finish_reason":' + orjson.dumps(reason) + b"}]}\n\n"

    def usage(self, prompt_tokens: int, completion_tokens: int) -> bytes:
        """The usage event: no choices, the stream's usage."""
        body = orjson.dumps(usage(prompt_tokens, completion_tokens))
        return self._head + b',"choices":[],"usage":' + body + b"}\n\n"
