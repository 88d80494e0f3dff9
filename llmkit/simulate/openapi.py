"""OpenAPI fields of the simulator's routes: each API shape's request body, answers and error shape.

The schemas say what the validators (openai.py, completions.py, embeddings.py, responses.py, anthropic.py,
ollama.py, faults.py) check, no more: fields they pass over unread are left open.
"""

from __future__ import annotations

from typing import Any

from llmkit.core.openapi import NDJSON, RESPONSE_FORMAT, SCHEMA_NAME, answer, json_body, ref, streams
from llmkit.core.sampling import INT64_MAX
from llmkit.simulate.bounds import MAX_LEGACY_LOGPROBS, MAX_TOP_LOGPROBS, NUMBER_BOUNDS

# A model name or prompt with something other than whitespace in it (Python's isspace, \x1c-\x1f too).
_NOT_BLANK = {"type": "string", "pattern": "[^\\s\\x1c-\\x1f]"}
_MODEL = {**_NOT_BLANK, "example": "gpt-4o-mini"}


def _int(low: int, high: int = INT64_MAX, nullable: bool = True) -> dict[str, Any]:
    return {"type": "integer", "minimum": low, "maximum": high, "nullable": nullable}


_BOOL = {"type": "boolean", "nullable": True}
# temperature, top_p and the penalties, bounded as OpenAI bounds them.
_SAMPLING: dict[str, Any] = {
    name: {"type": "number", "minimum": low, "maximum": high, "nullable": True}
    for name, low, high in NUMBER_BOUNDS
}
_STOP = {
    "nullable": True,
    "oneOf": [{"type": "string"}, {"type": "array", "maxItems": 4, "items": {"type": "string"}}],
}
_STREAM_OPTIONS = {
    "type": "object",
    "nullable": True,
    "properties": {"include_usage": _BOOL},
}
_TOOL = {
    "type": "object",
    "required": ["type", "function"],
    "properties": {
        "type": {"type": "string", "enum": ["function"]},
        "function": {
            "type": "object",
            "required": ["name"],
            "properties": {"name": SCHEMA_NAME, "parameters": {"type": "object", "nullable": True}},
        },
    },
}
# vLLM's extra sampling fields, as `vllm bench serve` and guidellm send them.
_LENGTH_FIELDS: dict[str, Any] = {
    "ignore_eos": {
        **_BOOL,
        "description": "vLLM: go past the answer's end to exactly max_tokens tokens (finish_reason length)",
    },
    "min_tokens": {
        **_int(0, 131_072),
        "description": "vLLM: at least this many tokens (the answer continues past its end); <= max_tokens",
    },
}
CHAT_SCHEMA: dict[str, Any] = {
    "type": "object",
    # tools (up to 128 function tools with unique names) and tool_choice are read too; left out here, as
    # the fuzzer's random tools would collide on names, which the server rightly refuses.
    "description": "also tools and tool_choice (none, auto, required or a named function), as OpenAI's; "
    "top_logprobs (0 to 20, only with logprobs true: JSON Schema cannot say that)",
    "required": ["model", "messages"],
    "properties": {
        "model": _MODEL,
        "messages": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["role"],
                "properties": {
                    "role": {"type": "string", "enum": ["system", "user", "assistant", "tool", "developer"]},
                    "content": {"nullable": True, "oneOf": [{"type": "string"}, {"type": "array"}]},
                },
            },
        },
        "n": _int(1, 128),
        "max_tokens": _int(1),
        "max_completion_tokens": _int(1),
        "stream": _BOOL,
        "stream_options": _STREAM_OPTIONS,
        "stop": _STOP,
        "response_format": RESPONSE_FORMAT,
        "parallel_tool_calls": {**_BOOL, "description": "false: at most one tool call (default true)"},
        "seed": {
            **_int(-INT64_MAX - 1),
            "description": "makes the answer, the tool-call decision and the arguments repeatable",
        },
        **_SAMPLING,
        "logprobs": {**_BOOL, "description": "choices[].logprobs.content: each token's logprob"},
        **_LENGTH_FIELDS,
    },
}
COMPLETION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["model", "prompt"],
    "properties": {
        "model": _MODEL,
        "prompt": {
            "oneOf": [
                {"type": "string"},
                {"type": "array", "minItems": 1, "maxItems": 2048, "items": {"type": "string"}},
            ]
        },
        "n": _int(1, 128, nullable=True),
        "max_tokens": _int(0),
        "stop": _STOP,
        "echo": _BOOL,
        "stream": _BOOL,
        "stream_options": _STREAM_OPTIONS,
        "seed": {**_int(-INT64_MAX - 1), "description": "makes the answer repeatable"},
        **_SAMPLING,
        "logprobs": {
            **_int(0, MAX_LEGACY_LOGPROBS),
            "description": "the legacy logprobs object, with this many alternatives per token",
        },
        **_LENGTH_FIELDS,
    },
}
_TOKENS = {"type": "array", "minItems": 1, "items": {"type": "integer", "minimum": 0, "maximum": INT64_MAX}}
EMBEDDING_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["model", "input"],
    "properties": {
        "model": _MODEL,
        "input": {
            "description": "at most 8192 tokens per input",
            "oneOf": [
                {"type": "string", "minLength": 1},
                {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": 2048,
                    "items": {"oneOf": [{"type": "string", "minLength": 1}, _TOKENS]},
                },
                _TOKENS,
            ],
        },
        "dimensions": {
            **_int(1, 3072),
            "description": "at most the model's width (text-embedding-3-small 1536); not for ada-002",
        },
        "encoding_format": {"type": "string", "enum": ["float", "base64", None], "nullable": True},
    },
}
RESPONSES_SCHEMA: dict[str, Any] = {
    "type": "object",
    # tools and tool_choice are read too; left out, as the fuzzer's random tools would collide on names.
    "description": "also tools (function tools are called; built-in ones never) and tool_choice, as OpenAI's",
    "required": ["model", "input"],
    "properties": {
        "model": _MODEL,
        "input": {
            "oneOf": [
                {"type": "string", "minLength": 1},
                {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        # A message (role and content), or another item (a tool call, its output).
                        "oneOf": [
                            {
                                "type": "object",
                                "required": ["role", "content"],
                                "properties": {
                                    "role": {"type": "string"},
                                    "content": {"oneOf": [{"type": "string"}, {"type": "array"}]},
                                },
                            },
                            {"type": "object", "not": {"required": ["role"]}},
                        ]
                    },
                },
            ]
        },
        "instructions": {"type": "string", "nullable": True},
        "max_output_tokens": _int(1),
        "stream": _BOOL,
        "text": {
            "type": "object",
            "nullable": True,
            "properties": {
                "format": {
                    "nullable": True,
                    "oneOf": [
                        {
                            "type": "object",
                            "required": ["type"],
                            "properties": {"type": {"type": "string", "enum": ["text", "json_object"]}},
                        },
                        {
                            "type": "object",
                            "required": ["type", "name", "schema"],
                            "properties": {
                                "type": {"type": "string", "enum": ["json_schema"]},
                                "name": {"type": "string"},
                                "schema": {"type": "object"},
                            },
                        },
                    ],
                }
            },
        },
        "parallel_tool_calls": {**_BOOL, "description": "false: at most one function call (default true)"},
        "temperature": _SAMPLING["temperature"],
        "top_p": _SAMPLING["top_p"],
        "top_logprobs": _int(0, MAX_TOP_LOGPROBS),
    },
}
_BLOCK = {"type": "object", "required": ["type"], "description": "a content block: any object with a type"}
_ANTHROPIC_PROMPT = {
    "model": _MODEL,
    "messages": {
        "type": "array",
        "minItems": 1,
        "items": {
            "type": "object",
            "required": ["role", "content"],
            "properties": {
                "role": {"type": "string", "enum": ["user", "assistant"]},
                "content": {"oneOf": [{"type": "string"}, {"type": "array", "items": _BLOCK}]},
            },
        },
    },
    "system": {
        "nullable": True,
        "oneOf": [
            {"type": "string"},
            {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["type"],
                    "properties": {"type": {"type": "string", "enum": ["text"]}},
                },
            },
        ],
    },
}
COUNT_TOKENS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["model", "messages"],
    "properties": _ANTHROPIC_PROMPT,
}
MESSAGES_SCHEMA: dict[str, Any] = {
    "type": "object",
    # tools and tool_choice are read too; left out, as the fuzzer's random tools would collide on names.
    "description": "also tools (name, description, input_schema) and tool_choice (auto, any, tool, none)",
    "required": ["model", "messages", "max_tokens"],
    "properties": {
        **_ANTHROPIC_PROMPT,
        "max_tokens": _int(1, nullable=False),
        "stream": _BOOL,
        "stop_sequences": {"type": "array", "nullable": True, "items": {"type": "string"}},
    },
}
_OLLAMA_COMMON = {
    "model": _MODEL,
    "stream": {**_BOOL, "description": "true (the default): NDJSON lines; false: one JSON object"},
    "format": {
        "nullable": True,
        "description": '"json" or a JSON schema object',
        "oneOf": [{"type": "string", "enum": ["", "json"]}, {"type": "object"}],
    },
    "options": {
        "type": "object",
        "nullable": True,
        "properties": {
            "num_predict": {**_int(-INT64_MAX), "description": "-1: no limit"},
            "stop": {
                "nullable": True,
                "oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}],
            },
        },
    },
}
OLLAMA_CHAT_SCHEMA: dict[str, Any] = {
    "type": "object",
    # tools (up to 128 function tools with unique names) and tool_choice are read too; left out here, as
    # the fuzzer's random tools would collide on names, which the server rightly refuses.
    "description": "also tools (function tools, as OpenAI's; Ollama has no tool_choice)",
    "required": ["model", "messages"],
    "properties": {
        **_OLLAMA_COMMON,
        "messages": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["role"],
                "properties": {
                    "role": {"type": "string", "enum": ["system", "user", "assistant", "tool"]},
                    "content": {"type": "string", "nullable": True},
                },
            },
        },
    },
}
OLLAMA_GENERATE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["model"],
    "properties": {
        **_OLLAMA_COMMON,
        "prompt": {"type": "string", "nullable": True},
        "system": {"type": "string", "nullable": True},
    },
}
# Ollama's model names: [host/][namespace/]model[:tag], parts of letters, digits, '.', '_' and '-'.
_NAME_PART = r"[A-Za-z0-9][A-Za-z0-9._-]{0,79}"
OLLAMA_NAME_PATTERN = rf"^(?:{_NAME_PART}/){{0,2}}{_NAME_PART}(?::[A-Za-z0-9_][A-Za-z0-9._-]{{0,79}})?$"
_OLLAMA_MODEL = {**_NOT_BLANK, "example": "llama3.2"}
OLLAMA_SHOW_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "name is read too, for model (older clients send it)",
    "required": ["model"],
    "properties": {"model": _OLLAMA_MODEL, "verbose": _BOOL},
}
OLLAMA_PULL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "name is read too, for model (older clients send it)",
    "required": ["model"],
    "properties": {
        "model": {"type": "string", "pattern": OLLAMA_NAME_PATTERN, "example": "llama3.2:1b"},
        "insecure": _BOOL,
        "stream": {**_BOOL, "description": "true (the default): NDJSON progress lines; false: one object"},
    },
}
OLLAMA_DELETE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "name is read too, for model (older clients send it)",
    "required": ["model"],
    "properties": {"model": _OLLAMA_MODEL},
}
OLLAMA_EMBED_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "options and keep_alive are accepted and have no effect",
    "required": ["model"],
    "properties": {
        "model": {**_NOT_BLANK, "example": "nomic-embed-text"},
        "input": {
            "nullable": True,
            "description": 'no input (or ""): no embeddings, the model is only loaded',
            "oneOf": [{"type": "string"}, {"type": "array", "maxItems": 2048, "items": {"type": "string"}}],
        },
        "truncate": {**_BOOL, "description": "true (the default): cut inputs to the model's context"},
        "dimensions": {**_int(0), "description": "fewer dimensions than the model's (0: all of them)"},
    },
}
OLLAMA_EMBEDDINGS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["model"],
    "properties": {
        "model": {**_NOT_BLANK, "example": "nomic-embed-text"},
        "prompt": {"type": "string", "nullable": True, "description": "none: an empty embedding"},
    },
}
_KIND = {"type": "string", "enum": ["429", "500", "503", "timeout", "disconnect"]}
FAULTS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "at least one of schedule, fault or rates",
    "properties": {
        "schedule": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["fault"],
                "properties": {
                    "fault": {"type": "string", "enum": [*_KIND["enum"], "ok"]},
                    "count": _int(1, 10_000, nullable=False),
                },
            },
        },
        "fault": _KIND,
        "count": _int(1, 10_000, nullable=False),
        "rates": {
            "type": "object",
            "description": "kind -> probability; the sum at most 1",
            "properties": {kind: {"type": "number", "minimum": 0, "maximum": 1} for kind in _KIND["enum"]},
            "additionalProperties": False,
        },
    },
}
ANTHROPIC_ERROR: dict[str, Any] = {
    "type": "object",
    "required": ["type", "error"],
    "properties": {
        "type": {"type": "string", "enum": ["error"]},
        "error": {
            "type": "object",
            "required": ["type", "message"],
            "properties": {"type": {"type": "string"}, "message": {"type": "string"}},
        },
    },
}
OLLAMA_ERROR: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string"}},
}
SCHEMAS: dict[str, Any] = {
    "ChatCompletionRequest": CHAT_SCHEMA,
    "CompletionRequest": COMPLETION_SCHEMA,
    "EmbeddingRequest": EMBEDDING_SCHEMA,
    "ResponsesRequest": RESPONSES_SCHEMA,
    "MessagesRequest": MESSAGES_SCHEMA,
    "CountTokensRequest": COUNT_TOKENS_SCHEMA,
    "OllamaChatRequest": OLLAMA_CHAT_SCHEMA,
    "OllamaGenerateRequest": OLLAMA_GENERATE_SCHEMA,
    "OllamaShowRequest": OLLAMA_SHOW_SCHEMA,
    "OllamaPullRequest": OLLAMA_PULL_SCHEMA,
    "OllamaDeleteRequest": OLLAMA_DELETE_SCHEMA,
    "OllamaEmbedRequest": OLLAMA_EMBED_SCHEMA,
    "OllamaEmbeddingsRequest": OLLAMA_EMBEDDINGS_SCHEMA,
}
# What every model route can answer besides 400/413/415: busy slots or a rate limit (429), the answer
# source down (503); injected faults add 500, 503 and 504 when asked for (x-llmkit-fault, /admin/faults).
# With simulate.max_num_seqs, a request past simulate.max_waiting gets 429 with Retry-After.
MODEL_ERRORS = [429, 500, 503, 504]


