"""What an analytics store does: store query records in batches and answer the admin's four questions.

Windows are left-open: `days=d` covers records with now - d * 86400 < ts <= now. Answers are plain dicts
ready to be JSON; every list has one deterministic order. The shapes (JSON Schemas in queries.py):

- popular: {"days", "tenant_id", "items": [{"query", "count"}]}, count desc then query asc (code-point order).
- trending: {"window_hours", "tenant_id", "items": [{"query", "count", "previous", "growth", "new"}]}: queries
  seen more often in the last window (now - w, now] than in the one before (now - 2w, now - w]; growth is
  (count - previous) / previous, null for a query new in the last window (new: true). New queries first, then
  growth desc, count desc, query asc.
- stats: {"days", "tenant_id", "requests", "unique_queries", "tenants", "cache_hits", "cache_hit_rate",
  "errors", "error_rate", "server_errors", "coalesced", "tokens_in", "tokens_out",
  "latency_ms": {"mean", "p50", "p95", "p99"}}. errors count status >= 400 (client and server errors, what a
  caller saw fail); server_errors count status >= 500. Rates are 0.0 and latencies null with no requests.
- timeseries: {"interval_hours", "days", "tenant_id", "buckets": [{"start", "requests", "errors",
  "cache_hits", "tokens_in", "tokens_out", "latency_ms_mean", "latency_p50_ms", "latency_p95_ms"}]}: buckets
  aligned on multiples of the interval since the epoch (start in epoch seconds), oldest first; only buckets
  with requests are listed. A bucket's p50 / p95 are its own records' percentiles, computed as the store
  computes stats' (nearest rank on SQLite and PostgreSQL, ClickHouse's quantiles()); null without requests.

Empty queries (requests without a user text) count as requests but never as a query.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Protocol

from llmkit.platform.analytics.record import Record

DAY = 86_400.0
HOUR = 3_600.0
PERCENTILES = (0.5, 0.95, 0.99)
# The percentiles of each time-series bucket (latency_p50_ms, latency_p95_ms).
BUCKET_PERCENTILES = (0.5, 0.95)
JSON = dict[str, Any]


def nearest_rank(n: int, p: float) -> int:
    """The 0-based index of the p-th percentile of n sorted values by the nearest-rank method."""
    return max(0, min(n - 1, math.ceil(p * n) - 1))


def trending_item(query: str, count: int, previous: int) -> JSON:
    """One trending entry; growth computed here so every backend answers the same float."""
    return {
        "query": query,
        "count": int(count),
        "previous": int(previous),
        "growth": None if previous == 0 else (count - previous) / previous,
        "new": previous == 0,
    }


def stats_answer(days: int, tenant_id: str | None, totals: Sequence[Any], latency: Sequence[Any]) -> JSON:
    """The stats dict from (requests, unique_queries, tenants, cache_hits, errors, server_errors, coalesced,
    tokens_in, tokens_out, mean latency) and (p50, p95, p99)."""
    requests, unique, tenants, hits, errors, server_errors, coalesced, tin, tout, mean = totals
    requests = int(requests or 0)
    return {
        "days": days,
        "tenant_id": tenant_id,
        "requests": requests,
        "unique_queries": int(unique or 0),
        "tenants": int(tenants or 0),
        "cache_hits": int(hits or 0),
        "cache_hit_rate": int(hits or 0) / requests if requests else 0.0,
        "errors": int(errors or 0),
        "error_rate": int(errors or 0) / requests if requests else 0.0,
        "server_errors": int(server_errors or 0),
        "coalesced": int(coalesced or 0),
        "tokens_in": int(tin or 0),
        "tokens_out": int(tout or 0),
        "latency_ms": {
            "mean": float(mean) if requests and mean is not None else None,
            **{
                name: float(value) if requests and value is not None else None
                for name, value in zip(("p50", "p95", "p99"), latency, strict=True)
            },
        },
    }


def bucket_answer(step: int, row: Sequence[Any]) -> JSON:
    """One time-series bucket from (bucket, requests, errors, cache_hits, tokens_in, tokens_out, mean,
    (p50, p95))."""
    bucket, requests, errors, hits, tin, tout, mean, latency = row
    p50, p95 = latency if latency else (None, None)
    return {
        "start": int(bucket) * step,
        "requests": int(requests),
        "errors": int(errors or 0),
        "cache_hits": int(hits or 0),
        "tokens_in": int(tin or 0),
        "tokens_out": int(tout or 0),
        "latency_ms_mean": float(mean),
        "latency_p50_ms": float(p50) if requests and p50 is not None else None,
        "latency_p95_ms": float(p95) if requests and p95 is not None else None,
    }


def popular_answer(days: int, tenant_id: str | None, rows: Sequence[Sequence[Any]]) -> JSON:
    """The popular answer from (query, count) rows, in the order the store gave them."""
    return {"days": days, "tenant_id": tenant_id, "items": [{"query": q, "count": int(n)} for q, n in rows]}


def trending_answer(window_hours: int, tenant_id: str | None, rows: Sequence[Sequence[Any]]) -> JSON:
    """The trending answer from (query, count, previous) rows, in the order the store gave them."""
    items = [trending_item(q, int(cur), int(prev)) for q, cur, prev in rows]
    return {"window_hours": window_hours, "tenant_id": tenant_id, "items": items}


def timeseries_answer(
    interval_hours: int, days: int, tenant_id: str | None, rows: Sequence[Sequence[Any]]
) -> JSON:
    """The time series from bucket rows (see bucket_answer), oldest first."""
    step = interval_hours * 3600
    buckets = [bucket_answer(step, row) for row in rows]
    return {"interval_hours": interval_hours, "days": days, "tenant_id": tenant_id, "buckets": buckets}


class AnalyticsStore(Protocol):
    """Where query records go. Methods raise llmkit.errors.BackendError when the store fails."""

    kind: str  # "sqlite", "postgresql" or "clickhouse"
    where: str  # a path or a URL without credentials, for messages and /stats

    async def open(self) -> None:
        """Connect and create the tables if they are missing."""

    async def write(self, records: Sequence[Record]) -> None:
        """Store the records (queries normalised) in one transaction (one insert block on ClickHouse)."""

    async def popular(self, *, limit: int, days: int, tenant_id: str | None, now: float) -> JSON:
        """The most asked queries of the last `days`."""
        ...

    async def trending(self, *, limit: int, window_hours: int, tenant_id: str | None, now: float) -> JSON:
        """Queries growing from the window before the last `window_hours` to the last one."""
        ...

    async def stats(self, *, days: int, tenant_id: str | None, now: float) -> JSON:
        """Totals, rates and latency percentiles of the last `days`."""
        ...

    async def timeseries(self, *, interval_hours: int, days: int, tenant_id: str | None, now: float) -> JSON:
        """Per-interval numbers of the last `days`."""
        ...

    async def purge(self, older_than: float) -> int:
        """Delete records with ts < older_than (epoch s); how many were deleted."""
        ...

    async def close(self) -> None:
        """Close connections; idempotent."""
