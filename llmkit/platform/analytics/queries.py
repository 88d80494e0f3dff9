"""The admin analytics routes' parameters (parsed without aiohttp) and their OpenAPI operation docs.

Each parse_* turns a request's query parameters into the keyword arguments of the AnalyticsStore method of
the same name (all but `now`), or raises ApiError(400, "invalid_parameter", ..., param=NAME).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from llmkit.core.http import ApiError
from llmkit.core.openapi import answer, query, ref

LIMIT = (1, 1000, 10)
DAYS = (1, 3650, 30)
TIMESERIES_DAYS = (1, 3650, 7)
HOURS = (1, 8760, 24)
MAX_TENANT_CHARS = 128
_INTEGER = re.compile(r"[0-9]{1,12}")
# Printable text: control characters in an id are a client bug, and PostgreSQL text cannot hold NUL.
TENANT_PATTERN = f"^[^\\x00-\\x1f\\x7f]{{1,{MAX_TENANT_CHARS}}}$"
_TENANT = re.compile(TENANT_PATTERN)


def _shown(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:40] + "...")


def _check(params: Mapping[str, str], known: tuple[str, ...]) -> None:
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise ApiError(
            400,
            "invalid_parameter",
            f"unknown parameter {_shown(unknown[0])}; this route takes {', '.join(known)}",
            param=unknown[0],
        )
    getall = getattr(params, "getall", None)
    for name in known:
        if getall is not None and len(getall(name, ())) > 1:
            raise ApiError(400, "invalid_parameter", f"give {name} once", param=name)


def _int(params: Mapping[str, str], name: str, bounds: tuple[int, int, int]) -> int:
    low, high, default = bounds
    text = params.get(name)
    if text is None:
        return default
    if _INTEGER.fullmatch(text) and low <= int(text) <= high:
        return int(text)
    raise ApiError(
        400,
        "invalid_parameter",
        f"{name} must be a whole number from {low} to {high} (default {default}); got {_shown(text)}",
        param=name,
    )


def _tenant(params: Mapping[str, str]) -> str | None:
    text = params.get("tenant_id")
    if text is None:
        return None
    if _TENANT.fullmatch(text):
        return text
    raise ApiError(
        400,
        "invalid_parameter",
        f"tenant_id must be 1 to {MAX_TENANT_CHARS} printable characters; omit it for every tenant",
        param="tenant_id",
    )


def parse_popular(params: Mapping[str, str]) -> dict[str, Any]:
    """{limit, days, tenant_id} for AnalyticsStore.popular."""
    _check(params, ("limit", "days", "tenant_id"))
    return {
        "limit": _int(params, "limit", LIMIT),
        "days": _int(params, "days", DAYS),
        "tenant_id": _tenant(params),
    }


def parse_trending(params: Mapping[str, str]) -> dict[str, Any]:
    """{limit, window_hours, tenant_id} for AnalyticsStore.trending."""
    _check(params, ("limit", "window_hours", "tenant_id"))
    return {
        "limit": _int(params, "limit", LIMIT),
        "window_hours": _int(params, "window_hours", HOURS),
        "tenant_id": _tenant(params),
    }


def parse_stats(params: Mapping[str, str]) -> dict[str, Any]:
    """{days, tenant_id} for AnalyticsStore.stats."""
    _check(params, ("days", "tenant_id"))
    return {"days": _int(params, "days", DAYS), "tenant_id": _tenant(params)}


def parse_timeseries(params: Mapping[str, str]) -> dict[str, Any]:
    """{interval_hours, days, tenant_id} for AnalyticsStore.timeseries."""
    _check(params, ("interval_hours", "days", "tenant_id"))
    return {
        "interval_hours": _int(params, "interval_hours", HOURS),
        "days": _int(params, "days", TIMESERIES_DAYS),
        "tenant_id": _tenant(params),
    }


# -- OpenAPI --------------------------------------------------------------------------------------------


def _int_param(name: str, bounds: tuple[int, int, int], description: str) -> dict[str, Any]:
    low, high, default = bounds
    return query(name, description, {"type": "integer", "minimum": low, "maximum": high, "default": default})


_TENANT_PARAM = query(
    "tenant_id",
    "only this tenant's requests; every tenant's when omitted",
    {"type": "string", "minLength": 1, "maxLength": MAX_TENANT_CHARS, "pattern": TENANT_PATTERN},
)
_LIMIT_PARAM = _int_param("limit", LIMIT, "at most this many queries")
_DAYS_PARAM = _int_param("days", DAYS, "the last this many days (now - days * 86400 < ts <= now)")
_COUNT = {"type": "integer", "minimum": 0}
_RATE = {"type": "number", "minimum": 0, "maximum": 1}
_MS = {"type": "number", "minimum": 0, "nullable": True}
_TENANT_ECHO = {"type": "string", "nullable": True}
_BUCKET_PERCENTILE = (
    "the interval's {p}th latency percentile in ms, as in stats' latency_ms.p{p} (nearest rank; ClickHouse "
    "interpolates); null for an interval without requests"
)


def _object(properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": list(properties), "properties": properties}


SCHEMAS: dict[str, dict[str, Any]] = {
    "AnalyticsPopular": _object(
        {
            "days": _COUNT,
            "tenant_id": _TENANT_ECHO,
            "items": {
                "type": "array",
                "description": "count desc, then query asc (code-point order)",
                "items": _object({"query": {"type": "string"}, "count": {"type": "integer", "minimum": 1}}),
            },
        }
    ),
    "AnalyticsTrending": _object(
        {
            "window_hours": _COUNT,
            "tenant_id": _TENANT_ECHO,
            "items": {
                "type": "array",
                "description": "new queries first, then growth desc, count desc, query asc",
                "items": _object(
                    {
                        "query": {"type": "string"},
                        "count": {"type": "integer", "minimum": 1, "description": "in the last window"},
                        "previous": {**_COUNT, "description": "in the window before it"},
                        "growth": {
                            "type": "number",
                            "nullable": True,
                            "description": "(count - previous) / previous; null when new",
                        },
                        "new": {"type": "boolean", "description": "previous is 0"},
                    }
                ),
            },
        }
    ),
    "AnalyticsStats": _object(
        {
            "days": _COUNT,
            "tenant_id": _TENANT_ECHO,
            "requests": _COUNT,
            "unique_queries": _COUNT,
            "tenants": _COUNT,
            "cache_hits": _COUNT,
            "cache_hit_rate": _RATE,
            "errors": {**_COUNT, "description": "requests answered with status >= 400"},
            "error_rate": _RATE,
            "server_errors": {**_COUNT, "description": "requests answered with status >= 500"},
            "coalesced": _COUNT,
            "tokens_in": _COUNT,
            "tokens_out": _COUNT,
            "latency_ms": _object({"mean": _MS, "p50": _MS, "p95": _MS, "p99": _MS}),
        }
    ),
    "AnalyticsTimeseries": _object(
        {
            "interval_hours": _COUNT,
            "days": _COUNT,
            "tenant_id": _TENANT_ECHO,
            "buckets": {
                "type": "array",
                "description": "oldest first; intervals without requests are left out",
                "items": _object(
                    {
                        "start": {
                            "type": "integer",
                            "description": "epoch seconds, a multiple of the interval",
                        },
                        "requests": {"type": "integer", "minimum": 1},
                        "errors": _COUNT,
                        "cache_hits": _COUNT,
                        "tokens_in": _COUNT,
                        "tokens_out": _COUNT,
                        "latency_ms_mean": {"type": "number", "minimum": 0},
                        "latency_p50_ms": {**_MS, "description": _BUCKET_PERCENTILE.format(p=50)},
                        "latency_p95_ms": {**_MS, "description": _BUCKET_PERCENTILE.format(p=95)},
                    }
                ),
            },
        }
    ),
}
_ERRORS = [400, 401, 403, 503]

POPULAR_DOC: dict[str, Any] = {
    "tags": ["analytics"],
    "parameters": [_LIMIT_PARAM, _DAYS_PARAM, _TENANT_PARAM],
    "responses": {"200": answer("the most asked queries", ref("AnalyticsPopular"))},
    "errors": _ERRORS,
}
TRENDING_DOC: dict[str, Any] = {
    "tags": ["analytics"],
    "parameters": [
        _LIMIT_PARAM,
        _int_param("window_hours", HOURS, "compare the last this many hours with the same span before"),
        _TENANT_PARAM,
    ],
    "responses": {
        "200": answer("queries asked more often than in the window before", ref("AnalyticsTrending"))
    },
    "errors": _ERRORS,
}
STATS_DOC: dict[str, Any] = {
    "tags": ["analytics"],
    "parameters": [_DAYS_PARAM, _TENANT_PARAM],
    "responses": {"200": answer("totals, rates and latency percentiles", ref("AnalyticsStats"))},
    "errors": _ERRORS,
}
TIMESERIES_DOC: dict[str, Any] = {
    "tags": ["analytics"],
    "parameters": [
        _int_param("interval_hours", HOURS, "bucket width in hours, aligned on the epoch"),
        _int_param("days", TIMESERIES_DAYS, "the last this many days"),
        _TENANT_PARAM,
    ],
    "responses": {"200": answer("per-interval numbers", ref("AnalyticsTimeseries"))},
    "errors": _ERRORS,
}
# path -> doc, for the admin app: `openapi(**DOCS[path])` on each handler, SCHEMAS into the document.
DOCS: dict[str, dict[str, Any]] = {
    "/api/admin/analytics/popular": POPULAR_DOC,
    "/api/admin/analytics/trending": TRENDING_DOC,
    "/api/admin/analytics/stats": STATS_DOC,
    "/api/admin/analytics/timeseries": TIMESERIES_DOC,
}
