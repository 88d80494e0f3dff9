"""The gateway's Prometheus series beyond its counters: the seed's names, tokens, quota refusals, per tenant.

Tenant labels are bounded by `telemetry.tenant_labels` (off by default): every tenant multiplies each
labelled series, and tenants are created through the admin API, so by default the figures are summed over
tenants. The upstream label is bounded by the configuration, the quota label by the quota kinds.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily

from llmkit.core.http_metrics import HttpMetrics

# Index of each count in a tenant's row.
REQUESTS, CACHE_HITS, COALESCED, QUEUE_FULL, PROMPT_TOKENS, COMPLETION_TOKENS = range(6)
# What a row counts when tenant labels are off.
ALL_TENANTS = ""


class SeedHttpSeries:
    """`http_requests_total{method,route,status}` and `http_request_duration_seconds`, as the seed's alerts
    name them: the same counts as llmkit_http_*, read at scrape time (nothing more on the request path)."""

    def __init__(self, http: HttpMetrics) -> None:
        self.http = http

    def describe(self) -> list[Any]:
        """No samples at registration (the families are built on collect)."""
        return []

    def collect(self) -> Iterator[Any]:
        """The request counter and latency histogram without the llmkit_ prefix."""
        requests, latency, _ = self.http.collect_as("")
        yield requests
        yield latency


class TenantCounters:
    """Chat requests (cache hits, coalesced, refused by a full queue), upstream tokens and quota refusals,
    by tenant when `tenant_labels`; an int update per event."""

    def __init__(self, tenant_labels: bool) -> None:
        self.tenant_labels = tenant_labels
        self._rows: dict[str, list[int]] = {}
        # (tenant, quota) -> requests refused with 429
        self._refused: dict[tuple[str, str], int] = {}

    def row(self, tenant_id: str) -> list[int]:
        """The counts of `tenant_id` (of every tenant when labels are off)."""
        key = tenant_id if self.tenant_labels else ALL_TENANTS
        row = self._rows.get(key)
        if row is None:
            row = self._rows[key] = [0] * 6
        return row

    def tokens(self, tenant_id: str, usage: dict[str, int] | None) -> None:
        """Count an upstream answer's tokens (nothing when the upstream gave no usage)."""
        if usage:
            row = self.row(tenant_id)
            row[PROMPT_TOKENS] += usage.get("prompt_tokens", 0)
            row[COMPLETION_TOKENS] += usage.get("completion_tokens", 0)

    def refused(self, tenant_id: str, quota: str) -> None:
        """Count a request refused by its tenant's `quota`."""
        key = (tenant_id if self.tenant_labels else ALL_TENANTS, quota)
        self._refused[key] = self._refused.get(key, 0) + 1

    def describe(self) -> list[Any]:
        """No samples at registration (the families are built on collect)."""
        return []

    def collect(self) -> Iterator[Any]:
        """The families, with a tenant label only when `tenant_labels` is on."""
        tenant = ["tenant"] if self.tenant_labels else []
        chats = CounterMetricFamily(
            "llmkit_gateway_chat_requests",
            "Chat requests by how they were answered: cache, coalesced, upstream, or 429 queue_full.",
            labels=[*tenant, "answered_by"],
        )
        tokens = CounterMetricFamily(
            "llmkit_gateway_tokens", "Tokens of upstream answers.", labels=[*tenant, "kind"]
        )
        refused = CounterMetricFamily(
            "llmkit_gateway_quota_rejected",
            "Requests refused with 429 by a tenant quota.",
            labels=[*tenant, "quota"],
        )
        for key, row in list(self._rows.items()):
            who = [key] if self.tenant_labels else []
            upstream = row[REQUESTS] - row[CACHE_HITS] - row[COALESCED] - row[QUEUE_FULL]
            for answered_by, value in (
                ("cache", row[CACHE_HITS]),
                ("coalesced", row[COALESCED]),
                ("upstream", upstream),
                ("queue_full", row[QUEUE_FULL]),
            ):
                chats.add_metric([*who, answered_by], value)
            tokens.add_metric([*who, "prompt"], row[PROMPT_TOKENS])
            tokens.add_metric([*who, "completion"], row[COMPLETION_TOKENS])
        for (key, quota), value in list(self._refused.items()):
            refused.add_metric([*([key] if self.tenant_labels else []), quota], value)
        yield from (chats, tokens, refused)
