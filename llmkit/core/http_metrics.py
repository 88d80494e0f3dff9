"""HTTP request metrics: plain counters on the request path, Prometheus families built at scrape time."""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterator
from typing import Any

from aiohttp import hdrs
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.utils import floatToGoString

# What every server's request series are called: llmkit_http_requests_total, ...
PREFIX = "llmkit_"
# Prometheus' default latency buckets (seconds); +Inf follows them.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)


def new_latency(bounds: tuple[float, ...] = LATENCY_BUCKETS) -> list[float]:
    """Latency counts: one per bucket of `bounds`, one above the last, then the sum of seconds."""
    return [0.0] * (len(bounds) + 2)


def observe_latency(
    latency: list[float], seconds: float, bounds: tuple[float, ...] = LATENCY_BUCKETS
) -> None:
    """Count one duration in `new_latency(bounds)` counts."""
    latency[bisect_left(bounds, seconds)] += 1
    latency[-1] += seconds


def histogram_buckets(
    counts: list[float], bounds: tuple[float, ...] = LATENCY_BUCKETS
) -> list[tuple[str, float]]:
    """`new_latency(bounds)` counts as a Prometheus histogram's cumulative (bound, count) buckets."""
    cumulative, buckets = 0.0, []
    for bound, in_bucket in zip((*bounds, math.inf), counts, strict=False):
        cumulative += in_bucket
        buckets.append((floatToGoString(bound), cumulative))
    return buckets


class RouteMetrics:
    """The answers of one route by (method, status), and their latency by method."""

    __slots__ = ("answers", "label", "latency")

    def __init__(self, label: str) -> None:
        self.label = label
        self.answers: dict[tuple[str, int], int] = {}
        # method -> [count per bucket ..., count above the last, sum of seconds]
        self.latency: dict[str, list[float]] = {}

    def observe(self, method: str, status: int, seconds: float) -> None:
        """Count one answer."""
        key = (method, status)
        answers = self.answers
        if key in answers:
            answers[key] += 1
            latency = self.latency[method]
        else:
            # Clients choose the method token; unknown ones share a label so they cannot grow the registry.
            if method not in hdrs.METH_ALL:
                method = "OTHER"
                key = (method, status)
            answers[key] = answers.get(key, 0) + 1
            latency = self.latency.setdefault(method, new_latency())
        observe_latency(latency, seconds)


class HttpMetrics:
    """Request counters of one app, registered in its own registry as a collector.

    prometheus_client's Counter and Histogram take a lock and walk the buckets in Python on every request,
    which costs a fast server a tenth of its throughput; these are dict updates.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.active = 0
        self._routes: dict[str, RouteMetrics] = {}
        registry.register(self)

    def route(self, label: str) -> RouteMetrics:
        """The counters of the route labelled `label` (its pattern, or "unmatched")."""
        found = self._routes.get(label)
        if found is None:
            found = self._routes[label] = RouteMetrics(label)
        return found

    @property
    def total(self) -> int:
        """Requests answered."""
        return sum(n for route in list(self._routes.values()) for n in list(route.answers.values()))

    @property
    def errors(self) -> int:
        """Requests answered with a 5xx status."""
        return sum(
            n
            for route in list(self._routes.values())
            for (_, status), n in list(route.answers.items())
            if status >= 500
        )

    def describe(self) -> list[Any]:
        """The metric families without samples (what the registry checks names against)."""
        return self._families(PREFIX)

    def collect(self) -> Iterator[Any]:
        """The families with their samples, built at scrape time."""
        return self.collect_as(PREFIX)

    def collect_as(self, prefix: str) -> Iterator[Any]:
        """The same families named `{prefix}http_requests_total`, ... (the gateway also serves them
        unprefixed, as the seed's alerts name them)."""
        families = self._families(prefix)
        requests, latency, in_flight = families
        for route in list(self._routes.values()):
            for (method, status), count in list(route.answers.items()):
                requests.add_metric([method, route.label, str(status)], count)
            for method, counts in list(route.latency.items()):
                latency.add_metric([method, route.label], histogram_buckets(counts), counts[-1])
        in_flight.add_metric([], self.active)
        yield from families

    @staticmethod
    def _families(prefix: str) -> list[Any]:
        labels = ["method", "route", "status"]
        return [
            CounterMetricFamily(f"{prefix}http_requests", "HTTP requests answered.", labels=labels),
            HistogramMetricFamily(
                f"{prefix}http_request_duration_seconds", "Time to answer.", labels=labels[:2]
            ),
            GaugeMetricFamily(f"{prefix}http_requests_in_flight", "Requests being handled."),
        ]