def _model_doc(tag: str, schema: str, ok: dict[str, Any], example: Any) -> dict[str, Any]:
    return {
        "tags": [tag],
        "requestBody": json_body(ref(schema), example=example),
        "responses": {"200": ok},
        "errors": MODEL_ERRORS,
    }


_HI = [{"role": "user", "content": "Hello"}]
CHAT_DOC = _model_doc(
    "openai",
    "ChatCompletionRequest",
    streams("a chat.completion; chat.completion.chunk SSE events when stream is true"),
    {"model": "gpt-4o-mini", "messages": _HI},
)
COMPLETIONS_DOC = _model_doc(
    "openai",
    "CompletionRequest",
    streams("a text_completion; SSE chunks when stream is true"),
    {"model": "gpt-3.5-turbo-instruct", "prompt": "Say hello"},
)
EMBEDDINGS_DOC = _model_doc(
    "openai",
    "EmbeddingRequest",
    answer("a list of embedding objects (float arrays or base64 float32)"),
    {"model": "text-embedding-3-small", "input": "some text"},
)
RESPONSES_DOC = _model_doc(
    "openai",
    "ResponsesRequest",
    streams("a response object; its SSE events when stream is true"),
    {"model": "gpt-4o-mini", "input": "Hello"},
)
MESSAGES_DOC = _model_doc(
    "anthropic",
    "MessagesRequest",
    streams("a message; Anthropic's SSE events when stream is true"),
    {"model": "claude-sonnet-4-5", "max_tokens": 64, "messages": _HI},
)
COUNT_TOKENS_DOC: dict[str, Any] = {
    "tags": ["anthropic"],
    "requestBody": json_body(
        ref("CountTokensRequest"), example={"model": "claude-sonnet-4-5", "messages": _HI}
    ),
    "responses": {
        "200": answer(
            "the input tokens",
            {
                "type": "object",
                "required": ["input_tokens"],
                "properties": {"input_tokens": {"type": "integer"}},
            },
        )
    },
}
OLLAMA_CHAT_DOC = _model_doc(
    "ollama",
    "OllamaChatRequest",
    streams("one JSON object with stream false, else NDJSON lines", media=NDJSON),
    {"model": "llama3.2", "messages": _HI, "stream": False},
)
OLLAMA_GENERATE_DOC = _model_doc(
    "ollama",
    "OllamaGenerateRequest",
    streams("one JSON object with stream false, else NDJSON lines", media=NDJSON),
    {"model": "llama3.2", "prompt": "Why is the sky blue?", "stream": False},
)
_OLLAMA_SHOW_ANSWER = {
    "type": "object",
    "required": ["modelfile", "parameters", "template", "details", "model_info", "capabilities"],
    "properties": {
        "modelfile": {"type": "string"},
        "parameters": {"type": "string"},
        "template": {"type": "string"},
        "details": {
            "type": "object",
            "required": ["format", "family", "parameter_size", "quantization_level"],
        },
        "model_info": {"type": "object"},
        "capabilities": {"type": "array", "items": {"type": "string"}},
        "modified_at": {"type": "string"},
    },
}
OLLAMA_SHOW_DOC: dict[str, Any] = {
    "tags": ["ollama"],
    "requestBody": json_body(ref("OllamaShowRequest"), example={"model": "llama3.2"}),
    "responses": {"200": answer("the model's details", _OLLAMA_SHOW_ANSWER)},
    "errors": [404],
}
OLLAMA_PULL_DOC: dict[str, Any] = {
    "tags": ["ollama"],
    "requestBody": json_body(ref("OllamaPullRequest"), example={"model": "llama3.2:1b"}),
    "responses": {
        "200": streams(
            'NDJSON progress lines ending in {"status": "success"}; that one object with stream false',
            {"type": "object", "required": ["status"], "properties": {"status": {"type": "string"}}},
            media=NDJSON,
        )
    },
    # 409: simulate keeps at most 1000 local models.
    "errors": [409],
}
OLLAMA_DELETE_DOC: dict[str, Any] = {
    "tags": ["ollama"],
    "requestBody": json_body(ref("OllamaDeleteRequest"), example={"model": "llama3.2:1b"}),
    "responses": {"200": {"description": "deleted (no body)"}},
    "errors": [404],
}
OLLAMA_EMBED_DOC = _model_doc(
    "ollama",
    "OllamaEmbedRequest",
    answer(
        "the embeddings, one per input, as wide as the model's",
        {
            "type": "object",
            "required": ["model", "embeddings"],
            "properties": {
                "model": {"type": "string"},
                "embeddings": {"type": "array", "items": {"type": "array", "items": {"type": "number"}}},
                "total_duration": {"type": "integer"},
                "load_duration": {"type": "integer"},
                "prompt_eval_count": {"type": "integer"},
            },
        },
    ),
    {"model": "nomic-embed-text", "input": ["Why is the sky blue?", "Why is the grass green?"]},
)
OLLAMA_EMBEDDINGS_DOC = _model_doc(
    "ollama",
    "OllamaEmbeddingsRequest",
    answer(
        "the embedding of the prompt",
        {
            "type": "object",
            "required": ["embedding"],
            "properties": {"embedding": {"type": "array", "items": {"type": "number"}}},
        },
    ),
    {"model": "nomic-embed-text", "prompt": "Here is an article about llamas..."},
)
# /admin/*: 401 without the admin key or with a wrong one, 403 while simulate.admin_key is unset.
_ADMIN_ERRORS = [401, 403]
ADMIN_DOC: dict[str, Any] = {
    "tags": ["admin"],
    "responses": {"200": answer("the fault rates, the schedule and the counts of injected faults")},
    "errors": _ADMIN_ERRORS,
}
FAULTS_DOC: dict[str, Any] = {
    **ADMIN_DOC,
    "requestBody": json_body(FAULTS_SCHEMA, example={"schedule": [{"fault": "429", "count": 3}]}),
}
MODEL_DOC: dict[str, Any] = {
    "tags": ["openai"],
    "responses": {"200": answer("the model", {"type": "object", "required": ["id", "object"]})},
    "errors": [404],
}
TEST_COMPLETION_DOC: dict[str, Any] = {
    "tags": ["openai"],
    "responses": {
        "200": answer("the seed's fixed chat.completion", {"type": "object", "required": ["choices"]})
    },
}
