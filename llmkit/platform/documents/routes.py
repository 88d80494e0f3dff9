"""/api/documents and /api/search: a tenant's documents, stored with a job that indexes them (index_job.py),
and keyword search.

Every route needs the `search` scope and acts in the caller's tenant only: another tenant's document is a
404 like a missing one, so ids say nothing about other tenants.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from typing import Any

import orjson
from aiohttp import web

from llmkit.core.auth import SEARCH
from llmkit.core.http import ApiError, add_route, identity_of, json_response, openapi, read_json
from llmkit.core.ids import fresh_hex
from llmkit.errors import BackendError
from llmkit.platform.documents import docs
from llmkit.platform.documents.bodies import (
    DOCUMENT_ID,
    DocumentRequest,
    SearchRequest,
    batch_request,
    created_view,
    document_request,
    document_view,
    hit_view,
    list_query,
    search_request,
    summary_view,
)
from llmkit.platform.documents.index_job import INDEX_DOCUMENT, index_job
from llmkit.platform.service import PLATFORM_KEY, Platform
from llmkit.platform.store.base import Document, PlatformStore, StoreConflict

_TEXT_TYPES = ("text/markdown", "text/plain", "text/x-markdown")
_TITLE_HEADER = "X-Document-Title"
# The least a replaced document's updated_at moves on (time.time() may repeat within a microsecond).
VERSION_STEP_S = 1e-5


def _store_and_tenant(request: web.Request) -> tuple[PlatformStore, str]:
    return request.app[PLATFORM_KEY].store, identity_of(request).tenant_id


def _not_found(document_id: str) -> ApiError:
    return ApiError(404, "document_not_found", f"no document {document_id[:130]!r} in this tenant")


def _conflict(document_id: str, param: str) -> ApiError:
    return ApiError(
        409,
        "document_exists",
        f"this tenant has a document {document_id!r} already; PUT /api/documents/{document_id} replaces it",
        param=param,
    )


def _path_id(request: web.Request) -> str:
    document_id = request.match_info["document_id"]
    # An id no document can have is missing like any other (and never reaches the store).
    if not DOCUMENT_ID.fullmatch(document_id):
        raise _not_found(document_id)
    return document_id


def _decoded(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(
            400, "invalid_body", f"the text body is not UTF-8: {exc.reason} at byte {exc.start}"
        ) from None


def _no_text_params(request: web.Request) -> None:
    # ?title= and ?id= describe a text body; with JSON they would be silently ignored.
    for name in ("title", "id"):
        if name in request.query:
            raise ApiError(
                400,
                "invalid_parameter",
                f"{name}: only with a text/markdown or text/plain body; a JSON body gives its own {name}",
                param=name,
            )


def _text_title(request: web.Request) -> str | None:
    if "title" in request.query:
        return request.query["title"]
    return request.headers.get(_TITLE_HEADER)


def _text_upload(request: web.Request, raw: bytes) -> DocumentRequest:
    """A text/markdown or text/plain body: the content; title in ?title= or X-Document-Title."""
    content = _decoded(raw)
    title = _text_title(request)
    if title is None:
        raise ApiError(
            422,
            "invalid_field",
            f"title: a text upload needs a title: ?title=... or the {_TITLE_HEADER} header",
            param="title",
        )
    body: dict[str, Any] = {"title": title, "content": content}
    if "id" in request.query:
        body["id"] = request.query["id"]
    return document_request(body)


async def _documents_of(request: web.Request) -> tuple[list[DocumentRequest], bool]:
    """The documents a POST carries and whether it was a batch."""
    if request.content_type in _TEXT_TYPES:
        return [_text_upload(request, await request.read())], False
    _no_text_params(request)
    body = await read_json(request)
    if "documents" in body:
        return batch_request(body), True
    return [document_request(body)], False


def _document(tenant_id: str, req: DocumentRequest, document_id: str, now: float) -> Document:
    return Document(document_id, tenant_id, req.title, req.content, req.metadata, now, now)


def _changed(request: web.Request, tenant_id: str) -> None:
    """The tenant's documents changed (and jobs may be queued): this process's next search reads the new
    search version, and its runner claims the jobs now, not at its next poll."""
    platform = request.app[PLATFORM_KEY]
    platform.search_versions.changed(tenant_id)
    if platform.jobs is not None:
        platform.jobs.wake()


@openapi(**docs.CREATE_DOCUMENTS)
async def create_documents(request: web.Request) -> web.Response:
    """Add documents: one as JSON or a text/markdown body, or a batch; each is indexed by a job (202)."""
    store, tenant_id = _store_and_tenant(request)
    reqs, batch = await _documents_of(request)
    now = time.time()
    documents = [_document(tenant_id, req, req.id or fresh_hex(), now) for req in reqs]
    jobs = [index_job(tenant_id, d.id, now) for d in documents]
    try:
        # One transaction: a batch and its jobs are stored whole or not at all.
        await store.add_documents([(d, ()) for d in documents], jobs)
    except StoreConflict:
        # Nothing of this request was stored: the id the tenant has already is the one to name.
        for i, document in enumerate(documents):
            if await store.document(tenant_id, document.id) is not None:
                raise _conflict(document.id, f"documents[{i}].id" if batch else "id") from None
        raise
    _changed(request, tenant_id)
    made = [created_view(d, j) for d, j in zip(documents, jobs, strict=True)]
    return json_response({"documents": made} if batch else made[0], status=202)


@openapi(**docs.LIST_DOCUMENTS)
async def list_documents(request: web.Request) -> web.Response:
    """A page of the tenant's documents, oldest first, filtered by metadata, with their indexing state."""
    store, tenant_id = _store_and_tenant(request)
    limit, offset, filters = list_query(request.query)
    # One more than asked says whether there is a next page.
    page = await store.documents(tenant_id, limit + 1, offset, filters)
    more = len(page) > limit
    page = page[:limit]
    jobs = await store.latest_jobs(tenant_id, INDEX_DOCUMENT, [d.id for d in page])
    return json_response(
        {
            "documents": [summary_view(d, jobs.get(d.id)) for d in page],
            "limit": limit,
            "offset": offset,
            "next_offset": offset + limit if more else None,
        }
    )


