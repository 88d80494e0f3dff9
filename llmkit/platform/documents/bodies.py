"""The documents and search routes' bodies and query strings, checked field by field (no aiohttp here)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from llmkit.core.http import ApiError
from llmkit.platform.admin.bodies import invalid, iso
from llmkit.platform.store.base import Chunk, Document, Job, SearchHit

# A document id: what a URL path carries as it is (no '/', '%', spaces).
DOCUMENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")
MAX_TITLE = 500
# Characters of one document's content: a book-length text; longer ones are to be split by the caller.
MAX_CONTENT = 1_000_000
MAX_METADATA_BYTES = 16_384
MAX_BATCH = 100
MAX_QUERY = 1000
MAX_FILTERS = 16
SEARCH_TYPES = ("keyword", "semantic", "hybrid")
DEFAULT_PAGE, MAX_PAGE, MAX_OFFSET = 20, 100, 1_000_000
DEFAULT_HITS, MAX_HITS = 10, 100
_NONBLANK = re.compile(r"\S")
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")


@dataclass(frozen=True, slots=True)
class DocumentRequest:
    """One document a client sent: id None when the server is to choose one."""

    title: str
    content: str
    metadata: Mapping[str, Any] = field(default_factory=dict)
    id: str | None = None


@dataclass(frozen=True, slots=True)
class SearchRequest:
    """POST /api/search, checked."""

    query: str
    type: str
    limit: int
    filters: Mapping[str, Any]


# PostgreSQL text and jsonb cannot hold U+0000, so no store is given one (SQLite would take it).
_NUL = "\x00"
_NUL_MESSAGE = "must not contain NUL (U+0000) characters"


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return _NUL in value
    if isinstance(value, dict):
        return any(_NUL in k or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


def _param(name: str, message: str) -> ApiError:
    """A query parameter the client must change: 400 naming it."""
    return ApiError(400, "invalid_parameter", f"{name}: {message}", param=name)


def _known(body: Mapping[str, Any], fields: tuple[str, ...], where: str) -> None:
    unknown = sorted(set(body) - set(fields))
    if unknown:
        raise invalid(f"{where}{unknown[0]}", f"unknown field; this body takes {', '.join(fields)}")


def _text(value: Any, name: str, limit: int) -> str:
    if value is None:
        raise invalid(name, "required; give a string with some non-blank text")
    if not isinstance(value, str) or not _NONBLANK.search(value):
        raise invalid(name, "must be a string with some non-blank text")
    if len(value) > limit:
        raise invalid(name, f"at most {limit} characters; got {len(value)}")
    if _NUL in value:
        raise invalid(name, _NUL_MESSAGE)
    return value


def check_id(value: Any, name: str = "id") -> str:
    """A client-chosen document id: 1 to 128 letters, digits, '_', '.', ':' or '-'."""
    if not isinstance(value, str) or not DOCUMENT_ID.fullmatch(value):
        raise invalid(name, "1 to 128 letters, digits, '_', '.', ':' or '-', starting with a letter or digit")
    return value


def metadata_of(value: Any, name: str = "metadata") -> dict[str, Any]:
    """A document's metadata: a JSON object of at most MAX_METADATA_BYTES."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise invalid(name, 'must be an object such as {"source": "wiki", "year": 2024}')
    size = len(json.dumps(value, ensure_ascii=False).encode())
    if size > MAX_METADATA_BYTES:
        raise invalid(name, f"at most {MAX_METADATA_BYTES} bytes as JSON; got {size}")
    if _has_nul(value):
        raise invalid(name, _NUL_MESSAGE)
    return value


def document_request(body: Any, where: str = "", *, with_id: bool = True) -> DocumentRequest:
    """{title, content, metadata?, id?} checked; `where` prefixes field names (`documents[2].`)."""
    if not isinstance(body, dict):
        raise invalid(where.rstrip(".") or "body", "must be an object with title and content")
    fields = ("title", "content", "metadata", "id") if with_id else ("title", "content", "metadata")
    _known(body, fields, where)
    doc_id = body.get("id")
    return DocumentRequest(
        title=_text(body.get("title"), f"{where}title", MAX_TITLE),
        content=_text(body.get("content"), f"{where}content", MAX_CONTENT),
        metadata=metadata_of(body.get("metadata"), f"{where}metadata"),
        id=None if doc_id is None else check_id(doc_id, f"{where}id"),
    )


def batch_request(body: Mapping[str, Any]) -> list[DocumentRequest]:
    """{"documents": [...]}: 1 to MAX_BATCH documents with distinct ids."""
    _known(body, ("documents",), "")
    items = body["documents"]
    if not isinstance(items, list) or not items:
        raise invalid("documents", "must be a non-empty list of {title, content, metadata?, id?}")
    if len(items) > MAX_BATCH:
        raise invalid("documents", f"at most {MAX_BATCH} documents a request; got {len(items)}")
    docs = [document_request(item, f"documents[{i}].") for i, item in enumerate(items)]
    seen: set[str] = set()
    for i, doc in enumerate(docs):
        if doc.id is not None:
            if doc.id in seen:
                raise invalid(f"documents[{i}].id", f"{doc.id!r} is given twice in this batch")
            seen.add(doc.id)
    return docs


