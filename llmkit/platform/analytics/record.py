"""QueryRecord: one gateway request as analytics stores it, and the normalisation that groups queries."""

from __future__ import annotations

import math
from dataclasses import dataclass

MAX_QUERY_CHARS = 512
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


@dataclass(slots=True)
class QueryRecord:
    """One request through the gateway: who asked what, how it went, what it cost."""

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


def _clean(value: str) -> bool:
    return value.isascii() and "\x00" not in value


def to_row(rec: QueryRecord) -> Row:
    """The record as stored: the query normalised, text made encodable, numbers in the columns' range."""
    # Every recorded request comes through here: the usual record (ASCII names, finite times, counts in
    # range) is checked in a few comparisons, and only an unusual one takes the slower repairs.
    tenant, key, route, model, upstream = rec.tenant_id, rec.key_id, rec.route, rec.model, rec.upstream
    if not _clean(tenant + key + route + model + upstream):
        tenant, key, route, model, upstream = map(_text, (tenant, key, route, model, upstream))
    ts, latency, ttfb = rec.ts, rec.latency_ms, rec.ttfb_ms
    tokens_in, tokens_out, status = rec.tokens_in, rec.tokens_out, rec.status
    return (
        float(ts) if -_INF < ts < _INF else 0.0,
        tenant,
        key,
        route,
        model,
        _text(normalise_query(rec.query)),
        status if type(status) is int and 0 <= status <= 999 else min(max(int(status), 0), 999),
        float(latency) if 0 <= latency < _INF else 0.0,
        None if ttfb is None or not 0 <= ttfb < _INF else float(ttfb),
        tokens_in if type(tokens_in) is int and 0 <= tokens_in <= MAX_INT else _count(tokens_in),
        tokens_out if type(tokens_out) is int and 0 <= tokens_out <= MAX_INT else _count(tokens_out),
        bool(rec.cached),
        bool(rec.coalesced),
        upstream,
    )
