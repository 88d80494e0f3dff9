"""`llmkit aggregate`: POST /publish, GET /events and /stats over a deduplicating, durable event store."""

from __future__ import annotations

import asyncio
import dataclasses
import fcntl
import hashlib
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, Any

from aiohttp import web

from llmkit.aggregate.events import InvalidEvents, rows_of, timestamp_ms
from llmkit.aggregate.openapi import (
    EVENTS_DOC,
    MAX_CURSOR,
    PUBLISH_DOC,
    ROOT_DOC,
    SCHEMAS,
    events_parameters,
)
from llmkit.aggregate.store import store_from_settings
from llmkit.aggregate.store.base import EventQuery, EventStore, Listed
from llmkit.aggregate.writer import GroupWriter
from llmkit.core.docs_page import handle_docs
from llmkit.core.http import (
    METRICS_KEY,
    OPENAPI_SCHEMAS_KEY,
    SERVICE_KEY,
    add_route,
    create_base_app,
    json_response,
    openapi,
    parse_json,
    read_body,
    stream_response,
)
from llmkit.settings import AggregateSettings, Settings

log = logging.getLogger("llmkit.aggregate")

STORE_KEY = web.AppKey("llmkit_aggregate_store", EventStore)
WRITER_KEY = web.AppKey("llmkit_aggregate_writer", GroupWriter)
AGGREGATE_KEY = web.AppKey("llmkit_aggregate_settings", AggregateSettings)
# Rows per store query while listing; an unbounded listing streams page by page in this size.
PAGE_SIZE = 5000
ROOT_MESSAGE = "ChronicleWeaver is running..."


def _detail(loc: list[Any], kind: str, msg: str, value: Any) -> web.Response:
    return json_response({"detail": [{"type": kind, "loc": loc, "msg": msg, "input": value}]}, status=422)


@openapi(**PUBLISH_DOC)
async def publish(request: web.Request) -> web.Response:
    """Publish one event or a batch; 200 once stored (ack: durable) or 202 at once (ack: queued).

    Duplicates of (topic, event_id) are dropped, across restarts too. A batch is all or nothing: one
    invalid event and none is stored (422 lists every problem).
    """
    body = parse_json(await read_body(request), object_only=False)
    try:
        rows = rows_of(body)
    except InvalidEvents as exc:
        return json_response({"detail": exc.detail}, status=422)
    count = len(rows)
    if not rows:
        return _published(count, 0)
    durable = request.app[AGGREGATE_KEY].ack == "durable"
    future = request.app[WRITER_KEY].offer(rows, wait=durable)
    if future is None:
        return json_response(
            {
                "status": "queued",
                "message": f"{_plural(count, 'event')} queued; stored shortly, duplicates dropped then "
                "(ack: queued, not yet durable)",
                "events_count": count,
            },
            status=202,
        )
    return _published(count, await future)


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def published_message(count: int, new: int) -> str:
    """What a publish did, in words: `3 events received, 2 new, 1 duplicate`."""
    return f"{_plural(count, 'event')} received, {new} new, {_plural(count - new, 'duplicate')}"


def _published(count: int, new: int) -> web.Response:
    return json_response(
        {
            "status": "success",
            # The seed's field, saying what happened: "Published 1 events" for a dropped duplicate misled.
            "message": published_message(count, new),
            "events_count": count,
            "accepted": new,
            "duplicates": count - new,
        }
    )


