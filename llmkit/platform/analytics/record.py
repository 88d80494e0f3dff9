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


def _ms(value: float) -> float:
    return float(value) if math.isfinite(value) and value >= 0 else 0.0


def normalise_query(text: str) -> str:
    """Casefolded, whitespace collapsed, stripped, NUL removed, at most 512 characters."""
    return " ".join(text.replace("\x00", "").casefold().split())[:MAX_QUERY_CHARS]


def to_row(rec: QueryRecord) -> Row:
    """The record as stored: the query normalised, text made encodable, numbers in the columns' range."""
    ttfb = rec.ttfb_ms
    return (
        float(rec.ts) if math.isfinite(rec.ts) else 0.0,
        _text(rec.tenant_id),
        _text(rec.key_id),
        _text(rec.route),
        _text(rec.model),
        _text(normalise_query(rec.query)),
        min(max(int(rec.status), 0), 999),
        _ms(rec.latency_ms),
        None if ttfb is None or not math.isfinite(ttfb) or ttfb < 0 else float(ttfb),
        _count(rec.tokens_in),
        _count(rec.tokens_out),
        bool(rec.cached),
        bool(rec.coalesced),
        _text(rec.upstream),
    )
