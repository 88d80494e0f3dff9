"""OpenAPI fields of the gateway's routes: the chat body both faces read and what each route answers."""

from __future__ import annotations

from typing import Any

from llmkit.core.openapi import RESPONSE_FORMAT, answer, json_body, query, ref, streams
from llmkit.core.sampling import INT64_MAX, INT64_MIN, MAX_STOP
from llmkit.gateway.chat import RANGES, ROLES

_NUMBER = {"type": "number", "nullable": True}
_TOKENS = {"type": "integer", "minimum": 1, "maximum": INT64_MAX, "nullable": True}
_NAMES = ["critical", "high", "normal", "low"]
# The sampling parameters the gateway passes upstream (and keys its cache on), by their OpenAI names.
SAMPLING_PROPERTIES: dict[str, Any] = {
    **{name: {**_NUMBER, "minimum": low, "maximum": high} for name, (low, high) in RANGES.items()},
    "top_k": _NUMBER,
    "repeat_penalty": _NUMBER,
    "max_tokens": _TOKENS,
    "max_completion_tokens": _TOKENS,
    "num_predict": _TOKENS,
    "seed": {"type": "integer", "minimum": INT64_MIN, "maximum": INT64_MAX, "nullable": True},
    "stop": {
        "nullable": True,
        "oneOf": [
            {"type": "string"},
            {"type": "array", "maxItems": MAX_STOP, "items": {"type": "string"}},
        ],
    },
    "response_format": RESPONSE_FORMAT,
}
_TEXT_PART = {
    "type": "object",
    "required": ["type", "text"],
    "properties": {"type": {"type": "string", "enum": ["text"]}, "text": {"type": "string"}},
}
MESSAGE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["role"],
    "properties": {
        "role": {"type": "string", "enum": sorted(ROLES)},
        "content": {
            "nullable": True,
            "oneOf": [{"type": "string"}, {"type": "array", "items": _TEXT_PART}],
        },
        "name": {"type": "string", "nullable": True},
    },
}
CHAT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["messages"],
    "properties": {
        "messages": {"type": "array", "minItems": 1, "items": ref("GatewayMessage")},
        "model": {"type": "string", "nullable": True, "description": "gateway.model when omitted"},
        "stream": {"type": "boolean", "nullable": True},
        "use_cache": {"type": "boolean", "nullable": True},
        "priority": {
            "nullable": True,
            "description": "the seed's integer (>= 2 critical, 1 high, 0 normal, < 0 low) or a level name",
            "oneOf": [{"type": "number"}, {"type": "string", "enum": _NAMES}],
        },
        "conversation_id": {"type": "string", "nullable": True},
        "rag": {
            "nullable": True,
            "description": (
                "ground the answer in the tenant's documents (search scope not needed): the chunks found "
                "for the last user message go in a system message and the answer lists them as sources; "
                "true for gateway.rag_default or hybrid:4, false for none"
            ),
            "oneOf": [
                {"type": "boolean"},
                {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "top_k": {"type": "integer", "minimum": 1, "maximum": 20, "default": 4},
                        "type": {"type": "string", "enum": ["keyword", "semantic", "hybrid"]},
                    },
                },
            ],
        },
        "n": {"type": "integer", "enum": [1, None], "nullable": True},
        "stream_options": {"description": "OpenAI's {include_usage: true} adds a last chunk with usage"},
        "options": {
            "type": "object",
            "nullable": True,
            "description": "Ollama's options",
            "properties": SAMPLING_PROPERTIES,
        },
        **SAMPLING_PROPERTIES,
    },
}
_SOURCES: dict[str, Any] = {
    "type": "array",
    "description": "with rag: the chunks the answer was given, best first",
    "items": {
        "type": "object",
        "required": ["id", "title", "chunk", "score"],
        "properties": {
            "id": {"type": "string", "description": "the document id"},
            "title": {"type": "string"},
            "chunk": {"type": "integer", "minimum": 0},
            "score": {"type": "number"},
        },
    },
}
SCHEMAS: dict[str, Any] = {
    "GatewayMessage": MESSAGE_SCHEMA,
    "GatewayChat": CHAT_SCHEMA,
    "RagSources": _SOURCES,
}