def _query(request: web.Request) -> EventQuery | web.Response:
    """The /events filters from the query string, or a 422 naming the parameter to fix."""
    params = request.query
    limit: int | None = None
    after = 0
    max_page = request.app[AGGREGATE_KEY].max_page
    for name in ("limit", "after"):
        text = params.get(name)
        if text is None:
            continue
        low, high = (1, max_page) if name == "limit" else (0, MAX_CURSOR)
        if not (text.isascii() and text.isdigit()) or not low <= int(text) <= high:
            bound = f"between 1 and {max_page} (aggregate.max_page)" if name == "limit" else "a cursor >= 0"
            return _detail(["query", name], "int_parsing", f"Input should be an integer {bound}", text)
        if name == "limit":
            limit = int(text)
        else:
            after = int(text)
    times: dict[str, int | None] = {}
    for name in ("since", "until"):
        text = params.get(name)
        times[name] = None if text is None else timestamp_ms(text)
        if text is not None and times[name] is None:
            msg = "Input should be a valid datetime: an ISO 8601 datetime such as 2025-10-28T10:00:00Z"
            return _detail(["query", name], "datetime_parsing", msg, text)
    return EventQuery(
        topic=params.get("topic"),
        source=params.get("source"),
        since_ms=times["since"],
        until_ms=times["until"],
        after=after,
        limit=limit,
    )


@openapi(**EVENTS_DOC, parameters=lambda app: events_parameters(app[AGGREGATE_KEY].max_page))
async def list_events(request: web.Request) -> web.StreamResponse:
    """Unique events in arrival order, filtered by topic, source and time; paged with limit and after.

    Without `limit` every match is returned (streamed, so memory stays flat); with it, `next_after` is the
    cursor of the next page (null on the last one).
    """
    query = _query(request)
    if isinstance(query, web.Response):
        return query
    store = request.app[STORE_KEY]
    if query.limit is not None:
        # One row more than asked tells whether another page follows.
        wanted = dataclasses.replace(query, limit=query.limit + 1)
        rows = [row async for page in store.pages(wanted, PAGE_SIZE) for row in page]
        more = len(rows) > query.limit
        rows = rows[: query.limit]
        cursor = rows[-1][0] if more else None
        return _events_body(rows, cursor)
    pages = store.pages(query, PAGE_SIZE)
    first: list[Listed] = await anext(pages, [])
    if len(first) < PAGE_SIZE:
        return _events_body(first, None)
    return await _stream_events(request, first, pages)


def _events_body(rows: list[Listed], cursor: int | None) -> web.Response:
    head = b'{"count":%d,"events":[' % len(rows)
    tail = b'],"next_after":' + (b"null" if cursor is None else str(cursor).encode()) + b"}"
    return web.Response(body=head + b",".join(doc for _, doc in rows) + tail, content_type="application/json")


async def _stream_events(
    request: web.Request, first: list[Listed], pages: AsyncIterator[list[Listed]]
) -> web.StreamResponse:
    response = stream_response(request, {"Content-Type": "application/json"})
    await response.prepare(request)
    # "count" comes last here: it is known only once every page is out.
    await response.write(b'{"events":[' + b",".join(doc for _, doc in first))
    count = len(first)
    async for page in pages:
        await response.write(b"," + b",".join(doc for _, doc in page))
        count += len(page)
    await response.write(b'],"count":%d,"next_after":null}' % count)
    await response.write_eof()
    return response


@openapi(**ROOT_DOC)
async def root(request: web.Request) -> web.Response:
    """The seed's liveness answer: {"message": "ChronicleWeaver is running..."}."""
    return json_response({"message": ROOT_MESSAGE, "service": "llmkit aggregate", "docs": "/docs"})


async def _stats(app: web.Application) -> dict[str, Any]:
    store, writer, aggregate = app[STORE_KEY], app[WRITER_KEY], app[AGGREGATE_KEY]
    counts = await store.counts()
    received = sum(c.received for c in counts)
    unique = sum(c.unique for c in counts)
    return {
        "received": received,
        "unique_processed": unique,
        "duplicated_dropped": received - unique,
        "topics": [c.topic for c in counts],
        "uptime": int(time.monotonic() - app[SERVICE_KEY].started),
        "per_topic": {
            c.topic: {
                "received": c.received,
                "unique_processed": c.unique,
                "duplicated_dropped": c.received - c.unique,
                "stored": c.stored,
            }
            for c in counts
        },
        "stored_events": sum(c.stored for c in counts),
        "queue_depth": writer.pending,
        "channel_capacity": writer.capacity,
        "ack": aggregate.ack,
        "commits": writer.commits,
        "commit_failures": writer.failures,
        "store": {"kind": store.kind, "where": store.where, "size_bytes": await store.size_bytes()},
    }


