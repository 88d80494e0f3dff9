"""`search_duration_seconds`: the Prometheus histogram of searches (the seed's alert reads its p95), by
type and whether the cache answered; dict updates on the request path, families built at scrape time."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import HistogramMetricFamily

from llmkit.core.http_metrics import histogram_buckets, new_latency, observe_latency


class SearchMetrics:
    """A collector for an app's registry: `observe` each search."""

    def __init__(self) -> None:
        # (type, cached) -> new_latency() counts
        self._latency: dict[tuple[str, bool], list[float]] = {}

    def observe(self, kind: str, cached: bool, seconds: float) -> None:
        key = (kind, cached)
        latency = self._latency.get(key)
        if latency is None:
            latency = self._latency[key] = new_latency()
        observe_latency(latency, seconds)

    def describe(self) -> list[Any]:
        return [self._family()]

    def collect(self) -> Iterator[Any]:
        family = self._family()
        for (kind, cached), counts in list(self._latency.items()):
            family.add_metric([kind, str(cached).lower()], histogram_buckets(counts), counts[-1])
        yield family

    @staticmethod
    def _family() -> HistogramMetricFamily:
        return HistogramMetricFamily(
            "search_duration_seconds", "Time to answer POST /api/search.", labels=["type", "cached"]
        )