def _integer(query: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _param(name, f"must be an integer from {low} to {high}; got {raw[:40]!r}") from None
    if not low <= value <= high:
        raise _param(name, f"must be from {low} to {high}; got {value}")
    return value


def filter_value(raw: str) -> Any:
    """A metadata filter from a query string: true, false, null and JSON numbers compare as those; a value
    in double quotes ("2024") or anything else as a string."""
    if raw in ("true", "false", "null"):
        return json.loads(raw)
    if _NUMBER.fullmatch(raw):
        number = float(raw)
        return int(number) if number.is_integer() and abs(number) < 2**53 else number
    if len(raw) >= 2 and raw[0] == raw[-1] == '"':
        return raw[1:-1]
    return raw


def list_query(query: Mapping[str, str]) -> tuple[int, int, dict[str, Any]]:
    """GET /api/documents: (limit, offset, metadata filters from `metadata.<key>=<value>`)."""
    filters: dict[str, Any] = {}
    for name in query:
        if name.startswith("metadata."):
            key = name.removeprefix("metadata.")
            if not key:
                raise _param(name, "name a metadata key: metadata.<key>=<value>")
            if _NUL in name or _NUL in query[name]:
                raise _param(name, _NUL_MESSAGE)
            filters[key] = filter_value(query[name])
        elif name not in ("limit", "offset"):
            raise _param(name, "unknown parameter; this route takes limit, offset and metadata.<key>")
    if len(filters) > MAX_FILTERS:
        raise _param("metadata", f"at most {MAX_FILTERS} metadata filters; got {len(filters)}")
    limit = _integer(query, "limit", DEFAULT_PAGE, 1, MAX_PAGE)
    return limit, _integer(query, "offset", 0, 0, MAX_OFFSET), filters


def _whole(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def search_filters(value: Any) -> dict[str, Any]:
    """`filters` of a search: metadata keys to the string, number, boolean or null they must equal."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise invalid("filters", 'must be an object such as {"source": "wiki"}')
    if len(value) > MAX_FILTERS:
        raise invalid("filters", f"at most {MAX_FILTERS} metadata keys; got {len(value)}")
    if _has_nul(value):
        raise invalid("filters", _NUL_MESSAGE)
    for key, item in value.items():
        if not (item is None or isinstance(item, str | int | float | bool)):
            raise invalid(
                f"filters.{key}", "must be a string, number, boolean or null (compared for equality)"
            )
    return value


def search_request(body: Mapping[str, Any]) -> SearchRequest:
    """POST /api/search: {query, type?, limit?, filters?} checked."""
    _known(body, ("query", "type", "limit", "filters"), "")
    query = body.get("query")
    if not isinstance(query, str) or not query:
        raise invalid("query", "required; give the words to search for")
    if len(query) > MAX_QUERY:
        raise invalid("query", f"at most {MAX_QUERY} characters; got {len(query)}")
    kind = body.get("type", "keyword")
    if kind not in SEARCH_TYPES:
        raise invalid("type", f"must be one of {', '.join(SEARCH_TYPES)}; got {str(kind)[:40]!r}")
    raw_limit = body.get("limit", DEFAULT_HITS)
    limit = _whole(raw_limit)
    if limit is None or not 1 <= limit <= MAX_HITS:
        raise invalid("limit", f"must be an integer from 1 to {MAX_HITS}; got {str(raw_limit)[:40]}")
    return SearchRequest(query, kind, limit, search_filters(body.get("filters")))


def index_view(job: Job | None) -> dict[str, Any]:
    """Where a document's indexing is: the state of its latest index job (a document stored with its
    chunks, with no job, is indexed)."""
    if job is None:
        return {"state": "completed", "job_id": None, "attempts": 0, "error": None, "finished_at": None}
    return {
        "state": job.state,
        "job_id": job.id,
        "attempts": job.attempts,
        "error": job.error if job.state != "completed" else None,
        "finished_at": iso(job.finished_at),
    }


def created_view(document: Document, job: Job) -> dict[str, Any]:
    """What POST and PUT answer for a stored document: its id and the job indexing it."""
    return {
        "id": document.id,
        "title": document.title,
        "created_at": iso(document.created_at),
        "updated_at": iso(document.updated_at),
        "index": index_view(job),
    }


def summary_view(document: Document, job: Job | None) -> dict[str, Any]:
    """A document in a list: no content, its size instead."""
    return {
        "id": document.id,
        "title": document.title,
        "metadata": dict(document.metadata),
        "size": len(document.content),
        "created_at": iso(document.created_at),
        "updated_at": iso(document.updated_at),
        "index": index_view(job),
    }


def document_view(document: Document, job: Job | None, chunks: list[Chunk]) -> dict[str, Any]:
    """One document with its content and the chunks indexed (the previous version's until a new job
    completes)."""
    return {
        **summary_view(document, job),
        "content": document.content,
        "chunks": [
            {"ordinal": c.ordinal, "text": c.text, "tokens": c.tokens, "headings": list(c.headings)}
            for c in chunks
        ],
    }


def hit_view(hit: SearchHit) -> dict[str, Any]:
    """One search hit as POST /api/search answers it."""
    return {
        "document_id": hit.document_id,
        "title": hit.title,
        "chunk": hit.ordinal,
        "text": hit.text,
        "score": hit.score,
        "highlights": list(hit.highlights),
    }