class PurgeLock:
    """One purger per store among the processes of this machine (--workers): a non-blocking flock.

    The SQLite store would survive concurrent purges (each chunk is a transaction), but the ClickHouse one
    would count the rows two purgers delete twice. Replicas on other machines must leave retention to one.
    """

    def __init__(self, data_dir: str, store: EventStore) -> None:
        digest = hashlib.sha1(f"{store.kind}:{store.where}".encode()).hexdigest()[:12]
        self.path = Path(data_dir) / f"aggregate-purge-{digest}.lock"
        self._file: IO[bytes] | None = None

    def held(self) -> bool:
        """Whether this process holds the lock (taking it if it is free); kept until the process ends."""
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle = self.path.open("ab")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                return False
            self._file = handle
        return True

    def release(self) -> None:
        """Let another process purge."""
        if self._file is not None:
            self._file.close()
            self._file = None


async def _purge_loop(store: EventStore, aggregate: AggregateSettings, lock: PurgeLock) -> None:
    """Apply retention_days / max_events every purge_interval_s; purged ids leave the dedup window."""
    while True:
        if not lock.held():
            await asyncio.sleep(aggregate.purge_interval_s)
            continue
        before = None
        if aggregate.retention_days:
            before = int((time.time() - aggregate.retention_days * 86400) * 1000)
        try:
            deleted = await store.purge(before, aggregate.max_events or None)
        except Exception as exc:  # a failed purge is retried next round; publishing goes on
            log.error("retention purge failed: %s", exc)
        else:
            if deleted:
                log.info("retention purge deleted %d events", deleted)
        await asyncio.sleep(aggregate.purge_interval_s)


def create_app(settings: Settings, store: EventStore | None = None) -> web.Application:
    """The aggregator: open the store, start the group-commit writer (and the purge loop), serve.

    `store` replaces the one aggregate.store names (tests wrap a store to block or fail it).
    """
    aggregate = settings.aggregate
    store = store or store_from_settings(settings)

    async def stats() -> dict[str, Any]:
        return await _stats(app)

    app = create_base_app("aggregate", settings.server, stats, health={"message": "healthy"})
    app[STORE_KEY] = store
    app[AGGREGATE_KEY] = aggregate
    app[OPENAPI_SCHEMAS_KEY].update(SCHEMAS)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await store.open()
        writer = GroupWriter(store, aggregate.channel_capacity, aggregate.group_max_events)
        app[WRITER_KEY] = writer
        app[METRICS_KEY].registry.register(writer)
        writer.start()
        purger = None
        lock = PurgeLock(settings.storage.data_dir, store)
        if aggregate.retention_days or aggregate.max_events:
            loop = _purge_loop(store, aggregate, lock)
            purger = asyncio.create_task(loop, name="llmkit-aggregate-purge")
        log.info("storing events in %s %s (ack: %s)", store.kind, store.where, aggregate.ack)
        try:
            yield
        finally:
            if purger is not None:
                purger.cancel()
                await asyncio.gather(purger, return_exceptions=True)
                lock.release()
            # Every accepted event is committed before the store closes, queued ones included.
            await writer.close()
            await store.close()

    app.cleanup_ctx.append(lifecycle)
    add_route(app, "GET", "/", root)
    add_route(app, "POST", "/publish", publish)
    add_route(app, "GET", "/events", list_events)
    add_route(app, "GET", "/docs", handle_docs)
    add_route(app, "GET", "/redoc", handle_docs)
    return app
