"""QueryRecord: one gateway request as analytics stores it, and the normalisation that groups queries."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from functools import partial
from itertools import chain
from operator import is_not, itemgetter, methodcaller
from typing import NamedTuple

MAX_QUERY_CHARS = 512
# Whitespace collapses when a query is normalised: a buffered record keeps enough raw text for 512 of it.
MAX_BUFFERED_QUERY = 4 * MAX_QUERY_CHARS
# Counters are clamped to what every backend's integer column holds (and JSON numbers keep exact).
MAX_INT = 2**53
# The columns of a stored row, in the order `to_row` returns them.
COLUMNS = (
    "ts",
    "tenant_id",
    "key_id",
    "route",
    "model",
    "query",
    "status",
    "latency_ms",
    "ttfb_ms",
    "tokens_in",
    "tokens_out",
    "cached",
    "coalesced",
    "upstream",
)
Row = tuple[float, str, str, str, str, str, int, float, float | None, int, int, bool, bool, str]
# What the writer buffers and a store's write takes: a QueryRecord, or a plain tuple of its fields in
# COLUMNS order (the gateway builds those: no call on the request path). `rows_of` makes them Rows.
Record = Row


class QueryRecord(NamedTuple):
    """One request through the gateway: who asked what, how it went, what it cost.

    A tuple in COLUMNS order: every recorded request builds one, and a tuple is the cheapest thing to
    build, buffer and unpack."""

    ts: float  # epoch seconds
    tenant_id: str
    key_id: str
    route: str
    model: str
    query: str
    status: int
    latency_ms: float
    ttfb_ms: float | None
    tokens_in: int
    tokens_out: int
    cached: bool
    coalesced: bool
    upstream: str


def _text(value: str) -> str:
    # NUL and lone surrogates would make PostgreSQL (and the UTF-8 encoders) refuse the whole batch, and the
    # writer would retry that batch for ever: a record must never be able to poison its batch.
    if value.isascii() and "\x00" not in value:
        return value
    return value.encode("utf-8", "replace").decode("utf-8").replace("\x00", "")


def _count(value: int) -> int:
    return min(max(int(value), 0), MAX_INT)


def normalise_query(text: str) -> str:
    """Casefolded, whitespace collapsed, stripped, NUL removed, at most 512 characters."""
    return " ".join(text.replace("\x00", "").casefold().split())[:MAX_QUERY_CHARS]


_INF = math.inf


def to_row(rec: Record) -> Row:
    """The record as stored: the query normalised, text made encodable, numbers in the columns' range."""
    # Every recorded request comes through here: the usual record (ASCII names, finite times, counts in
    # range) is checked in a few comparisons, and only an unusual one takes the slower repairs.
    (
        ts,
        tenant,
        key,
        route,
        model,
        query,
        status,
        latency,
        ttfb,
        tokens_in,
        tokens_out,
        cached,
        coalesced,
        upstream,
    ) = rec
    names = tenant + key + route + model + upstream
    if not names.isascii() or "\x00" in names:
        tenant, key, route, model, upstream = map(_text, (tenant, key, route, model, upstream))
    return (
        float(ts) if -_INF < ts < _INF else 0.0,
        tenant,
        key,
        route,
        model,
        _text(normalise_query(query)),
        status if type(status) is int and 0 <= status <= 999 else min(max(int(status), 0), 999),
        float(latency) if 0 <= latency < _INF else 0.0,
        None if ttfb is None or not 0 <= ttfb < _INF else float(ttfb),
        tokens_in if type(tokens_in) is int and 0 <= tokens_in <= MAX_INT else _count(tokens_in),
        tokens_out if type(tokens_out) is int and 0 <= tokens_out <= MAX_INT else _count(tokens_out),
        bool(cached),
        bool(coalesced),
        upstream,
    )


# The steps of normalise_query as C callables, for a whole column at a time.
_NO_NUL = methodcaller("replace", "\x00", "")
_FIRST = itemgetter(slice(None, MAX_QUERY_CHARS))
_SPACE_JOIN = " ".join
_NOT_NONE = partial(is_not, None)


def _all(values: Iterable[object], kind: type) -> bool:
    return set(map(type, values)) <= {kind}


def _counts_ok(values: Sequence[int], top: int) -> bool:
    return _all(values, int) and min(values) >= 0 and max(values) <= top


def _times_ok(values: Sequence[float], low: float) -> bool:
    # A NaN or an infinity makes the sum one too (and a huge sum only sends the batch the slow way).
    return _all(values, float) and math.isfinite(sum(values)) and min(values) >= low


def rows_of(records: Sequence[Record]) -> list[Row]:
    """Every record as `to_row` makes it, checked a column at a time.

    Each request the gateway serves is one record, so the usual batch (ASCII names with no NUL, float
    times that are finite, int counts and statuses in range, bool flags) is checked with one C loop per
    column and its queries normalised the same way, with no Python per record; a batch holding any
    unusual record takes to_row's repairs record by record."""
    if not records:
        return []
    (
        ts,
        tenant,
        key,
        route,
        model,
        query,
        status,
        latency,
        ttfb,
        tokens_in,
        tokens_out,
        cached,
        coalesced,
        up,
    ) = zip(*records, strict=True)
    names = "".join(chain(tenant, key, route, model, up))
    ttfbs = list(filter(_NOT_NONE, ttfb))
    usual = (
        names.isascii()
        and "\x00" not in names
        and _times_ok(ts, -math.inf)
        and _times_ok(latency, 0.0)
        and (not ttfbs or _times_ok(ttfbs, 0.0))
        and _counts_ok(status, 999)
        and _counts_ok(tokens_in, MAX_INT)
        and _counts_ok(tokens_out, MAX_INT)
        and _all(chain(cached, coalesced), bool)
    )
    if not usual:
        return [to_row(rec) for rec in records]
    # normalise_query, a column at a time: NUL out, casefolded, whitespace collapsed, cut to 512.
    queries = list(map(_FIRST, map(_SPACE_JOIN, map(str.split, map(str.casefold, map(_NO_NUL, query))))))
    if not "".join(queries).isascii():
        queries = list(map(_text, queries))
    return list(
        zip(
            ts,
            tenant,
            key,
            route,
            model,
            queries,
            status,
            latency,
            ttfb,
            tokens_in,
            tokens_out,
            cached,
            coalesced,
            up,
            strict=True,
        )
    )