_CACHE_HEADER = {
    "X-Gateway-Cache": {
        "description": "hit (from the cache), coalesced (joined an identical call) or miss",
        "schema": {"type": "string", "enum": ["hit", "miss", "coalesced"]},
    }
}
# Where the upstream call can fail: queue full (429), no upstream open (503), an error (502), too slow (504).
_CALL_ERRORS = [429, 502, 503, 504]
_SEED_ANSWER = {
    "type": "object",
    "required": ["message", "cached"],
    "properties": {
        "message": {
            "type": "object",
            "required": ["role", "content"],
            "properties": {"role": {"type": "string"}, "content": {"type": "string"}},
        },
        "cached": {"type": "boolean"},
        "conversation_id": {"type": "string", "nullable": True},
        "sources": ref("RagSources"),
    },
}


def _with_headers(response: dict[str, Any]) -> dict[str, Any]:
    return {**response, "headers": _CACHE_HEADER}


CHAT_OPTIMIZED_DOC: dict[str, Any] = {
    "tags": ["chat"],
    "requestBody": json_body(ref("GatewayChat"), example={"messages": [{"role": "user", "content": "Hi"}]}),
    "responses": {"200": _with_headers(streams("the answer; SSE events when stream is true", _SEED_ANSWER))},
    "errors": _CALL_ERRORS,
}
_COMPLETION = {
    "type": "object",
    "required": ["id", "object", "created", "model", "choices"],
    "properties": {
        "id": {"type": "string"},
        "object": {"type": "string", "enum": ["chat.completion"]},
        "created": {"type": "integer"},
        "model": {"type": "string"},
        "choices": {"type": "array", "items": {"type": "object"}},
        "usage": {"type": "object", "nullable": True},
        "sources": ref("RagSources"),
    },
}
CHAT_COMPLETIONS_DOC: dict[str, Any] = {
    "tags": ["openai"],
    "requestBody": json_body(ref("GatewayChat"), example={"messages": [{"role": "user", "content": "Hi"}]}),
    "responses": {
        "200": _with_headers(
            streams("a chat.completion; chat.completion.chunk SSE events when streaming", _COMPLETION)
        )
    },
    "errors": _CALL_ERRORS,
}
MODELS_DOC: dict[str, Any] = {
    "tags": ["openai"],
    "responses": {
        "200": answer(
            "the model list",
            {
                "type": "object",
                "required": ["object", "data"],
                "properties": {"object": {"type": "string"}, "data": {"type": "array"}},
            },
        )
    },
}
CACHE_STATS_DOC: dict[str, Any] = {
    "tags": ["stats"],
    "responses": {"200": answer("response_cache, conversation_cache, batch_processor, queue_length")},
}
CACHE_ACTION_DOC: dict[str, Any] = {
    "tags": ["stats"],
    "requestBody": json_body(
        {
            "type": "object",
            "required": ["action"],
            "properties": {
                "action": {
                    "type": "string",
                    "enum": ["clear", "clear_response_cache", "clear_conversation_cache", "warm_model"],
                },
                "data": {"description": "warm_model: {model?: string}; gateway.model when omitted"},
            },
        },
        example={"action": "clear"},
    ),
    "responses": {"200": answer("{success, action, removed} or, for warm_model, {model, upstream, load_ms}")},
    "errors": [502, 503, 504],
}
_REQUEST_ID = "the request_id POST /api/chat-queue answered"
QUEUE_POST_DOC: dict[str, Any] = {
    "tags": ["queue"],
    "requestBody": json_body(ref("GatewayChat"), example={"messages": [{"role": "user", "content": "Hi"}]}),
    "responses": {
        "200": answer(
            "{request_id, status: {queue_position, queue_length, estimated_wait_time, is_processing}}",
            {"type": "object", "required": ["request_id", "status"]},
        )
    },
    "errors": [429, 503],
}
QUEUE_GET_DOC: dict[str, Any] = {
    "tags": ["queue"],
    "parameters": [query("requestId", f"{_REQUEST_ID}; omit for the queue overview")],
    "responses": {"200": answer("the request's status and result, or the queue overview")},
    "errors": [404],
}
QUEUE_DELETE_DOC: dict[str, Any] = {
    "tags": ["queue"],
    "parameters": [query("requestId", _REQUEST_ID, {"type": "string", "minLength": 1}, required=True)],
    "responses": {"200": answer("{request_id, status, cancelled: true}")},
    "errors": [400, 404, 409],
}
