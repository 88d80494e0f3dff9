"""OpenAPI documents of the documents and search routes, and their schemas."""

from __future__ import annotations

from typing import Any

from llmkit.core.openapi import answer, json_body, query, ref
from llmkit.platform.documents.bodies import (
    DEFAULT_HITS,
    DEFAULT_PAGE,
    MAX_BATCH,
    MAX_CONTENT,
    MAX_FILTERS,
    MAX_HITS,
    MAX_OFFSET,
    MAX_PAGE,
    MAX_QUERY,
    MAX_TITLE,
    SEARCH_TYPES,
)

_ID = {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"}
_TIME = {"type": "string", "format": "date-time"}
# Some non-blank text and no NUL (PostgreSQL cannot store U+0000).
_NONBLANK = "^[^\\x00]*[^\\s\\x00][^\\x00]*$"
_SCALAR = {"nullable": True, "oneOf": [{"type": "string"}, {"type": "number"}, {"type": "boolean"}]}
_METADATA = {
    "type": "object",
    "nullable": True,
    "description": "any JSON object up to 16 KB, no NUL in its strings; top-level keys filter",
}
_FIELDS: dict[str, Any] = {
    "title": {"type": "string", "minLength": 1, "maxLength": MAX_TITLE, "pattern": _NONBLANK},
    "content": {
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_CONTENT,
        "pattern": _NONBLANK,
        "description": "Markdown or plain text; split into chunks at headings and paragraphs",
    },
    "metadata": _METADATA,
}
_NEW_DOCUMENT: dict[str, Any] = {
    "type": "object",
    "required": ["title", "content"],
    "additionalProperties": False,
    "properties": {
        **_FIELDS,
        "id": {**_ID, "nullable": True, "description": "unique in the tenant; a fresh id when absent"},
    },
}
_INDEX: dict[str, Any] = {
    "type": "object",
    "required": ["state", "job_id", "attempts", "error", "finished_at"],
    "description": "the document's latest index job: search finds its new content once it is completed",
    "properties": {
        "state": {"type": "string", "enum": ["queued", "running", "completed", "failed"]},
        "job_id": {"type": "string", "nullable": True, "description": "see GET /api/admin/jobs/{id}"},
        "attempts": {"type": "integer", "minimum": 0},
        "error": {"type": "string", "nullable": True, "description": "why the last attempt failed"},
        "finished_at": {**_TIME, "nullable": True},
    },
}
_SUMMARY_PROPERTIES: dict[str, Any] = {
    "id": {"type": "string"},
    "title": {"type": "string"},
    "metadata": {"type": "object"},
    "size": {"type": "integer", "minimum": 0, "description": "characters of content"},
    "created_at": _TIME,
    "updated_at": _TIME,
    "index": _INDEX,
}
_CHUNK = {
    "type": "object",
    "required": ["ordinal", "text", "tokens", "headings"],
    "properties": {
        "ordinal": {"type": "integer", "minimum": 0},
        "text": {"type": "string"},
        "tokens": {"type": "integer", "minimum": 0},
        "headings": {"type": "array", "items": {"type": "string"}},
    },
}

SCHEMAS: dict[str, dict[str, Any]] = {
    "NewDocument": _NEW_DOCUMENT,
    "StoredDocument": {
        "type": "object",
        "required": ["id", "title", "created_at", "updated_at", "index"],
        "properties": {
            "id": {"type": "string"},
            "title": {"type": "string"},
            "created_at": _TIME,
            "updated_at": _TIME,
            "index": _INDEX,
        },
    },
    "DocumentSummary": {
        "type": "object",
        "required": list(_SUMMARY_PROPERTIES),
        "properties": _SUMMARY_PROPERTIES,
    },
    "Document": {
        "type": "object",
        "required": [*_SUMMARY_PROPERTIES, "content", "chunks"],
        "properties": {
            **_SUMMARY_PROPERTIES,
            "content": {"type": "string"},
            "chunks": {
                "type": "array",
                "items": _CHUNK,
                "description": "the chunks indexed: the previous content's until the index job completes",
            },
        },
    },
    "SearchHit": {
        "type": "object",
        "required": ["document_id", "title", "chunk", "text", "score", "highlights"],
        "properties": {
            "document_id": {"type": "string"},
            "title": {"type": "string"},
            "chunk": {"type": "integer", "minimum": 0, "description": "the chunk's ordinal in its document"},
            "text": {"type": "string"},
            "score": {
                "type": "number",
                "description": "higher is better: BM25 (keyword), cosine (semantic), RRF (hybrid)",
            },
            "highlights": {
                "type": "array",
                "items": {"type": "string"},
                "description": "snippets with the matched words in <mark></mark>, the rest HTML-escaped",
            },
        },
    },
}

# The text/markdown and text/plain bodies are in the descriptions only: a fuzzer cannot tell a text body
# from a JSON object sent as text, which is text all the same.
_ERRORS = [401, 403, 503]
_TEXT_PARAMS = [
    query(
        "title",
        "the title of a text/markdown or text/plain body (or the X-Document-Title header)",
        {"type": "string", "minLength": 1, "maxLength": MAX_TITLE, "pattern": _NONBLANK},
    ),
    query("id", "the id of a text/markdown or text/plain body (a fresh one when absent)", _ID),
]

CREATE_DOCUMENTS: dict[str, Any] = {
    "tags": ["documents"],
    "description": (
        f'JSON: one document, or a batch {{"documents": [...]}} of 1 to {MAX_BATCH}. A text/markdown or '
        "text/plain body is one document's content, titled by ?title= or X-Document-Title (?id= its id); "
        "text/plain needs an API key (a web page could send it cross-site). Content is at most "
        f"{MAX_CONTENT} characters. A batch is stored all or nothing. 409 when the tenant has the id. "
        "Each document is indexed by a job (its index.state; GET /api/documents/{id} follows it)."
    ),
    "parameters": _TEXT_PARAMS,
    "requestBody": json_body(
        {
            "oneOf": [
                ref("NewDocument"),
                {
                    "type": "object",
                    "required": ["documents"],
                    "additionalProperties": False,
                    "properties": {
                        "documents": {
                            "type": "array",
                            "minItems": 1,
                            "maxItems": MAX_BATCH,
                            "items": ref("NewDocument"),
                        }
                    },
                },
            ]
        },
        example={
            "title": "Guide",
            "content": "# Install\n\npip install llmkit",
            "metadata": {"source": "docs"},
        },
    ),
    "responses": {
        "202": answer(
            "stored, with its index job queued: the document (a batch: {documents: [...]})",
            {
                "oneOf": [
                    ref("StoredDocument"),
                    {
                        "type": "object",
                        "required": ["documents"],
                        "properties": {"documents": {"type": "array", "items": ref("StoredDocument")}},
                    },
                ]
            },
        )
    },
    "errors": [409, 422, *_ERRORS],
}
LIST_DOCUMENTS: dict[str, Any] = {
    "tags": ["documents"],
    "description": (
        "Filter with metadata.<key>=<value> (each must equal, at most "
        f"{MAX_FILTERS}): true, false, null and numbers compare as JSON values, anything else (or a value "
        'in double quotes, metadata.year="2024") as a string. Any other parameter is a 400.'
    ),
    "parameters": [
        query("limit", "documents per page", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE}),
        query("offset", "documents to skip", {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET}),
    ],
    "responses": {
        "200": answer(
            f"a page, oldest first (limit {DEFAULT_PAGE} unless given); next_offset null on the last page",
            {
                "type": "object",
                "required": ["documents", "limit", "offset", "next_offset"],
                "properties": {
                    "documents": {"type": "array", "items": ref("DocumentSummary")},
                    "limit": {"type": "integer"},
                    "offset": {"type": "integer"},
                    "next_offset": {"type": "integer", "nullable": True},
                },
            },
        )
    },
    "errors": [400, *_ERRORS],
}
GET_DOCUMENT: dict[str, Any] = {
    "tags": ["documents"],
    "responses": {"200": answer("the document with its chunks", ref("Document"))},
    "errors": [404, *_ERRORS],
}
REPLACE_DOCUMENT: dict[str, Any] = {
    "tags": ["documents"],
    "description": (
        "JSON {title, content, metadata?} (metadata not given is cleared), or a text/markdown or text/plain "
        "body as the new content, titled by ?title= or X-Document-Title (else the document keeps its title). "
        "Search finds the previous content until the new index job completes."
    ),
    "requestBody": json_body(
        {
            "type": "object",
            "required": ["title", "content"],
            "additionalProperties": False,
            "properties": _FIELDS,
        },
        example={"title": "Guide", "content": "# Install\n\npip install llmkit"},
    ),
    "responses": {"202": answer("replaced, with a job queued to index it again", ref("StoredDocument"))},
    "errors": [404, 422, *_ERRORS],
}
DELETE_DOCUMENT: dict[str, Any] = {
    "tags": ["documents"],
    "responses": {"204": {"description": "deleted, with its chunks and index entries"}},
    "errors": [404, *_ERRORS],
}
SEARCH: dict[str, Any] = {
    "tags": ["documents"],
    "description": (
        "keyword: BM25 over the chunks (SQLite FTS5; PostgreSQL the same formula over the same words), "
        "any word of the query matching; only chunks holding one of its rarest words are ranked (those "
        "whose chunk counts add up to 1,000, always the rarest), scored by every word. semantic: cosine "
        "between the query's embedding and the chunks'. "
        "hybrid: reciprocal rank fusion (k = 60) of the two, a list holding another chunk of the same "
        "document counting that document's rank. semantic and hybrid answer 400 until "
        "gateway.embeddings_url is set, 503 while the embeddings upstream fails. Answers are cached per "
        "tenant until its documents change (cached: true)."
    ),
    "requestBody": json_body(
        {
            "type": "object",
            "required": ["query"],
            "additionalProperties": False,
            "properties": {
                "query": {"type": "string", "minLength": 1, "maxLength": MAX_QUERY},
                "type": {"type": "string", "enum": list(SEARCH_TYPES), "default": "keyword"},
                "limit": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": MAX_HITS,
                    "default": DEFAULT_HITS,
                },
                "filters": {
                    "type": "object",
                    "nullable": True,
                    "maxProperties": MAX_FILTERS,
                    "additionalProperties": _SCALAR,
                    "description": "metadata keys each hit's document must have equal",
                },
            },
        },
        example={"query": "install", "type": "keyword", "limit": 5},
    ),
    "responses": {
        "200": answer(
            "the hits, best first",
            {
                "type": "object",
                "required": ["query", "type", "hits", "cached", "took_ms"],
                "properties": {
                    "query": {"type": "string"},
                    "type": {"type": "string", "enum": list(SEARCH_TYPES)},
                    "hits": {"type": "array", "items": ref("SearchHit")},
                    "cached": {"type": "boolean", "description": "answered from the search cache"},
                    "took_ms": {"type": "number"},
                },
            },
        )
    },
    "errors": [400, 422, *_ERRORS],
}