@openapi(**docs.GET_DOCUMENT)
async def get_document(request: web.Request) -> web.Response:
    """One document with its content, its indexing state and its chunks."""
    store, tenant_id = _store_and_tenant(request)
    document_id = _path_id(request)
    document = await store.document(tenant_id, document_id)
    if document is None:
        raise _not_found(document_id)
    jobs = await store.latest_jobs(tenant_id, INDEX_DOCUMENT, [document_id])
    chunks = await store.document_chunks(tenant_id, document_id)
    return json_response(document_view(document, jobs.get(document_id), chunks))


@openapi(**docs.REPLACE_DOCUMENT)
async def replace_document(request: web.Request) -> web.Response:
    """Replace a document's title, content and metadata; a job indexes it again (202), and until it
    completes search finds the previous chunks."""
    store, tenant_id = _store_and_tenant(request)
    document_id = _path_id(request)
    if request.content_type in _TEXT_TYPES:
        raw = await request.read()
        existing = await store.document(tenant_id, document_id)
        if existing is None:
            raise _not_found(document_id)
        # A text body without a title keeps the document's.
        fields = {"title": _text_title(request) or existing.title, "content": _decoded(raw)}
        req = document_request(fields, with_id=False)
    else:
        _no_text_params(request)
        req = document_request(await read_json(request), with_id=False)
        existing = await store.document(tenant_id, document_id)
        if existing is None:
            raise _not_found(document_id)
    # Each version has its own updated_at: the index job writes chunks only for the version it read.
    now = max(time.time(), existing.updated_at + VERSION_STEP_S)
    document = Document(
        document_id, tenant_id, req.title, req.content, req.metadata, existing.created_at, now
    )
    job = index_job(tenant_id, document_id, now)
    if not await store.update_document(document, job):
        raise _not_found(document_id)
    _changed(request, tenant_id)
    return json_response(created_view(document, job), status=202)


@openapi(**docs.DELETE_DOCUMENT)
async def delete_document(request: web.Request) -> web.Response:
    """Delete a document, its chunks and their index entries."""
    store, tenant_id = _store_and_tenant(request)
    document_id = _path_id(request)
    if not await store.delete_document(tenant_id, document_id):
        raise _not_found(document_id)
    _changed(request, tenant_id)
    return web.Response(status=204)


@openapi(**docs.SEARCH)
async def search(request: web.Request) -> web.Response:
    """Ranked chunks of the tenant's documents (keyword, semantic or hybrid), from the cache when the same
    search of the same documents was answered before; recorded in analytics and search_duration_seconds."""
    platform = request.app[PLATFORM_KEY]
    identity = identity_of(request)
    started = time.perf_counter()
    req = search_request(await read_json(request))
    if req.type != "keyword" and not platform.searcher.semantic:
        raise ApiError(
            400,
            "embeddings_not_configured",
            f"{req.type} search needs embeddings: set gateway.embeddings_url (an OpenAI-compatible "
            "/v1/embeddings upstream, e.g. llmkit simulate's http://127.0.0.1:4545/v1); type keyword "
            "works without",
            param="type",
        )
    try:
        hits, count, cached = await _search(platform, identity.tenant_id, req)
    except BackendError:
        platform.record_search(identity, req.type, req.query, 503, started, False)
        raise
    took = time.perf_counter() - started
    platform.search_metrics.observe(req.type, cached, took)
    platform.record_search(identity, req.type, req.query, 200, started, cached, count)
    body = {"query": req.query, "type": req.type, "hits": hits, "cached": cached}
    return json_response({**body, "took_ms": round(took * 1000, 3)})


async def _search(
    platform: Platform, tenant_id: str, req: SearchRequest
) -> tuple[list[Any] | orjson.Fragment, int, bool]:
    """The hits as answered, how many, and whether the cache had them: the cache key names the tenant's
    search version, so any change to its documents makes a new key and old answers are never served.
    A cached answer is `{count}:{hits as JSON}`, and goes into the response as it is (orjson.Fragment):
    parsing it to serialise it again was a sixth of a cached search's time."""
    version = await platform.search_versions.get(tenant_id)
    cache = platform.search_cache
    key = search_key(tenant_id, version, req, platform.searcher.model)
    if cache is not None:
        with contextlib.suppress(BackendError):  # a cache outage costs speed, not answers
            found = await cache.get(key)
            if found is not None:
                count, _, hits = found.partition(b":")
                return orjson.Fragment(hits), int(count), True
    found_hits = await platform.searcher.search(
        tenant_id, version, req.type, req.query, req.limit, req.filters
    )
    views = [hit_view(h) for h in found_hits]
    if cache is not None:
        with contextlib.suppress(BackendError):
            await cache.set(key, b"%d:%b" % (len(views), orjson.dumps(views)))
    return views, len(views), False


def search_key(tenant_id: str, version: int, req: SearchRequest, model: str) -> str:
    """A search's cache key: the tenant, its search version, the embeddings model and the request."""
    request = orjson.dumps([req.type, req.query, req.limit, req.filters, model], option=orjson.OPT_SORT_KEYS)
    # "h2": answers cached as `{count}:{hits}` (keys without it, of older versions, held the hits alone).
    return f"{tenant_id}:{version}:h2:{hashlib.sha256(request).hexdigest()}"


def add_routes(app: web.Application) -> None:
    """Mount the documents and search routes on a server whose app holds a Platform under PLATFORM_KEY."""
    add_route(app, "POST", "/api/documents", create_documents, scope=SEARCH)
    add_route(app, "GET", "/api/documents", list_documents, scope=SEARCH)
    add_route(app, "GET", "/api/documents/{document_id}", get_document, scope=SEARCH)
    add_route(app, "PUT", "/api/documents/{document_id}", replace_document, scope=SEARCH)
    add_route(app, "DELETE", "/api/documents/{document_id}", delete_document, scope=SEARCH)
    add_route(app, "POST", "/api/search", search, scope=SEARCH)
